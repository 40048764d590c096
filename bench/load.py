"""Load on the chat server: concurrent sessions through ``gradio_client``, with isolation checked.

Eight sessions (by default) run at once, each its own ``gradio_client.Client`` (so its own
server-side ``Session``), five turns each: a request and then refinements. Reported: turn latency
(p50, p95, max, as the client sees it, queueing included), the error count (must be 0) and
whether any session's played list holds a track that was never returned to that session.

    python bench/load.py                         # starts a server on a tiny synthetic catalog
    python bench/load.py --index DIR --model DIR # ... or on a given index and model
    python bench/load.py --url http://127.0.0.1:7860 --json
    python bench/load.py --batching on           # only the app's default (both: with and without, in turn)

Loopback only: ``--url`` must name this machine. Bounded: ``--sessions`` at most 64, ``--turns``
at most 20, and every turn and the whole run have time limits.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

OPENERS = ("calm piano music", "fast electronic with a driving beat", "a folk reel in D major",
           "something dark and orchestral")
REFINEMENTS = ("faster", "more like the first one", "no vocals", "darker")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_SESSIONS, MAX_TURNS = 64, 20


@dataclass
class SessionResult:
    """What one client saw."""

    name: str
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)  # every track id the server returned to this client
    played: list[str] = field(default_factory=list)  # the played list in the client's last reply
    session_ids: set[str] = field(default_factory=set)

    @property
    def foreign_tracks(self) -> list[str]:
        """Played tracks this session was never given: a leak from another session."""
        mine = set(self.returned)
        return [t for t in self.played if t not in mine]


def conversation(i: int, turns: int) -> list[str]:
    """Session ``i``'s messages: an opener (rotating, so sessions differ), then refinements."""
    return [OPENERS[i % len(OPENERS)]] + [REFINEMENTS[j % len(REFINEMENTS)] for j in range(turns - 1)]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def run_session(url: str, i: int, turns: int, turn_timeout_s: float, deadline: float,
                start: threading.Barrier) -> SessionResult:
    from gradio_client import Client

    result = SessionResult(name=f"s{i}")
    try:
        client = Client(url, verbose=False, download_files=False)
    except Exception as e:  # cannot even connect: every turn counts as an error
        result.errors += [f"connect: {type(e).__name__}: {e}"] * turns
        start.wait()
        return result
    start.wait()  # all sessions begin together
    for message in conversation(i, turns):
        if time.monotonic() > deadline:
            result.errors.append(f"{message!r}: not run, the run's time limit was reached")
            continue
        t0 = time.perf_counter()
        try:
            out = client.submit(message, api_name="/turn").result(timeout=turn_timeout_s)
        except Exception as e:
            result.errors.append(f"{message!r}: {type(e).__name__}: {e}")
            continue
        result.latencies_s.append(time.perf_counter() - t0)
        result.returned += out["track_ids"]
        result.played = list(out["played"])
        result.session_ids.add(out["session"])
    return result


def run_load(url: str, sessions: int, turns: int, turn_timeout_s: float, total_timeout_s: float) -> dict:
    """Run the sessions concurrently against ``url``; return the summary."""
    deadline = time.monotonic() + total_timeout_s
    start = threading.Barrier(sessions)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=sessions) as pool:
        results = list(pool.map(lambda i: run_session(url, i, turns, turn_timeout_s, deadline, start), range(sessions)))
    wall = time.perf_counter() - t0
    latencies = [x for r in results for x in r.latencies_s]
    all_session_ids = [s for r in results for s in r.session_ids]
    leaks = {r.name: r.foreign_tracks for r in results if r.foreign_tracks}
    return {
        "url": url,
        "sessions": sessions,
        "turns_per_session": turns,
        "turns_ok": len(latencies),
        "errors": sum(len(r.errors) for r in results),
        "error_messages": [e for r in results for e in r.errors][:20],
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "max_s": max(latencies, default=float("nan")),
        "mean_s": statistics.fmean(latencies) if latencies else float("nan"),
        "wall_s": wall,
        "turns_per_s": len(latencies) / wall if wall > 0 else float("nan"),
        # Isolation: one server session per client, distinct across clients, and no foreign tracks.
        "isolated": not leaks and len(set(all_session_ids)) == len(all_session_ids) == sum(
            1 for r in results if r.latencies_s) and all(len(r.session_ids) <= 1 for r in results),
        "foreign_tracks": leaks,
        "per_session": [{**asdict(r), "session_ids": sorted(r.session_ids)} for r in results],
    }


def format_table(s: dict) -> str:
    rows = [
        ("sessions x turns", f"{s['sessions']} x {s['turns_per_session']}"),
        ("turns completed", f"{s['turns_ok']}"),
        ("errors", f"{s['errors']}"),
        ("latency p50", f"{s['p50_s']:.2f} s"),
        ("latency p95", f"{s['p95_s']:.2f} s"),
        ("latency max", f"{s['max_s']:.2f} s"),
        ("latency mean", f"{s['mean_s']:.2f} s"),
        ("throughput", f"{s['turns_per_s']:.2f} turns/s"),
        ("wall time", f"{s['wall_s']:.1f} s"),
        ("sessions isolated", "yes" if s["isolated"] else f"NO: {s['foreign_tracks']}"),
    ]
    width = max(len(k) for k, _ in rows)
    how = {True: ", decoding steps shared between turns", False: ", each turn decoded on its own"}.get(s.get("batched"), "")
    lines = [f"Chat load against {s['url']}{how}", "-" * (width + 20)]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [f"  error: {e}" for e in s["error_messages"]]
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(index: Path, model: Path | None, concurrency: int | None, threads: int | None = None,
                 weights: str = "auto", batch_sessions: bool = True):
    """Serve the app in this process on a free loopback port, configured as app.py configures it
    unless told otherwise; return (blocks, url)."""
    from app import DEFAULT_THREADS, build_app, default_concurrency, launch, serving_weights, set_turn_threads
    from assistant.chat import MusicAssistant

    set_turn_threads(threads or DEFAULT_THREADS)
    assistant = MusicAssistant.load(index, model, weights=serving_weights(weights), batch_sessions=batch_sessions)
    demo = build_app(assistant, concurrency=concurrency or default_concurrency(batch_sessions))
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Concurrent chat sessions against the app, with latency and isolation.")
    p.add_argument("--url", help="a running app on this machine (default: start one)")
    p.add_argument("--index", type=Path, help="index for the server this starts (default: a tiny synthetic one)")
    p.add_argument("--model", type=Path, help="model directory for --index (default: none, dense retrieval)")
    p.add_argument("--sessions", type=int, default=8, help="concurrent sessions (default: %(default)s)")
    p.add_argument("--turns", type=int, default=5, help="turns per session (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="server queue concurrency when this starts the server (default: the app's, which "
                        "depends on --batching)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per turn in the server this starts "
                                                            "(default: the app's)")
    p.add_argument("--weights", choices=("auto", "float32", "bfloat16", "int8"), default="auto",
                   help="how the model of the server this starts keeps its weights; auto as the app chooses "
                        "(default: %(default)s)")
    p.add_argument("--batching", choices=("on", "off", "both"), default="both",
                   help="whether the server this starts shares decoding steps between the turns running at once "
                        "(the app's default), decodes each turn on its own, or both, one after the other "
                        "(default: %(default)s)")
    p.add_argument("--turn-timeout-s", type=float, default=120.0, help="limit on one turn (default: %(default)s)")
    p.add_argument("--total-timeout-s", type=float, default=600.0, help="limit on the whole run (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    args = p.parse_args(argv)
    if not 1 <= args.sessions <= MAX_SESSIONS:
        p.error(f"--sessions must be between 1 and {MAX_SESSIONS}")
    if not 1 <= args.turns <= MAX_TURNS:
        p.error(f"--turns must be between 1 and {MAX_TURNS}")
    if args.url and (args.index or args.model):
        p.error("--url uses a running server; --index/--model are for the server this would start")
    if args.model and not args.index:
        p.error("--model needs --index")
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        p.error(f"--url must be on this machine ({', '.join(sorted(LOOPBACK))}); got {args.url}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    modes = [None] if args.url else {"on": [True], "off": [False], "both": [True, False]}[args.batching]
    summaries = []
    stdout = sys.stdout
    # with --json, stdout carries the JSON alone: what training and Gradio print goes to stderr
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet, tempfile.TemporaryDirectory(prefix="tonearm-load-") as tmp:
        index, model = args.index, args.model
        if args.url is None and index is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny_catalog import build_tiny_assistant

            log(f"Building a tiny synthetic catalog and model in {tmp} (about a minute)")
            index, model = build_tiny_assistant(Path(tmp))
        for batched in modes:
            demo = None
            try:
                url = args.url
                if url is None:
                    demo, url = start_server(index, model, args.concurrency, threads=args.threads,
                                             weights=args.weights, batch_sessions=batched)
                label = "" if batched is None else (" (steps shared between turns)" if batched else
                                                     " (each turn decoded on its own)")
                log(f"{args.sessions} sessions x {args.turns} turns against {url}{label}")
                summary = run_load(url, args.sessions, args.turns, args.turn_timeout_s, args.total_timeout_s)
                summary["batched"] = batched
                summaries.append(summary)
            finally:
                if demo is not None:
                    demo.close()
            if not args.json:
                print(format_table(summary))
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2), file=stdout)
    return 0 if all(s["errors"] == 0 and s["isolated"] for s in summaries) else 1


if __name__ == "__main__":
    raise SystemExit(main())
