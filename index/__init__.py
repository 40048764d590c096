"""The catalog: ingestion, five embeddings per track, codebooks, FAISS retrieval and audio analysis.

Heavy modules are imported on first use so that ``import index`` stays cheap.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .track import MODALITIES, Track

_LAZY = {
    "MusicIndex": "store", "IndexLoadError": "store", "build_index": "build", "BuildReport": "build",
    "scan_library": "library", "LibraryError": "library", "analyze": "analysis", "AudioError": "audio",
}

__all__ = ["MODALITIES", "Track", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
