"""Index benchmarks.

1. Audio feature speed per track on one core (decode and features, after the first file; the
   code under test and the baseline timed in turn, three rounds, medians), and build speed on
   the demo catalog (tracks per second, per stage), cold (no feature cache) and warm.
2. FAISS query latency at 10k, 100k and 1M tracks with synthetic vectors of the real dimensions:
   flat against IVF (and IVF-PQ with its float16 re-ranking store at 1M), with recall@10 of the
   approximate index against flat and the memory each needs: the FAISS index plus the stored
   embedding rows that retrieval re-scores from (float32 below the PQ threshold, float16 above).

    python bench/index_build.py [--sizes 10000 100000 1000000] [--skip-build] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The code the build figures are compared with: the release before the feature extraction was
# reworked for speed.
BASELINE_REV = "d6f2ca1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from index.paths import demo_dir  # noqa: E402
from index.retrieval import build_faiss_index, nearest_rows  # noqa: E402
from index.text import TEXT_DIM  # noqa: E402


# Run in a fresh interpreter per build, for the code under test and the baseline alike.
_BUILD = """
import json, sys
from pathlib import Path
from index.build import build_index
r = build_index(Path(sys.argv[1]), Path(sys.argv[2]), progress=False, log=lambda s: None)
print(json.dumps({"tracks": r.tracks, "seconds": r.seconds, "stages": r.stage_seconds}))
"""


# Steady-state cost of one track's features on one core: the first file pays for imports and
# compiled kernels, which a build pays once per worker, so it is left out.
_PER_TRACK = """
import json, sys, time
from threadpoolctl import threadpool_limits
threadpool_limits(1)
from index.audio import audio_features, load_excerpt
files = json.loads(sys.stdin.read())
audio_features(load_excerpt(files[0]))
decode = features = 0.0
for f in files[1:]:
    t = time.perf_counter()
    y = load_excerpt(f)
    t1 = time.perf_counter()
    audio_features(y)
    decode += t1 - t
    features += time.perf_counter() - t1
n = len(files) - 1
print(json.dumps({"tracks": n, "decode_ms": 1000 * decode / n, "features_ms": 1000 * features / n}))
"""


def per_track(code_root: Path, files: list[Path], label: str) -> dict:
    """Decode and feature milliseconds per track, one thread, in a fresh interpreter running ``code_root``."""
    env = dict(os.environ, PYTHONPATH=str(code_root), HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", _PER_TRACK], cwd=code_root, env=env, capture_output=True, text=True,
                         input=json.dumps([str(f) for f in files]))
    if run.returncode != 0:
        raise RuntimeError(f"per-track timing with {code_root} failed:\n{run.stderr[-2000:]}")
    r = json.loads(run.stdout.strip().splitlines()[-1])
    r = {k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()}
    r["total_ms"] = round(r["decode_ms"] + r["features_ms"], 1)
    print(f"  {label:<9} per track, one core, {r['tracks']} tracks: decode {r['decode_ms']:6.1f} ms + features "
          f"{r['features_ms']:6.1f} ms = {r['total_ms']:6.1f} ms", flush=True)
    return r


def timed_build(code_root: Path, library: Path, out: Path, home: Path) -> dict:
    """One ``build_index`` of ``library`` with the code at ``code_root``, the feature cache under ``home``."""
    env = dict(os.environ, TONEARM_HOME=str(home), PYTHONPATH=str(code_root), HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", _BUILD, str(library), str(out)], cwd=code_root, env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"build with {code_root} failed:\n{run.stderr[-2000:]}")
    r = json.loads(run.stdout.strip().splitlines()[-1])
    return {"tracks": r["tracks"], "seconds": round(r["seconds"], 2), "tracks_per_s": round(r["tracks"] / r["seconds"], 2),
            "stages": {k: round(v, 2) for k, v in r["stages"].items()}}


def per_track_rounds(roots: dict[str, Path], files: list[Path], rounds: int) -> dict[str, dict]:
    """``per_track`` for each code in turn, ``rounds`` times over (A B A B ...), so that every
    code meets the same spells of load on a shared machine; each figure is the median of its rounds."""
    runs: dict[str, list[dict]] = {label: [] for label in roots}
    for r in range(rounds):
        for label, root in roots.items():
            runs[label].append(per_track(root, files, f"{label} {r + 1}/{rounds}"))
    summary = {}
    for label, results in runs.items():
        summary[label] = {k: round(float(np.median([x[k] for x in results])), 1) for k in ("decode_ms", "features_ms", "total_ms")}
        summary[label]["rounds"] = results
        print(f"  {label:<9} per track, median of {rounds}: decode {summary[label]['decode_ms']:6.1f} ms + features "
              f"{summary[label]['features_ms']:6.1f} ms = {summary[label]['total_ms']:6.1f} ms", flush=True)
    return summary


def bench_builds(code_root: Path, library: Path, label: str) -> dict:
    """Builds cold (empty feature cache), warm (cached features, new index) and, where the code
    keeps its earlier index, a rebuild over it with nothing changed."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        for kind, target in (("cold", "a"), ("warm", "b"), ("rebuild", "b")):
            if kind == "rebuild" and not (code_root / "index" / "incremental.py").is_file():
                continue
            out[kind] = r = timed_build(code_root, library, Path(tmp) / target, home)
            print(f"  {label:<9} {kind:<8} {r['tracks']} tracks in {r['seconds']:7.1f} s = {r['tracks_per_s']:6.2f} tracks/s  "
                  f"{r['stages']}", flush=True)
    return out


def baseline_checkout(rev: str, where: Path) -> Path | None:
    """A detached worktree of ``rev`` at ``where`` (None, with a message, where git cannot make one)."""
    run = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
                         capture_output=True, text=True)
    if run.returncode != 0:
        print(f"  (no baseline: git could not check out {rev}: {run.stderr.strip()[:200]})")
        return None
    return where


def read_library(library: Path) -> None:
    """Read every file once, so that no build pays for a cold disk cache the other one does not."""
    for p in library.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 22):
                    pass


def unit_rows(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    # Clustered data, like real embeddings, rather than uniform noise (where IVF recall is unrealistically low).
    centres = rng.normal(size=(256, d)).astype(np.float32)
    x = centres[rng.integers(0, 256, size=n)] + 0.6 * rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def bench_faiss(n: int, d: int, kinds: list[str], queries: int, rng: np.random.Generator) -> list[dict]:
    x = unit_rows(n, d, rng)
    q = x[rng.choice(n, size=queries, replace=False)] + 0.1 * rng.normal(size=(queries, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rows = []
    truth = None
    for kind in ["flat"] + kinds:
        t = time.perf_counter()
        index = build_faiss_index(x, kind=kind)
        build_s = time.perf_counter() - t
        store = x.astype(np.float16) if kind == "ivfpq" else x  # what the index directory keeps (storage_dtype)
        lat = []
        found = []
        for i in range(queries):
            t = time.perf_counter()
            ids, _ = nearest_rows(index, store, q[i], 10)
            lat.append((time.perf_counter() - t) * 1000)
            found.append(ids)
        if kind == "flat":
            truth = found
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
        index_mb = faiss.serialize_index(index).nbytes / 2**20
        store_mb = store.nbytes / 2**20
        rows.append({"n": n, "dim": d, "index": kind, "build_s": round(build_s, 2),
                     "p50_ms": round(float(np.percentile(lat, 50)), 3), "p95_ms": round(float(np.percentile(lat, 95)), 3),
                     "recall@10": round(recall, 3), "index_mb": round(index_mb, 1), "store_mb": round(store_mb, 1)})
        print(f"  {n:>9,} x {d:<4} {kind:<6} build {build_s:7.2f}s  p50 {rows[-1]['p50_ms']:8.3f} ms  "
              f"p95 {rows[-1]['p95_ms']:8.3f} ms  recall@10 {recall:.3f}  "
              f"memory {index_mb:7.1f} MB index + {store_mb:7.1f} MB rows", flush=True)
        del index
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--library", type=Path, default=demo_dir() / "library", help="library to build (default: the demo library)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=TEXT_DIM, help="vector dimension (default: MiniLM's 384)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--sample", type=int, default=40, help="tracks timed one by one for the per-track figure (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3,
                   help="per-track timings of each code, taken in turn; the median is reported (default %(default)s)")
    p.add_argument("--baseline", default=BASELINE_REV, metavar="REV",
                   help="git revision whose build speed is measured in the same run (default %(default)s; '' for none)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    out: dict = {}
    if not args.skip_build:
        if not args.library.is_dir():
            print(f"no library at {args.library}; run `python -m index demo` first or pass --library", file=sys.stderr)
            return 2
        library = args.library.resolve()
        print(f"Build of {library} (each in a fresh process; cold = empty feature cache)")
        read_library(library)
        from index.audio import AUDIO_EXTENSIONS

        audio = sorted(p for p in library.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        sample = audio[:: max(1, len(audio) // args.sample)][: args.sample + 1]
        with tempfile.TemporaryDirectory() as tmp:
            roots = {"this code": ROOT}
            base = baseline_checkout(args.baseline, Path(tmp) / "baseline") if args.baseline else None
            if base is not None:
                roots[args.baseline] = base
            try:
                timing = per_track_rounds(roots, sample, args.rounds)
                out["build"] = {label: {"per_track": timing[label], **bench_builds(root, library, label)}
                                for label, root in roots.items()}
            finally:
                if base is not None:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                                   capture_output=True)
        if base is not None:
            now, then = out["build"]["this code"], out["build"][args.baseline]
            print(f"  per track: {then['per_track']['total_ms'] / now['per_track']['total_ms']:.2f}x faster than "
                  f"{args.baseline} (features alone {then['per_track']['features_ms'] / now['per_track']['features_ms']:.2f}x)")
            for kind in ("cold", "warm"):
                print(f"  {kind}: {now[kind]['tracks_per_s'] / then[kind]['tracks_per_s']:.2f}x the tracks/s of "
                      f"{args.baseline}; audio stage {then[kind]['stages']['audio'] / max(now[kind]['stages']['audio'], 1e-9):.2f}x faster")
    print("FAISS query latency (one query at a time, k=10)")
    rng = np.random.default_rng(0)
    out["faiss"] = []
    for n in args.sizes:
        kinds = ["ivf"] + (["ivfpq"] if n >= 1_000_000 else [])
        out["faiss"] += bench_faiss(n, args.dim, kinds, args.queries, rng)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
