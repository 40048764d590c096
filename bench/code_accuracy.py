"""How well does a model write the codes of the tracks it answers with? Teacher-forced, a minute.

For every assistant turn of a conversation split, the model reads the true conversation up to
the turn's music block (the request and the earlier turns, each with its block) and is scored on
the block's five codes:

- per modality: accuracy of its most probable code and the mean negative log-likelihood of the
  true one, beside the most frequent code's accuracy (what a model that ignores the context gets)
  and, on later turns, the accuracy of the track played before (what copying the session gets);
- ``likelihood ranking``: nDCG@10 and Hit@10 of the true track when every catalog track is ranked
  by the summed log-probability of its codes (what ``block_ranking="likelihood"`` does, here with
  the true codes before each position instead of the generated ones).

Figures are given for all turns, first requests and later turns: on a later turn the session so
far is the only clue to the playlist it walks, and a model that reads it should beat copying the
last track's codes. A way to compare training settings in minutes where a full evaluation takes
half an hour.

    .venv/bin/python bench/code_accuracy.py [--model DIR] [--index DIR] [--conversations FILE]
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.conversations import conversations_path, read_conversations  # noqa: E402
from assistant.model_dir import load_finetuned, read_model_record  # noqa: E402
from assistant.synth import facts_lookup  # noqa: E402
from assistant.examples import IGNORE, build_examples, collate  # noqa: E402
from index.paths import demo_dir  # noqa: E402
from index.store import MusicIndex  # noqa: E402
from tokenizer.hf import music_token_ids  # noqa: E402


@dataclass
class TurnScore:
    """One turn's block, teacher-forced: per modality whether the likeliest code is the true one,
    the true code's NLL, whether the training answers' most frequent code and the code of the
    track played before (None on a first turn) are; and the true track's rank by likelihood."""

    later: bool
    correct: dict[str, float]
    nll: dict[str, float]
    prior: dict[str, float]
    copy: dict[str, float] | None
    ndcg: float
    hit: float


@torch.no_grad()
def block_log_probs(model, examples: list[dict], pad_id: int, start_id: int, code_ids: dict[str, list[int]],
                    batch_size: int = 8):
    """Yield, for every example (one turn), its block's true codes, {modality: log-probs over its
    codes}, and the codes of the block before it (None on a first turn)."""
    code_of = {i: code for ids in code_ids.values() for code, i in enumerate(ids)}

    def codes_at(tokens: list[int], position: int) -> dict[str, int]:
        return {m: code_of[tokens[position + 1 + offset]] for offset, m in enumerate(code_ids)}

    for first in range(0, len(examples), batch_size):
        batch = collate(examples[first : first + batch_size], pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for row in range(logits.shape[0]):
            tokens = batch["input_ids"][row].tolist()
            # an example is one turn: its own block is the last one; the earlier ones are its session
            starts = [p for p, token in enumerate(tokens) if token == start_id]
            if not starts or batch["labels"][row, starts[-1]] == IGNORE:
                continue
            position = starts[-1]
            log_probs = {m: torch.log_softmax(logits[row, position + offset, ids], -1).numpy()
                         for offset, (m, ids) in enumerate(code_ids.items())}
            yield codes_at(tokens, position), log_probs, codes_at(tokens, starts[-2]) if len(starts) > 1 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(demo_dir() / "model"))
    parser.add_argument("--index", default=str(demo_dir() / "index"))
    parser.add_argument("--conversations", default=None,
                        help="conversations.jsonl (default: MODEL/conversations/val/conversations.jsonl)")
    parser.add_argument("--seq-len", type=int, default=512, help="longest example; older turns are dropped beyond it")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    index = MusicIndex.load(args.index)
    conversations = read_conversations(args.conversations or conversations_path(args.model, "val"))
    model, tokenizer, vocab = load_finetuned(args.model)
    ids = music_token_ids(tokenizer, vocab)
    examples = build_examples(conversations, index.track_codes, tokenizer, vocab,
                              read_model_record(args.model)["system_prompt"], args.seq_len, facts_lookup(index.by_id))
    train_path = conversations_path(args.model, "train")
    common = {}
    if train_path.is_file():  # the most frequent code among the training answers
        answers = [turn["tracks"][0] for c in read_conversations(train_path) for turn in c["turns"] if turn.get("tracks")]
        common = {m: Counter(index.track_codes(t)[m] for t in answers).most_common(1)[0][0] for m in vocab.modalities}

    rows = []
    for true, log_probs, before in block_log_probs(model, examples, tokenizer.pad_token_id, ids["start"],
                                                   ids["codes"]):
        ranked = index.rank_by_code_log_probs(log_probs, k=len(index.tracks))
        best_true = max(s for t, s in ranked if index.track_codes(t) == true)
        rank = sum(s > best_true for _, s in ranked)  # ties with the true track count in its favour
        rows.append(TurnScore(
            later=before is not None,
            correct={m: float(np.argmax(lp) == true[m]) for m, lp in log_probs.items()},
            nll={m: -float(lp[true[m]]) for m, lp in log_probs.items()},
            prior={m: float(common.get(m) == true[m]) for m in log_probs},
            copy={m: float(before[m] == true[m]) for m in log_probs} if before is not None else None,
            ndcg=1 / math.log2(rank + 2) if rank < 10 else 0.0, hit=float(rank < 10)))
    print(f"{args.model}: {len(rows)} turns")
    for group, chosen in (("all", rows), ("first", [r for r in rows if not r.later]),
                          ("later", [r for r in rows if r.later])):
        if not chosen:
            continue
        print(f"\n{group} turns ({len(chosen)} blocks)")
        print(f"{'modality':10s} {'accuracy':>9s} {'NLL':>7s} {'most frequent':>14s} {'track before':>13s}")
        for m in vocab.modalities:
            copy = (f"{np.mean([r.copy[m] for r in chosen]):13.3f}" if all(r.copy for r in chosen)
                    else f"{'':>13s}")
            print(f"{m:10s} {np.mean([r.correct[m] for r in chosen]):9.3f} {np.mean([r.nll[m] for r in chosen]):7.3f} "
                  f"{np.mean([r.prior[m] for r in chosen]):14.3f} {copy}")
        print(f"likelihood ranking of the true track: nDCG@10 {np.mean([r.ndcg for r in chosen]):.3f}, "
              f"Hit@10 {np.mean([r.hit for r in chosen]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
