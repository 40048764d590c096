"""How long a person waits: time to the first tracks and to the whole reply, per turn.

Each test conversation is replayed live, one session per conversation: its user turns are
sent in order and the assistant answers with its own picks, as in the chat. For every turn
two times are taken from the moment the message is sent: until the tracks are chosen (the
cards can be drawn) and until the reply is complete. They are measured twice in the same
run: on the engine (``MusicAssistant.stream``) and through the app's controller (the code
the Gradio page runs, ``app.ChatController.respond``, with the app's batched decoding). Printed:
p50 and p95 of both, and the same for the engine without a model as the baseline, for the
engine asking the model for its music block on every turn (also where the turn's ranking does
not read it: ``Retrieval.reads_block``), for the engine guessing from the context alone
(no ``generation.Phrasebook`` of the model's training replies), and for the engine decoding
one token a pass (no guesses: ``generation.Decoder(draft_tokens=0)``).

    python bench/latency.py                       # the demo index and model
    python bench/latency.py --index DIR --model DIR --conversations FILE --limit 20
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; nan for no values."""
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def user_turns(conversation: dict) -> list[str]:
    return [t["content"] for t in conversation["turns"] if t["role"] == "user"]


def time_engine(assistant, conversations: list[dict]) -> dict[str, list[float]]:
    """Seconds to the tracks and to the end of each turn, calling ``assistant.stream``."""
    tracks_s, end_s = [], []
    for conversation in conversations:
        session = assistant.new_session()
        for message in user_turns(conversation):
            t0 = time.perf_counter()
            for update in assistant.stream(session, message):
                if update.tracks is not None:
                    tracks_s.append(time.perf_counter() - t0)
            end_s.append(time.perf_counter() - t0)
    return {"tracks_s": tracks_s, "end_s": end_s}


def time_app(assistant, conversations: list[dict]) -> dict[str, list[float]]:
    """The same through ``app.ChatController.respond``, the generator the page's chat box runs."""
    from app import ChatController

    controller = ChatController(assistant)
    tracks_s, end_s = [], []
    for conversation in conversations:
        chat, session = [], None
        for message in user_turns(conversation):
            t0 = time.perf_counter()
            for chat, session, cards in controller.respond({"text": message, "files": []}, chat, session):
                if cards:
                    tracks_s.append(time.perf_counter() - t0)
            end_s.append(time.perf_counter() - t0)
    return {"tracks_s": tracks_s, "end_s": end_s}


def summarize(name: str, times: dict[str, list[float]]) -> dict:
    return {"system": name, "turns": len(times["end_s"]),
            "tracks_p50_s": percentile(times["tracks_s"], 50), "tracks_p95_s": percentile(times["tracks_s"], 95),
            "end_p50_s": percentile(times["end_s"], 50), "end_p95_s": percentile(times["end_s"], 95)}


def format_table(rows: list[dict]) -> str:
    lines = [f"{'system':<27}{'turns':>7}{'tracks p50':>12}{'tracks p95':>12}{'reply p50':>11}{'reply p95':>11}"]
    for r in rows:
        lines.append(f"{r['system']:<27}{r['turns']:>7}{r['tracks_p50_s']:>11.2f}s{r['tracks_p95_s']:>11.2f}s"
                     f"{r['end_p50_s']:>10.2f}s{r['end_p95_s']:>10.2f}s")
    return "\n".join(lines)


def add_model_arguments(p: argparse.ArgumentParser, split: str, limit: int) -> None:
    """The options every bench over a model and its conversations takes: --index, --model,
    --conversations (default: the model's ``split``), --limit, --threads, --json."""
    p.add_argument("--index", type=Path, help="index directory (default: the demo's, built if missing)")
    p.add_argument("--model", type=Path, help="model directory (default: the demo's)")
    p.add_argument("--conversations", type=Path,
                   help=f"conversations.jsonl (default: MODEL/conversations/{split}/conversations.jsonl)")
    p.add_argument("--limit", type=int, default=limit, help="conversations used (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--json", type=Path, help="also write the figures here as JSON")


def check_model_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.limit < 1:
        p.error("--limit must be at least 1")
    if (args.index is None) != (args.model is None):
        p.error("give --index and --model together, or neither for the demo")
    return args


def model_and_conversations(args: argparse.Namespace, split: str) -> tuple[Path, list[dict]]:
    """Set torch's threads, fill in the demo's index and model when none is given (building them if
    missing), and read the conversations (``--conversations``, else the model's ``split``)."""
    import torch

    from assistant.conversations import conversations_path, read_conversations

    torch.set_num_threads(args.threads)
    if args.index is None:
        from assistant.pipeline import ensure_demo

        args.index, args.model = ensure_demo()
    path = args.conversations or conversations_path(args.model, split)
    return path, read_conversations(path)[: args.limit]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time to the first tracks and to the whole reply, per chat turn, "
                                            "on the engine and through the app, with and without the model.")
    add_model_arguments(p, "test", 20)
    p.add_argument("--weights", choices=("auto", "float32", "bfloat16", "int8"), default="auto",
                   help="how the model keeps its weights; auto as the app chooses (default: %(default)s)")
    return check_model_arguments(p, p.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from assistant.chat import MusicAssistant

    path, conversations = model_and_conversations(args, "test")
    print(f"{len(conversations)} conversations from {path}, {sum(len(user_turns(c)) for c in conversations)} turns")
    from app import serving_weights

    weights = serving_weights(args.weights)
    print(f"weights: {weights}")
    tuned = MusicAssistant.load(args.index, args.model, weights=weights)
    tuned.reply(tuned.new_session(), "a warm-up turn")  # first-call costs are not a person's wait
    # the app's assistant sends its steps through the batching thread, as app.py does by default
    served = MusicAssistant.load(args.index, args.model, weights=weights, batch_sessions=True)
    served.reply(served.new_session(), "a warm-up turn")
    engine = MusicAssistant(tuned.index, name="engine")
    rows = [summarize("assistant (engine)", time_engine(tuned, conversations))]
    # The same answers with the model asked for a block on every turn, as if every ranking read it.
    tuned.retrieval.reads_block = lambda history, session: True
    rows.append(summarize("a block every turn (engine)", time_engine(tuned, conversations)))
    del tuned.retrieval.reads_block
    rows.append(summarize("assistant (app)", time_app(served, conversations)))
    tuned.decoder.phrasebook = None
    rows.append(summarize("context guesses (engine)", time_engine(tuned, conversations)))
    tuned.decoder.draft_tokens = 0
    rows += [summarize("one token a pass (engine)", time_engine(tuned, conversations)),
             summarize("no model (engine)", time_engine(engine, conversations))]
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
