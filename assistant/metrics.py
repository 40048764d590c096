"""Ranking metrics of the Music-CRS protocol.

At every assistant turn a system returns a ranked list of track ids given the
turns before it; the list is scored against that turn's ``tracks`` (binary
relevance) with Hit@1, Hit@3 (the chat shows three tracks), Hit@10, MRR and
nDCG@1/10/20. Scores are averaged over the turns of a conversation, then over
conversations; :func:`turn_kind` splits the turns by what they ask, so each kind
can be averaged the same way on its own.

An empty ranking is a valid (if useless) answer and scores 0. A ranking that
repeats an id is rejected: a repeated relevant id would be counted twice.
"""
from __future__ import annotations

import math
from typing import Collection, Sequence

METRIC_KEYS: tuple[str, ...] = ("hit@1", "hit@3", "hit@10", "mrr", "ndcg@1", "ndcg@10", "ndcg@20")
TURN_KINDS: tuple[str, ...] = ("first request", "relative refinement", "absolute refinement", "more like #n", "other")
# Relations the conversation synthesizer labels its refining user turns with ("refinement").
_LIKE_LABELS = {"like first"}


def _check_ranked(ranked: Sequence[str]) -> list[str]:
    if isinstance(ranked, (str, bytes)) or not isinstance(ranked, Sequence):
        raise ValueError(f"ranked must be a sequence of track ids (a list), got {type(ranked).__name__}")
    ranked = list(ranked)
    if not all(isinstance(r, str) for r in ranked):
        raise ValueError("ranked must hold track id strings")
    if len(set(ranked)) != len(ranked):
        dup = next(r for i, r in enumerate(ranked) if r in ranked[:i])
        raise ValueError(f"ranked lists {dup!r} more than once; a ranking must not repeat ids")
    return ranked


def _check_relevant(relevant: Collection[str]) -> set[str]:
    if isinstance(relevant, (str, bytes)):
        raise ValueError("relevant must be a set or list of track ids, not a single string")
    relevant = set(relevant)
    if not relevant:
        raise ValueError("relevant is empty: a turn with no target tracks cannot be scored")
    if not all(isinstance(r, str) for r in relevant):
        raise ValueError("relevant must hold track id strings")
    return relevant


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return k


def hit_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1.0 if any of the first ``k`` ranked ids is relevant, else 0.0.

    Parameters
    ----------
    ranked : sequence of str
        Track ids, best first, without repeats.
    relevant : set or sequence of str
        The target ids (non-empty).
    k : int
        Cut-off, at least 1.
    """
    ranked, relevant, k = _check_ranked(ranked), _check_relevant(relevant), _check_k(k)
    return float(any(r in relevant for r in ranked[:k]))


def reciprocal_rank(ranked: Sequence[str], relevant: Collection[str], k: int | None = None) -> float:
    """1 / rank of the first relevant id (ranks from 1), 0.0 if none is in the first ``k`` (all when None)."""
    ranked, relevant = _check_ranked(ranked), _check_relevant(relevant)
    cut = ranked if k is None else ranked[:_check_k(k)]
    for i, r in enumerate(cut, start=1):
        if r in relevant:
            return 1.0 / i
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Normalised discounted cumulative gain at ``k`` with binary relevance.

    DCG = sum over the first ``k`` positions i (from 1) of rel_i / log2(i + 1);
    the ideal DCG puts min(k, |relevant|) relevant ids at the top.
    """
    ranked, relevant, k = _check_ranked(ranked), _check_relevant(relevant), _check_k(k)
    dcg = sum(1.0 / math.log2(i + 1) for i, r in enumerate(ranked[:k], start=1) if r in relevant)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal


def score_turn(ranked: Sequence[str], relevant: Collection[str]) -> dict[str, float]:
    """All protocol metrics for one turn, keyed as in :data:`METRIC_KEYS`."""
    return {
        "hit@1": hit_at_k(ranked, relevant, 1),
        "hit@3": hit_at_k(ranked, relevant, 3),
        "hit@10": hit_at_k(ranked, relevant, 10),
        "mrr": reciprocal_rank(ranked, relevant),
        "ndcg@1": ndcg_at_k(ranked, relevant, 1),
        "ndcg@10": ndcg_at_k(ranked, relevant, 10),
        "ndcg@20": ndcg_at_k(ranked, relevant, 20),
    }


def aggregate(per_conversation_turn_scores: Sequence[Sequence[dict[str, float]]]) -> dict[str, float]:
    """Average turn scores within each conversation, then across conversations.

    Conversations with no scored turns are left out (they have nothing to
    average); the result also gives the counts used, as "conversations" and "turns".

    Raises
    ------
    ValueError
        If there are no scored turns at all, or the turn dicts do not share the same keys.
    """
    means: list[dict[str, float]] = []
    keys: set[str] | None = None
    n_turns = 0
    for c, turns in enumerate(per_conversation_turn_scores):
        turns = list(turns)
        if not turns:
            continue
        for t, scores in enumerate(turns):
            if keys is None:
                keys = set(scores)
            elif set(scores) != keys:
                raise ValueError(f"conversation {c}, turn {t}: metrics {sorted(scores)} differ from {sorted(keys)}")
        means.append({k: sum(s[k] for s in turns) / len(turns) for k in keys})
        n_turns += len(turns)
    if not means:
        raise ValueError("nothing to aggregate: no conversation has a scored turn")
    out = {k: sum(m[k] for m in means) / len(means) for k in sorted(keys, key=_metric_order)}
    out.update(conversations=len(means), turns=n_turns)
    return out


def _metric_order(key: str) -> tuple[int, str]:
    return (METRIC_KEYS.index(key), key) if key in METRIC_KEYS else (len(METRIC_KEYS), key)


def eval_turns(conversation: dict) -> list[tuple[list[dict], list[str]]]:
    """The evaluation points of a conversation.

    Returns
    -------
    list of (history, relevant)
        For each assistant turn with a non-empty ``tracks`` list: the turns before it
        (a new list of the same dicts) and its track ids. Assistant turns without
        tracks are context only.
    """
    if not isinstance(conversation, dict) or not isinstance(conversation.get("turns"), list):
        raise ValueError('a conversation must be a dict with a "turns" list')
    turns = conversation["turns"]
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "role" not in turn:
            raise ValueError(f"conversation {conversation.get('id')!r}, turn {i}: a turn must be a dict with a role")
        if turn["role"] == "assistant" and turn.get("tracks"):
            tracks = turn["tracks"]
            if isinstance(tracks, str) or not all(isinstance(x, str) for x in tracks):
                raise ValueError(f"conversation {conversation.get('id')!r}, turn {i}: tracks must be a list of ids")
            out.append((list(turns[:i]), list(tracks)))
    return out


def turn_kind(history: Sequence[dict]) -> str:
    """What the last user turn of ``history`` asks, one of :data:`TURN_KINDS`.

    "first request": no user turn before it. "more like #n": it points at an earlier track
    ("more like the first one"). "relative refinement": it asks a change against what was
    played ("faster", "no vocals", "same artist"). "absolute refinement": a later request by
    facts alone ("in D minor", "around 120 BPM", "from the 1990s"). "other": any other
    later request. A turn's own ``"refinement"`` label (written by the synthesizer) decides
    when present; otherwise its words are read with the chat's own refinement parser.
    """
    from .refine import parse_refinement

    users = [t for t in history if isinstance(t, dict) and t.get("role") == "user"]
    if not users:
        raise ValueError("history has no user turn to classify")
    last = users[-1]
    if len(users) == 1:
        return "first request"
    label = last.get("refinement")
    if isinstance(label, str) and label:
        return "more like #n" if label in _LIKE_LABELS else "relative refinement"
    asked = parse_refinement(str(last.get("content", "")))
    if asked.reference is not None:
        return "more like #n"
    if asked.is_relative:
        return "relative refinement"
    if asked:
        return "absolute refinement"
    return "other"


def aggregate_by_kind(per_conversation: Sequence[Sequence[tuple[str, dict[str, float]]]]) -> dict[str, dict[str, float]]:
    """:func:`aggregate` for each turn kind on its own, over the conversations that have that kind.

    ``per_conversation`` holds, per conversation, (kind, turn scores) pairs. Kinds with no
    turn are left out.
    """
    out = {}
    for kind in TURN_KINDS:
        turns = [[scores for k, scores in conversation if k == kind] for conversation in per_conversation]
        if any(turns):
            out[kind] = aggregate(turns)
    unknown = {k for conversation in per_conversation for k, _ in conversation} - set(TURN_KINDS)
    if unknown:
        raise ValueError(f"unknown turn kinds {sorted(unknown)}; expected {TURN_KINDS}")
    return out


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_resamples: int = 10_000,
                     confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """How sure is "system A scores higher than system B"? A paired bootstrap over conversations.

    ``a`` and ``b`` are the two systems' scores of the same conversations, in the same order
    (each conversation's mean over its turns, as :func:`aggregate` averages them). The
    conversations are resampled with replacement ``n_resamples`` times, both systems together.

    Returns
    -------
    dict
        ``difference`` (mean of a minus mean of b) and ``ratio`` (mean of a over mean of b, NaN
        when b's mean is 0), each with the ``_low`` and ``_high`` ends of its ``confidence``
        percentile interval; ``p_not_above``, the share of resamples where a's mean is not above
        b's; and ``conversations``.

    >>> r = paired_bootstrap([0.5, 0.6, 0.7, 0.4], [0.4, 0.5, 0.6, 0.3])
    >>> round(r["difference"], 3), r["difference_low"] > 0, r["p_not_above"]
    (0.1, True, 0.0)
    """
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a and b must be paired scores of the same conversations, got shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError("a paired bootstrap needs at least two conversations")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    mean_a, mean_b = [], []
    for start in range(0, n_resamples, 1000):  # in chunks: a resample matrix of many conversations is large
        picks = rng.integers(0, len(a), size=(min(1000, n_resamples - start), len(a)))
        mean_a.append(a[picks].mean(axis=1))
        mean_b.append(b[picks].mean(axis=1))
    mean_a, mean_b = np.concatenate(mean_a), np.concatenate(mean_b)
    tail = 100 * (1 - confidence) / 2
    diff = mean_a - mean_b
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mean_b > 0, mean_a / np.where(mean_b > 0, mean_b, 1.0), np.nan)
    out = {"conversations": float(len(a)), "difference": float(a.mean() - b.mean()),
           "difference_low": float(np.percentile(diff, tail)), "difference_high": float(np.percentile(diff, 100 - tail)),
           "ratio": float(a.mean() / b.mean()) if b.mean() > 0 else float("nan"),
           "p_not_above": float(np.mean(diff <= 0))}
    finite = ratio[np.isfinite(ratio)]
    out["ratio_low"] = float(np.percentile(finite, tail)) if len(finite) else float("nan")
    out["ratio_high"] = float(np.percentile(finite, 100 - tail)) if len(finite) else float("nan")
    return out
