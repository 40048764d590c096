"""Where the project keeps data it builds or fetches."""
from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """Root for downloads and the demo catalog: ``$TONEARM_HOME`` or ``~/.cache/tonearm``."""
    return Path(os.environ.get("TONEARM_HOME", Path.home() / ".cache" / "tonearm")).expanduser()


def demo_dir() -> Path:
    return data_home() / "demo"


def downloads_dir() -> Path:
    return data_home() / "downloads"
