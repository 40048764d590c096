"""The demo catalog: a library folder of real, freely licensed music, and its index.

Two sources, both free and reachable without a browser:

1. Debian game-soundtrack packages (The Battle for Wesnoth, SuperTux, Colobot,
   Endgame: Singularity, HyperRogue, OpenClonk and the Fret on Fire song packs),
   fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``
   (``games``). Their Ogg files carry embedded tags; each package's description,
   folders and credit files (``song.ini``, ``hyperrogue-music.txt``) fill the gaps.
2. Works from the music21 corpus (Bach chorales, Irish and American dance tunes,
   Essen folk songs, string quartets, madrigals, masses, trecento pieces, songs,
   piano music and ragtime; ``works``), rendered with FluidSynth and a General MIDI
   soundfont (``render``). The score gives title, composer, key, meter, tempo and lyrics.

``assembly`` writes them as a library folder in the format of ``docs/design.md``: audio
files with embedded tags, ``metadata.jsonl`` at the root and ``playlists/*.m3u``.
Downloads, unpacked packages and renders are cached under ``index.paths.downloads_dir()``,
so a second run only links files again. The folder is built beside its target and renamed
into place, so a failed run never leaves half a library. ``common`` holds what they share.

Entry points: :func:`assemble_demo_library` (the folder) and :func:`build_demo_index`
(the folder, then its index); ``python -m index.demo`` runs the latter.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .assembly import assemble_demo_library
from .common import DemoLibraryReport

__all__ = ["DemoLibraryReport", "assemble_demo_library", "build_demo_index"]


def build_demo_index(root: str | Path | None = None, *, progress: bool = True, log: Callable[[str], None] = print):
    """Assemble the demo library under ``root`` (default ``index.paths.demo_dir()``) and index it.

    Returns
    -------
    (Path, BuildReport)
        The index directory, ``root/index``, and its build report.
    """
    from index.build import build_index
    from index.paths import demo_dir

    root = Path(root) if root else demo_dir()
    lib = assemble_demo_library(root / "library", progress=progress)
    log(f"Demo library: {lib.tracks} tracks in {lib.root}  ({', '.join(f'{k}: {v}' for k, v in lib.by_source.items())})")
    for warning in lib.warnings:
        log(f"  note: {warning}")
    report = build_index(root / "library", root / "index", progress=progress, log=log)
    log(report.to_text())
    return root / "index", report
