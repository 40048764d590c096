"""What batching examples by length buys the trainer: the same budget, batches drawn at random
against batches drawn by length (``assistant.train.epoch_order``), one after the other.

Both runs fine-tune the demo model's base on the demo model's own training conversations with
the default ``TrainConfig`` and a shorter budget, and print the steps each fitted in, the seconds
a step, the share of padding in the batches they ran, and the validation loss they reached.

    .venv/bin/python bench/train_batching.py [--minutes 5] [--model DIR] [--index DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import assistant.train as train_module  # noqa: E402
from assistant.conversations import conversations_path, read_conversations  # noqa: E402
from assistant.synth import facts_lookup  # noqa: E402
from assistant.train import TrainConfig, epoch_order, train  # noqa: E402
from index.paths import demo_dir  # noqa: E402
from index.store import MusicIndex  # noqa: E402
from tokenizer.vocab import MusicVocab  # noqa: E402


def padding_share(lengths: tuple[int, ...], order: tuple[int, ...], batch_size: int) -> float:
    """The share of a batch's tokens that are padding, over an epoch taken in ``order``."""
    batches = [[lengths[i] for i in order[b:b + batch_size]] for b in range(0, len(order), batch_size)]
    return 1 - sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget of each run (default 5)")
    parser.add_argument("--model", default=str(demo_dir() / "model"), help="model directory whose conversations train")
    parser.add_argument("--index", default=str(demo_dir() / "index"))
    args = parser.parse_args(argv)

    index = MusicIndex.load(args.index)
    conversations = {split: read_conversations(conversations_path(args.model, split)) for split in ("train", "val")}
    plain_order = train_module.epoch_order
    rows = []
    for name, window_of_one in (("random batches", True), ("batches by length", False)):
        lengths_seen: list[tuple[int, ...]] = []

        def order(lengths, seed, batch_size, window, _plain=window_of_one):
            lengths_seen.append(lengths)
            return plain_order(lengths, seed, batch_size, 1 if _plain else window)

        train_module.epoch_order = order
        try:
            with tempfile.TemporaryDirectory() as out:
                config = TrainConfig(time_budget_s=args.minutes * 60)
                report = train(None, conversations["train"], conversations["val"], index.track_codes,
                               MusicVocab.from_manifest(index.manifest), out, facts_for=facts_lookup(index.by_id),
                               code_descriptions=index.code_descriptions(), config=config, progress=False)
        finally:
            train_module.epoch_order = plain_order
        lengths = lengths_seen[0]
        window = 1 if window_of_one else config.batch_size * config.grad_accum * train_module.LENGTH_BUCKET_STEPS
        padding = padding_share(lengths, epoch_order(lengths, config.seed * 100_003, config.batch_size, window),
                                config.batch_size)
        rows.append((name, report.steps, report.seconds_per_step, padding, report.val_loss))
        print(f"{name}: {report.steps} steps, {report.seconds_per_step:.2f} s a step, "
              f"padding {padding:.1%}, validation loss {report.val_loss:.3f}", flush=True)
    print(f"\n{'batches':<20}{'steps':>7}{'s/step':>9}{'padding':>9}{'val loss':>10}   ({args.minutes:g}-minute budget each)")
    for name, steps, per_step, padding, val in rows:
        print(f"{name:<20}{steps:>7}{per_step:>9.2f}{padding:>9.1%}{val:>10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
