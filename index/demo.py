"""The demo catalog: a library folder of real, freely licensed music.

Two sources, both free and reachable without a browser:

1. Debian game-soundtrack packages (The Battle for Wesnoth, SuperTux, Colobot,
   Endgame: Singularity, HyperRogue, OpenClonk and the Fret on Fire song packs),
   fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``. Their Ogg
   files carry embedded tags; each package's description, folders and credit files
   (``song.ini``, ``hyperrogue-music.txt``) fill the gaps.
2. Works from the music21 corpus (Bach chorales, Irish and American dance tunes,
   Essen folk songs, string quartets, madrigals, masses, trecento pieces, songs,
   piano music and ragtime), rendered with FluidSynth and a General MIDI
   soundfont. The score gives title, composer, key, meter, tempo and lyrics.

The result is a library folder in the format of ``design.md``: audio files with
embedded tags, ``metadata.jsonl`` at the root and ``playlists/*.m3u``. Downloads,
unpacked packages and renders are cached under ``index.paths.downloads_dir()``,
so a second run only links files again. The folder is built beside its target and
renamed into place, so a failed run never leaves half a library.

Entry point: :func:`assemble_demo_library`.
"""
from __future__ import annotations

import configparser
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from .paths import downloads_dir

SEED = 1729                        # every choice below (works, instruments, tempi) follows from it
MIN_TRACKS = 200                   # the catalog the rest of the project is tuned for
MIN_TRACK_SECONDS = 20.0           # shorter files are jingles and sound effects, not tracks
MAX_DOWNLOAD_BYTES = 1_000_000_000
RENDER_WORKERS = 2                 # the machine is shared: never more than two renders at once
SAMPLE_RATE = 22050
RENDER_VERSION = 1                 # bump to invalidate cached renders after changing how they are made
AUDIO_SUFFIXES = (".ogg", ".mp3", ".flac", ".wav", ".opus", ".m4a")
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


def _say(message: str) -> None:
    """One line to stderr that a tqdm bar does not overwrite."""
    tqdm.write(message, file=sys.stderr)


def _run(cmd: Sequence[str], cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


# --------------------------------------------------------------------------- Debian game soundtracks


@dataclass(frozen=True)
class GamePackage:
    """A Debian package whose music folder becomes one album of the demo.

    ``tags`` are genre words honest to the package (its description, its folders,
    its credits); ``style`` finishes each track's description sentence.
    """

    package: str
    album: str
    music_dir: str            # inside the unpacked package
    tags: tuple[str, ...]
    style: str
    artist: str = ""          # credit for files that name nobody
    license: str = ""
    worlds: bool = False      # sub-folders are the game's worlds: one playlist each
    songs: bool = False       # Fret on Fire layout: a folder per song with song.ini and stems


# In order of preference: when the download budget runs out, later packages are skipped.
GAME_PACKAGES: tuple[GamePackage, ...] = (
    GamePackage("wesnoth-1.16-music", "The Battle for Wesnoth", "usr/share/games/wesnoth/1.16/data/core/music",
                ("orchestral", "fantasy", "soundtrack", "cinematic", "video game music"),
                "from the orchestral soundtrack of the fantasy strategy game The Battle for Wesnoth",
                artist="Wesnoth Project", license="GPL-2+"),
    GamePackage("supertux-data", "SuperTux", "usr/share/games/supertux2/music",
                ("video game music", "soundtrack", "platformer", "electronic"),
                "from the soundtrack of the platform game SuperTux",
                artist="SuperTux Team", license="GPL-2+ or CC-BY-SA", worlds=True),
    GamePackage("fretsonfire-songs-muldjord", "Fret on Fire: Songs by Muldjord",
                "usr/share/games/fretsonfire/data/songs/muldjord",
                ("metal", "rock", "electric guitar", "heavy"),
                "a song by the Danish metal band Muldjord, packaged for the guitar game Fret on Fire",
                artist="Muldjord", license="CC-BY-SA-3.0", songs=True),
    GamePackage("fretsonfire-songs-sectoid", "Fret on Fire: Songs by Sectoid",
                "usr/share/games/fretsonfire/data/songs/sectoid",
                ("rock", "metal", "electric guitar"),
                "a song composed and performed by Sectoid (Carlos Viola Iborra) for the guitar game Fret on Fire",
                artist="Sectoid", license="MIT", songs=True),
    GamePackage("singularity-music", "Endgame: Singularity", "usr/share/games/singularity/music",
                ("electronic", "ambient", "sci-fi", "tracker music", "video game music"),
                "from the electronic soundtrack of the strategy game Endgame: Singularity, "
                "made in the Psycle and Renoise trackers", artist="Maxstack", license="CC-BY-SA-3.0"),
    GamePackage("colobot-common-sounds", "Colobot", "usr/share/games/colobot/music",
                ("electronic", "sci-fi", "space", "soundtrack", "video game music"),
                "from the soundtrack of the educational programming game Colobot",
                artist="TerranovaTeam", license="GPL-3+"),
    GamePackage("hyperrogue-music", "HyperRogue", "usr/share/hyperrogue/music",
                ("video game music", "soundtrack", "roguelike"),
                "from the soundtrack of the roguelike HyperRogue", license="CC-BY-SA-3.0"),
    GamePackage("openclonk-data", "OpenClonk", "usr/share/games/openclonk/Music.ocg",
                ("video game music", "soundtrack"),
                "from the soundtrack of the action game OpenClonk",
                artist="Martin Strohmeier (K-Pone)", license="CC-BY-3.0"),
)

_GENERIC_GENRES = {"game", "soundtrack", "game soundtrack", "game music", "other", "misc", "none", ""}
_GENRE_WORDS = ("metal", "rock", "classical", "ambient", "house", "reggae", "orchestral", "jazz", "electronic")
# Words in a title or file name that say something about the music.
_TITLE_WORDS = {"jazz": "jazz", "march": "march", "bolero": "bolero", "waltz": "waltz", "boss": "boss battle",
                "battle": "battle", "chip": "chiptune", "disko": "disco", "disco": "disco", "remix": "remix",
                "orchestral": "orchestral", "lullaby": "lullaby", "metal": "metal", "christmas": "christmas",
                "halloween": "halloween", "love": "love theme", "victory": "victory", "sad": "sad",
                "dream": "dreamy", "ghost": "spooky", "cave": "cave", "forest": "forest", "space": "space",
                "ocean": "ocean", "storm": "storm"}
# OpenClonk's comment field names the scenes a track is played in.
_SCENE_WORDS = {"day": "daytime", "night": "night", "beach": "beach", "underwater": "underwater",
                "underground": "underground", "frontend": "menu theme"}
_PLACEHOLDER_ALBUMS = {"", "non", "none", "unknown"}


def embedded_tags(path: Path) -> tuple[dict[str, str], float | None]:
    """The first value of each embedded tag (keys lower-cased) and the duration in seconds."""
    import mutagen

    try:
        audio = mutagen.File(path)
    except Exception:                      # an unreadable file is skipped by the caller
        return {}, None
    if audio is None:
        return {}, None
    tags: dict[str, str] = {}
    for key, value in (audio.tags or {}).items():
        first = value[0] if isinstance(value, list) and value else value
        text = str(first).strip()
        if text:
            tags.setdefault(str(key).lower(), text)
    return tags, float(audio.info.length) if getattr(audio, "info", None) else None


def clean_artist(text: str | None) -> str:
    """``"Muldjord - www.muldjord.com"`` -> ``"Muldjord"``; URLs alone are not artists."""
    t = " ".join(str(text or "").split())
    t = re.sub(r"^composed and performed by\s+", "", t, flags=re.I)
    t = re.sub(r"\s*[-–]\s*(https?://|www\.)\S+$", "", t)
    return "" if re.match(r"^(https?://|www\.)", t) else t


def game_track_tags(pkg: GamePackage, rel: PurePosixPath, embedded: dict[str, str], title: str) -> list[str]:
    """Genre and scene words for one game track.

    From the package (its fixed tags), the file's embedded genre, the world folder
    it sits in, OpenClonk-style scene comments, and telling words in its title.
    """
    tags = list(pkg.tags)
    for part in re.split(r"[;,/]", embedded.get("genre", "")):
        genre = part.strip().lower()
        if genre not in _GENERIC_GENRES:
            tags.append(genre)
            tags.extend(w for w in _GENRE_WORDS if w in genre.split() and w != genre)
    if pkg.worlds and len(rel.parts) > 1 and rel.parts[0] not in ("misc",):
        tags.append(rel.parts[0].lower())
    comment = embedded.get("comment", "").strip().lower()
    if re.fullmatch(r"[a-z]+(;[a-z]+)*", comment):
        tags.extend(_SCENE_WORDS[w] for w in comment.split(";") if w in _SCENE_WORDS)
    words = f"{title} {rel.stem}".lower()
    tags.extend(tag for word, tag in _TITLE_WORDS.items() if re.search(rf"{word}", words))
    return unique_tags(tags)


def game_track_meta(pkg: GamePackage, rel: PurePosixPath, embedded: dict[str, str], duration: float | None,
                    credit: tuple[str, str] | None = None, song: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``metadata.jsonl`` fields (without ``file``) of one game track.

    Parameters
    ----------
    pkg : GamePackage
    rel : PurePosixPath
        Path of the audio file inside the package's music folder.
    embedded : dict
        Embedded tags, keys lower-cased (from :func:`embedded_tags`).
    duration : float or None
        Seconds.
    credit : (title, artist) or None
        From the package's credit file; wins over embedded tags (HyperRogue's files
        all claim to be "Living Caves").
    song : dict or None
        Fret on Fire ``song.ini`` fields (name, artist, genre, year).
    """
    song = song or {}
    title = (credit[0] if credit and credit[0] else "") or clean_title(song.get("name")) \
        or clean_title(embedded.get("title")) or title_from_filename(rel.name)
    artist = (credit[1] if credit and credit[1] else "") or clean_artist(song.get("artist")) \
        or clean_artist(embedded.get("artist")) or clean_artist(embedded.get("composer")) or pkg.artist
    album = embedded.get("album", "").strip()
    if album.lower() in _PLACEHOLDER_ALBUMS or pkg.songs:
        album = pkg.album
    year = year_from(song.get("year")) or year_from(embedded.get("date")) or year_from(embedded.get("year")) \
        or year_from(embedded.get("copyright"))
    tags = game_track_tags(pkg, rel, {**embedded, **({"genre": song["genre"]} if song.get("genre") else {})}, title)
    world = f" (the {rel.parts[0]} world)" if pkg.worlds and len(rel.parts) > 1 and rel.parts[0] != "misc" else ""
    description = f"{title} by {artist}{f' ({year})' if year else ''}, {pkg.style}{world}."
    note = embedded.get("description", "").strip()
    if note and not re.search(r"https?://|www\.", note) and len(note.split()) >= 3:
        description += f" {note.rstrip('.')}."
    meta: dict[str, Any] = {
        "id": f"{slugify(pkg.album)}-{slugify(str(rel.with_suffix('')))}",
        "title": title, "artist": artist, "album": album, "year": year, "tags": tags,
        "description": description, "source": f"debian:{pkg.package}",
        "duration_s": round(duration, 2) if duration else None,
    }
    license_ = embedded.get("license", "") or pkg.license
    if license_:
        meta["license"] = license_
    return meta


def hyperrogue_credits(unpacked: Path) -> dict[str, tuple[str, str]]:
    """File name -> (title, artist) from HyperRogue's music list and its credit lines.

    ``hyperrogue-music.txt`` names each land above the file that plays in it; the
    land the file is named after, else the first one listed, is its title. The closing lines credit composers
    ("Caribbean, Ivory Tower, Ocean, Palace by Will Savino (url)").
    """
    listing = unpacked / "usr/share/hyperrogue/hyperrogue-music.txt"
    if not listing.exists():
        return {}
    lands: dict[str, list[str]] = {}
    credits: list[tuple[set[str], str]] = []
    pending = ""
    for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
        if m := re.match(r"#\s*([^\[\]#]+?)\s*(?:\[|$)", line):
            pending = m.group(1)
        elif (m := re.match(r"\[\d+\]\s*\*/music/(\S+)", line)) and pending:
            lands.setdefault(m.group(1), []).append(pending)
        elif not line.startswith("#") and (m := re.match(r"(.+?)\s+by\s+([^(]+?)\s*(\(.*\))?\s*$", line)):
            credits.append(({w for t in m.group(1).split(",") for w in _stems(t)}, m.group(2).strip()))
    # a file plays in several lands: the one its name mentions, else the first listed
    titles = {name: next((land for land in names if _stems(land) & _stems(name.replace("-", " "))), names[0])
              for name, names in lands.items()}
    out = {}
    for name, title in titles.items():
        artist = next((a for stems, a in credits if _stems(title) & stems), "")
        artist = artist or next((a for _, a in credits if a.split()[-1].lower() in name.lower()), "")
        out[name] = (title, artist)
    return out


def _stems(text: str) -> set[str]:
    """Word stems that let "Mirror" find "Hall of Mirrors"."""
    return {w[:5] for w in re.findall(r"[a-z']+", text.lower()) if len(w) >= 4 and w not in ("land", "hall")}


def read_song_ini(path: Path) -> dict[str, str]:
    """The ``[song]`` section of a Fret on Fire ``song.ini`` (name, artist, genre, year, ...)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(path.read_text(encoding="utf-8", errors="replace"))
    except configparser.Error:
        return {}
    return {k: v.strip() for k, v in parser["song"].items()} if parser.has_section("song") else {}


def mix_stems(stems: Sequence[Path], out: Path, tags: dict[str, str]) -> None:
    """Sum a song's stems (Fret on Fire keeps the guitar apart) into one tagged Ogg file."""
    import soundfile as sf

    parts = [sf.read(p, always_2d=True, dtype="float32") for p in stems]
    rate = parts[0][1]
    if any(r != rate for _, r in parts):
        raise ValueError(f"stems of {out.stem} have different sample rates")
    length = max(len(a) for a, _ in parts)
    channels = max(a.shape[1] for a, _ in parts)
    mix = np.zeros((length, channels), dtype=np.float32)
    for audio, _ in parts:
        mix[: len(audio)] += audio if audio.shape[1] == channels else np.repeat(audio[:, :1], channels, axis=1)
    mix *= 0.89 / max(float(np.abs(mix).max()), 1e-9)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.stem + ".partial.ogg")
    write_ogg(partial, mix, rate)
    write_ogg_tags(partial, tags)
    os.replace(partial, out)


def apt_available() -> tuple[bool, str]:
    """Whether Debian packages can be fetched here, and if not, one line saying why.

    ``apt-get download`` needs no root; ``apt-get update`` (tried once when a package
    is unknown) does, and is skipped without it.
    """
    missing = [tool for tool in ("apt-get", "apt-cache", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        return False, (f"apt is not available here ({', '.join(missing)} not found): "
                       "building the demo from the music21 corpus alone.")
    return True, ""


_apt_updated = False


def _apt_update_once() -> bool:
    """Run ``apt-get update`` once per process, as root only; True when it ran and succeeded."""
    global _apt_updated
    if _apt_updated or not _is_root():
        return False
    _apt_updated = True
    return _run(["apt-get", "update", "-qq"]).returncode == 0


def package_size(package: str) -> int | None:
    """Download size of ``package`` in bytes from ``apt-cache show``, or None if apt does not know it."""
    for attempt in range(2):
        result = _run(["apt-cache", "show", "--no-all-versions", package], timeout=120)
        found = re.search(r"^Size:\s*(\d+)", result.stdout, re.M)
        if result.returncode == 0 and found:
            return int(found.group(1))
        if attempt == 0 and not _apt_update_once():
            break
    return None


def fetch_package(package: str, debs: Path, size: int | None) -> tuple[Path, bool]:
    """The ``.deb`` of ``package`` in ``debs``, downloaded unless a complete copy is there.

    Returns the path and whether it was downloaded now. Raises RuntimeError with
    apt's own message when the download fails.
    """
    debs.mkdir(parents=True, exist_ok=True)
    for cached in sorted(debs.glob(f"{package}_*.deb")):
        if size is None or cached.stat().st_size == size:
            return cached, False
        cached.unlink()                                  # a download cut short
    message = ""
    for attempt in range(2):
        result = _run(["apt-get", "download", "-q", package], cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if result.returncode == 0 and found:
            return found[-1], True
        message = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        message = message[0]
        if attempt == 0 and "Unable to locate" in result.stderr + result.stdout and _apt_update_once():
            continue
        break
    raise RuntimeError(f"apt-get download {package} failed: {message}")


def unpack_package(deb: Path, dest: Path) -> None:
    """``dpkg-deb -x`` into ``dest``, once: a marker file names the ``.deb`` it came from."""
    marker = dest / ".unpacked"
    if marker.exists() and marker.read_text().strip() == deb.name:
        return
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    result = _run(["dpkg-deb", "-x", str(deb), str(partial)])
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"dpkg-deb -x {deb.name} failed: {result.stderr.strip()}")
    (partial / ".unpacked").write_text(deb.name)
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)


def read_game_package(pkg: GamePackage, unpacked: Path, mixes: Path) -> list[LibraryTrack]:
    """Every track of at least :data:`MIN_TRACK_SECONDS` in one unpacked package."""
    base = unpacked / pkg.music_dir
    if not base.is_dir():
        raise FileNotFoundError(f"{pkg.package} has no folder {pkg.music_dir}")
    credits = hyperrogue_credits(unpacked) if pkg.package == "hyperrogue-music" else {}
    found: list[tuple[Path, PurePosixPath, dict[str, str]]] = []
    if pkg.songs:
        for song_dir in sorted(p for p in base.iterdir() if (p / "song.ini").exists()):
            song = read_song_ini(song_dir / "song.ini")
            stems = [song_dir / n for n in ("song.ogg", "guitar.ogg", "rhythm.ogg") if (song_dir / n).exists()]
            if not stems:
                continue
            mixed = mixes / pkg.package / f"{slugify(song_dir.name)}.ogg"
            if not mixed.exists():
                tags, _ = embedded_tags(stems[0])
                title = clean_title(song.get("name")) or title_from_filename(song_dir.name)
                artist = clean_artist(song.get("artist")) or pkg.artist
                mix_stems(stems, mixed, {**tags, "title": title, "artist": artist, "album": pkg.album})
            found.append((mixed, PurePosixPath(f"{slugify(song_dir.name)}.ogg"), song))
    else:
        for path in sorted(base.rglob("*")):
            if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
                found.append((path, PurePosixPath(path.relative_to(base).as_posix()), {}))
    tracks = []
    for path, rel, song in found:
        embedded, duration = embedded_tags(path)
        if duration is None or duration < MIN_TRACK_SECONDS:
            continue
        meta = game_track_meta(pkg, rel, embedded, duration, credits.get(rel.name), song)
        folder = "/".join(slugify(p) for p in rel.parent.parts)
        file = "/".join(p for p in ("games", slugify(pkg.album), folder, slugify(rel.stem) + path.suffix.lower()) if p)
        playlists = [pkg.album]
        if pkg.worlds and len(rel.parts) > 1 and rel.parts[0] != "misc":
            playlists.append(f"{pkg.album}: {title_case(rel.parts[0])}")
        tracks.append(LibraryTrack(path, file, meta, playlists))
    return tracks


def collect_game_tracks(cache: Path, report: DemoLibraryReport, progress: bool) -> list[LibraryTrack]:
    """Download, unpack and read the Debian soundtrack packages that fit the budget."""
    ok, why = apt_available()
    if not ok:
        report.warnings.append(why)
        _say(why)
        return []
    debs, unpacked_root, mixes = cache / "debs", cache / "debian", cache / "mixed"
    plan: list[tuple[GamePackage, int | None]] = []
    budget = 0
    for pkg in GAME_PACKAGES:
        size = package_size(pkg.package)
        cached = next(iter(sorted(debs.glob(f"{pkg.package}_*.deb"))), None)
        if size is None and cached is None:
            report.warnings.append(f"{pkg.package}: apt does not know this package; skipped.")
            continue
        bytes_ = size if size is not None else cached.stat().st_size
        if budget + bytes_ > MAX_DOWNLOAD_BYTES:
            report.warnings.append(f"{pkg.package}: {bytes_ / 1e6:.0f} MB would pass the 1 GB budget; skipped.")
            continue
        budget += bytes_
        plan.append((pkg, size))
    to_fetch = sum(s or 0 for p, s in plan if not any(
        s is None or d.stat().st_size == s for d in debs.glob(f"{p.package}_*.deb")))
    usable: list[tuple[GamePackage, Path]] = []
    with tqdm(total=to_fetch, unit="B", unit_scale=True, desc="downloading packages", disable=not progress) as bar:
        for pkg, size in plan:
            try:
                deb, fetched = fetch_package(pkg.package, debs, size)
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                report.warnings.append(str(err))
                _say(str(err))
                continue
            if fetched:
                report.downloaded_bytes += deb.stat().st_size
                bar.update(deb.stat().st_size)
            else:
                report.reused["packages"] += 1
            report.package_bytes += deb.stat().st_size
            usable.append((pkg, deb))
    if plan and not usable:
        message = "apt downloads failed: building the demo from the music21 corpus alone."
        report.warnings.append(message)
        _say(message)
    tracks: list[LibraryTrack] = []
    for pkg, deb in tqdm(usable, desc="unpacking and reading tags", unit="pkg", disable=not progress):
        try:
            unpack_package(deb, unpacked_root / pkg.package)
            tracks.extend(read_game_package(pkg, unpacked_root / pkg.package, mixes))
        except (RuntimeError, OSError, ValueError) as err:
            report.warnings.append(f"{pkg.package}: {err}")
    return tracks


# --------------------------------------------------------------------------- the music21 corpus


@dataclass(frozen=True)
class WorkRef:
    """One score in the music21 corpus, with whatever is known before parsing it."""

    path: str                      # corpus-relative, e.g. "bach/bwv26.6.mxl"
    number: int | None = None      # tune number inside a multi-tune ABC file
    title: str = ""
    artist: str = ""
    album: str = ""
    year: str = ""
    kind: str = ""                 # dance-tune type ("reel") or folk-song function ("ballad")
    place: str = ""                # where a folk song was collected
    tags: tuple[str, ...] = ()
    blurb: str = ""                # what the work is, for the description sentence
    tempo: str = ""                # the edition's tempo word, for scores that do not print one

    @property
    def spec(self) -> str:
        return self.path + (f"#{self.number}" if self.number is not None else "")

    @property
    def slug(self) -> str:
        """Unique and readable: ``"mozart-k155-movement3"``, ``"oneills1850-0101-0200-118"``."""
        stem = slugify(PurePosixPath(self.path).with_suffix("").as_posix())
        return stem + (f"-{self.number}" if self.number is not None else "")


@dataclass(frozen=True)
class Collection:
    """A group of corpus works that becomes one playlist of the demo.

    ``programs`` are (General MIDI program, instrument tag) pairs; each work gets
    one, chosen with a seeded generator. ``bpm`` is the tempo range used when the
    score names no tempo, as a quarter-note-like pulse that :func:`beat_scale` maps
    to the beat of the work's meter. ``works`` lists the works of a
    hand-picked collection; otherwise they are found by :func:`list_candidates`.
    """

    key: str
    playlist: str
    weight: float
    tags: tuple[str, ...]
    programs: tuple[tuple[int, str], ...]
    bpm: tuple[int, int]
    blurb: str
    artist: str = ""
    album: str = ""
    by_part: bool = False          # instruments from part names (violin, piano, voice, ...)
    loop_seconds: float = 0.0      # play a short tune again, as players do, until about this long
    works: tuple[WorkRef, ...] = ()


CHOIR, VOICE, ORGAN, PIANO = (52, "choir"), (53, "voice"), (19, "organ"), (0, "piano")
_VOCAL_PROGRAMS = {52, 53, 54}

SONG_WORKS = (
    WorkRef("schubert/Lindenbaum.xml", title="Der Lindenbaum", artist="Franz Schubert", album="Winterreise",
            year="1827", tags=("lied", "art song", "romantic", "german"), blurb="a song from the cycle Winterreise"),
    WorkRef("schumann_robert/dichterliebe_no2.xml", title="Aus meinen Tränen sprießen", artist="Robert Schumann",
            album="Dichterliebe", year="1840", tags=("lied", "art song", "romantic", "german"),
            blurb="a song from the cycle Dichterliebe"),
    WorkRef("beach/prayer_of_a_tired_child.musicxml", title="Prayer of a Tired Child", artist="Amy Beach",
            year="1915", tags=("choral", "american", "romantic"),
            blurb="a part-song, Op. 75 No. 4, to words by Abbie Farwell Brown"),
    WorkRef("johnson_j_r/lift_every_voice.mxl", title="Lift Every Voice and Sing", artist="J. Rosamond Johnson",
            year="1900", tags=("hymn", "choral", "american"), blurb="a hymn to words by James Weldon Johnson"),
    WorkRef("liliuokalani/aloha_oe.mxl", title="Aloha ʻOe", artist="Liliʻuokalani", year="1878",
            tags=("hawaiian", "choral"), blurb="a Hawaiian farewell song"),
    WorkRef("verdi/laDonnaEMobile.mxl", title="La donna è mobile", artist="Giuseppe Verdi", album="Rigoletto",
            year="1851", tags=("opera", "aria", "romantic", "italian"), blurb="the Duke's aria from Rigoletto"),
    WorkRef("handel/rinaldo/Lascia_chio_pianga.mxl", title="Lascia ch'io pianga", artist="George Frideric Handel",
            album="Rinaldo", year="1711", tags=("opera", "aria", "baroque", "italian"),
            blurb="Almirena's aria from Rinaldo"),
    WorkRef("leadSheet/fosterBrownHair.mxl", title="Jeanie with the Light Brown Hair", artist="Stephen Foster",
            year="1854", tags=("parlour song", "american", "folk"), blurb="a parlour song"),
    WorkRef("webern/webern_dormi_jesu_op_16_no_2.mxl", title="Dormi Jesu", artist="Anton Webern",
            album="Five Canons, Op. 16", year="1924", tags=("modernist", "atonal", "canon", "sacred"),
            blurb="a canon for voice and clarinet, Op. 16 No. 2"),
)
CHAMBER_WORKS = (
    WorkRef("chopin/mazurka06-2.krn", title="Mazurka in C-sharp minor, Op. 6 No. 2", artist="Frédéric Chopin",
            year="1832", tags=("romantic", "mazurka", "polish"), blurb="a mazurka for piano"),
    *(WorkRef(f"schumann_clara/polonaise_op1n{n}.mxl", title=f"Polonaise, Op. 1 No. {n}", artist="Clara Schumann",
              album="Quatre Polonaises, Op. 1", year="1831", tags=("romantic", "polonaise"),
              blurb="a polonaise for piano") for n in range(1, 5)),
    WorkRef("schumann_clara/opus17/movement3.xml", title="Piano Trio in G minor, Op. 17: Andante",
            artist="Clara Schumann", year="1846", tags=("romantic", "piano trio"),
            blurb="the slow movement of a piano trio"),
    *(WorkRef(f"schoenberg/opus19/movement{n}.mxl", title=f"Six Little Piano Pieces, Op. 19 No. {n}",
              artist="Arnold Schoenberg", album="Six Little Piano Pieces, Op. 19", year="1911",
              tags=("modernist", "atonal"), blurb="a miniature for piano",
              tempo="Langsam" if n == 2 else "Sehr langsam") for n in (2, 6)),
    WorkRef("corelli/opus3no1/1grave.xml", title="Trio Sonata, Op. 3 No. 1: Grave", artist="Arcangelo Corelli",
            year="1689", tags=("baroque", "trio sonata"), blurb="the opening of a church trio sonata"),
    WorkRef("cpebach/h186.mxl", title="Sonata in A major, H. 186: Poco adagio", artist="Carl Philipp Emanuel Bach",
            tags=("galant", "keyboard sonata"), blurb="the slow movement of a keyboard sonata", tempo="Poco adagio"),
    WorkRef("weber/concertino_clarinet.mxl", title="Clarinet Concertino, Op. 26", artist="Carl Maria von Weber",
            year="1811", tags=("romantic", "concertino"), blurb="a concertino for clarinet, here with piano"),
    WorkRef("mozart/k545/movement1_exposition.mxl", title="Piano Sonata No. 16 in C major, K. 545: Allegro",
            artist="Wolfgang Amadeus Mozart", year="1788", tags=("classical", "piano sonata"),
            blurb="the exposition of a piano sonata's first movement"),
)
RAGTIME_WORKS = (
    WorkRef("joplin/maple_leaf_rag.mxl", title="Maple Leaf Rag", artist="Scott Joplin", year="1899",
            blurb="a piano rag"),
    WorkRef("leadSheet/berlinAlexandersRagtime.mxl", title="Alexander's Ragtime Band", artist="Irving Berlin",
            year="1911", blurb="a ragtime song, its melody on piano"),
)

COLLECTIONS: tuple[Collection, ...] = (
    Collection("bach-chorales", "Bach chorales", 0.17, ("chorale", "baroque", "sacred", "hymn", "german"),
               (CHOIR, CHOIR, ORGAN), (60, 76), "a four-part chorale harmonisation",
               artist="Johann Sebastian Bach", album="Bach chorales"),
    Collection("oneills", "Irish dance tunes", 0.13, ("folk", "irish", "traditional"),
               ((110, "fiddle"), (21, "accordion"), (73, "flute"), (78, "tin whistle")), (100, 120),
               "a traditional Irish tune from O'Neill's Music of Ireland (1903)",
               album="O'Neill's Music of Ireland", loop_seconds=45.0),
    Collection("ryans-mammoth", "Fiddle tunes from Ryan's Mammoth Collection", 0.11,
               ("folk", "fiddle tune", "traditional", "american"),
               ((110, "fiddle"), (110, "fiddle"), (21, "accordion"), (73, "flute")), (100, 120),
               "a dance tune from Ryan's Mammoth Collection (Boston, 1883)",
               album="Ryan's Mammoth Collection", loop_seconds=45.0),
    Collection("essen-folksongs", "Folk songs of Europe and China", 0.11, ("folk", "folk song", "traditional"),
               ((73, "flute"), (71, "clarinet"), (68, "oboe"), (74, "recorder")), (72, 108),
               "a folk song melody from the Essen Folksong Collection", artist="Traditional",
               album="Essen Folksong Collection", loop_seconds=30.0),
    Collection("string-quartets", "String quartets", 0.12, ("string quartet", "chamber music", "strings"),
               ((48, "strings"),), (80, 132), "a string quartet movement", by_part=True),
    Collection("monteverdi-madrigals", "Madrigals", 0.08, ("madrigal", "renaissance", "italian", "polyphony"),
               (CHOIR,), (96, 120), "a five-voice madrigal", artist="Claudio Monteverdi"),
    Collection("palestrina-masses", "Palestrina masses", 0.06, ("mass", "renaissance", "sacred", "polyphony", "latin"),
               (CHOIR,), (100, 120), "a movement of a polyphonic mass",
               artist="Giovanni Pierluigi da Palestrina"),
    Collection("trecento", "Trecento and early music", 0.06, ("medieval", "early music", "ars nova", "polyphony"),
               (CHOIR, (74, "recorder")), (80, 110), "a fourteenth-century piece"),
    Collection("songs", "Songs and arias", 0.06, ("song",), (VOICE,), (60, 90), "a song", by_part=True,
               works=SONG_WORKS),
    Collection("piano-chamber", "Piano and chamber music", 0.07, (), (PIANO,), (60, 100), "a piece",
               by_part=True, works=CHAMBER_WORKS),
    Collection("ragtime", "Ragtime", 0.02, ("ragtime", "american"), (PIANO,), (80, 100), "a rag",
               works=RAGTIME_WORKS),
)

QUARTETS = {  # folder -> (composer, work, year, era)
    "beethoven/opus18no1": ("Ludwig van Beethoven", "String Quartet No. 1 in F major, Op. 18 No. 1", "1800", "classical"),
    "beethoven/opus59no1": ("Ludwig van Beethoven", "String Quartet No. 7 in F major, Op. 59 No. 1 (Razumovsky)", "1806", "classical"),
    "beethoven/opus59no2": ("Ludwig van Beethoven", "String Quartet No. 8 in E minor, Op. 59 No. 2 (Razumovsky)", "1806", "classical"),
    "beethoven/opus59no3": ("Ludwig van Beethoven", "String Quartet No. 9 in C major, Op. 59 No. 3 (Razumovsky)", "1806", "classical"),
    "haydn/opus1no1": ("Joseph Haydn", "String Quartet in B-flat major, Op. 1 No. 1", "", "classical"),
    "haydn/opus74no1": ("Joseph Haydn", "String Quartet in C major, Op. 74 No. 1", "1793", "classical"),
    "mozart/k80": ("Wolfgang Amadeus Mozart", "String Quartet No. 1 in G major, K. 80", "1770", "classical"),
    "mozart/k155": ("Wolfgang Amadeus Mozart", "String Quartet No. 2 in D major, K. 155", "1772", "classical"),
    "mozart/k156": ("Wolfgang Amadeus Mozart", "String Quartet No. 3 in G major, K. 156", "1772", "classical"),
    "mozart/k458": ("Wolfgang Amadeus Mozart", "String Quartet No. 17 in B-flat major, K. 458 (The Hunt)", "1784", "classical"),
    "schumann_robert/opus41no1": ("Robert Schumann", "String Quartet No. 1 in A minor, Op. 41 No. 1", "1842", "romantic"),
}
MONTEVERDI_BOOKS = {"3": "1592", "4": "1603", "5": "1605"}

# Dance tunes: tempo in quarter notes ("q") or in beats of the meter ("beat") per minute.
DANCE_TEMPI = {
    "slip jig": (165, 185, "q"), "jig": (165, 185, "q"), "reel": (200, 230, "q"), "hornpipe": (150, 180, "q"),
    "strathspey": (110, 130, "q"), "clog": (150, 180, "q"), "highland fling": (140, 160, "q"),
    "fling": (140, 160, "q"), "polka": (200, 240, "q"), "slide": (180, 200, "q"), "set dance": (140, 170, "q"),
    "schottische": (140, 160, "q"), "march": (100, 120, "beat"), "waltz": (140, 170, "beat"),
    "mazurka": (130, 150, "beat"), "air": (60, 76, "beat"),
}
# Tempo words (Italian and German) -> quarter-note-like pulses per minute; scaled to the meter's beat.
TEMPO_WORDS = {
    "grave": 44, "largo": 48, "lento": 52, "larghetto": 60, "adagio": 60, "andante": 80, "andantino": 92,
    "con moto": 96, "moderato": 104, "moderate": 104, "allegretto": 112, "allegro": 132, "allegro molto": 150,
    "molto allegro": 150, "allegro assai": 150, "vivace": 152, "presto": 176, "prestissimo": 200,
    "menuetto": 120, "minuet": 120, "scherzo": 150, "marcia": 104, "tranquillo": 60, "animato": 120,
    "sehr langsam": 44, "langsam": 56, "ruhig": 60, "nicht schnell": 72, "massig": 84, "mässig": 84,
    "mäßig": 84, "bewegt": 100, "lebhaft": 132, "rasch": 144, "schnell": 160,
}
# Tempo markings of quartet movements whose corpus files print none (from the published scores).
QUARTET_TEMPI = {
    "beethoven/opus18no1/movement1.mxl": "Allegro con brio", "beethoven/opus18no1/movement2.mxl": "Adagio affettuoso",
    "beethoven/opus18no1/movement3.mxl": "Scherzo: Allegro molto", "beethoven/opus18no1/movement4.mxl": "Allegro",
    "haydn/opus74no1/movement1.mxl": "Allegro moderato", "haydn/opus74no1/movement2.mxl": "Andantino grazioso",
    "haydn/opus74no1/movement3.mxl": "Menuetto: Allegretto", "haydn/opus74no1/movement4.mxl": "Vivace",
    "mozart/k155/movement1.mxl": "Allegro", "mozart/k155/movement2.mxl": "Andante",
    "mozart/k155/movement3.mxl": "Molto allegro", "mozart/k458/movement2.mxl": "Menuetto: Moderato",
    "mozart/k458/movement3.mxl": "Adagio", "mozart/k458/movement4.mxl": "Allegro assai",
    "mozart/k80/movement1.mxl": "Adagio", "mozart/k80/movement2.mxl": "Allegro",
    "mozart/k80/movement3.mxl": "Menuetto", "mozart/k80/movement4.mxl": "Rondeau: Allegro",
}
ESSEN_FUNCTIONS = (
    ("kinder", "children's song"), ("wiegen", "lullaby"), ("liebe", "love song"), ("ballade", "ballad"),
    ("romanze", "romance"), ("tanz", "dance song"), ("reigen", "round dance"), ("soldaten", "soldier's song"),
    ("kriegs", "war song"), ("religi", "sacred song"), ("geistlich", "sacred song"), ("trink", "drinking song"),
    ("arbeit", "work song"), ("klage", "lament"), ("xiaodiao", "xiaodiao"), ("shange", "shan'ge"),
    ("haozi", "work song"), ("weihnacht", "christmas song"), ("jaeger", "hunting song"),
)
ESSEN_PLACES = {
    "deutschland": "Germany", "luxemburg": "Luxembourg", "lothringen": "Lorraine", "irland": "Ireland",
    "oesterreich": "Austria", "schweiz": "Switzerland", "niederlande": "the Netherlands", "ungarn": "Hungary",
    "jugoslawien": "Yugoslavia", "polen": "Poland", "frankreich": "France", "elsass": "Alsace",
    "boehmen": "Bohemia", "schlesien": "Silesia", "china": "China", "daenemark": "Denmark",
    "schweden": "Sweden", "russland": "Russia", "rumaenien": "Romania",
}
_PART_PROGRAMS = (  # part-name words -> (General MIDI program, instrument tag); first match wins
    (("violoncell", "cello"), (42, "cello")), (("viola",), (41, "viola")), (("violin", "violino"), (40, "violin")),
    (("violone", "contrabass", "kontrabass"), (43, "double bass")), (("clarinet", "klarinette"), (71, "clarinet")),
    (("organ", "organo"), (19, "organ")), (("harpsichord", "cembalo"), (6, "harpsichord")),
    (("flute", "flauto"), (73, "flute")), (("horn",), (60, "french horn")), (("piano", "klavier"), (0, "piano")),
)
_VOICE_WORDS = ("soprano", "alto", "tenor", "bass", "canto", "quinto", "cantus", "contratenor", "voice",
                "choir", "gesang", "triplum", "motetus", "superius", "solo")


def corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


@dataclass(frozen=True)
class AbcTune:
    number: int
    title: str
    rhythm: str = ""
    composer: str = ""
    origin: str = ""


def abc_tunes(text: str) -> list[AbcTune]:
    """The tunes of an ABC file (reference number, first title, R:, C: and O: fields), without parsing music."""
    tunes = []
    for block in re.split(r"(?m)^(?=X:)", text):
        number = re.match(r"X:\s*(\d+)", block)
        if not number:
            continue
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if m := re.match(r"([TRCO]):\s*(.*)", line):
                fields.setdefault(m.group(1), m.group(2).strip())
        tunes.append(AbcTune(int(number.group(1)), fields.get("T", ""), fields.get("R", ""),
                             fields.get("C", ""), fields.get("O", "")))
    return tunes


def dance_kind(text: str) -> str:
    """The dance-tune type named in a title or ABC ``R:`` field ("7th Regiment -- Reel" -> "reel")."""
    t = re.sub(r"[^a-z ]+", " ", text.lower().replace("slipjig", "slip jig"))
    return next((kind for kind in DANCE_TEMPI if re.search(rf"\b{kind}s?\b", t)), "")


def split_tune_title(title: str) -> tuple[str, str]:
    """``"Flowing Tide, The -- REEL."`` -> ``("The Flowing Tide", "reel")``."""
    name, _, rest = title.partition("--")
    kind = dance_kind(rest) or dance_kind(name)
    name = name.strip(" .")
    if m := re.match(r"(.+),\s*(The|A|An)$", name, re.I):
        name = f"{title_case(m.group(2))} {m.group(1)}"
    if name.isupper():
        name = title_case(name)
    return name, kind


def tune_composer(text: str) -> str:
    """An ABC ``C:`` field as a credit, or "Traditional" when it names nobody."""
    t = re.sub(r"\s*[%(].*$", "", text).strip(" .")
    if not re.search(r"[A-Za-z]{3}", t) or re.search(r"\b(trad|unknown|anon|jig|reel)\b", t, re.I):
        return "Traditional"
    return title_case(t) if t.isupper() else t


def essen_facts(origin: str, function: str, stem: str) -> tuple[str, list[str]]:
    """Where an Essen folk song comes from and its English function words ("ballad", "lullaby")."""
    place = "China" if stem.startswith("han") else ""
    for part in reversed(re.split(r"[,;/]", origin.lower())):
        words = re.sub(r"[^a-z]", "", part)
        if words in ESSEN_PLACES:
            place = ESSEN_PLACES[words]
            break
    squeezed = re.sub(r"[^a-z]", "", function.lower())
    kinds = unique_tags(tag for word, tag in ESSEN_FUNCTIONS if word in squeezed)
    return place, kinds


def _corpus_files(folder: str, pattern: str) -> list[str]:
    root = corpus_root()
    return sorted(p.relative_to(root).as_posix() for p in (root / folder).glob(pattern) if p.is_file())


def _interleave(groups: Sequence[list[WorkRef]], rng: random.Random) -> list[WorkRef]:
    """Shuffle each group and the groups' order, then take one from each in turn: variety first."""
    shuffled = [rng.sample(g, len(g)) for g in groups if g]
    rng.shuffle(shuffled)
    out = []
    for i in range(max((len(g) for g in shuffled), default=0)):
        out.extend(g[i] for g in shuffled if i < len(g))
    return out


def list_candidates(collection: Collection, seed: int = SEED) -> list[WorkRef]:
    """The collection's works in the seeded order they are tried in."""
    rng = random.Random(f"{seed}:{collection.key}")
    if collection.works:
        return rng.sample(list(collection.works), len(collection.works))
    key, root = collection.key, corpus_root()
    if key == "bach-chorales":
        paths = [p for p in _corpus_files("bach", "bwv*.mxl") if re.fullmatch(r"bach/bwv\d+(\.\d+)?\.mxl", p)]
        return rng.sample([WorkRef(p) for p in paths], len(paths))
    if key in ("oneills", "ryans-mammoth"):
        folder = "oneills1850" if key == "oneills" else "ryansMammoth"
        groups = []
        for path in _corpus_files(folder, "*.abc"):
            refs = []
            for tune in abc_tunes((root / path).read_text(encoding="utf-8", errors="replace")):
                name, kind = split_tune_title(tune.title)
                kind = dance_kind(tune.rhythm) or kind
                if name:
                    refs.append(WorkRef(path, tune.number, title=name, kind=kind, artist=tune_composer(tune.composer)))
            groups.append(refs)
        if key == "ryans-mammoth":      # one tune a file: interleave by dance type instead
            by_kind: dict[str, list[WorkRef]] = {}
            for ref in (r for g in groups for r in g):
                by_kind.setdefault(ref.kind, []).append(ref)
            groups = [by_kind[k] for k in sorted(by_kind)]
        return _interleave(groups, rng)
    if key == "essen-folksongs":
        groups = []
        for path in _corpus_files("essenFolksong", "*.abc"):
            stem = Path(path).stem
            if stem.startswith(("test", "variant")):
                continue
            refs = []
            for tune in abc_tunes((root / path).read_text(encoding="utf-8", errors="replace")):
                place, kinds = essen_facts(tune.origin, tune.rhythm, stem)
                if clean_title(tune.title):
                    refs.append(WorkRef(path, tune.number, title=tune.title, place=place,
                                        kind=kinds[0] if kinds else "", tags=tuple(kinds)))
            groups.append(refs)
        return _interleave(groups, rng)
    if key == "string-quartets":
        refs = [WorkRef(p, tempo=QUARTET_TEMPI.get(p, "")) for folder in QUARTETS
                for p in _corpus_files(folder, "movement*.mxl")]
        composers = ("beethoven", "haydn", "mozart", "schumann")
        return _interleave([[r for r in refs if r.path.startswith(c)] for c in composers], rng)
    if key == "monteverdi-madrigals":
        refs = [WorkRef(p) for p in _corpus_files("monteverdi", "madrigal.*.mxl")]
        refs.append(WorkRef("lusitano/allor_che_ignuda.mxl", title="Allor che ignuda d'herb et fior la terra",
                            artist="Vicente Lusitano", album="Madrigals", blurb="a three-voice madrigal"))
        return rng.sample(refs, len(refs))
    if key == "palestrina-masses":
        paths = _corpus_files("palestrina", "*.krn")
        by_movement: dict[str, list[WorkRef]] = {}
        for p in paths:
            by_movement.setdefault(Path(p).stem.split("_")[0], []).append(WorkRef(p))
        return _interleave(list(by_movement.values()), rng)
    if key == "trecento":
        refs = [WorkRef(p) for p in _corpus_files("trecento", "*.xml")]
        refs += [WorkRef("luca/gloria.xml", title="Gloria (Q15)", artist="D. Luca", blurb="a mass movement"),
                 WorkRef("ciconia/quod_jactatur.xml", title="Quod jactatur", artist="Johannes Ciconia",
                         blurb="a canon")]
        return rng.sample(refs, len(refs))
    raise ValueError(f"no works listed for collection {collection.key!r}")


@dataclass
class ScoreFacts:
    """What a score says about itself. Strings are empty when the score is silent."""

    title: str = ""
    movement: str = ""
    composer: str = ""
    parent_title: str = ""
    year: str = ""
    key: str = ""               # analysed key, "G major"
    mode: str = ""
    key_signature: str = ""     # "1 sharp"
    meter: str = ""             # "3/4"
    beat_ql: float = 1.0        # quarter notes per beat of the meter
    qpm: float | None = None    # quarter notes per minute from a metronome mark
    tempo_text: str = ""
    lyrics: str = ""
    part_names: list[str] = field(default_factory=list)
    quarter_length: float = 0.0


def key_name(k: Any) -> str:
    """A music21 Key as text: ``"Bb major"``, ``"F# minor"``."""
    return f"{k.tonic.name.replace('-', 'b')} {k.mode}"


def clean_lyrics(text: str) -> str:
    """Join hyphenated syllables, drop soft hyphens and a leading verse number, collapse spaces."""
    t = re.sub(r"\xad\s*", "", text).replace("\xa0", " ").replace("‿", " ")   # soft hyphens split syllables
    t = re.sub(r"(\w)-+\s+(?=\w)", r"\1", t)
    t = re.sub(r"ú\s+", "", t)             # the Monteverdi files mark a split syllable with "ú"
    t = re.sub(r"^\s*\d+\.\s*", "", t)
    return " ".join(t.split())


def lyrics_look_clean(text: str) -> bool:
    """False for lyrics mangled by optical recognition ("d'erbe noveile;_g dino-~- vei-l[gmozi")."""
    words = text.split()
    clean = sum(bool(re.fullmatch(r"[(\"'“‘]?[^\W\d_]+(['’-][^\W\d_]+)*[)\"'”’]?[,.;:!?]*", w)) for w in words)
    return bool(words) and clean >= 0.9 * len(words)


def incipit(lyrics: str, min_words: int = 3, max_words: int = 6) -> str:
    """The opening words of a text, as hymns are named: up to a punctuation mark after ``min_words``."""
    out: list[str] = []
    for word in lyrics.split()[:max_words]:
        out.append(word)
        if len(out) >= min_words and re.search(r"[,.;:!?]$", word):
            break
    return " ".join(out).rstrip(",.;:!?")


def score_facts(score: Any) -> ScoreFacts:
    """Title, composer, key, meter, tempo and lyrics of a music21 Score.

    The key is analysed from the notes (Krumhansl-Schmuckler via ``analyze('key')``);
    the key signature, meter and metronome mark are the first ones written; lyrics
    are the first verse of the first part that has any.
    """
    from music21 import expressions, key, meter, tempo, text

    facts = ScoreFacts()
    fields = dict(score.metadata.all()) if score.metadata is not None else {}
    facts.title = str(fields.get("title", "") or "")
    facts.movement = str(fields.get("movementName", "") or "")
    facts.composer = str(fields.get("composer", "") or "")
    facts.parent_title = str(fields.get("parentTitle", "") or "")
    facts.year = year_from(fields.get("dateCreated"))
    try:
        facts.key = key_name(score.analyze("key"))
        facts.mode = facts.key.split()[-1]
    except Exception:                       # atonal or empty scores have no key to find
        pass
    signature = score.recurse().getElementsByClass(key.KeySignature).first()
    if signature is not None:
        n = signature.sharps
        facts.key_signature = ("no sharps or flats" if n == 0 else
                               f"{abs(n)} {'sharp' if n > 0 else 'flat'}{'s' if abs(n) > 1 else ''}")
    ts = score.recurse().getElementsByClass(meter.TimeSignature).first()
    if ts is not None:
        facts.meter = ts.ratioString
        facts.beat_ql = float(ts.beatDuration.quarterLength) or 1.0
    for mark in score.recurse().getElementsByClass(tempo.TempoIndication):
        if isinstance(mark, tempo.MetronomeMark) and mark.number and facts.qpm is None:
            facts.qpm = float(mark.getQuarterBPM())
        label = getattr(mark, "text", None)
        if label and not facts.tempo_text:
            facts.tempo_text = str(label)
        if facts.qpm is not None and facts.tempo_text:
            break
    if not facts.tempo_text:             # many editions write "Allegro" as plain text
        for i, words in enumerate(score.recurse().getElementsByClass(expressions.TextExpression)):
            if tempo_word(str(words.content)) or i >= 40:
                facts.tempo_text = str(words.content) if tempo_word(str(words.content)) else ""
                break
    parts = list(score.parts) or [score]
    facts.part_names = [str(p.partName or "") for p in parts]
    for part in parts:
        words = clean_lyrics(text.assembleLyrics(part) or "")
        if len(words.split()) > 3:
            facts.lyrics = words if lyrics_look_clean(words) else ""
            break
    facts.quarter_length = float(score.highestTime)
    return facts


def part_programs(part_names: Sequence[str], collection: Collection, choice: tuple[int, str]) -> list[tuple[int, str]]:
    """A (General MIDI program, instrument tag) per part.

    Collections that go ``by_part`` read the part names (violin, viola, cello, piano,
    voices, ...); the others play every part on the work's chosen instrument.
    """
    if not collection.by_part:
        return [choice] * max(len(part_names), 1)
    names = [n.lower() for n in part_names] or [""]
    voices = [any(w in n for w in _VOICE_WORDS) and not any(w in n for w in ("contrabass", "clarinet"))
              for n in names]
    out = []
    for name, is_voice in zip(names, voices):
        found = next((prog for words, prog in _PART_PROGRAMS if any(w in name for w in words)), None)
        if found is None and is_voice:
            found = VOICE if sum(voices) == 1 else CHOIR
        out.append(found or choice)
    return out


def tempo_word(text: str) -> str:
    """The tempo word that comes first in ``text`` ("Andante con moto quasi Allegretto" -> "andante")."""
    low = text.lower()
    found = [(m.start(), -len(w), w) for w in TEMPO_WORDS if (m := re.search(rf"\b{w}\b", low))]
    return min(found)[2] if found else ""


def beat_scale(meter: str, beat_ql: float) -> float:
    """How a tempo word's pulse maps to the meter's beat: slower beats for compound and alla-breve meters."""
    if meter == "3/8":                  # one beat to the bar
        return 0.6
    return {0.5: 1.5, 1.0: 1.0, 1.5: 0.75, 2.0: 0.6, 3.0: 0.5}.get(beat_ql, 1.0)


def choose_bpm(facts: ScoreFacts, collection: Collection, work: WorkRef, rng: random.Random) -> tuple[float, str]:
    """Tempo in beats of the meter per minute, and where it came from ("score", "tempo word", "genre").

    In order: the score's metronome mark; a tempo word in the score or the edition
    (scaled to the meter's beat); the dance type's usual range; the collection's range.
    """
    if facts.qpm:
        return facts.qpm / facts.beat_ql, "score"
    word = tempo_word(facts.tempo_text) or tempo_word(work.tempo)
    if word:
        return TEMPO_WORDS[word] * beat_scale(facts.meter, facts.beat_ql), "tempo word"
    if work.kind in DANCE_TEMPI:
        lo, hi, unit = DANCE_TEMPI[work.kind]
        value = rng.randint(lo, hi)
        return (value / facts.beat_ql if unit == "q" else float(value)), "genre"
    return rng.randint(*collection.bpm) * beat_scale(facts.meter, facts.beat_ql), "genre"


def work_description(work: WorkRef, collection: Collection, facts: ScoreFacts) -> dict[str, str]:
    """Title, artist, album, year and a blurb for one work, from what is known before and after parsing."""
    stem = Path(work.path).stem
    title, artist, album, year = work.title, work.artist or collection.artist, work.album or collection.album, work.year
    blurb = work.blurb or collection.blurb
    folder = str(PurePosixPath(work.path).parent)
    if collection.key == "bach-chorales":
        number = re.sub(r"^bwv", "", stem)
        opening = incipit(facts.lyrics)
        title = f"{opening} (BWV {number})" if len(opening) >= 4 else f"Chorale, BWV {number}"
    elif collection.key == "string-quartets" and folder in QUARTETS:
        artist, album, year, _ = QUARTETS[folder]
        movement = re.sub(r"\D", "", stem) or "1"
        title = f"{album}: movement {movement}"
    elif collection.key == "monteverdi-madrigals" and (m := re.fullmatch(r"madrigal\.(\d+)\.(\d+)", stem)):
        book, number = m.groups()
        numbered = [facts.composer] if re.match(r"^\d+\.\s", facts.composer) else []
        found = next((t for t in map(clean_title, [facts.title, facts.movement, *numbered]) if t), "")
        title = found or f"Madrigal, Book {book} No. {number}"
        album, year = f"Madrigals, Book {book}", MONTEVERDI_BOOKS.get(book, "")
    elif collection.key == "palestrina-masses":
        movement = title_from_filename(stem.split("_")[0])          # Kyrie, Gloria, Credo, ...
        part = clean_title(facts.title)
        part = part if part.lower().startswith(movement.lower()) else f"{movement} ({part})" if part else movement
        album = clean_title(facts.parent_title) or "Masses"
        title = f"{part}, from {album}"
    elif collection.key == "essen-folksongs":
        if work.place:
            blurb = with_article(f"{work.kind or 'folk song'} collected in {work.place}")
    elif collection.key in ("oneills", "ryans-mammoth") and work.kind:
        origin = "Irish" if collection.key == "oneills" else "traditional"
        blurb = with_article(f"{origin} {work.kind}") + (" from O'Neill's Music of Ireland (1903)" if collection.key == "oneills"
                                             else " from Ryan's Mammoth Collection (Boston, 1883)")
    if not title:
        title = next((t for t in map(clean_title, [facts.title, facts.movement]) if t), "") \
            or title_from_filename(re.sub(r"^PMFC_[\d_]+-(\w+-\d+\w?[-_])?", "", stem))
    if not artist:
        first = facts.composer.splitlines()[0].strip() if facts.composer else ""
        first = re.sub(r"\s*\(.*\)$", "", first)
        artist = "Anonymous" if not first or first.lower().startswith("anon") else first
    return {"title": clean_title(title) or title, "artist": artist, "album": album or collection.playlist,
            "year": year or facts.year, "blurb": blurb}


def work_tags(work: WorkRef, collection: Collection, facts: ScoreFacts, programs: Sequence[tuple[int, str]]) -> list[str]:
    """Genre words, instruments, "vocal" when voices sing it, and the key and meter."""
    tags = [*collection.tags, *work.tags]
    if work.kind:
        tags.append(work.kind)
        if work.kind in DANCE_TEMPI and work.kind not in ("air", "march"):
            tags += ["dance tune"] + (["jig"] if work.kind == "slip jig" else [])
        if work.kind == "air":
            tags.append("slow air")
    if work.place:
        tags.append(work.place.lower().removeprefix("the "))
    folder = str(PurePosixPath(work.path).parent)
    if folder in QUARTETS:
        tags.append(QUARTETS[folder][3])
    if collection.key == "bach-chorales":
        tags.append("classical")
    tags += [name for _, name in programs]
    if any(p in _VOCAL_PROGRAMS for p, _ in programs):
        tags.append("vocal")
    else:
        tags.append("instrumental")
    if facts.key and "atonal" not in tags:
        tags += [facts.key, facts.mode]
    if facts.meter:
        tags.append(f"{facts.meter} time")
    return unique_tags(tags)


@dataclass(frozen=True)
class RenderJob:
    """Everything a worker process needs to render one work into ``ogg``."""

    work: WorkRef
    collection: Collection
    ogg: str
    render_seconds: float
    soundfont: str
    seed: int = SEED


def render_work(job: RenderJob) -> dict[str, Any]:
    """Parse, describe and render one work; write ``<ogg>`` and ``<ogg>.json``.

    Returns the metadata (``ok`` True) or the reason it failed (``ok`` False). Both
    are written beside the audio so a later run reuses them without parsing again.
    """
    ogg = Path(job.ogg)
    ogg.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = {"ok": True, **_render(job, ogg)}
    except Exception as err:                # any bad score is skipped and replaced by the next one
        result = {"ok": False, "reason": f"{type(err).__name__}: {err}"[:300], "spec": job.work.spec}
    ogg.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    return result


def _render(job: RenderJob, ogg: Path) -> dict[str, Any]:
    warnings.filterwarnings("ignore")
    from music21 import corpus, stream

    work, collection = job.work, job.collection
    score = corpus.parse(work.path, number=work.number) if work.number is not None else corpus.parse(work.path)
    if isinstance(score, stream.Opus):
        score = score.scores[0]
    facts = score_facts(score)
    rng = random.Random(f"{job.seed}:{work.spec}")
    programs = part_programs(facts.part_names, collection, rng.choice(collection.programs))
    bpm, tempo_source = choose_bpm(facts, collection, work, rng)
    info = work_description(work, collection, facts)
    try:
        score = score.expandRepeats()
    except Exception:                       # badly nested repeats: play it once, as written
        strip_repeats(score)
    with tempfile.TemporaryDirectory(prefix="tonearm-render-") as tmp:
        midi = Path(tmp) / "score.mid"
        score_to_midi(score, midi, programs, None if tempo_source == "score" else bpm * facts.beat_ql)
        seconds = fit_midi(midi, midi, job.render_seconds, collection.loop_seconds)
        wav = Path(tmp) / "render.wav"
        render_midi(midi, wav, job.soundfont)
        import soundfile as sf

        audio, rate = sf.read(wav, always_2d=True, dtype="float32")
        audio = finish_audio(audio, rate, job.render_seconds)
        duration = len(audio) / rate
        if duration < MIN_TRACK_SECONDS:
            raise ValueError(f"only {duration:.1f} s long")
        partial = Path(tmp) / "render.ogg"
        write_ogg(partial, audio, rate)
        instruments = unique_tags(name for _, name in programs)
        tags = work_tags(work, collection, facts, programs)
        meta = {
            "title": info["title"], "artist": info["artist"], "album": info["album"], "year": info["year"],
            "tags": tags, "lyrics": facts.lyrics,
            "description": music21_description({**info, "tags": tags}, facts, instruments, bpm,
                                               truncated=seconds > job.render_seconds),
            "source": f"music21:{collection.key}", "work": work.spec, "duration_s": round(duration, 2),
            "tempo_bpm": round(bpm, 1), "tempo_from": tempo_source, "key": facts.key,
            "key_signature": facts.key_signature, "meter": facts.meter, "instruments": instruments,
        }
        write_ogg_tags(partial, {
            "title": meta["title"], "artist": meta["artist"], "composer": meta["artist"], "album": meta["album"],
            "date": meta["year"], "genre": [t for t in tags if t in collection.tags + work.tags] or list(collection.tags[:1]),
            "lyrics": facts.lyrics, "description": meta["description"], "bpm": str(round(bpm)),
            "initialkey": facts.key,
        })
        shutil.move(str(partial), ogg)
    return meta


def strip_repeats(score: Any) -> None:
    """Remove repeat barlines, brackets and marks (music21's MIDI writer would try to expand them)."""
    from music21 import bar, repeat, spanner, stream

    for measure in score.recurse().getElementsByClass(stream.Measure):
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = None
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = bar.Barline("regular")
    for mark in list(score.recurse().getElementsByClass((repeat.RepeatMark, spanner.RepeatBracket))):
        for site in list(mark.sites.get()):
            if isinstance(site, stream.Stream) and mark in site:
                site.remove(mark)
    for bracket in list(score.spannerBundle.getByClass(spanner.RepeatBracket)):
        score.spannerBundle.remove(bracket)


def music21_description(info: dict[str, str], facts: ScoreFacts, instruments: Sequence[str], bpm: float,
                        truncated: bool) -> str:
    """One sentence from the facts: what the work is, its key, meter, instruments and tempo."""
    where = []
    if facts.key and "atonal" not in info.get("tags", ()):
        where.append(facts.key)
    if facts.meter:
        where.append(f"{facts.meter} time")
    played = " and ".join(instruments) if instruments else "General MIDI instruments"
    year = f" ({info['year']})" if info["year"] else ""
    setting = f", in {' and '.join(where)}" if where else ""
    sentence = (f"{info['title']} by {info['artist']}{year}: {info['blurb']}{setting}, "
                f"rendered for {played} at about {round(bpm)} beats per minute")
    return sentence + (" (the opening only)." if truncated else ".")


def score_to_midi(score: Any, path: Path, programs: Sequence[tuple[int, str]], qpm: float | None) -> None:
    """Write ``score`` as MIDI with one General MIDI program per part and, if given, a tempo."""
    from music21 import instrument, tempo

    parts = list(score.parts) or [score]
    for part, (program, name) in zip(parts, list(programs) + [programs[-1]] * len(parts)):
        for sub in [part, *part.recurse(streamsOnly=True)]:
            sub.removeByClass(instrument.Instrument)
        new = instrument.Instrument()
        new.midiProgram = program
        new.instrumentName = name
        part.insert(0, new)
    if qpm is not None:
        for sub in [score, *score.recurse(streamsOnly=True)]:
            sub.removeByClass(tempo.TempoIndication)
        parts[0].insert(0, tempo.MetronomeMark(number=round(qpm, 2)))
    score.write("midi", fp=str(path))


def fit_midi(src: Path, dst: Path, seconds: float, loop_seconds: float = 0.0) -> float:
    """Repeat a short tune (at most three passes) up to ``loop_seconds``, then cut at ``seconds``.

    Returns the length in seconds before the cut.
    """
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(str(src))
    end = pm.get_end_time()
    if end <= 0 or not any(inst.notes for inst in pm.instruments):
        raise ValueError("the score has no notes")
    if loop_seconds and end < loop_seconds:
        passes = min(3, math.ceil(loop_seconds / end))
        for inst in pm.instruments:
            first = list(inst.notes)
            for k in range(1, passes):
                inst.notes.extend(pretty_midi.Note(n.velocity, n.pitch, n.start + k * end, n.end + k * end)
                                  for n in first)
        end *= passes
    last = 0.0
    for inst in pm.instruments:
        inst.notes = [n for n in inst.notes if n.start < seconds]
        for n in inst.notes:
            n.end = min(n.end, seconds)
        inst.control_changes = [c for c in inst.control_changes if c.time < seconds]
        inst.pitch_bends = [b for b in inst.pitch_bends if b.time < seconds]
        last = max([last, *(n.end for n in inst.notes)])
    # FluidSynth 2.3 can keep a sustained voice (organ, choir, recorder) alive forever and
    # never finish a render; "all notes off" and "all sound off" once the music is over end it.
    for inst in pm.instruments:
        inst.control_changes += [pretty_midi.ControlChange(123, 0, last + 1.5),
                                 pretty_midi.ControlChange(120, 0, last + 2.5)]
    pm.lyrics = [e for e in pm.lyrics if e.time < seconds]
    pm.text_events = [e for e in pm.text_events if e.time < seconds]
    pm.write(str(dst))
    return end


def find_soundfont() -> Path | None:
    """The General MIDI soundfont to render with: ``$TONEARM_SOUNDFONT`` or a Debian one."""
    for candidate in (os.environ.get("TONEARM_SOUNDFONT"), *SOUNDFONTS):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def fluidsynth_ready(install: bool = True) -> tuple[Path | None, str]:
    """The soundfont when FluidSynth can render here, else None and one line saying what to install.

    With ``install`` and root, missing pieces are installed with apt-get first.
    """
    if (shutil.which("fluidsynth") is None or find_soundfont() is None) and install and _is_root() \
            and shutil.which("apt-get"):
        _say("installing fluidsynth and fluid-soundfont-gm with apt-get ...")
        if _run(["apt-get", "install", "-y", "-qq", "fluidsynth", "fluid-soundfont-gm"]).returncode != 0:
            _apt_update_once()
            _run(["apt-get", "install", "-y", "-qq", "fluidsynth", "fluid-soundfont-gm"])
    if shutil.which("fluidsynth") is None:
        return None, ("FluidSynth is not installed, so the music21 scores cannot be rendered: "
                      "install it with `sudo apt-get install fluidsynth fluid-soundfont-gm`.")
    soundfont = find_soundfont()
    if soundfont is None:
        return None, ("No General MIDI soundfont found: install one with `sudo apt-get install fluid-soundfont-gm` "
                      "or point TONEARM_SOUNDFONT at an .sf2 file.")
    return soundfont, ""


def render_midi(midi: Path, wav: Path, soundfont: str | Path) -> None:
    """Render MIDI to a WAV file with the FluidSynth command line."""
    result = _run(["fluidsynth", "-ni", "-q", "-F", str(wav), "-r", str(SAMPLE_RATE), str(soundfont), str(midi)],
                  timeout=120)
    if result.returncode != 0 or not wav.exists() or wav.stat().st_size < 1000:
        raise RuntimeError(f"fluidsynth failed: {(result.stderr or result.stdout).strip()[-200:]}")


def finish_audio(audio: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """Trim silence at both ends, cut at ``seconds`` with a two-second fade, and peak-normalise."""
    level = np.abs(audio).max(axis=1)
    peak = float(level.max()) if len(level) else 0.0
    if peak <= 0:
        raise ValueError("the render is silent")
    loud = np.flatnonzero(level > peak * 1e-3)
    out = audio[loud[0]: loud[-1] + 1 + int(0.5 * rate)].copy()
    limit = int(seconds * rate)
    if len(out) > limit:
        out = out[:limit]
        fade = min(len(out), int(2.0 * rate))
        out[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    return (out * (0.89 / peak)).astype(np.float32)


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


def allocate(total: int, weights: dict[str, float], capacity: dict[str, int]) -> dict[str, int]:
    """Split ``total`` across groups in proportion to ``weights``, never above ``capacity``.

    Largest-remainder rounding; what a full group cannot take goes to the others.
    The result sums to ``min(total, sum(capacity))``.
    """
    if total < 0 or any(w < 0 for w in weights.values()):
        raise ValueError("total and weights must not be negative")
    out = {k: 0 for k in weights}
    remaining = min(total, sum(capacity.get(k, 0) for k in weights))
    while remaining > 0:
        open_ = [k for k in weights if out[k] < capacity.get(k, 0) and weights[k] > 0] \
            or [k for k in weights if out[k] < capacity.get(k, 0)]
        norm = sum(weights[k] for k in open_) or float(len(open_))
        shares = {k: remaining * (weights[k] or 1.0) / norm for k in open_}
        floors = {k: int(math.floor(shares[k])) for k in open_}
        leftover = remaining - sum(floors.values())
        for k in sorted(open_, key=lambda k: (shares[k] - floors[k], weights[k]), reverse=True)[:leftover]:
            floors[k] += 1
        given = 0
        for k in open_:
            take = min(floors[k], capacity[k] - out[k])
            out[k] += take
            given += take
        remaining -= given
        if given == 0:
            break
    return out


def music21_target(game_tracks: int, max_music21: int) -> int:
    """How many corpus works to render so the catalog reaches :data:`MIN_TRACKS` (plus a margin for failures)."""
    if max_music21 < 0:
        raise ValueError("max_music21 must not be negative")
    if game_tracks >= MIN_TRACKS:
        return max_music21
    return max(max_music21, MIN_TRACKS - game_tracks + 10)


def _render_path(cache: Path, collection: Collection, work: WorkRef, render_seconds: float, soundfont: Path) -> Path:
    digest = hashlib.sha1(f"{work.spec}|{collection.key}|{render_seconds}|{soundfont.name}|{SEED}|"
                          f"{RENDER_VERSION}".encode()).hexdigest()[:10]
    return cache / "renders" / collection.key / f"{work.slug}-{digest}.ogg"


def collect_music21_tracks(cache: Path, count: int, render_seconds: float, report: DemoLibraryReport,
                           progress: bool, collections: Sequence[Collection] | None = None) -> list[LibraryTrack]:
    """Choose ``count`` corpus works across the collections, render those not cached, and return them.

    Works that fail (no notes, too short, unparsable) are replaced by the next
    candidate of the same collection; a collection that runs out hands its share to
    the one with most candidates left.
    """
    collections = list(collections if collections is not None else COLLECTIONS)
    if count <= 0 or not collections:
        return []
    soundfont, why = fluidsynth_ready()
    if soundfont is None:
        report.warnings.append(why)
        _say(why)
        return []
    candidates = {c.key: list_candidates(c) for c in collections}
    need = allocate(count, {c.key: c.weight for c in collections}, {k: len(v) for k, v in candidates.items()})
    by_key = {c.key: c for c in collections}
    position = {c.key: 0 for c in collections}
    done: dict[str, list[tuple[int, Path, dict]]] = {c.key: [] for c in collections}
    failures: list[str] = []
    pool: ProcessPoolExecutor | None = None
    bar = tqdm(total=sum(need.values()), desc="rendering scores", unit="work", disable=not progress)
    try:
        while True:
            jobs: list[tuple[str, int, RenderJob]] = []
            for key in list(need):
                collection = by_key[key]
                while need[key] - len(done[key]) - sum(1 for k, _, _ in jobs if k == key) > 0:
                    if position[key] >= len(candidates[key]):
                        break
                    index = position[key]
                    position[key] += 1
                    work = candidates[key][index]
                    ogg = _render_path(cache, collection, work, render_seconds, soundfont)
                    sidecar = ogg.with_suffix(".json")
                    cached = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else None
                    if cached is not None and (not cached.get("ok") or ogg.exists()):
                        if cached.get("ok"):
                            done[key].append((index, ogg, cached))
                            report.reused["renders"] += 1
                            bar.update(1)
                        continue
                    jobs.append((key, index, RenderJob(work, collection, str(ogg), render_seconds, str(soundfont))))
            # a collection out of candidates hands what it still owes to the one with most left
            for key in need:
                owed = need[key] - len(done[key]) - sum(1 for k, _, _ in jobs if k == key)
                if owed > 0 and position[key] >= len(candidates[key]):
                    richest = max(need, key=lambda k: len(candidates[k]) - position[k])
                    if richest != key and len(candidates[richest]) > position[richest]:
                        need[key] -= owed
                        need[richest] += owed
            if not jobs:
                if all(need[k] <= len(done[k]) or position[k] >= len(candidates[k]) for k in need):
                    break
                continue
            if RENDER_WORKERS > 1 and len(jobs) > 1 and pool is None:
                # fork: workers need only music21 and FluidSynth, and callers need no __main__ guard
                method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
                pool = ProcessPoolExecutor(max_workers=RENDER_WORKERS, mp_context=multiprocessing.get_context(method))
            outcomes: Iterable[tuple[tuple[str, int, RenderJob], dict]]
            if pool is not None:
                futures = {pool.submit(render_work, job): (key, index, job) for key, index, job in jobs}
                outcomes = ((futures[f], f.result()) for f in as_completed(futures))
            else:
                outcomes = (((key, index, job), render_work(job)) for key, index, job in jobs)
            for (key, index, job), result in outcomes:
                if result.get("ok"):
                    done[key].append((index, Path(job.ogg), result))
                    report.rendered += 1
                    bar.update(1)
                else:
                    failures.append(f"{job.work.spec}: {result.get('reason')}")
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    if failures:
        report.warnings.append(f"{len(failures)} corpus works could not be rendered and were replaced "
                               f"(first: {failures[0]}).")
    tracks = []
    for key, items in done.items():
        collection = by_key[key]
        for index, ogg, meta in sorted(items, key=lambda item: item[0])[: need[key]]:
            slug = candidates[key][index].slug
            fields = {k: v for k, v in meta.items() if k != "ok"}
            tracks.append(LibraryTrack(ogg, f"music21/{key}/{slug}.ogg", {"id": f"m21-{slug}", **fields},
                                       [collection.playlist]))
    return tracks


# --------------------------------------------------------------------------- assembling the folder

MIX_TAGS = ("orchestral", "electronic", "ambient", "rock", "metal", "folk", "dance tune", "reel", "jig", "hornpipe",
            "chorale", "vocal", "piano", "strings", "baroque", "classical", "romantic", "renaissance", "medieval",
            "sacred", "sci-fi", "fantasy", "minor")
MIX_SIZE = 40


def build_playlists(tracks: Sequence[LibraryTrack], seed: int = SEED) -> dict[str, list[int]]:
    """Playlist name -> track indices.

    Each track's own playlists (its package, world or collection), every album of
    three or more tracks, and a mix for each genre tag in :data:`MIX_TAGS` that five
    or more tracks share (at most :data:`MIX_SIZE`, chosen and ordered with a seed so
    the mix crosses sources). A playlist with the same tracks as an earlier one is dropped.
    """
    named: dict[str, list[int]] = {}
    for i, track in enumerate(tracks):
        for name in track.playlists:
            named.setdefault(name, []).append(i)
    albums: dict[str, list[int]] = {}
    for i, track in enumerate(tracks):
        if track.meta.get("album"):
            albums.setdefault(track.meta["album"], []).append(i)
    for album, members in albums.items():
        if len(members) >= 3 and album not in named:
            named[album] = members
    for tag in MIX_TAGS:
        members = [i for i, t in enumerate(tracks) if tag in t.meta.get("tags", [])]
        if len(members) >= 5:
            rng = random.Random(f"{seed}:mix:{tag}")
            named[f"{title_case(tag)} mix"] = rng.sample(members, min(MIX_SIZE, len(members)))
    out: dict[str, list[int]] = {}
    seen: set[frozenset[int]] = set()
    for name, members in named.items():
        key = frozenset(members)
        if key not in seen:
            seen.add(key)
            out[name] = members
    return out


def playlist_filename(name: str) -> str:
    """A file name that reads as the playlist's name (readers take the name from the stem)."""
    safe = " ".join(re.sub(r'[\\/:*?"<>|\x00-\x1f]+', " - ", name).split()).strip(" .-")
    return (safe or slugify(name))[:120]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)                   # same disk as the cache: no copy at all
    except OSError:
        shutil.copy2(src, dst)


def write_library(root: Path, tracks: Sequence[LibraryTrack], playlists: dict[str, list[int]]) -> None:
    """Write the library folder: audio, ``metadata.jsonl``, ``playlists/*.m3u``.

    It is written to a hidden sibling folder and renamed into place; an earlier demo
    library at ``root`` is replaced. A non-empty folder that is not a demo library
    (no :data:`DEMO_MARKER` file) is never touched.
    """
    root = Path(root).absolute()
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not (root / DEMO_MARKER).exists())):
        raise FileExistsError(f"{root} exists and is not a demo library (no {DEMO_MARKER} file): "
                              "choose an empty or new folder, or remove it first.")
    files = [t.file for t in tracks]
    if len(set(files)) != len(files):
        raise ValueError("two tracks would be written to the same file")
    root.parent.mkdir(parents=True, exist_ok=True)
    for stale in root.parent.glob(f".{root.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = root.parent / f".{root.name}.partial-{os.getpid()}"
    partial.mkdir()
    try:
        (partial / DEMO_MARKER).write_text("Built by index.demo; safe to delete and rebuild.\n")
        ids: set[str] = set()
        with open(partial / "metadata.jsonl", "w", encoding="utf-8") as out:
            for track in tracks:
                _link_or_copy(track.source, partial / track.file)
                meta = dict(track.meta)
                base, n = meta["id"], 2
                while meta["id"] in ids:
                    meta["id"], n = f"{base}-{n}", n + 1
                ids.add(meta["id"])
                out.write(json.dumps({"file": track.file, **meta}, ensure_ascii=False) + "\n")
        used: set[str] = set()
        for name, members in playlists.items():
            stem, n = playlist_filename(name), 2
            while stem.lower() in used:
                stem, n = f"{playlist_filename(name)} ({n})", n + 1
            used.add(stem.lower())
            write_m3u(partial / "playlists" / f"{stem}.m3u", name, [
                (partial / tracks[i].file, f"{tracks[i].meta.get('artist', '')} - {tracks[i].meta.get('title', '')}",
                 tracks[i].meta.get("duration_s")) for i in members])
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    if root.exists():
        root.rename(old)
    partial.rename(root)
    shutil.rmtree(old, ignore_errors=True)


def assemble_demo_library(root: Path, *, progress: bool = True, max_music21: int = 150,
                          render_seconds: float = 60.0) -> DemoLibraryReport:
    """Build the demo library folder at ``root`` from Debian soundtracks and the music21 corpus.

    Parameters
    ----------
    root : Path
        Folder to (re)create. An earlier demo library there is replaced atomically;
        any other non-empty folder is refused.
    progress : bool
        Show tqdm bars for downloading, unpacking and rendering.
    max_music21 : int
        Corpus works to render. Raised when the Debian packages cannot be had, so the
        catalog still reaches :data:`MIN_TRACKS` tracks.
    render_seconds : float
        Longest rendered excerpt, at least :data:`MIN_TRACK_SECONDS`.

    Returns
    -------
    DemoLibraryReport
    """
    if render_seconds < MIN_TRACK_SECONDS:
        raise ValueError(f"render_seconds must be at least {MIN_TRACK_SECONDS:.0f} (got {render_seconds})")
    started = time.perf_counter()
    root = Path(root).expanduser()
    report = DemoLibraryReport(root=root.absolute())
    cache = downloads_dir()
    cache.mkdir(parents=True, exist_ok=True)
    game = collect_game_tracks(cache, report, progress)
    target = music21_target(len(game), max_music21)
    scores = collect_music21_tracks(cache / "music21", target, render_seconds, report, progress)
    tracks = game + scores
    if not tracks:
        raise RuntimeError("No tracks could be assembled: " + " ".join(report.warnings))
    if len(tracks) < MIN_TRACKS:
        report.warnings.append(f"only {len(tracks)} tracks (fewer than {MIN_TRACKS}).")
    playlists = build_playlists(tracks)
    write_library(root, tracks, playlists)
    report.tracks = len(tracks)
    report.by_source = dict(Counter(t.meta["source"] for t in tracks))
    report.playlists = len(playlists)
    report.top_tags = dict(Counter(tag for t in tracks for tag in t.meta.get("tags", [])).most_common(40))
    report.seconds = time.perf_counter() - started
    return report
