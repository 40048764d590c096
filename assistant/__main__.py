"""Command line for the assistant.

    python -m assistant train INDEX --out MODEL          fine-tune on conversations synthesized from INDEX
    python -m assistant evaluate MODEL INDEX CONVS.jsonl  Music-CRS metrics: assistant, untuned base, baselines
    python -m assistant chat [--index I --model M]        chat in the terminal (default: the demo catalog)
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cmd_train(args: argparse.Namespace) -> int:
    from .pipeline import train_on_index
    from .train import TrainConfig

    config = TrainConfig(max_steps=args.steps, seq_len=args.seq_len or TrainConfig.seq_len,
                         code_loss_weight=args.code_loss_weight, batch_size=args.batch_size,
                         time_budget_s=args.minutes * 60 if args.minutes else None,
                         train_layers=args.train_layers or None)
    report = train_on_index(args.index, args.out, base=args.base, config=config, seed=args.seed)
    print(f"trained {report.steps} steps in {report.seconds:.0f}s (seq len {report.seq_len}); "
          f"train loss {report.train_loss:.3f}, validation loss {report.val_loss:.3f}; saved to {args.out}")
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    from index.store import MusicIndex

    from .conversations import conversations_path, read_conversations
    from .pipeline import fit_reranker_for

    path = args.conversations or conversations_path(args.model, "val")
    report = fit_reranker_for(args.model, MusicIndex.load(args.index), read_conversations(path), folds=args.folds,
                              min_turns=args.min_turns)
    if "skipped" in report:
        print(f"{path}: {report['skipped']}")
        return 0
    print(f"fitted on {report['conversations']} conversations ({report['turns']} turns) from {path}")
    for name, m in report.get("cross_validated", {}).items():
        print(f"  {name:<26} nDCG@10 {m['ndcg@10']:.4f}  hit@3 {m['hit@3']:.4f}  ({report['folds']}-fold cross-validated, "
              f"folds by {report['folds_by']})")
    if report.get("by_turn"):
        from .rerank import describe_by_turn

        print(f"  {describe_by_turn(report['by_turn'])}")
    print(f"saved to {args.model}/reranker.json")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import format_table, run_evaluation

    model = None if args.model.lower() == "none" else args.model
    results = run_evaluation(model, args.index, args.conversations, base=args.base, include_base=not args.no_base,
                             limit=args.limit, out=args.out, ablations=not args.no_ablations,
                             predictions_out=args.predictions, live=not args.no_live, weights=args.weights)
    print(format_table(results))
    if args.out:
        print(f"JSON written to {args.out}")
    if args.predictions:
        print(f"Music-CRS submission JSON written to {args.predictions}")
    return 0


HELP = """Commands: /upload PATH (then ask about it), /more N (more like card N), /not N (not for me),
/played, /new (new session), /quit. Anything else is a message."""


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import MusicAssistant
    from .pipeline import ensure_demo

    index_dir, model_dir = args.index, args.model
    if index_dir is None:
        index_dir, demo_model = ensure_demo(with_model=not args.no_model)
        model_dir = model_dir or demo_model
    print("Loading the assistant ...", flush=True)
    assistant = MusicAssistant.load(index_dir, None if args.no_model else model_dir)
    session = assistant.new_session()
    print(f"Catalog: {len(assistant.index.tracks)} tracks. {HELP}")
    pending_upload = None
    last = []
    lines = (line.rstrip("\n") for line in sys.stdin) if not sys.stdin.isatty() else None
    while True:
        try:
            message = next(lines) if lines is not None else input("you> ")
        except (EOFError, StopIteration, KeyboardInterrupt):
            print()
            return 0
        if lines is not None:
            print(f"you> {message}")
        message = message.strip()
        if not message:
            continue
        cmd, _, rest = message.partition(" ")
        if cmd == "/quit":
            return 0
        if cmd == "/new":
            session = assistant.new_session()
            print("(new session)")
            continue
        if cmd == "/played":
            for tid in session.played:
                print(f"  {assistant.index.by_id[tid].display_name}")
            continue
        if cmd == "/upload":
            pending_upload = rest.strip()
            print(f"(attached {pending_upload}; now ask about it)")
            continue
        if cmd in ("/more", "/not"):
            try:
                track_id = last[int(rest) - 1]
            except (ValueError, IndexError):
                print("give the number of a card shown in the last reply")
                continue
            reply = assistant.feedback(session, track_id, liked=(cmd == "/more"))
            print_cards(reply.tracks)
            print(f"assistant> {reply.text}")
        else:
            shown = ""  # the words are printed as they come; the cards first, as soon as they are chosen
            for update in assistant.stream(session, message, upload=pending_upload):
                if update.tracks:
                    print_cards(update.tracks)
                if update.reply is None and update.text.startswith(shown) and update.text != shown:
                    print(("assistant> " if not shown else "") + update.text[len(shown):], end="", flush=True)
                    shown = update.text
                if update.reply is not None:
                    reply = update.reply
            pending_upload = None
            if not shown or reply.text != shown:  # nothing streamed, or the grounding check changed it
                print(("\n" if shown else "") + f"assistant> {reply.text}")
            else:
                print()
        if reply.notes:
            print(f"  ({'; '.join(reply.notes)})")
        for path in reply.files:
            print(f"  file: {path}")
        last = [c.id for c in reply.tracks] or last


def print_cards(cards) -> None:
    for i, card in enumerate(cards, 1):
        print(f"  [{i}] {card.title} — {card.artist} [{card.album}]  {card.audio_path or '(no audio)'}")


def build_parser() -> argparse.ArgumentParser:
    from .chat import DEFAULT_WEIGHTS
    from .model_dir import WEIGHT_FORMATS

    p = argparse.ArgumentParser(prog="python -m assistant", description="Train, evaluate and chat with the music assistant.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fine-tune the language model on conversations synthesized from an index "
                                     "(val and test conversations walk the playlists the index holds out)")
    t.add_argument("index", help="index directory (python -m index build ...)")
    t.add_argument("--out", required=True, help="model directory to write; an unfinished run there is resumed")
    t.add_argument("--base", default=None, help="base model: a local Hugging Face model directory (default: SmolLM2-135M-Instruct)")
    t.add_argument("--steps", type=int, default=400, help="maximum optimizer steps (default 400)")
    t.add_argument("--minutes", type=float, default=12.0,
                   help="wall-clock budget in minutes, loading included (default 12; 0 = none); the re-ranker's "
                        "fit on the validation conversations follows, about 2 minutes")
    t.add_argument("--seq-len", type=int, default=None,
                   help="tokens per example; older turns are dropped beyond it (default 256)")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--train-layers", type=int, default=8,
                   help="adapt only the top N decoder layers; the frozen ones below run once per example, not "
                        "every step (default 8; 0 = adapt every layer, about 3x slower per step)")
    t.add_argument("--code-loss-weight", type=float, default=4.0,
                   help="weight of each music-code token in the loss against 1 for a word (default 4)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("rerank", help="fit the learned re-rankers of a model on validation conversations "
                                      "(`train` does this when it ends), with a cross-validated report")
    r.add_argument("model", help="model directory (python -m assistant train ...)")
    r.add_argument("index", help="its index directory")
    r.add_argument("--conversations", default=None,
                   help="conversations to fit on (default: MODEL/conversations/val/conversations.jsonl; never the test set)")
    r.add_argument("--folds", type=int, default=5, help="cross-validation folds for the report, each holding out whole playlists (default 5; 0 = none)")
    from .rerank import TURNS_PER_FEATURE, min_fit_turns

    r.add_argument("--min-turns", type=int, default=None,
                   help=f"fit only on at least this many validation turns, else rank by rank fusion (default: "
                        f"{TURNS_PER_FEATURE} per re-ranker feature, {min_fit_turns()}); a re-ranker fitted on a "
                        f"handful of turns ranks worse")
    r.set_defaults(func=cmd_rerank)

    e = sub.add_parser("evaluate", help="Hit@k, MRR, nDCG of the assistant and the baselines on conversations.jsonl")
    e.add_argument("model", help="model directory, or 'none' to score only the rows that need no model "
                                 "(engine, BM25, dense, popularity, random)")
    e.add_argument("index")
    e.add_argument("conversations", help="conversations.jsonl: MODEL/conversations/val/conversations.jsonl to compare "
                                         "settings, .../test/ once per model, .../test-phrasing/ for wording no "
                                         "training conversation uses; or Music-CRS / TalkPlayData-2 sessions "
                                         "(JSON lines or one JSON array)")
    e.add_argument("--base", default=None, help="base model for the untuned row (default: the one the model was trained from)")
    e.add_argument("--no-base", action="store_true", help="skip the untuned base model row")
    e.add_argument("--no-ablations", action="store_true",
                   help="skip the row that scores the assistant's retrieval by its block alone")
    e.add_argument("--no-live", action="store_true",
                   help="skip the live replay that measures refinement-following (it regenerates the assistant's turns)")
    e.add_argument("--weights", choices=WEIGHT_FORMATS, default=DEFAULT_WEIGHTS,
                   help="how the model keeps its weights: float32 as trained, bfloat16 (what the chat serves "
                        "where the CPU computes it natively), or int8 quantized linear layers, to measure them "
                        "(bench/decode_weights.py) (default: %(default)s)")
    e.add_argument("--limit", type=int, default=None, help="evaluate only the first N conversations")
    e.add_argument("--out", default=None, help="write the JSON report here")
    e.add_argument("--predictions", default=None, metavar="PATH",
                   help="write the assistant's turns (the engine's with 'none') as Music-CRS submission JSON")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("chat", help="chat in the terminal")
    c.add_argument("--index", default=None, help="index directory (default: the demo catalog, built if missing)")
    c.add_argument("--model", default=None, help="model directory (default: the demo model)")
    c.add_argument("--no-model", action="store_true", help="no language model: the catalog's search alone")
    c.set_defaults(func=cmd_chat)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from index.library import LibraryError
    from index.store import IndexLoadError

    try:
        return args.func(args)
    except (IndexLoadError, LibraryError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
