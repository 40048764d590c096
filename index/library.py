"""Reading a library folder into tracks and playlists.

A library folder is searched recursively for audio files (``AUDIO_EXTENSIONS``, any case).
Each file's embedded tags are read with mutagen; optional files refine or add to them:

- ``metadata.jsonl`` at the root, one JSON object a line: ``file`` (relative to the root)
  and optional ``id``, ``title``, ``artist``, ``album``, ``year``, ``genre``, ``tags``,
  ``lyrics``, ``description``, which override embedded tags. A line with ``id`` and no
  ``file`` is a text-only track. Other keys are ignored.
- A key field (ID3 ``TKEY``, ``INITIALKEY``, iTunes' ``initialkey``: "Am", "F#", "8A") becomes a
  tag such as "a minor", after those of ``metadata.jsonl``; the index build takes the first key
  among a track's tags as its key, before the one measured from its audio.
- ``NAME.lrc`` or ``NAME.txt`` beside ``NAME.mp3``: lyrics (LRC timestamps are removed).
- ``*.m3u``, ``*.m3u8``, ``*.pls`` and ``*.xspf`` anywhere in the folder (commonly
  ``playlists/`` at the root, or one beside each album's audio): ordered track lists whose
  entries are paths (relative to the playlist file, or absolute inside the root),
  ``file://`` URIs, or track ids. A library with no playlist files lets its albums (or,
  for tracks with no album tag, their folders) stand in for them (``LibraryScan.playlist_source``).

Nothing in a library stops a scan except a folder with no tracks at all: an unreadable
audio file, a bad metadata line or a broken playlist is logged once (``skipped PATH:
REASON``), recorded in ``LibraryScan.skipped``, and the scan goes on. Nothing that was
described is lost: an audio file that cannot be read but has a ``metadata.jsonl`` line is
kept as a text-only track (``LibraryScan.text_only``). Hidden files and folders (names
starting with ``.``) are ignored. The same audio stored at two paths is one track.
Decoding the audio happens later, in the index build.
"""
from __future__ import annotations

import configparser
import hashlib
import json
import os
import posixpath
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mutagen
import soundfile as sf
from mutagen.id3 import ID3
from mutagen.mp4 import MP4Tags
from tqdm import tqdm

from .audio import AUDIO_EXTENSIONS, AudioError, audio_duration
from .track import Track
from .vocabulary import key_from_field

PLAYLIST_EXTENSIONS: tuple[str, ...] = (".m3u", ".m3u8", ".pls", ".xspf")
METADATA_FILE = "metadata.jsonl"
PLAYLIST_DIR = "playlists"
LYRICS_EXTENSIONS: tuple[str, ...] = (".lrc", ".txt")  # in order of preference
HASH_CHUNK_BYTES = 1 << 20  # the content hash reads this much from each end of a file
# Lossless files whose header states a length the bytes may not hold: checked by reading their last frame.
END_CHECKED_EXTENSIONS: tuple[str, ...] = (".flac", ".wav")

_TEXT_FIELDS = ("title", "artist", "album", "genre", "lyrics", "description")


class LibraryError(ValueError):
    """The library folder is missing, is not a folder, or holds no tracks at all."""


@dataclass
class SkippedFile:
    """Something in the library that was left out, and why.

    ``path`` is relative to the library root; a metadata line reads ``metadata.jsonl:LINE``.
    """

    path: str
    reason: str


@dataclass
class LibraryScan:
    """What a library folder holds.

    Attributes
    ----------
    root : Path
        The library folder, absolute.
    tracks : list of Track
        Audio tracks in path order, then text-only tracks in ``metadata.jsonl`` order.
        ``Track.playlists`` names the playlists each track is in.
    playlists : dict
        Playlist name -> ordered ids of the tracks it holds (unmatched entries dropped).
    playlist_source : str
        Where ``playlists`` came from: "playlist files", "albums", "folders", "albums and
        folders" (stand-ins, in a library without playlist files), or "none".
    skipped : list of SkippedFile
        Files, metadata lines and playlists that were left out.
    text_only : list of SkippedFile
        Audio files that could not be read but were described (a ``metadata.jsonl`` line):
        they are tracks with ``file=None``, indexed from their text.
    described : set of str
        Ids of the tracks that something describes beyond a file name: a ``metadata.jsonl``
        line or embedded title, artist or album. Such a track is kept, from its text, when its
        audio later fails to decode.
    duplicates : list of (str, str)
        (path of a second copy of some audio, id of the track kept for it).
    """

    root: Path
    tracks: list[Track] = field(default_factory=list)
    playlists: dict[str, list[str]] = field(default_factory=dict)
    playlist_source: str = "none"
    skipped: list[SkippedFile] = field(default_factory=list)
    text_only: list[SkippedFile] = field(default_factory=list)
    described: set[str] = field(default_factory=set)
    duplicates: list[tuple[str, str]] = field(default_factory=list)


class UnreadableAudio(Exception):
    """An audio file whose tags or stream information cannot be read."""


# --------------------------------------------------------------------------- paths, ids, hashes


def _nfc(text: str) -> str:
    # macOS stores names decomposed (NFD); keying on NFC makes ids and lookups agree across machines.
    return unicodedata.normalize("NFC", text)


def path_track_id(rel_path: str) -> str:
    """The id of an audio track that ``metadata.jsonl`` gives no id: a hash of its relative path.

    Parameters
    ----------
    rel_path : str
        POSIX path relative to the library root, e.g. ``"jazz/take five.flac"``.
    """
    if not isinstance(rel_path, str) or not rel_path or rel_path.startswith("/"):
        raise ValueError(f"expected a non-empty relative POSIX path, got {rel_path!r}")
    return "t" + hashlib.sha1(_nfc(rel_path).encode("utf-8")).hexdigest()[:12]


def find_audio_files(root: Path) -> list[str]:
    """Relative POSIX paths of the audio files under ``root``, sorted; hidden names are ignored."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def content_hash(path: Path) -> str:
    """A fingerprint of a file's bytes: its size plus its first and last ``HASH_CHUNK_BYTES``.

    Two copies of the same file agree; reading at most 2 MiB keeps large libraries fast.
    """
    size = os.path.getsize(path)
    h = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(HASH_CHUNK_BYTES))
        if size > HASH_CHUNK_BYTES:
            f.seek(max(size - HASH_CHUNK_BYTES, HASH_CHUNK_BYTES))
            h.update(f.read(HASH_CHUNK_BYTES))
    return h.hexdigest()


# --------------------------------------------------------------------------- text clean-up

_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_GENRE_SEPARATORS = re.compile(r"[;,/|\x00]")
_LRC_HEADER = re.compile(r"^\[[A-Za-z#][A-Za-z0-9_#]*\s*:[^\]]*\]$")  # [ar:Artist], [offset:+200]
_LRC_TIME = re.compile(r"\[\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?\]")  # [01:02.34]
_LRC_WORD_TIME = re.compile(r"<\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?>")  # enhanced LRC <01:02.34>
_TRACK_NUMBER = re.compile(r"^\d{1,3}\s*(?:[.)]|-(?=\s))\s*")  # "01 - ", "01. ", "1) "


def year_from_date(date: Any) -> str:
    """The first four-digit year in a date (``"2001-03-04"`` -> ``"2001"``), else ``""``."""
    if date is None:
        return ""
    match = _YEAR.search(str(date))
    return match.group(1) if match else ""


def normalize_tags(tags: Iterable[str]) -> list[str]:
    """Lower-case, strip, drop empties and repeats, keep first-seen order."""
    seen: dict[str, None] = {}
    for tag in tags:
        tag = " ".join(str(tag).split()).lower()
        if tag:
            seen.setdefault(tag, None)
    return list(seen)


def split_genre(genre: str | Iterable[str]) -> list[str]:
    """Tags from a genre field: ``"Rock; Indie/Pop"`` -> ``["rock", "indie", "pop"]``."""
    values = [genre] if isinstance(genre, str) else list(genre)
    return normalize_tags(part for value in values for part in _GENRE_SEPARATORS.split(str(value)))


def clean_lyrics(text: str) -> str:
    """Plain lyrics from plain or LRC text: timestamps and ``[ar:...]`` header lines removed."""
    lines = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = line.strip()
        if _LRC_HEADER.match(line):
            continue
        line = _LRC_WORD_TIME.sub("", _LRC_TIME.sub("", line)).strip()
        if line or (lines and lines[-1]):  # keep single blank lines between stanzas
            lines.append(line)
    return "\n".join(lines).strip()


def title_from_stem(stem: str) -> str:
    """A readable title from a file name: ``"01 - my_song"`` -> ``"My Song"``."""
    name = " ".join(stem.replace("_", " ").split())
    name = _TRACK_NUMBER.sub("", name) or name
    if name.islower():  # only all-lower-case names are capitalised; others keep their spelling
        name = " ".join(word[:1].upper() + word[1:] for word in name.split(" "))
    return name


def read_sidecar_lyrics(audio_path: Path) -> str:
    """Lyrics from ``NAME.lrc`` or ``NAME.txt`` beside ``audio_path``, cleaned; ``""`` if none."""
    for ext in LYRICS_EXTENSIONS:
        for candidate in (audio_path.with_suffix(ext), audio_path.with_suffix(ext.upper())):
            if candidate.is_file():
                return clean_lyrics(candidate.read_bytes().decode("utf-8-sig", errors="replace"))
    return ""


# --------------------------------------------------------------------------- embedded tags


def _texts(values: Any) -> list[str]:
    """Tag values as a list of non-empty strings (mutagen gives lists, frames or scalars)."""
    if values is None:
        return []
    if hasattr(values, "text"):  # an ID3 frame
        values = values.text
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        values = [values]
    out = []
    for value in values:
        value = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
        if value.strip():
            out.append(value.strip())
    return out


def _id3_fields(tags: ID3) -> dict[str, Any]:
    comments = [f for f in tags.getall("COMM") if not f.desc.startswith("iTun")]  # skip iTunes' own data
    comments.sort(key=lambda f: f.desc != "")  # the plain comment first
    genre = tags.get("TCON")
    return {
        "title": _texts(tags.get("TIT2")),
        "artist": _texts(tags.get("TPE1")) or _texts(tags.get("TPE2")),
        "album": _texts(tags.get("TALB")),
        "date": _texts(tags.get("TDRC")) or _texts(tags.get("TDOR")),
        "genre": list(genre.genres) if genre is not None else [],  # resolves "(17)" style numbers
        "description": _texts(comments[0]) if comments else [],
        "lyrics": next((_texts(f.text) for f in tags.getall("USLT") if _texts(f.text)), []),
        "key": _texts(tags.get("TKEY")),
    }


def _mp4_fields(tags: MP4Tags) -> dict[str, Any]:
    return {
        "title": _texts(tags.get("\xa9nam")),
        "artist": _texts(tags.get("\xa9ART")) or _texts(tags.get("aART")),
        "album": _texts(tags.get("\xa9alb")),
        "date": _texts(tags.get("\xa9day")),
        "genre": _texts(tags.get("\xa9gen")),
        "description": _texts(tags.get("\xa9cmt")) or _texts(tags.get("desc")),
        "lyrics": _texts(tags.get("\xa9lyr")),
        "key": _texts(tags.get("----:com.apple.iTunes:initialkey")),
    }


def _vorbis_fields(tags: Any) -> dict[str, Any]:
    # Vorbis comments (FLAC, Ogg Vorbis, Opus): keys are case-insensitive, values lists of str.
    def get(*keys: str) -> list[str]:
        for key in keys:
            try:
                values = _texts(tags.get(key))
            except (KeyError, ValueError, TypeError):
                values = []
            if values:
                return values
        return []

    return {
        "title": get("title"),
        "artist": get("artist", "albumartist"),
        "album": get("album"),
        "date": get("date", "year", "originaldate"),
        "genre": get("genre"),
        "description": get("comment", "description"),
        "lyrics": get("lyrics", "unsyncedlyrics"),
        "key": get("initialkey", "key"),
    }


def _decodable_seconds(path: Path) -> float:
    """Seconds of audio libsndfile can reach, reading only the last frame.

    A cut-off FLAC keeps a header that promises the full length (mutagen trusts it) but
    fails to seek to its end; a cut-off WAV decodes up to where its bytes stop.
    """
    try:
        with sf.SoundFile(path) as f:
            if f.frames > 0:
                f.seek(f.frames - 1)
                f.read(1)
            return f.frames / f.samplerate
    except (sf.LibsndfileError, RuntimeError) as e:
        raise UnreadableAudio(f"truncated or corrupt: cannot decode to its end ({e})") from e


_NO_TAGS: dict[str, Any] = {"title": "", "artist": "", "album": "", "year": "", "genre": "", "genre_tags": [],
                            "description": "", "lyrics": "", "key": ""}


def read_audio_tags(path: Path) -> dict[str, Any]:
    """Embedded tags and duration of one audio file.

    Returns
    -------
    dict
        ``title``, ``artist``, ``album``, ``year``, ``genre`` (str), ``genre_tags`` (list),
        ``description``, ``lyrics``, ``key`` (str, possibly empty; the key as
        ``index.vocabulary.key_from_field`` reads it) and ``duration_s`` (float).

    Raises
    ------
    UnreadableAudio
        mutagen cannot parse the file, does not recognise it, or it holds no audio.
    """
    try:
        audio = mutagen.File(path)
    except OSError:
        raise
    except Exception as e:  # malformed input can raise more than MutagenError; one file must not stop a scan
        raise UnreadableAudio(f"not readable as audio ({type(e).__name__}: {e})") from e
    if audio is None:
        # mutagen knows no tags for this container (matroska, webm, ...): a decoder may still read it.
        try:
            return {**_NO_TAGS, "duration_s": audio_duration(path)}
        except AudioError:
            raise UnreadableAudio("not a recognised audio format") from None
    length = getattr(getattr(audio, "info", None), "length", None)
    if path.suffix.lower() in END_CHECKED_EXTENSIONS:
        length = _decodable_seconds(path)
    if not length or length <= 0:
        raise UnreadableAudio("holds no audio (duration 0 s)")

    tags = audio.tags
    if tags is None:
        raw: dict[str, Any] = {}
    elif isinstance(tags, ID3):
        raw = _id3_fields(tags)
    elif isinstance(tags, MP4Tags):
        raw = _mp4_fields(tags)
    else:
        raw = _vorbis_fields(tags)

    genres = [g.strip() for g in raw.get("genre", []) if str(g).strip()]
    return {
        "title": (raw.get("title") or [""])[0],
        "artist": ", ".join(raw.get("artist", [])),
        "album": (raw.get("album") or [""])[0],
        "year": year_from_date((raw.get("date") or [""])[0]),
        "genre": "; ".join(genres),
        "genre_tags": split_genre(genres),
        "description": "\n".join(raw.get("description", [])),
        "lyrics": clean_lyrics("\n".join(raw.get("lyrics", []))),
        "key": next(filter(None, map(key_from_field, raw.get("key", []))), ""),
        "duration_s": float(length),
    }


# --------------------------------------------------------------------------- metadata.jsonl


def parse_metadata_line(text: str) -> dict[str, Any]:
    """Validate one ``metadata.jsonl`` line.

    Returns
    -------
    dict
        The known keys that are present and not null: ``file`` and ``id`` (str), the text
        fields (str), ``year`` (four digits or ``""``) and ``tags`` (list of str).

    Raises
    ------
    ValueError
        With the reason the line cannot be used.
    """
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")

    out: dict[str, Any] = {}
    for key in ("file", "id", *_TEXT_FIELDS):
        value = obj.get(key)
        if value is None:
            continue
        if key == "id" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(f"'{key}' must be a string, got {type(value).__name__}")
        if key in ("file", "id"):
            value = value.strip()
            if not value:
                raise ValueError(f"'{key}' is empty")
        out[key] = value
    if "year" in obj and obj["year"] is not None:
        if isinstance(obj["year"], bool) or not isinstance(obj["year"], (int, str)):
            raise ValueError(f"'year' must be a number or a string, got {type(obj['year']).__name__}")
        out["year"] = year_from_date(obj["year"])
    if obj.get("tags") is not None:
        tags = obj["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError("'tags' must be a list of strings")
        out["tags"] = normalize_tags(tags)
    if "file" not in out and "id" not in out:
        raise ValueError("needs a 'file' (path relative to the library folder) or an 'id'")
    return out


def _read_metadata_lines(path: Path, skip: Callable[[str, str], None]) -> list[tuple[int, dict[str, Any]]]:
    """Valid ``(line number, entry)`` pairs of a ``metadata.jsonl``; bad lines go to ``skip``."""
    entries = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            skip(f"{METADATA_FILE}:{number}", "not valid UTF-8")
            continue
        if not text:
            continue
        try:
            entries.append((number, parse_metadata_line(text)))
        except ValueError as e:
            skip(f"{METADATA_FILE}:{number}", str(e))
    return entries


# --------------------------------------------------------------------------- playlists


def _normalize_rel(path: str) -> str | None:
    """A clean relative POSIX path, or None if it leaves the root."""
    path = posixpath.normpath(path)
    if path == "." or path == ".." or path.startswith("../") or path.startswith("/"):
        return None
    return path


class _TrackLookup:
    """Resolves playlist entries (paths, file URIs, ids) to track ids."""

    def __init__(self, root: Path, by_path: dict[str, str], ids: Iterable[str]):
        self.roots = sorted({str(root.absolute()), str(root.resolve())})
        self.by_path = {_nfc(p): tid for p, tid in by_path.items()}
        by_folded: dict[str, str | None] = {}
        for p, tid in self.by_path.items():  # case-insensitive fallback, only where unambiguous
            key = p.casefold()
            by_folded[key] = tid if by_folded.get(key, tid) == tid else None
        self.by_folded = by_folded
        self.ids = set(ids)

    def _path_to_id(self, rel: str | None) -> str | None:
        if rel is None:
            return None
        rel = _nfc(rel)
        return self.by_path.get(rel) or self.by_folded.get(rel.casefold())

    def _absolute_to_rel(self, path: str) -> str | None:
        path = os.path.normpath(path)
        for root in self.roots:
            if path.startswith(root.rstrip("/") + "/"):
                return _normalize_rel(path[len(root.rstrip("/")) + 1 :])
        return None

    def resolve(self, entry: str, base_rel: str) -> str | None:
        """The track id an entry names, or None. ``base_rel``: the playlist's folder, relative."""
        entry = entry.strip()
        if not entry:
            return None
        if entry.lower().startswith("file:"):
            uri = urlparse(entry)
            if uri.netloc not in ("", "localhost"):
                return None
            return self._path_to_id(self._absolute_to_rel(unquote(uri.path)))
        if "://" in entry:  # a stream or web address: never a library track
            return None
        if entry in self.ids:
            return entry
        path = entry.replace("\\", "/")  # playlists written on Windows
        if path.startswith("/"):
            return self._path_to_id(self._absolute_to_rel(path))
        # Relative to the playlist file as the format says; then relative to the root, a common slip.
        return self._path_to_id(_normalize_rel(posixpath.join(base_rel, path))) or self._path_to_id(
            _normalize_rel(path)
        )


def find_playlist_files(root: Path) -> list[str]:
    """Relative paths of the playlist files anywhere under ``root``, hidden names ignored.

    ``playlists/`` comes first, then the root, then every other folder, each in name order,
    so names that collide are numbered in a stable order.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in PLAYLIST_EXTENSIONS:
                found.append(name if rel_dir == "." else f"{rel_dir}/{name}")

    def place(rel: str) -> tuple[int, str]:
        folder = posixpath.dirname(rel)
        return (0 if folder == PLAYLIST_DIR else 1 if folder == "" else 2, rel)

    return sorted(found, key=place)


def read_pls(path: Path) -> tuple[str | None, list[str]]:
    """The title (if any) and entries of a PLS playlist: ``FileN=`` values in the order of N."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(path.read_bytes().decode("utf-8-sig", errors="replace"))
    except configparser.Error as e:
        raise ValueError(f"not a PLS playlist ({type(e).__name__})") from None
    section = next((name for name in parser.sections() if name.lower() == "playlist"), None)
    if section is None:
        raise ValueError("not a PLS playlist (no [playlist] section)")
    files = []
    for key, value in parser.items(section):
        match = re.fullmatch(r"file(\d+)", key.lower())
        if match and value.strip():
            files.append((int(match.group(1)), value.strip()))
    title = parser.get(section, "X-GNOME-Title", fallback=None) or parser.get(section, "Title", fallback=None)
    return title, [value for _, value in sorted(files)]


def read_m3u(path: Path) -> list[str]:
    """The entries of an M3U/M3U8 playlist: non-empty lines that are not ``#`` comments."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if path.suffix.lower() == ".m3u8":
            raise ValueError("not valid UTF-8 (an .m3u8 playlist must be UTF-8)") from None
        text = data.decode("latin-1")  # plain .m3u predates UTF-8 and is often Latin-1
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # drop an XML namespace


def read_xspf(path: Path) -> tuple[str | None, list[list[str]]]:
    """The title of an XSPF playlist and, per track, the strings that may name it.

    Each track gives its ``<location>`` values (both percent-decoded and as written) and then
    its ``<identifier>`` values.
    """
    try:
        tree = ET.parse(path)
    except ET.ParseError as e:
        raise ValueError(f"invalid XML ({e})") from None
    playlist = tree.getroot()
    if _local(playlist.tag) != "playlist":
        raise ValueError(f"not an XSPF playlist (root element <{_local(playlist.tag)}>)")
    title = next((c.text.strip() for c in playlist if _local(c.tag) == "title" and c.text and c.text.strip()), None)
    items = []
    for track in playlist.iter():
        if _local(track.tag) != "track":
            continue
        names: list[str] = []
        for kind in ("location", "identifier"):
            for child in track:
                if _local(child.tag) == kind and child.text and child.text.strip():
                    value = child.text.strip()
                    is_relative_uri = kind == "location" and "://" not in value and not value.startswith("file:")
                    names += [unquote(value), value] if is_relative_uri and unquote(value) != value else [value]
        items.append(names)
    return title, items


# --------------------------------------------------------------------------- albums as playlists


def _metadata_file_key(entry: dict[str, Any]) -> str:
    """A ``metadata.jsonl`` line's ``file`` as the scan keys paths: POSIX, normalised, NFC ("" if outside)."""
    return _nfc(_normalize_rel(entry["file"].replace("\\", "/")) or "")


def album_playlists(tracks: Iterable[Track], path_of: dict[str, str]) -> tuple[dict[str, list[str]], str]:
    """Stand-in playlists for a library without playlist files: its albums, else its folders.

    Tracks sharing an album tag (compared case-insensitively) form one list, in path order;
    tracks with no album are grouped by the folder that holds their file. Groups of a single
    track say nothing about co-occurrence and are left out. ``path_of`` maps a track id to the
    relative path of its file.

    Returns
    -------
    (dict, str)
        Name -> ordered track ids, and which stand-in was used ("albums", "folders",
        "albums and folders", or "none").
    """
    groups: dict[tuple[str, str], list[str]] = {}
    names: dict[tuple[str, str], str] = {}
    for t in sorted(tracks, key=lambda t: (path_of.get(t.id, "\uffff"), t.id)):
        if t.album.strip():
            key = ("album", " ".join(t.album.split()).casefold())
            names.setdefault(key, f"album: {' '.join(t.album.split())}")
        elif t.id in path_of:
            folder = posixpath.dirname(path_of[t.id])
            key = ("folder", folder)
            names.setdefault(key, f"folder: {folder or '(library root)'}")
        else:
            continue
        if t.id not in groups.setdefault(key, []):
            groups[key].append(t.id)
    kept = {key: ids for key, ids in groups.items() if len(ids) >= 2}
    kinds = sorted({kind for kind, _ in kept})
    source = {("album",): "albums", ("folder",): "folders", ("album", "folder"): "albums and folders"}.get(
        tuple(kinds), "none")
    return {names[key]: ids for key, ids in kept.items()}, source


# --------------------------------------------------------------------------- the scan


def _check_root(root: str | Path) -> Path:
    if not isinstance(root, (str, os.PathLike)) or not str(root):
        raise LibraryError(f"expected the path of a library folder, got {root!r}")
    path = Path(root).expanduser()
    if not path.exists():
        raise LibraryError(f"library folder {str(path)!r} does not exist; point to a folder of music files")
    if not path.is_dir():
        raise LibraryError(f"{str(path)!r} is a file, not a folder; point to the folder that holds your music")
    return path.absolute()


def scan_library(root: str | Path, *, progress: bool = True, log: Callable[[str], None] = print) -> LibraryScan:
    """Read a library folder into tracks and playlists.

    Parameters
    ----------
    root : str or Path
        The library folder (format in the module docstring).
    progress : bool
        Show a progress bar over the audio files.
    log : callable
        Receives one line per skipped item, duplicate and playlist warning, and a summary.

    Returns
    -------
    LibraryScan

    Raises
    ------
    LibraryError
        ``root`` is missing or not a folder, or it yields no track at all.
    """
    root = _check_root(root)
    # print would tear the progress bar; tqdm.write prints above it.
    emit = tqdm.write if (progress and log is print) else log
    scan = LibraryScan(root=root)

    def skip(path: str, reason: str) -> None:
        emit(f"skipped {path}: {reason}")
        scan.skipped.append(SkippedFile(path, reason))

    audio_files = find_audio_files(root)
    metadata_path = root / METADATA_FILE
    if not audio_files and not metadata_path.is_file():
        kinds = ", ".join(e.lstrip(".") for e in AUDIO_EXTENSIONS)
        raise LibraryError(
            f"{str(root)!r} contains no audio files ({kinds}) and no {METADATA_FILE}; point to a folder of music"
        )

    # 1. Embedded tags, once per distinct content.
    embedded: dict[str, dict[str, Any]] = {}  # kept path -> tags
    kept_by_hash: dict[str, str] = {}
    duplicate_of: dict[str, str] = {}  # second path -> kept path
    unreadable: dict[str, str] = {}  # path -> why; skipped unless metadata.jsonl describes it
    for rel in tqdm(audio_files, desc="reading library", unit="file", disable=not progress):
        path = root / rel
        try:
            if path.stat().st_size == 0:
                unreadable[rel] = "empty file (0 bytes)"
                continue
            digest = content_hash(path)
            if digest in kept_by_hash:
                duplicate_of[rel] = kept_by_hash[digest]
                continue
            embedded[rel] = read_audio_tags(path)
        except UnreadableAudio as e:
            unreadable[rel] = str(e)
            continue
        except OSError as e:
            unreadable[rel] = f"cannot read the file ({e.strerror or e})"
            continue
        kept_by_hash[digest] = rel

    # 2. metadata.jsonl: attach each line to its audio file, or keep it as a text-only track.
    entries = _read_metadata_lines(metadata_path, skip) if metadata_path.is_file() else []
    named_files = {_metadata_file_key(e) for _, e in entries if "file" in e}
    for rel, reason in unreadable.items():
        if _nfc(rel) in named_files:
            embedded[rel] = {**_NO_TAGS, "duration_s": None, "unreadable": reason}  # kept, from its text
        else:
            skip(rel, reason)
    kept_by_nfc = {_nfc(rel): rel for rel in embedded}
    duplicate_by_nfc = {_nfc(rel): rel for rel in duplicate_of}
    skipped_paths = {s.path for s in scan.skipped}
    entry_for: dict[str, tuple[int, dict[str, Any]]] = {}  # kept path -> (line, entry)
    text_only: list[tuple[int, dict[str, Any]]] = []
    line_of_id: dict[str, int] = {}

    def claim_id(number: int, entry: dict[str, Any]) -> bool:
        if "id" not in entry:
            return True
        if entry["id"] in line_of_id:
            skip(f"{METADATA_FILE}:{number}", f"id {entry['id']!r} is already used on line {line_of_id[entry['id']]}")
            return False
        line_of_id[entry["id"]] = number
        return True

    # Lines naming a kept file go first, so a line naming its duplicate never displaces them.
    def names_kept_file(item: tuple[int, dict[str, Any]]) -> bool:
        return "file" not in item[1] or _metadata_file_key(item[1]) in kept_by_nfc

    for number, entry in sorted(entries, key=lambda item: (not names_kept_file(item), item[0])):
        where = f"{METADATA_FILE}:{number}"
        if "file" not in entry:
            if claim_id(number, entry):
                text_only.append((number, entry))
            continue
        rel = _normalize_rel(entry["file"].replace("\\", "/"))
        if rel is None:
            skip(where, f"file {entry['file']!r} is outside the library folder")
            continue
        key = _nfc(rel)
        kept = kept_by_nfc.get(key) or duplicate_of.get(duplicate_by_nfc.get(key, ""))
        if kept is None:
            if not (root / rel).is_file():
                reason = f"file {entry['file']!r} not found in the library folder"
            elif os.path.splitext(rel)[1].lower() not in AUDIO_EXTENSIONS:
                reason = f"file {entry['file']!r} is not an audio file ({', '.join(AUDIO_EXTENSIONS)})"
            elif rel in skipped_paths:
                reason = f"file {entry['file']!r} was skipped as unreadable"  # a duplicate's copy, say
            else:
                reason = f"file {entry['file']!r} is hidden (names starting with '.' are ignored)"
            skip(where, reason)
            continue
        if kept in entry_for:
            same = "" if kept == rel else f" (the same audio as {kept!r})"
            skip(where, f"file {entry['file']!r}{same} is already described on line {entry_for[kept][0]}")
            continue
        if claim_id(number, entry):
            entry_for[kept] = (number, entry)
    text_only.sort(key=lambda item: item[0])

    # 3. Tracks: audio in path order, then text-only tracks in line order.
    id_of_path: dict[str, str] = {}
    for rel, tags in embedded.items():
        number, entry = entry_for.get(rel, (0, {}))
        tid = entry.get("id") or path_track_id(rel)
        if "id" not in entry and tid in line_of_id:
            where = f"{METADATA_FILE} line {line_of_id[tid]}"
            skip(rel, f"its path-derived id {tid!r} is already given on {where}; give this file an id there too")
            continue
        try:
            lyrics = read_sidecar_lyrics(root / rel) or tags["lyrics"]
        except OSError as e:
            emit(f"could not read the lyrics beside {rel}: {e.strerror or e}")
            lyrics = tags["lyrics"]
        fields = {k: tags[k] for k in ("title", "artist", "album", "year", "genre", "description")}
        fields["lyrics"] = lyrics
        fields.update({k: v for k, v in entry.items() if k in (*_TEXT_FIELDS, "year")})
        genre_tags = split_genre(fields["genre"]) if "genre" in entry else tags["genre_tags"]
        if entry or any(tags[k] for k in ("title", "artist", "album")):
            scan.described.add(tid)
        fields["title"] = fields["title"] or title_from_stem(Path(rel).stem)
        if "unreadable" in tags:
            reason = f"audio not decodable: {tags['unreadable']}; indexed from its text"
            emit(f"text only {rel}: {reason}")
            scan.text_only.append(SkippedFile(rel, reason))
        scan.tracks.append(
            Track(
                id=tid,
                file=None if "unreadable" in tags else rel,
                duration_s=tags["duration_s"],
                tags=normalize_tags([*genre_tags, *entry.get("tags", []), tags["key"]]),
                **fields,
            )
        )
        id_of_path[rel] = tid
    file_of = {tid: rel for rel, tid in id_of_path.items()}  # before duplicates join id_of_path
    for number, entry in text_only:
        fields = {k: v for k, v in entry.items() if k in (*_TEXT_FIELDS, "year")}
        tags = normalize_tags([*split_genre(entry.get("genre", "")), *entry.get("tags", [])])
        scan.tracks.append(Track(id=entry["id"], file=None, tags=tags, **fields))
        scan.described.add(entry["id"])

    for rel, kept in sorted(duplicate_of.items()):
        if kept in id_of_path:
            id_of_path[rel] = id_of_path[kept]
            scan.duplicates.append((rel, id_of_path[kept]))
            emit(f"duplicate {rel}: the same audio as {kept}, indexed once")

    if not scan.tracks:
        raise LibraryError(
            f"no track could be read from {str(root)!r}: {len(scan.skipped)} item(s) were skipped (see the lines "
            f"above); add readable audio files ({', '.join(AUDIO_EXTENSIONS)}) or {METADATA_FILE} lines"
        )

    # 4. Playlists.
    lookup = _TrackLookup(root, id_of_path, (t.id for t in scan.tracks))
    for rel in find_playlist_files(root):
        path = root / rel
        try:
            if path.suffix.lower() == ".xspf":
                title, items = read_xspf(path)
            elif path.suffix.lower() == ".pls":
                title, pls_entries = read_pls(path)
                items = [[entry] for entry in pls_entries]
            else:
                title, items = None, [[entry] for entry in read_m3u(path)]
        except (OSError, ValueError) as e:
            skip(rel, f"unreadable playlist: {getattr(e, 'strerror', None) or e}")
            continue
        base = posixpath.dirname(rel)
        ids: dict[str, None] = {}
        unmatched = 0
        for names in items:
            tid = next((t for t in (lookup.resolve(n, base) for n in names) if t), None)
            if tid is None:
                unmatched += 1
            else:
                ids.setdefault(tid, None)
        name = title or Path(rel).stem
        if name in scan.playlists:  # "playlist.m3u" beside every album: name it by its folder
            name = posixpath.splitext(rel)[0]
        if name in scan.playlists:
            n = 2
            while f"{name} ({n})" in scan.playlists:
                n += 1
            name = f"{name} ({n})"
        if unmatched or not ids:
            left_out = "" if ids else "; the playlist is left out"
            emit(f"playlist {name!r} ({rel}): {unmatched} of {len(items)} entries match no track{left_out}")
        if ids:
            scan.playlists[name] = list(ids)

    if scan.playlists:
        scan.playlist_source = "playlist files"
    else:
        scan.playlists, scan.playlist_source = album_playlists(scan.tracks, file_of)
        if scan.playlists:
            emit(f"no playlist files: {len(scan.playlists)} {scan.playlist_source} stand in for playlists")
    by_id = {t.id: t for t in scan.tracks}
    for name, ids in scan.playlists.items():
        for tid in ids:
            by_id[tid].playlists.append(name)

    n_text = sum(1 for t in scan.tracks if t.file is None)
    emit(
        f"library {root}: {len(scan.tracks)} tracks ({len(scan.tracks) - n_text} with audio, {n_text} text-only), "
        f"{len(scan.playlists)} playlists, {len(scan.duplicates)} duplicates, {len(scan.skipped)} skipped"
    )
    return scan
