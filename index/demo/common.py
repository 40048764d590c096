"""What every part of the demo catalog shares: its settings, the report, a track on its way into
the library folder, text helpers, running commands and writing tagged Ogg files."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

SEED = 1729                        # every choice below (works, instruments, tempi) follows from it
MIN_TRACKS = 200                   # the catalog the rest of the project is tuned for
MIN_TRACK_SECONDS = 20.0           # shorter files are jingles and sound effects, not tracks
MAX_DOWNLOAD_BYTES = 1_000_000_000
RENDER_WORKERS = 2                 # the machine is shared: never more than two renders at once
SAMPLE_RATE = 22050
RENDER_VERSION = 1                 # bump to invalidate cached renders after changing how they are made
DEMO_MARKER = ".tonearm-demo"      # marks a folder this module may replace
SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)


# --------------------------------------------------------------------------- report


@dataclass
class DemoLibraryReport:
    """What :func:`assemble_demo_library` built.

    Attributes
    ----------
    root : Path
        The library folder.
    tracks : int
        Lines written to ``metadata.jsonl`` (each with an audio file).
    by_source : dict
        Track counts keyed ``debian:<package>`` or ``music21:<collection>``.
    playlists : int
        Playlist files written under ``playlists/``.
    downloaded_bytes : int
        Bytes fetched by this run (0 when every package came from the cache).
    package_bytes : int
        Size of all Debian packages used, fetched now or earlier.
    reused : dict
        ``{"packages": n, "renders": m}``: what came from the cache instead of apt or FluidSynth.
    rendered : int
        Scores rendered by this run.
    seconds : float
        Wall time of the run.
    top_tags : dict
        The most frequent tags and their counts.
    warnings : list of str
        Everything that was skipped, and why.
    """

    root: Path
    tracks: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    playlists: int = 0
    downloaded_bytes: int = 0
    package_bytes: int = 0
    reused: dict[str, int] = field(default_factory=lambda: {"packages": 0, "renders": 0})
    rendered: int = 0
    seconds: float = 0.0
    top_tags: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        sources = ", ".join(f"{k} {v}" for k, v in sorted(self.by_source.items()))
        return (f"{self.tracks} tracks and {self.playlists} playlists in {self.root} "
                f"({self.seconds:.0f} s; downloaded {self.downloaded_bytes / 1e6:.0f} MB, "
                f"rendered {self.rendered}, reused {self.reused}). Sources: {sources}.")


@dataclass
class LibraryTrack:
    """One audio file on its way into the library.

    ``source`` is linked (or copied) to ``file`` inside the library; ``meta`` holds
    the ``metadata.jsonl`` fields other than ``file``; ``playlists`` names the
    playlists the track belongs to.
    """

    source: Path
    file: str
    meta: dict[str, Any]
    playlists: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- small text helpers


def slugify(text: str) -> str:
    """Lower-case ASCII words joined by hyphens; ``"untitled"`` when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug or "untitled"


def title_case(text: str) -> str:
    """Capitalise each word without ``str.title``'s ``O'Neill'S`` mistake."""
    return " ".join(w[:1].upper() + w[1:].lower() for w in text.split())


_NOT_TITLES = {"canto", "quinto", "alto", "tenor", "tenore", "basso", "bass", "cantus", "soprano",
               "musicxml part", "score", "piano", "voice", "untitled"}


def clean_title(text: str | None) -> str:
    """A readable title from a score or tag field, or ``""`` when it is not one.

    Drops leading numbers ("14. Rex quem" -> "Rex quem"), turns ALL CAPS into
    sentence case, and rejects file names, part names and encoding debris.
    """
    if not text:
        return ""
    t = " ".join(str(text).split())
    t = re.sub(r"^\d+(\.\d+)*\s*[.:)]\s*", "", t).strip(" .")
    if not t or re.search(r"\.(xml|mxl|musicxml|krn|abc|mid|ogg)$", t, re.I):
        return ""
    letters = sum(c.isalpha() or c.isspace() for c in t)
    if letters < 0.8 * len(t) or sum(c.isalpha() for c in t) < 3 or t.lower() in _NOT_TITLES:
        return ""
    if t.isupper():
        t = t[:1] + t[1:].lower()
    return t


def title_from_filename(name: str) -> str:
    """``"arctic_breeze.ogg"`` -> ``"Arctic Breeze"``; digits are split from words."""
    stem = Path(name).stem.lstrip("@")
    stem = re.sub(r"([a-z])([A-Z])", r"\1 \2", stem)          # IslandDreams -> Island Dreams
    stem = re.sub(r"([A-Za-z])(\d)", r"\1 \2", stem)           # forest2 -> forest 2
    return title_case(re.sub(r"[_\-]+", " ", stem)).strip() or "Untitled"


def year_from(text: str | None) -> str:
    """The first plausible four-digit year in ``text`` ("2013-01-01" -> "2013"), else ``""``."""
    m = re.search(r"(?<!\d)(1[0-9]\d\d|20\d\d)(?!\d)", str(text or ""))
    return m.group(1) if m else ""


def unique_tags(tags: Iterable[str]) -> list[str]:
    """Lower-cased, stripped, de-duplicated tags in first-seen order (key names keep their case)."""
    out: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        t = " ".join(str(tag).split())
        if not re.search(r"\b[A-G][b#]? (major|minor)\b", t):
            t = t.lower()
        if t and t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out


def with_article(phrase: str) -> str:
    """``"Irish reel"`` -> ``"an Irish reel"``."""
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def write_m3u(path: Path, name: str, entries: Sequence[tuple[Path, str, float | None]]) -> None:
    """Write an extended M3U playlist whose entries are relative to the playlist file.

    Parameters
    ----------
    path : Path
        The ``.m3u`` file to write.
    name : str
        Display name, stored in a ``#PLAYLIST:`` line.
    entries : sequence of (audio path, label, seconds)
        Audio paths are absolute or relative to the working directory; labels are
        ``"Artist - Title"``; seconds may be None.
    """
    if not entries:
        raise ValueError(f"playlist {name!r} has no entries")
    lines = ["#EXTM3U", f"#PLAYLIST:{name}"]
    for audio, label, seconds in entries:
        rel = os.path.relpath(Path(audio).absolute(), path.parent.absolute())
        lines.append(f"#EXTINF:{-1 if seconds is None else round(seconds)},{label}")
        lines.append(PurePosixPath(Path(rel)).as_posix())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def say(message: str) -> None:
    """One line to stderr that a tqdm bar does not overwrite."""
    tqdm.write(message, file=sys.stderr)


def run_command(cmd: Sequence[str], cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def write_ogg(path: Path, audio: np.ndarray, rate: int) -> None:
    """Encode float audio (frames x channels) as Ogg Vorbis.

    Written in blocks: libvorbis overflows its stack when handed minutes of audio in one call.
    """
    import soundfile as sf

    block = 1 << 15
    with sf.SoundFile(path, "w", samplerate=rate, channels=audio.shape[1], format="OGG", subtype="VORBIS") as out:
        for start in range(0, len(audio), block):
            out.write(audio[start: start + block])


def write_ogg_tags(path: Path, tags: dict[str, Any]) -> None:
    """Write Vorbis comments; empty values are left out, lists become repeated fields."""
    from mutagen.oggvorbis import OggVorbis

    audio = OggVorbis(path)
    for key, value in tags.items():
        values = [str(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if str(v).strip()]
        if values:
            audio[key] = values
    audio.save()


