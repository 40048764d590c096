"""A large-catalog rehearsal: index synthetic catalogs of growing size, no audio decoding.

Each catalog has text metadata (titles, artists, albums, genres, tags, lyrics for some), audio
feature vectors drawn around one centre per genre, descriptors, and playlists that mostly keep
to one or two genres. It goes through the real build after the library scan
(``index.build.index_scan``: text embeddings with MiniLM, audio standardisation, playlist
co-occurrence, codebooks, FAISS, the atomic write), with the audio features handed over instead
of decoded. Printed per size: seconds and peak resident memory per stage, the time to load the
index, and a chat turn's latency without a model (request reading, BM25, dense search, fusion,
re-ranking: ``MusicAssistant.stream`` up to the chosen tracks), p50 and p95.

    python bench/rehearsal.py                        # 300, 3,000, 30,000 and 100,000 tracks
    python bench/rehearsal.py --sizes 1000 --json out.json
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GENRES = ["ambient", "folk", "jazz", "techno", "classical", "rock", "hip hop", "blues", "reggae", "metal",
          "soul", "house", "country", "baroque", "drum and bass", "chiptune", "bossa nova", "punk",
          "soundtrack", "gospel", "disco", "trance", "celtic", "flamenco"]
MOODS = ["calm", "dark", "happy", "melancholic", "energetic", "dreamy", "aggressive", "romantic", "epic",
         "playful", "tense", "warm", "sad", "uplifting", "mysterious", "relaxing"]
INSTRUMENTS = ["piano", "guitar", "violin", "synth", "drums", "bass", "flute", "voice", "strings", "organ",
               "saxophone", "trumpet", "harp", "accordion", "cello", "banjo"]
SYLLABLES = ["ka", "lo", "mi", "ren", "sa", "tor", "vel", "an", "is", "du", "fen", "gra", "hol", "jin", "mor",
             "nel", "os", "pra", "qui", "ru", "sel", "tam", "ul", "vor", "wyn", "zel"]
REFINEMENTS = ["faster", "no vocals please", "more like the second one", "something calmer", "less dark"]


def chat_turns(count: int, seed: int = 1) -> list[tuple[bool, str]]:
    """(starts a new session, message): requests no two alike (nothing served from a cache), four turns a session."""
    rng = np.random.default_rng(seed)
    turns = []
    for i in range(count):
        if i % 4 == 0:
            turns.append((True, f"{rng.choice(MOODS)} {rng.choice(GENRES)} with {rng.choice(INSTRUMENTS)}, "
                                f"around {int(rng.integers(60, 180))} bpm"))
        else:
            turns.append((False, f"{rng.choice(REFINEMENTS)}, maybe with {rng.choice(INSTRUMENTS)}"))
    return turns


def word(rng: np.random.Generator, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES, size=syllables)).capitalize()


def synthetic_catalog(n: int, seed: int = 0):
    """(LibraryScan, features by path) for ``n`` synthetic tracks in a library root that holds no files."""
    from index.audio import AUDIO_FEATURE_DIM, PITCH_CLASSES
    from index.build import FileFeatures
    from index.library import LibraryScan
    from index.track import Track

    rng = np.random.default_rng(seed)
    root = Path(tempfile.gettempdir()) / "tonearm-rehearsal-library"
    genre_of = rng.zipf(1.6, size=n) % len(GENRES)
    n_artists = max(4, n // 8)
    artist_genre = rng.integers(0, len(GENRES), size=n_artists)
    artist_names = [f"{word(rng, 2)} {word(rng, 3)}" for _ in range(n_artists)]
    centres = rng.normal(size=(len(GENRES), AUDIO_FEATURE_DIM)).astype(np.float32)
    tracks, features = [], {}
    by_genre: dict[int, list[str]] = {}
    for i in range(n):
        g = int(genre_of[i])
        a = int(rng.integers(0, n_artists)) if rng.random() < 0.3 else int(rng.choice(np.flatnonzero(artist_genre == g)) if (artist_genre == g).any() else 0)
        tags = [GENRES[g]] + list(rng.choice(MOODS, size=2, replace=False)) + list(rng.choice(INSTRUMENTS, size=2, replace=False))
        lyrics = " ".join(word(rng, int(rng.integers(1, 3))).lower() for _ in range(int(rng.integers(40, 160)))) \
            if rng.random() < 0.3 else ""
        rel = f"{GENRES[g]}/{artist_names[a]}/{i:06d}.ogg"
        tid = f"t{i:06d}"
        tracks.append(Track(id=tid, title=" ".join(word(rng, int(rng.integers(1, 4))) for _ in range(int(rng.integers(1, 4)))),
                            artist=artist_names[a], album=f"{word(rng, 3)} {word(rng, 2)}", year=str(int(rng.integers(1960, 2026))),
                            genre=GENRES[g], tags=tags, lyrics=lyrics, file=rel))
        tempo = float(np.clip(rng.normal(70 + 6 * g, 20), 50, 200))
        mode = "minor" if rng.random() < 0.4 else "major"
        descriptors = {"tempo_bpm": round(tempo, 1), "key": f"{PITCH_CLASSES[int(rng.integers(0, 12))]} {mode}",
                       "key_confidence": round(float(rng.uniform(0.3, 0.9)), 3), "mode": mode,
                       "energy": round(float(rng.random()), 3), "brightness": round(float(rng.random()), 3),
                       "percussiveness": round(float(rng.random()), 3), "vocals": round(float(rng.random()), 3)}
        vector = centres[g] + 0.7 * rng.normal(size=AUDIO_FEATURE_DIM).astype(np.float32)
        features[str(root / rel)] = FileFeatures(str(root / rel), vector, descriptors, float(rng.uniform(90, 420)))
        by_genre.setdefault(g, []).append(tid)
    playlists = {}
    for p in range(max(2, n // 25)):
        g1, g2 = rng.choice(len(GENRES), size=2)
        pool = by_genre.get(int(g1), []) + (by_genre.get(int(g2), []) if rng.random() < 0.5 else [])
        if len(pool) < 2:
            continue
        size = int(min(len(pool), rng.integers(15, 41)))
        playlists[f"{word(rng, 2)} {GENRES[int(g1)]} mix {p}"] = [str(t) for t in rng.choice(pool, size=size, replace=False)]
    scan = LibraryScan(root=root, tracks=tracks, playlists=playlists, playlist_source="playlist files",
                       described={t.id for t in tracks})
    return scan, features


class PeakMemory:
    """Samples this process's resident memory every few milliseconds, with the time of each sample."""

    def __init__(self, every_s: float = 0.02) -> None:
        import psutil

        self.process, self.every_s = psutil.Process(), every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.process.memory_info().rss))
            time.sleep(self.every_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mb(self, start: float, end: float) -> float:
        """The highest sample within [start, end], counting the samples just before and after it."""
        times = [t for t, _ in self.samples]
        lo = max(0, bisect.bisect_left(times, start) - 1)
        hi = bisect.bisect_right(times, end) + 1
        return max((rss for _, rss in self.samples[lo:hi]), default=0) / 2**20


def rehearse(n: int, queries: int, workdir: Path) -> dict:
    from assistant.chat import MusicAssistant
    from index.build import index_scan

    t = time.perf_counter()
    scan, features = synthetic_catalog(n)
    make_s = time.perf_counter() - t
    out = workdir / f"index-{n}"
    with PeakMemory() as memory:
        t0 = time.perf_counter()
        report = index_scan(scan, out, progress=False, log=lambda s: None, started=t0,
                            features=lambda paths: [features[str(p)] for p in paths], stamp=lambda p: [0, 0])
        end = time.perf_counter()
        stages, edge = {}, t0
        for name, seconds in report.stage_seconds.items():
            stages[name] = {"s": round(seconds, 2), "peak_mb": round(memory.peak_mb(edge, edge + seconds), 0)}
            edge += seconds
        stages["write"] = {"s": round(end - edge, 2), "peak_mb": round(memory.peak_mb(edge, end), 0)}
        t = time.perf_counter()
        assistant = MusicAssistant.load(out)
        load_s = time.perf_counter() - t
        load_peak = memory.peak_mb(t, time.perf_counter())
        lat = []
        for i, (new, q) in enumerate(chat_turns(queries)):
            if new:
                session = assistant.new_session()
            t = time.perf_counter()
            for update in assistant.stream(session, q):
                if update.tracks is not None and len(lat) == i:
                    lat.append(time.perf_counter() - t)
    index_mb = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    row = {"tracks": n, "playlists": len(scan.playlists), "build_s": round(end - t0, 1), "stages": stages,
           "index_mb": round(index_mb, 0), "load_s": round(load_s, 2), "load_peak_mb": round(load_peak, 0),
           "turn_p50_ms": round(1000 * float(np.percentile(lat, 50)), 1),
           "turn_p95_ms": round(1000 * float(np.percentile(lat, 95)), 1), "synthesis_s": round(make_s, 1),
           "faiss": report.modalities["tags"].faiss}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[300, 3_000, 30_000, 100_000])
    p.add_argument("--queries", type=int, default=24, help="chat turns timed per size (default %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    if any(n < 10 for n in args.sizes):
        p.error("sizes must be at least 10 tracks")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            row = rehearse(n, args.queries, Path(tmp))
            rows.append(row)
            s = row["stages"]
            print(f"{n:>8,} tracks ({row['playlists']:,} playlists, faiss {row['faiss']}): build {row['build_s']} s  "
                  + "  ".join(f"{k} {v['s']}s/{v['peak_mb']:.0f}MB" for k, v in s.items())
                  + f"  | index {row['index_mb']:.0f} MB, load {row['load_s']} s ({row['load_peak_mb']:.0f} MB)"
                  f"  | turn to tracks p50 {row['turn_p50_ms']} ms, p95 {row['turn_p95_ms']} ms", flush=True)
            shutil.rmtree(Path(tmp) / f"index-{n}", ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
