"""Offline evaluation with the Music-CRS protocol: every system ranks 20 tracks at every
assistant turn given the turns before it; Hit@1/10, MRR and nDCG@1/10/20 are averaged over
turns, then over conversations. The assistant and every baseline are scored in the same run.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .conversations import played_tracks
from .metrics import aggregate, eval_turns, score_turn

K = 20
Ranker = Callable[[list[dict], int, set], list[str]]


@dataclass
class SystemResult:
    name: str
    metrics: dict[str, float]
    p50_s: float
    p95_s: float


def evaluate_system(name: str, rank: Ranker, conversations: Sequence[dict], *, k: int = K, progress: bool = True) -> SystemResult:
    per_conversation = []
    seconds = []
    for conv in tqdm(conversations, desc=f"eval {name}", disable=not progress, unit="conv"):
        scores = []
        for history, relevant in eval_turns(conv):
            t = time.perf_counter()
            ranked = rank(history, k, set(played_tracks(history)))
            seconds.append(time.perf_counter() - t)
            scores.append(score_turn(list(dict.fromkeys(ranked))[:k], relevant))
        per_conversation.append(scores)
    return SystemResult(name, aggregate(per_conversation), float(np.percentile(seconds, 50)), float(np.percentile(seconds, 95)))


def format_table(results: Sequence[SystemResult]) -> str:
    cols = ["hit@1", "hit@10", "mrr", "ndcg@1", "ndcg@10", "ndcg@20"]
    lines = [f"{'system':<16}" + "".join(f"{c:>9}" for c in cols) + f"{'p50 s':>9}{'p95 s':>9}"]
    for r in results:
        lines.append(f"{r.name:<16}" + "".join(f"{r.metrics[c]:>9.4f}" for c in cols) + f"{r.p50_s:>9.3f}{r.p95_s:>9.3f}")
    if results:
        m = results[0].metrics
        lines.append(f"({int(m['conversations'])} conversations, {int(m['turns'])} scored turns)")
    return "\n".join(lines)


def baseline_rankers(index, seed: int = 0) -> dict[str, Ranker]:
    from index.baselines import BM25Recommender, DenseRecommender, PopularityRecommender, RandomRecommender

    systems = {
        "random": RandomRecommender(index.tracks, seed=seed),
        "popularity": PopularityRecommender(index.tracks, index.playlists),
        "bm25": BM25Recommender(index.tracks, index.playlists),
        "dense": DenseRecommender(index),
    }
    return {name: (lambda h, k, ex, r=r: r.recommend(h, k=k, exclude=ex)) for name, r in systems.items()}


def assistant_ranker(assistant) -> Ranker:
    return lambda history, k, exclude: assistant.rank(history, k=k)


def run_evaluation(model_dir: str | Path, index_dir: str | Path, conversations_path: str | Path, *,
                   base: str | None = None, include_base: bool = True, limit: int | None = None,
                   progress: bool = True, out: str | Path | None = None, ablations: bool = True) -> list[SystemResult]:
    """Score the fine-tuned assistant, the untuned base model with the same retrieval, and the baselines.

    With ``ablations`` the assistant's retrieval is also scored with the block alone
    ("block-only") and with everything but the block ("fusion-no-block"), on the very replies the
    model generated for the "assistant" row; their times are therefore retrieval only.
    """
    from index.store import MusicIndex

    from .chat import MusicAssistant
    from .conversations import read_conversations

    index = MusicIndex.load(index_dir)
    conversations = read_conversations(conversations_path)[:limit]
    results = []
    tuned = MusicAssistant.load(index_dir, model_dir)
    replay_generations(tuned)
    results.append(evaluate_system("assistant", assistant_ranker(tuned), conversations, progress=progress))
    if ablations:
        for name, variant in ablation_assistants(tuned).items():
            results.append(evaluate_system(name, assistant_ranker(variant), conversations, progress=progress))
    del tuned
    if include_base:
        untuned = untuned_assistant(index, base if base is not None else _recorded_base(model_dir))
        results.append(evaluate_system("base-untuned", assistant_ranker(untuned), conversations, progress=progress))
        del untuned
    for name, rank in baseline_rankers(index).items():
        results.append(evaluate_system(name, rank, conversations, progress=progress))
    if out is not None:
        rows = [{"system": r.name, **r.metrics, "p50_s": r.p50_s, "p95_s": r.p95_s} for r in results]
        Path(out).write_text(json.dumps(rows, indent=2) + "\n")
    return results


def replay_generations(assistant) -> None:
    """Remember the assistant's generation per history, so variants of its retrieval reuse it."""
    generate, seen = assistant._generate, {}

    def cached(history: list[dict]):
        key = json.dumps(history, sort_keys=True)
        if key not in seen:
            seen[key] = generate(history)
        return seen[key]

    assistant._generate = cached


def ablation_assistants(assistant) -> dict:
    """The assistant's retrieval by the block alone, and fused without the block, same generations."""
    from .chat import MusicAssistant

    def variant(**kwargs):
        v = MusicAssistant(assistant.index, assistant.model, assistant.tokenizer, assistant.vocab,
                           system_prompt=assistant.system_prompt, block_ranking=assistant.block_ranking, **kwargs)
        v._generate = assistant._generate
        return v

    return {"block-only": variant(text_fusion=False),
            "fusion-no-block": variant(fusion_weights={**assistant.fusion_weights, "block": 0.0})}


def _recorded_base(model_dir) -> str | None:
    from .model_dir import SAVED_BASE_DIR, read_model_record

    base = read_model_record(model_dir).get("base")
    return str(Path(model_dir) / SAVED_BASE_DIR) if base == SAVED_BASE_DIR else base


def untuned_assistant(index, base: str | None):
    """The base model with music tokens added (rows initialised from text) but no fine-tuning."""
    from tokenizer.hf import add_music_tokens
    from tokenizer.vocab import MusicVocab

    from .chat import MusicAssistant
    from .llm import ensure_pad_token, load_base

    model, tokenizer = load_base(base)
    tokenizer = ensure_pad_token(tokenizer)
    vocab = MusicVocab.from_manifest(index.manifest)
    add_music_tokens(tokenizer, model, vocab, index.code_descriptions())
    model.eval()
    return MusicAssistant(index, model, tokenizer, vocab, name="base-untuned")
