"""A build as a new machine runs it: every audio format decoded by content, an empty JIT cache
under two workers, a worker that dies, and nothing that was described lost."""
from __future__ import annotations

import faulthandler
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mutagen.id3 import ID3, TIT2, TPE1

import index.build as build
from audio_formats import FORMATS, encode_with_pyav, music_like, write_all_formats
from index.audio import AUDIO_EXTENSIONS, AudioError, audio_features, load_excerpt
from index.library import read_pls, scan_library

ROOT = Path(__file__).resolve().parents[1]


def write_truncated_mp3(path: Path, title: str | None = None) -> Path:
    """A 20 s mp3 cut to 40 % of its bytes: the header still promises 20 s."""
    whole = encode_with_pyav(music_like(20.0), 22050, path.with_name("whole-" + path.name), "mp3", "libmp3lame")
    if title:
        tags = ID3()
        tags.add(TIT2(encoding=3, text=title))
        tags.add(TPE1(encoding=3, text="Somebody"))
        tags.save(whole)
    data = whole.read_bytes()
    whole.unlink()
    path.write_bytes(data[: len(data) * 4 // 10])
    return path


def test_every_format_decodes_by_content(tmp_path):
    files = write_all_formats(tmp_path)
    for name, path in files.items():
        assert path.suffix.lower() in AUDIO_EXTENSIONS
        y = load_excerpt(path)
        assert y.dtype == np.float32 and abs(y.size / 22050 - 6.0) < 0.1, name
        assert audio_features(y).descriptors["tempo_bpm"] > 0, name
    (tmp_path / "words.ogg").write_text("not sound at all\n" * 50)
    with pytest.raises(AudioError, match="not an audio file"):
        load_excerpt(tmp_path / "words.ogg")
    with pytest.raises(AudioError, match="truncated audio file: its header states 20.0 s"):
        load_excerpt(write_truncated_mp3(tmp_path / "cut.mp3"))


@pytest.mark.slow
def test_cold_two_worker_build_of_every_format(tmp_path):
    """`python -m index build --workers 2` with an empty numba cache and an empty TONEARM_HOME."""
    lib = tmp_path / "lib"
    write_all_formats(lib)
    (lib / "words.ogg").write_text("not sound at all\n" * 50)
    write_truncated_mp3(lib / "cut.mp3")
    write_truncated_mp3(lib / "cut tagged.mp3", title="Half a Song")
    (lib / "described.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(64))  # no decodable audio
    (lib / "metadata.jsonl").write_text(json.dumps(
        {"file": "described.m4a", "id": "kept", "title": "Kept From Its Words", "tags": ["folk"]}) + "\n")
    jit_cache, home = tmp_path / "numba-cache", tmp_path / "home"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(jit_cache), "TONEARM_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "index", "build", str(lib), "--out", str(tmp_path / "index"),
                          "--workers", "2", "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert list(jit_cache.rglob("*.nbi")), "the build should have compiled librosa's kernels into the empty cache"

    report = json.loads((tmp_path / "index" / "build_report.json").read_text())
    tracks = [json.loads(line) for line in (tmp_path / "index" / "tracks.jsonl").read_text().splitlines()]
    with_audio = {t["file"] for t in tracks if t["file"] and t["descriptors"]}
    assert with_audio == set(FORMATS)  # AAC named .mp3, ALAC, opus, wma, aiff... all decoded
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"words.ogg", "cut.mp3"}
    assert "not a recognised audio format" in skipped["words.ogg"] and "truncated" in skipped["cut.mp3"]
    text_only = {s["path"]: s["reason"] for s in report["text_only"]}
    assert set(text_only) == {"described.m4a", "cut tagged.mp3"}
    assert "truncated" in text_only["cut tagged.mp3"] and "indexed from its text" in text_only["cut tagged.mp3"]
    by_title = {t["title"]: t for t in tracks}
    assert by_title["Kept From Its Words"]["file"] is None and by_title["Half a Song"]["file"] is None
    assert "text only: 2 audio file(s)" in run.stdout


def _dies_on_crash_files(path_str: str) -> build.FileFeatures:
    if "crash" in Path(path_str).name:
        faulthandler.disable()  # pytest's traceback dump is noise here
        os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder bug does to its process
    return build.FileFeatures(path_str, np.full(3, len(path_str), np.float32), {"tempo_bpm": 100.0}, 1.0)


def test_a_worker_that_dies_costs_only_its_file(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "_features_for_file", _dies_on_crash_files)  # forked workers see it too
    paths = [tmp_path / f"{name}.wav" for name in ("a", "b", "crash-1", "c", "d", "crash-2", "e")]
    for p in paths:
        p.write_bytes(b"RIFF")
    results = build.extract_audio_features(paths, workers=2, progress=False)
    assert [r.path for r in results] == [str(p) for p in paths]
    for p, r in zip(paths, results):
        if "crash" in p.name:
            assert r.vector is None and r.error == build.CRASH_REASON
        else:
            assert r.error is None and r.vector[0] == len(str(p))


# --------------------------------------------------------------------------- playlists anywhere


def write_album(folder: Path, n: int, album: str | None, playlist: str | None, base_freq: float) -> list[Path]:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        t = np.arange(4000) / 8000
        path = folder / f"{i + 1:02d} song.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * (base_freq + 20 * i) * t)).astype(np.float32), 8000)
        files.append(path)
    if album is not None:
        lines = [json.dumps({"file": p.relative_to(folder.parent).as_posix(), "album": album}) for p in files]
        with open(folder.parent / "metadata.jsonl", "a") as f:
            f.write("\n".join(lines) + "\n")
    if playlist is not None:
        (folder / playlist).write_text("".join(f"{p.name}\n" for p in reversed(files)))
    return files


def test_a_playlist_beside_each_album_is_read(tmp_path):
    for k in range(3):
        write_album(tmp_path / f"Album {k}", 3, None, "playlist.m3u", 200 + 100 * k)
    (tmp_path / "Album 2" / "best.pls").write_text(
        "[playlist]\nFile1=03 song.wav\nTitle1=Three\nFile2=01 song.wav\nNumberOfEntries=2\n")
    scan = scan_library(tmp_path, progress=False, log=lambda _: None)
    assert scan.playlist_source == "playlist files"
    assert list(scan.playlists) == ["playlist", "Album 1/playlist", "best", "Album 2/playlist"]
    ids = {t.file: t.id for t in scan.tracks}
    assert scan.playlists["best"] == [ids["Album 2/03 song.wav"], ids["Album 2/01 song.wav"]]
    assert scan.playlists["playlist"] == [ids[f"Album 0/0{i} song.wav"] for i in (3, 2, 1)]


def test_pls_needs_its_section(tmp_path):
    (tmp_path / "x.pls").write_text("File1=a.mp3\n")
    with pytest.raises(ValueError, match="not a PLS playlist"):
        read_pls(tmp_path / "x.pls")


def test_without_playlists_albums_then_folders_stand_in(tmp_path):
    write_album(tmp_path / "one", 3, "First Light", None, 200)
    write_album(tmp_path / "two", 2, None, None, 500)
    write_album(tmp_path / "solo", 1, None, None, 800)  # one track says nothing about co-occurrence
    scan = scan_library(tmp_path, progress=False, log=lambda _: None)
    assert scan.playlist_source == "albums and folders"
    assert {name: len(ids) for name, ids in scan.playlists.items()} == {"album: First Light": 3, "folder: two": 2}
    assert scan.playlists["album: First Light"] == [t.id for t in scan.tracks if t.file.startswith("one/")]


def test_index_info_lists_every_album_playlist(tmp_path):
    lib = tmp_path / "lib"
    for k in range(3):
        write_album(lib / f"Album {k}", 2, None, f"album {k}.m3u", 200 + 100 * k)
    build.build_index(lib, tmp_path / "index", progress=False, workers=1, log=lambda _: None)
    out = subprocess.run([sys.executable, "-m", "index", "info", str(tmp_path / "index")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert "playlists: 3 (from playlist files; 2 held out for validation and test)" in out.stdout
    for k in range(3):
        assert f"- album {k}: 2 tracks" in out.stdout
