"""Reading a library folder: tags, metadata.jsonl, lyrics, playlists, duplicates, bad files, ids."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import quote

import mutagen.flac
import mutagen.oggopus
import mutagen.oggvorbis
import mutagen.wave
import numpy as np
import pytest
import soundfile as sf
from mutagen.id3 import COMM, ID3, TALB, TCON, TDRC, TIT2, TKEY, TPE1, USLT

from index.library import (
    LibraryError,
    clean_lyrics,
    parse_metadata_line,
    path_track_id,
    scan_library,
    split_genre,
    title_from_stem,
    year_from_date,
)

SR = 16000


def write_sine(path: Path, freq: float, seconds: float = 0.25, sr: int = SR, **kwargs) -> Path:
    """A short sine; a distinct ``freq`` per file keeps contents (and content hashes) distinct."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, **kwargs)
    return path


def write_vorbis_tags(path: Path, kind, **tags: str) -> None:
    audio = kind(path)
    for key, value in tags.items():
        audio[key] = value
    audio.save()


def scan(root: Path, **kwargs):
    lines: list[str] = []
    result = scan_library(root, progress=False, log=lines.append, **kwargs)
    return result, lines


def by_file(result) -> dict:
    return {t.file: t for t in result.tracks}


def can_write_mp3() -> bool:
    return "MP3" in sf.available_formats()


# --------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    "date, year", [("2001-03-04", "2001"), (1987, "1987"), ("04/05/1999", "1999"), ("12345", ""), ("", ""), (None, "")]
)
def test_year_from_date_takes_the_first_four_digit_year(date, year):
    assert year_from_date(date) == year


def test_split_genre_lowercases_splits_and_dedupes_in_order():
    assert split_genre("Rock; Indie/Pop, rock") == ["rock", "indie", "pop"]
    assert split_genre(["Jazz", "Bebop|jazz"]) == ["jazz", "bebop"]
    assert split_genre("") == []


def test_clean_lyrics_strips_lrc_timestamps_and_headers_but_keeps_section_labels():
    lrc = (
        "[ar:Someone]\n[ti:Song]\n[offset:+100]\n[00:01.00]First line\n"
        "[00:02.50][01:10.00]Chorus <00:03.00>line\n[00:04]\n\n[Chorus]\nEnd"
    )
    assert clean_lyrics(lrc) == "First line\nChorus line\n\n[Chorus]\nEnd"


@pytest.mark.parametrize(
    "stem, title",
    [
        ("01 - quiet_morning", "Quiet Morning"),
        ("02. Blue In Green", "Blue In Green"),
        ("99 Luftballons", "99 Luftballons"),
    ],
)
def test_title_from_stem(stem, title):
    assert title_from_stem(stem) == title


@pytest.mark.parametrize(
    "line, reason",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"title": "x"}', "needs a 'file'"),
        ('{"id": "a", "tags": "rock"}', "'tags' must be a list of strings"),
        ('{"file": 3}', "'file' must be a string"),
        ('{"id": "  "}', "'id' is empty"),
    ],
)
def test_parse_metadata_line_rejects_bad_lines_with_a_reason(line, reason):
    with pytest.raises(ValueError, match=reason):
        parse_metadata_line(line)


def test_parse_metadata_line_normalises_values_and_ignores_unknown_keys():
    entry = parse_metadata_line('{"id": 7, "year": "1999-01-01", "tags": ["Chill", "chill", " Lo-Fi "], "bpm": 90}')
    assert entry == {"id": "7", "year": "1999", "tags": ["chill", "lo-fi"]}


def test_path_track_id_is_a_stable_hash_of_the_relative_path():
    assert path_track_id("a/b.flac") == path_track_id("a/b.flac")
    assert path_track_id("a/b.flac") != path_track_id("a/c.flac")
    assert path_track_id("a/b.flac").startswith("t") and len(path_track_id("a/b.flac")) == 13
    # Composed and decomposed spellings of the same name (Linux vs macOS) give one id.
    assert path_track_id("caf\u00e9.mp3") == path_track_id("cafe\u0301.mp3")
    with pytest.raises(ValueError):
        path_track_id("/abs/path.mp3")


# --------------------------------------------------------------------------- embedded tags


def test_reads_embedded_tags_from_flac_ogg_opus_and_wav(tmp_path):
    flac = write_sine(tmp_path / "music" / "a.flac", 220)
    write_vorbis_tags(
        flac, mutagen.flac.FLAC, title="Morning", artist="Ann", album="Days", date="2001-05-06",
        genre="Rock; Indie", comment="recorded live", lyrics="[00:01.00]sun comes up",
    )
    ogg = write_sine(tmp_path / "music" / "b.ogg", 330)
    write_vorbis_tags(ogg, mutagen.oggvorbis.OggVorbis, TITLE="Evening", ARTIST="Bo", UNSYNCEDLYRICS="moon")
    opus = write_sine(tmp_path / "c.opus", 440, sr=48000, format="OGG", subtype="OPUS")
    write_vorbis_tags(opus, mutagen.oggopus.OggOpus, title="Night", genre="Ambient", description="slow")
    wav = write_sine(tmp_path / "d.wav", 550)
    tagged = mutagen.wave.WAVE(wav)
    tagged.add_tags()
    for frame in (TIT2(encoding=3, text="Dawn"), TPE1(encoding=3, text="Cy"), TCON(encoding=3, text="Folk"),
                  TDRC(encoding=3, text="1999"), USLT(encoding=3, lang="eng", desc="", text="birds")):
        tagged.tags.add(frame)
    tagged.save()

    result, lines = scan(tmp_path)
    tracks = by_file(result)
    assert set(tracks) == {"music/a.flac", "music/b.ogg", "c.opus", "d.wav"}
    a = tracks["music/a.flac"]
    assert (a.title, a.artist, a.album, a.year) == ("Morning", "Ann", "Days", "2001")
    assert a.genre == "Rock; Indie" and a.tags == ["rock", "indie"]
    assert a.description == "recorded live" and a.lyrics == "sun comes up"
    assert a.duration_s == pytest.approx(0.25)
    b = tracks["music/b.ogg"]
    assert (b.title, b.artist, b.lyrics) == ("Evening", "Bo", "moon")
    assert b.duration_s == pytest.approx(0.25, abs=0.02)
    c = tracks["c.opus"]
    assert (c.title, c.tags, c.description) == ("Night", ["ambient"], "slow")
    d = tracks["d.wav"]
    assert (d.title, d.artist, d.year, d.genre, d.lyrics) == ("Dawn", "Cy", "1999", "Folk", "birds")
    assert result.skipped == [] and result.duplicates == []
    assert any("4 tracks" in line for line in lines)  # the summary line


def test_a_key_field_becomes_a_key_tag_after_those_of_the_metadata(tmp_path):
    flac = write_sine(tmp_path / "a.flac", 220)
    write_vorbis_tags(flac, mutagen.flac.FLAC, title="Wheel", genre="House", initialkey="8A")  # Camelot: A minor
    wav = write_sine(tmp_path / "b.wav", 330)
    tagged = mutagen.wave.WAVE(wav)
    tagged.add_tags()
    tagged.tags.add(TKEY(encoding=3, text="F#m"))
    tagged.save()
    off = write_sine(tmp_path / "c.flac", 440)
    write_vorbis_tags(off, mutagen.flac.FLAC, initialkey="o")  # "off key" in ID3's notation: no key
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file": "b.wav", "tags": ["d major", "folk"]}) + "\n")
    tracks = by_file(scan(tmp_path)[0])
    assert tracks["a.flac"].tags == ["house", "a minor"]
    assert tracks["b.wav"].tags == ["d major", "folk", "f# minor"]  # the metadata's key comes first
    assert tracks["c.flac"].tags == []


@pytest.mark.skipif(not can_write_mp3(), reason="this libsndfile cannot write MP3")
def test_reads_id3_tags_comment_and_lyrics_from_mp3(tmp_path):
    mp3 = write_sine(tmp_path / "song.mp3", 440, seconds=0.5)
    tags = ID3()
    for frame in (TIT2(encoding=3, text="Tune"), TPE1(encoding=3, text="Dee"), TALB(encoding=3, text="LP"),
                  TDRC(encoding=3, text="2010-02-03"), TCON(encoding=3, text="Jazz/Swing"),
                  COMM(encoding=3, lang="eng", desc="iTunNORM", text="0000 1111"),
                  COMM(encoding=3, lang="eng", desc="", text="a fine take"),
                  USLT(encoding=3, lang="eng", desc="", text="doo be doo")):
        tags.add(frame)
    tags.save(mp3)
    (track,) = scan(tmp_path)[0].tracks
    assert (track.title, track.artist, track.album, track.year) == ("Tune", "Dee", "LP", "2010")
    assert track.tags == ["jazz", "swing"]
    assert track.description == "a fine take" and track.lyrics == "doo be doo"
    assert track.duration_s == pytest.approx(0.5, abs=0.1)


def test_untagged_file_gets_a_title_from_its_name_and_extensions_match_any_case(tmp_path):
    write_sine(tmp_path / "01 - quiet_morning.WAV", 300)
    (track,) = scan(tmp_path)[0].tracks
    assert track.title == "Quiet Morning" and track.file == "01 - quiet_morning.WAV"
    assert track.artist == "" and track.tags == []


def test_hidden_files_and_folders_are_ignored(tmp_path):
    write_sine(tmp_path / "keep.wav", 300)
    (tmp_path / "._keep.wav").write_bytes(b"\x00\x05\x16\x07 apple double")
    write_sine(tmp_path / ".trash" / "old.wav", 310)
    result, _ = scan(tmp_path)
    assert [t.file for t in result.tracks] == ["keep.wav"] and result.skipped == []


# --------------------------------------------------------------------------- metadata.jsonl


def test_metadata_overrides_tags_adds_text_only_tracks_and_skips_bad_lines(tmp_path):
    flac = write_sine(tmp_path / "a.flac", 220)
    write_vorbis_tags(flac, mutagen.flac.FLAC, title="Embedded", artist="Ann", genre="Rock", lyrics="old words")
    write_sine(tmp_path / "b.wav", 330)
    lines = [
        {"file": "a.flac", "id": "song-a", "title": "Given Title", "year": 1975, "tags": ["Warm", "rock"],
         "lyrics": "new words", "extra": "ignored"},
        {"id": "poem-1", "title": "Only Words", "artist": "Nobody", "lyrics": "no audio here", "tags": ["Spoken"]},
        "{broken json",
        {"file": "missing.mp3", "title": "Ghost"},
        {"title": "no file and no id"},
        {"id": "song-a", "title": "same id again"},
    ]
    (tmp_path / "metadata.jsonl").write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n\n", encoding="utf-8"
    )
    result, log = scan(tmp_path)

    ids = [t.id for t in result.tracks]
    assert ids == ["song-a", path_track_id("b.wav"), "poem-1"]  # audio in path order, then text-only
    a = result.tracks[0]
    assert (a.title, a.artist, a.year, a.lyrics) == ("Given Title", "Ann", "1975", "new words")
    assert a.tags == ["rock", "warm"]  # genre first, then metadata tags, deduplicated
    poem = result.tracks[2]
    assert poem.file is None and poem.duration_s is None
    assert (poem.title, poem.artist, poem.lyrics, poem.tags) == ("Only Words", "Nobody", "no audio here", ["spoken"])

    skipped = {s.path: s.reason for s in result.skipped}
    assert set(skipped) == {"metadata.jsonl:3", "metadata.jsonl:4", "metadata.jsonl:5", "metadata.jsonl:6"}
    assert "invalid JSON" in skipped["metadata.jsonl:3"]
    assert "not found" in skipped["metadata.jsonl:4"]
    assert "needs a 'file'" in skipped["metadata.jsonl:5"]
    assert "already used on line 1" in skipped["metadata.jsonl:6"]
    for path, reason in skipped.items():
        assert sum(line == f"skipped {path}: {reason}" for line in log) == 1


def test_a_library_of_metadata_lines_alone_is_valid(tmp_path):
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"id": "x1", "title": "Words"}) + "\n", encoding="utf-8")
    result, _ = scan(tmp_path)
    assert [(t.id, t.file, t.title) for t in result.tracks] == [("x1", None, "Words")]


# --------------------------------------------------------------------------- lyrics beside audio


def test_sidecar_lyrics_lrc_and_txt_with_the_right_precedence(tmp_path):
    write_sine(tmp_path / "lrc.wav", 200)
    lrc = "[ar:Ann]\n[ti:Lrc]\n[00:01.00]hello there\n[00:02.10]second line\n"
    (tmp_path / "lrc.lrc").write_text(lrc, encoding="utf-8")
    write_sine(tmp_path / "txt.wav", 300)
    (tmp_path / "txt.txt").write_text("\ufeffplain words\r\nmore words\r\n", encoding="utf-8")
    flac = write_sine(tmp_path / "both.flac", 400)
    write_vorbis_tags(flac, mutagen.flac.FLAC, lyrics="embedded words")
    (tmp_path / "both.lrc").write_text("[00:00.50]sidecar words", encoding="utf-8")
    flac = write_sine(tmp_path / "emb.flac", 500)
    write_vorbis_tags(flac, mutagen.flac.FLAC, lyrics="embedded only")
    write_sine(tmp_path / "meta.wav", 600)
    (tmp_path / "meta.txt").write_text("sidecar loses", encoding="utf-8")
    metadata = json.dumps({"file": "meta.wav", "lyrics": "metadata wins"})
    (tmp_path / "metadata.jsonl").write_text(metadata, encoding="utf-8")

    tracks = by_file(scan(tmp_path)[0])
    assert tracks["lrc.wav"].lyrics == "hello there\nsecond line"
    assert tracks["txt.wav"].lyrics == "plain words\nmore words"
    assert tracks["both.flac"].lyrics == "sidecar words"
    assert tracks["emb.flac"].lyrics == "embedded only"
    assert tracks["meta.wav"].lyrics == "metadata wins"
    assert len(tracks) == 5  # .lrc and .txt files are not tracks


# --------------------------------------------------------------------------- playlists


def make_playlist_library(root: Path, with_absolute_paths: bool = True) -> None:
    write_sine(root / "music" / "a.wav", 220)
    write_sine(root / "music" / "b.wav", 330)
    write_sine(root / "music" / "sub dir" / "c d.wav", 440)
    write_sine(root / "music" / "ünï.wav", 550)
    (root / "metadata.jsonl").write_text(
        json.dumps({"file": "music/b.wav", "id": "bee"}) + "\n" + json.dumps({"id": "words", "title": "T"}) + "\n",
        encoding="utf-8",
    )
    pl = root / "playlists"
    pl.mkdir()
    (pl / "road trip.m3u").write_text(
        "#EXTM3U\n#EXTINF:1,Ann - A\n../music/a.wav\n\n../music/sub dir/c d.wav\n"
        "../music/nowhere.wav\nhttp://radio.example/stream\n../music/a.wav\n",
        encoding="utf-8",
    )
    (pl / "ids.m3u8").write_text("\ufeff#EXTM3U\nbee\nwords\n../music/ünï.wav\n", encoding="utf-8")
    a_path = (root / "music" / "a.wav").absolute()
    absolute_uri = a_path.as_uri() if with_absolute_paths else "../music/a.wav"
    (pl / "mix.xspf").write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<playlist version="1" xmlns="http://xspf.org/ns/0/">
  <title>Evening Mix</title>
  <trackList>
    <track><location>{quote("../music/sub dir/c d.wav")}</location></track>
    <track><identifier>bee</identifier></track>
    <track><location>{absolute_uri}</location></track>
    <track><location>file:///elsewhere/x.wav</location></track>
  </trackList>
</playlist>""",
        encoding="utf-8",
    )
    a_entry = a_path if with_absolute_paths else "music/a.wav"
    (root / "top.m3u").write_text(f"music/b.wav\n{a_entry}\n", encoding="utf-8")
    (pl / "broken.xspf").write_text("<playlist><trackList>", encoding="utf-8")


def test_playlists_resolve_paths_uris_and_ids_and_count_misses(tmp_path):
    make_playlist_library(tmp_path)
    result, log = scan(tmp_path)
    tid = {t.file: t.id for t in result.tracks if t.file}
    a, c, u = tid["music/a.wav"], tid["music/sub dir/c d.wav"], tid["music/ünï.wav"]

    assert result.playlists == {
        "road trip": [a, c],  # repeats collapse, order kept
        "ids": ["bee", "words", u],
        "Evening Mix": [c, "bee", a],  # the xspf title names it
        "top": ["bee", a],  # in the root: absolute path inside the root
    }
    by_id = {t.id: t for t in result.tracks}
    assert by_id[a].playlists == ["Evening Mix", "road trip", "top"]  # playlist files in name order
    assert by_id["words"].playlists == ["ids"]
    assert [line for line in log if "road trip" in line] == [
        "playlist 'road trip' (playlists/road trip.m3u): 2 of 5 entries match no track"
    ]
    assert any("'Evening Mix'" in line and "1 of 4" in line for line in log)
    (bad,) = result.skipped
    assert bad.path == "playlists/broken.xspf" and "invalid XML" in bad.reason


# --------------------------------------------------------------------------- duplicates and bad files


def test_the_same_audio_at_two_paths_is_one_track(tmp_path):
    original = write_sine(tmp_path / "a" / "song.flac", 440)
    write_sine(tmp_path / "z.wav", 300)
    copy = tmp_path / "b" / "song copy.flac"
    copy.parent.mkdir()
    shutil.copyfile(original, copy)
    (tmp_path / "playlists").mkdir()
    (tmp_path / "playlists" / "p.m3u").write_text("../b/song copy.flac\n../z.wav\n../a/song.flac\n", encoding="utf-8")

    result, log = scan(tmp_path)
    kept = path_track_id("a/song.flac")
    assert [t.file for t in result.tracks] == ["a/song.flac", "z.wav"]
    assert result.duplicates == [("b/song copy.flac", kept)]
    assert result.playlists == {"p": [kept, path_track_id("z.wav")]}
    assert any(line.startswith("duplicate b/song copy.flac") for line in log)


def test_metadata_naming_a_duplicate_describes_the_kept_track(tmp_path):
    original = write_sine(tmp_path / "a.flac", 440)
    shutil.copyfile(original, tmp_path / "b.flac")
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file": "b.flac", "id": "from-copy", "title": "Copy Title"}) + "\n"
        + json.dumps({"file": "a.flac", "title": "Kept Title"}) + "\n"
        + json.dumps({"file": "b.flac", "title": "Third"}) + "\n",
        encoding="utf-8",
    )
    result, _ = scan(tmp_path)
    (track,) = result.tracks
    # The line naming the kept file wins; a line naming only its copy cannot displace it.
    assert (track.id, track.file, track.title) == (path_track_id("a.flac"), "a.flac", "Kept Title")
    assert result.duplicates == [("b.flac", track.id)]
    assert {s.path for s in result.skipped} == {"metadata.jsonl:1", "metadata.jsonl:3"}


def test_unreadable_files_are_skipped_with_a_reason_and_the_rest_indexed(tmp_path):
    (tmp_path / "noise.mp3").write_bytes(np.random.default_rng(0).bytes(4096))
    whole = write_sine(tmp_path / "whole.flac", 220)
    (tmp_path / "cut.flac").write_bytes(whole.read_bytes()[:300])  # header intact, audio cut off
    (tmp_path / "cut head.flac").write_bytes(whole.read_bytes()[:30])  # ends inside the header
    (tmp_path / "empty.ogg").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not audio", encoding="utf-8")
    write_sine(tmp_path / "fine.wav", 330)

    result, log = scan(tmp_path)
    assert [t.file for t in result.tracks] == ["fine.wav", "whole.flac"]
    reasons = {s.path: s.reason for s in result.skipped}
    assert set(reasons) == {"noise.mp3", "cut.flac", "cut head.flac", "empty.ogg", "text.wav"}
    assert "truncated" in reasons["cut.flac"]
    assert reasons["empty.ogg"] == "empty file (0 bytes)"
    assert all(reason for reason in reasons.values())
    for path, reason in reasons.items():
        assert [line for line in log if line.startswith(f"skipped {path}:")] == [f"skipped {path}: {reason}"]


def test_progress_bar_and_default_logging_run(tmp_path, capsys):
    write_sine(tmp_path / "x.wav", 300)
    (tmp_path / "bad.mp3").write_bytes(b"nope" * 100)
    result = scan_library(tmp_path, progress=True)
    out, err = capsys.readouterr()
    assert "skipped bad.mp3:" in out and "reading library" in err
    assert len(result.tracks) == 1


# --------------------------------------------------------------------------- folder errors


def test_empty_folder_says_what_to_do(tmp_path):
    (tmp_path / "notes.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(LibraryError, match="contains no audio files .*mp3.*metadata.jsonl; point to a folder of music"):
        scan(tmp_path)


def test_missing_folder_and_a_file_instead_of_a_folder(tmp_path):
    with pytest.raises(LibraryError, match="does not exist"):
        scan(tmp_path / "nope")
    (tmp_path / "song.wav").write_bytes(b"x")
    with pytest.raises(LibraryError, match="not a folder"):
        scan(tmp_path / "song.wav")
    assert issubclass(LibraryError, ValueError)


def test_a_folder_of_only_unreadable_files_is_an_error(tmp_path):
    (tmp_path / "bad.flac").write_bytes(b"fLaC garbage")
    with pytest.raises(LibraryError, match="no track could be read"):
        scan(tmp_path)


# --------------------------------------------------------------------------- stable ids


def test_ids_and_playlists_are_stable_across_scans_and_library_locations(tmp_path):
    make_playlist_library(tmp_path / "one", with_absolute_paths=False)  # absolute paths would point at "one"
    shutil.copytree(tmp_path / "one", tmp_path / "elsewhere" / "two")
    first, _ = scan(tmp_path / "one")
    again, _ = scan(tmp_path / "one")
    moved, _ = scan(tmp_path / "elsewhere" / "two")

    def snapshot(result):
        return [(t.id, t.file, t.title, t.playlists) for t in result.tracks]

    assert snapshot(first) == snapshot(again) == snapshot(moved)
    assert first.playlists == moved.playlists
    for track in first.tracks:
        if track.file and track.file != "music/b.wav":
            assert track.id == path_track_id(track.file)
    assert len({t.id for t in first.tracks}) == len(first.tracks)


@pytest.mark.parametrize("field, key", [
    ("Am", "A minor"), ("F#m", "F# minor"), ("Ebmin", "Eb minor"), ("Bb", "Bb major"), ("C", "C major"),
    ("D-flat major", "Db major"), ("c sharp minor", "C# minor"), ("8A", "A minor"), ("8B", "C major"),
    ("1A", "G# minor"), ("12B", "E major"), ("o", None), ("", None), ("13A", None), ("Cmajor7", None),
])
def test_key_fields_are_read_in_the_notations_taggers_use(field, key):
    from index.vocabulary import key_from_field

    assert key_from_field(field) == key
