"""How well does a model write the codes of the tracks it answers with? Teacher-forced, a minute.

For every assistant turn of a conversation split, the model reads the true conversation up to
the turn's music block, the reply's own words included, and is scored on the block's five codes:

- per modality: accuracy of its most probable code and the mean negative log-likelihood of the
  true one, beside the most frequent code's accuracy (what a model that ignores the context gets);
- ``likelihood ranking``: nDCG@10 and Hit@10 of the true track when every catalog track is ranked
  by the summed log-probability of its codes (what ``block_ranking="likelihood"`` does, here with
  the true codes before each position instead of the generated ones).

The reply's words usually name the track, so this measures how well the model knows the codes
of the track it means, not how well it picks one: an upper bound on retrieval from generated
replies, to compare training settings in a minute where a full evaluation takes an hour.

    .venv/bin/python bench/code_accuracy.py [--model DIR] [--index DIR] [--conversations FILE]
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
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


@torch.no_grad()
def block_log_probs(model, examples: list[dict], pad_id: int, start_id: int, code_ids: dict[str, list[int]],
                    batch_size: int = 8):
    """Yield (true codes, {modality: log-probs over its codes}) for every target block."""
    code_of = {i: code for ids in code_ids.values() for code, i in enumerate(ids)}
    for first in range(0, len(examples), batch_size):
        batch = collate(examples[first : first + batch_size], pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for row in range(logits.shape[0]):
            tokens = batch["input_ids"][row].tolist()
            for position, token in enumerate(tokens):
                if token != start_id or batch["labels"][row, position] == IGNORE:
                    continue
                true, log_probs = {}, {}
                for offset, (modality, ids) in enumerate(code_ids.items()):
                    true[modality] = code_of[tokens[position + 1 + offset]]
                    log_probs[modality] = torch.log_softmax(logits[row, position + offset, ids], -1).numpy()
                yield true, log_probs


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

    correct, nll, prior, ndcg, hit = Counter(), Counter(), Counter(), [], []
    for true, log_probs in block_log_probs(model, examples, tokenizer.pad_token_id, ids["start"], ids["codes"]):
        for m, lp in log_probs.items():
            correct[m] += int(np.argmax(lp) == true[m])
            nll[m] += -float(lp[true[m]])
            prior[m] += int(common.get(m) == true[m])
        ranked = index.rank_by_code_log_probs(log_probs, k=len(index.tracks))
        scores = dict(ranked)
        best_true = max(s for t, s in ranked if index.track_codes(t) == true)
        rank = sum(s > best_true for s in scores.values())  # ties with the true track count in its favour
        ndcg.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
        hit.append(rank < 10)
    n = len(ndcg)
    print(f"{args.model}: {n} blocks in {len(examples)} conversations")
    print(f"{'modality':10s} {'accuracy':>9s} {'NLL':>7s} {'most frequent':>14s}")
    for m in vocab.modalities:
        print(f"{m:10s} {correct[m] / n:9.3f} {nll[m] / n:7.3f} {prior[m] / n:14.3f}")
    print(f"likelihood ranking of the true track: nDCG@10 {np.mean(ndcg):.3f}, Hit@10 {np.mean(hit):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
