"""Debian game-soundtrack packages: fetched with ``apt-get download``, unpacked with ``dpkg-deb -x``,
and read into tracks from their embedded tags, folders and credit files."""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from index.audio import AUDIO_EXTENSIONS

from .common import (
    MAX_DOWNLOAD_BYTES,
    MIN_TRACK_SECONDS,
    DemoLibraryReport,
    LibraryTrack,
    clean_title,
    is_root,
    run_command,
    say,
    slugify,
    title_case,
    title_from_filename,
    unique_tags,
    write_ogg,
    write_ogg_tags,
    year_from,
)

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
    if _apt_updated or not is_root():
        return False
    _apt_updated = True
    return run_command(["apt-get", "update", "-qq"]).returncode == 0


def package_size(package: str) -> int | None:
    """Download size of ``package`` in bytes from ``apt-cache show``, or None if apt does not know it."""
    for attempt in range(2):
        result = run_command(["apt-cache", "show", "--no-all-versions", package], timeout=120)
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
        result = run_command(["apt-get", "download", "-q", package], cwd=debs)
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
    result = run_command(["dpkg-deb", "-x", str(deb), str(partial)])
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
            if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
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
        say(why)
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
                say(str(err))
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
        say(message)
    tracks: list[LibraryTrack] = []
    for pkg, deb in tqdm(usable, desc="unpacking and reading tags", unit="pkg", disable=not progress):
        try:
            unpack_package(deb, unpacked_root / pkg.package)
            tracks.extend(read_game_package(pkg, unpacked_root / pkg.package, mixes))
        except (RuntimeError, OSError, ValueError) as err:
            report.warnings.append(f"{pkg.package}: {err}")
    return tracks


