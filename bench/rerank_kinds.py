"""Choose the learned re-ranker's kind and settings: fitted on the re-ranker's own sessions,
scored through the whole turn on the validation conversations.

The blocks and candidates of the re-ranker's sessions (``MODEL/conversations/rerank``) are
computed once (``assistant.rerank.turn_rows``); every setting is fitted on them, with and
without the model's features, and scored on the validation set on one generation per turn,
next to the weighted rank fusion. The test set is for the released setting, once.

    python bench/rerank_kinds.py                  # the demo's index and model
    python bench/rerank_kinds.py --index DIR --model DIR
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# (label, kind, LightGBM settings that differ from rerank.LAMBDAMART)
SETTINGS = (
    ("linear (logistic regression)", "linear", {}),
    ("LambdaMART, as released", "lambdamart", {}),
    ("LambdaMART, 100 rounds", "lambdamart", {"n_estimators": 100}),
    ("LambdaMART, 400 rounds", "lambdamart", {"n_estimators": 400}),
    ("LambdaMART, 7 leaves", "lambdamart", {"num_leaves": 7}),
    ("LambdaMART, 31 leaves, 20 a leaf", "lambdamart", {"num_leaves": 31, "min_child_samples": 20}),
    ("LambdaMART, 80 a leaf", "lambdamart", {"min_child_samples": 80}),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Score re-ranker kinds and settings on the validation conversations, "
                                            "fitted on the re-ranker's own sessions.")
    p.add_argument("--index", type=Path, help="index directory (default: the demo's)")
    p.add_argument("--model", type=Path, help="model directory (default: the demo's)")
    args = p.parse_args(argv)
    if (args.index is None) != (args.model is None):
        p.error("give --index and --model together, or neither for the demo")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    from assistant.chat import MusicAssistant
    from assistant.conversations import conversations_path, read_conversations
    from assistant.evaluate import assistant_ranker, evaluate_system, replay_generations
    from assistant.pipeline import rerank_conversations
    from assistant.rerank import feature_names, fit_from_rows, fit_lambdamart, turn_rows
    from index.store import MusicIndex

    torch.set_num_threads(2)
    if args.index is None:
        from assistant.pipeline import ensure_demo

        args.index, args.model = ensure_demo()
    fit_on = rerank_conversations(args.model, MusicIndex.load(args.index))
    if not fit_on:
        print("this index holds out no validation playlists: the re-ranker fits on the validation set "
              "(python -m assistant rerank MODEL INDEX gives its cross-validated report)")
        return 1
    val = read_conversations(conversations_path(args.model, "val"))
    assistant = MusicAssistant.load(args.index, args.model)
    assistant.reranker = None
    replay_generations(assistant)
    turns = turn_rows(assistant, fit_on)
    print(f"fitted on {len(turns)} turns of {len(fit_on)} re-ranker sessions; "
          f"scored on {len(val)} validation conversations, nDCG@10 / hit@3")

    def score(system) -> str:
        if system.model is not None:
            system._generate = assistant._generate
        m = evaluate_system("", assistant_ranker(system), val, progress=False).metrics
        return f"{m['ndcg@10']:.4f} / {m['hit@3']:.4f}"

    print(f"{'':<34} {'assistant':>17} {'engine':>17}")
    print(f"{'weighted rank fusion':<34} {score(MusicAssistant(assistant.index, assistant.model, assistant.tokenizer, assistant.vocab)):>17} "
          f"{score(MusicAssistant(assistant.index)):>17}", flush=True)
    for label, kind, params in SETTINGS:
        fitted = {}
        for with_model in (True, False):
            if kind == "linear":
                fitted[with_model] = fit_from_rows(turns, with_model, kind="linear")
            else:
                rows = np.concatenate([t[with_model][1] for t in turns])
                labels = np.concatenate([t[with_model][2] for t in turns])
                fitted[with_model] = fit_lambdamart(rows, labels, [len(t[with_model][2]) for t in turns],
                                                    feature_names(with_model), params=params)
        with_model = MusicAssistant(assistant.index, assistant.model, assistant.tokenizer, assistant.vocab,
                                    reranker=fitted[True])
        print(f"{label:<34} {score(with_model):>17} {score(MusicAssistant(assistant.index, reranker=fitted[False])):>17}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
