"""Choose the fusion settings on validation conversations: one generation per turn, many fusions.

The model's block is generated once per turn (``assistant.evaluate.replay_generations``), and
every setting of the fused retrieval (the block's weight, how the block ranks the catalog) is
scored on the same blocks, with the engine without a model in the same table. Run it on the
validation conversations that ``assistant train`` writes; the test set is for the released
setting, once.

    python bench/fusion_sweep.py                  # the demo's index, model and val conversations
    python bench/fusion_sweep.py --index DIR --model DIR --conversations FILE
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BLOCK_WEIGHTS = (0.25, 0.5, 1.0, 2.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Score fusion settings of the assistant's retrieval on validation "
                                            "conversations, reusing one generated block per turn.")
    p.add_argument("--index", type=Path, help="index directory (default: the demo's)")
    p.add_argument("--model", type=Path, help="model directory (default: the demo's)")
    p.add_argument("--conversations", type=Path,
                   help="conversations.jsonl (default: MODEL/conversations/val/conversations.jsonl)")
    p.add_argument("--limit", type=int, help="evaluate only the first N conversations")
    args = p.parse_args(argv)
    if (args.index is None) != (args.model is None):
        p.error("give --index and --model together, or neither for the demo")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from assistant.chat import MusicAssistant
    from assistant.conversations import conversations_path, read_conversations
    from assistant.evaluate import assistant_ranker, evaluate_system, format_table, replay_generations
    from assistant.retrieval import FUSION_WEIGHTS

    torch.set_num_threads(2)
    if args.index is None:
        from assistant.pipeline import ensure_demo

        args.index, args.model = ensure_demo()
    path = args.conversations or conversations_path(args.model, "val")
    conversations = read_conversations(path)[: args.limit]
    tuned = MusicAssistant.load(args.index, args.model)
    replay_generations(tuned)
    results = [evaluate_system("engine", assistant_ranker(MusicAssistant(tuned.index, name="engine")), conversations,
                               progress=False)]
    for ranking, weight in itertools.product(("codes", "likelihood"), BLOCK_WEIGHTS):
        variant = MusicAssistant(tuned.index, writer=tuned.writer,  # the same blocks for every setting
                                 block_ranking=ranking, fusion_weights={**FUSION_WEIGHTS, "block": weight})
        name = f"{ranking} x{weight:g}"
        results.append(evaluate_system(name, assistant_ranker(variant), conversations, progress=False))
        print(f"{name}: nDCG@10 {results[-1].metrics['ndcg@10']:.4f}", file=sys.stderr)
    print(f"{path} (default block weight {FUSION_WEIGHTS['block']:g}, ranking 'codes')")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
