"""Offline evaluation with the Music-CRS protocol: every system ranks 20 tracks at every
assistant turn given the turns before it (the user turns and the earlier turns' tracks);
Hit@1/3/10, MRR and nDCG@1/10/20 are averaged over turns, then over conversations, for all
turns and for each kind of turn (``metrics.turn_kind``). The assistant, the engine without a
model and every baseline are scored in the same run.
"""
from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .conversations import played_tracks
from .metrics import METRIC_KEYS, aggregate, aggregate_by_kind, eval_turns, paired_bootstrap, score_turn, turn_kind
from .synth import REFINEMENTS, asked_relations, said_facts, stated

# How a reply words each relation of ``synth.REFINEMENTS`` to the track before.
RELATION_WORDS = {"faster": r"\b(?:faster|quicker)\b", "slower": r"\bslower\b", "brighter": r"\bbrighter\b",
                  "darker": r"\bdarker\b", "calmer": r"\b(?:calmer|gentler|more relaxed)\b",
                  "more energetic": r"\bmore (?:energy|energetic|drive|intense)\b",
                  "with vocals": r"\b(?:vocals|sung|singing|voice)\b",
                  "without vocals": r"\b(?:instrumental|without vocals|no vocals|without singing)\b",
                  "same artist": r"\b(?:another one by|also by|same artist|more by)\b",
                  "other artist": r"\b(?:rather than|different artist|another artist|someone else)\b",
                  "like first": r"\bfirst\b"}

K = 20
# A system: (history, k, played ids) -> ranked ids, (ranked ids, reply text), or a chat Reply.
Ranker = Callable[[list[dict], int, set], "list[str] | tuple[list[str], str] | Reply"]


@dataclass
class SystemResult:
    """One row of the report: the metrics over all turns and per turn kind, and the time a turn took.

    ``predictions`` holds, for systems that write a reply, one Music-CRS submission record per
    scored turn (``session_id``, ``user_id``, ``turn_number``, ``predicted_track_ids``,
    ``predicted_response``).
    """

    name: str
    metrics: dict[str, float]
    p50_s: float
    p95_s: float
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    predictions: list[dict] = field(default_factory=list)
    following: dict | None = None  # refinement_following() in the live replay, when it was run
    words: dict | None = None  # for chat replies: how many open with the model's words, and contradictions
    # each conversation's mean scores over its turns, in order (conversations with no scored turn left out)
    per_conversation: list[dict[str, float]] = field(default_factory=list)


def answers_request(text: str, track, request: str) -> bool | None:
    """Whether a reply says what of the person's ``request`` its first card meets: None when the
    request names nothing the card is and its catalog facts list (``synth.request_met``); else
    whether ``text`` states at least one of those facts, in any words of it.

    >>> from index.track import Track
    >>> card = Track(id="a", tags=["piano"], descriptors={"tempo_bpm": 70.0, "energy": 0.2})
    >>> answers_request("A calm piano piece.", card, "something mellow"), answers_request("A piece.", card, "piano")
    (True, False)
    >>> answers_request("A piece.", card, "organ music") is None
    True
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    said = said_facts(track, request or "")
    if not said:
        return None
    low = text.lower()
    return any(stated(fact, low) is not None for fact in said)


def says_relation(text: str, track, reference, first, request: str) -> bool | None:
    """Whether a reply says how its first card stands to the track before as the request asked
    ("Something darker." answered "It has a darker sound than the previous track."): None when
    the request asks no relation (``synth.asked_relations``) that holds of ``track`` against
    ``reference`` (and the session's ``first``); else whether ``text`` words one of them
    (``RELATION_WORDS``).

    >>> from index.track import Track
    >>> before, now = Track(id="a", descriptors={"tempo_bpm": 90.0}), Track(id="b", descriptors={"tempo_bpm": 140.0})
    >>> says_relation("It's faster than the last one.", now, before, before, "Something faster.")
    True
    >>> says_relation("It's calmer than the last one.", now, before, before, "Faster!")
    False
    >>> says_relation("It's faster.", now, before, before, "Something slower.") is None  # not slower: nothing to say
    True
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if reference is None:
        return None
    held = [name for name in asked_relations(request or "")
            if REFINEMENTS[name].met(reference, track, first if first is not None else reference)]
    if not held:
        return None
    low = text.lower()
    return any(re.search(RELATION_WORDS[name], low) for name in held)


def _ranked_and_text(answer) -> tuple[list[str], str | None]:
    if hasattr(answer, "ranked"):  # a chat Reply
        return list(answer.ranked), answer.text
    return answer if isinstance(answer, tuple) else (answer, None)


def evaluate_system(name: str, rank: Ranker, conversations: Sequence[dict], *, k: int = K, progress: bool = True,
                    tracks_by_id: dict | None = None) -> SystemResult:
    """Score one system on every evaluation point of ``conversations``. Given the catalog
    (``tracks_by_id``), a system's replies are also read for whether they say what of the request
    their first card meets (:func:`answers_request`), and for whether they say the relation to the
    track before that the request asked (:func:`says_relation`)."""
    per_conversation, predictions, seconds, replies, answered, related = [], [], [], [], [], []
    for conv in tqdm(conversations, desc=f"eval {name}", disable=not progress, unit="conv"):
        scored = []
        for n, (history, relevant) in enumerate(eval_turns(conv), start=1):
            t = time.perf_counter()
            answer = rank(history, k, set(played_tracks(history)))
            seconds.append(time.perf_counter() - t)
            ranked, text = _ranked_and_text(answer)
            if hasattr(answer, "own_words"):
                replies.append(answer)
                if tracks_by_id is not None and answer.tracks and answer.tracks[0].id in tracks_by_id:
                    shown, request = tracks_by_id[answer.tracks[0].id], str(history[-1].get("content", ""))
                    answered.append(answers_request(answer.text, shown, request))
                    played = [tracks_by_id[t] for t in played_tracks(history) if t in tracks_by_id]
                    related.append(says_relation(answer.text, shown, played[-1] if played else None,
                                                 played[0] if played else None, request))
            ranked = list(dict.fromkeys(ranked))[:k]
            scored.append((turn_kind(history), score_turn(ranked, relevant)))
            if text is not None:
                turn = conv["turns"][len(history)]
                predictions.append({"session_id": conv["id"], "user_id": conv.get("user_id", ""),
                                    "turn_number": turn.get("turn_number", n), "predicted_track_ids": ranked,
                                    "predicted_response": text})
        per_conversation.append(scored)
    metrics = aggregate([[scores for _, scores in conversation] for conversation in per_conversation])
    words = None
    if replies:
        words = {"replies": len(replies), "own_words": sum(r.own_words for r in replies) / len(replies),
                 "contradictions": sum(len(r.dropped) for r in replies),
                 "dropped": [s for r in replies for s in r.dropped]}
        eligible = [a for a in answered if a is not None]
        if eligible:
            words |= {"asked_met": len(eligible), "answers_request": sum(eligible) / len(eligible)}
        compared = [a for a in related if a is not None]
        if compared:
            words |= {"relation_met": len(compared), "says_relation": sum(compared) / len(compared)}
    means = [{key: float(np.mean([scores[key] for _, scores in conversation])) for key in METRIC_KEYS}
             for conversation in per_conversation if conversation]
    return SystemResult(name, metrics, float(np.percentile(seconds, 50)), float(np.percentile(seconds, 95)),
                        by_kind=aggregate_by_kind(per_conversation), predictions=predictions, words=words,
                        per_conversation=means)


PAIRED_SYSTEM = "assistant"
PAIRED_AGAINST = ("engine", "engine-reranked", "base-untuned")  # what the model's share is measured against
PAIRED_METRICS = ("ndcg@10", "hit@3")


def paired_comparisons(results: Sequence[SystemResult]) -> dict[str, dict[str, dict[str, float]]]:
    """The assistant against each system of :data:`PAIRED_AGAINST` in the run, per metric of
    :data:`PAIRED_METRICS`: ``metrics.paired_bootstrap`` over the conversations both scored."""
    by_name = {r.name: r for r in results}
    mine = by_name.get(PAIRED_SYSTEM)
    out: dict[str, dict[str, dict[str, float]]] = {}
    if mine is None or len(mine.per_conversation) < 2:
        return out
    for name in PAIRED_AGAINST:
        other = by_name.get(name)
        if other is None or len(other.per_conversation) != len(mine.per_conversation):
            continue
        out[name] = {m: paired_bootstrap([c[m] for c in mine.per_conversation], [c[m] for c in other.per_conversation])
                     for m in PAIRED_METRICS}
    return out


N_SHOWN = 3  # the tracks the chat shows a person


def refinement_following(rank: Ranker, conversations: Sequence[dict], tracks_by_id, *, k: int = K,
                         progress: bool = True, name: str = "") -> dict:
    """How often the tracks a system shows move the way a relative request asks, in a live replay.

    Each conversation is replayed with the system's own picks: its user turns are kept, and
    every assistant turn becomes the ``N_SHOWN`` tracks the system itself ranked first. At
    each user turn labelled with a relation (the synthesizer's ``"refinement"``: "faster",
    "darker", "same artist", "like first", ...), every shown track is checked against the
    first track the system showed in the turn before (and, for "like first", the first one
    of the session), by the measured descriptors with the margins the synthesizer uses
    (``synth.Refinement.met``: for "no vocals", any instrumental track meets it, whatever the
    track before was).

    Returns
    -------
    dict
        ``rate`` (mean share of shown tracks that satisfy the relation, per turn), ``turns``
        (the turns checked) and ``by_relation`` (relation -> rate).
    """
    from .synth import REFINEMENTS

    shares: dict[str, list[float]] = {}
    for conv in tqdm(conversations, desc=f"live replay {name}", disable=not progress, unit="conv"):
        live: list[dict] = []
        first_shown = previous_shown = None
        for turn in conv["turns"]:
            if turn.get("role") != "user":
                continue
            live.append(dict(turn))
            ranked, text = _ranked_and_text(rank(live, k, set(played_tracks(live))))
            shown = [t for t in dict.fromkeys(ranked) if t in tracks_by_id][:N_SHOWN]
            relation = REFINEMENTS.get(turn.get("refinement") or "")
            if relation is not None and previous_shown and shown:
                before, first = tracks_by_id[previous_shown[0]], tracks_by_id[first_shown[0]]
                moved = [relation.met(before, tracks_by_id[t], first) for t in shown]
                shares.setdefault(relation.name, []).append(sum(moved) / len(moved))
            live.append({"role": "assistant", "content": text or "", "tracks": shown})
            if shown:
                previous_shown = shown
                first_shown = first_shown or shown
    every = [s for values in shares.values() for s in values]
    return {"rate": sum(every) / len(every) if every else float("nan"), "turns": len(every),
            "by_relation": {r: sum(v) / len(v) for r, v in sorted(shares.items())}}


def format_table(results: Sequence[SystemResult]) -> str:
    """The report as text: one row a system over all turns, then nDCG@10 and hit@3 per turn kind."""
    cols = list(METRIC_KEYS)
    lines = [f"{'system':<16}" + "".join(f"{c:>9}" for c in cols) + f"{'p50 s':>9}{'p95 s':>9}"]
    for r in results:
        lines.append(f"{r.name:<16}" + "".join(f"{r.metrics[c]:>9.4f}" for c in cols) + f"{r.p50_s:>9.3f}{r.p95_s:>9.3f}")
    if not results:
        return "\n".join(lines)
    m = results[0].metrics
    lines.append(f"({int(m['conversations'])} conversations, {int(m['turns'])} scored turns)")
    kinds = list(results[0].by_kind)
    if kinds:
        lines.append("")
        lines.append("nDCG@10 / hit@3 by turn kind (turns):")
        lines.append(f"{'system':<16}" + "".join(f"{kind[:21]:>23}" for kind in kinds))
        lines.append(f"{'':<16}" + "".join(f"{'(' + str(int(results[0].by_kind[kind]['turns'])) + ')':>23}" for kind in kinds))
        for r in results:
            cells = [f"{r.by_kind[kind]['ndcg@10']:.3f} / {r.by_kind[kind]['hit@3']:.3f}" if kind in r.by_kind else "-"
                     for kind in kinds]
            lines.append(f"{r.name:<16}" + "".join(f"{c:>23}" for c in cells))
    worded = [r for r in results if r.words]
    if worded:
        lines.append("")
        lines.append("replies: share opening with the model's own words; sentences the grounding check dropped:")
        for r in worded:
            lines.append(f"{r.name:<16}{r.words['own_words']:>9.3f}{r.words['contradictions']:>9d}"
                         f"  (of {r.words['replies']} replies)")
            if "answers_request" in r.words:
                lines.append(f"{'':<16}{r.words['answers_request']:>9.3f}  of the {r.words['asked_met']} replies whose "
                             "first card meets something the request asked say so")
            if "says_relation" in r.words:
                lines.append(f"{'':<16}{r.words['says_relation']:>9.3f}  of the {r.words['relation_met']} replies whose "
                             "first card stands to the track before as asked say so")
    paired = paired_comparisons(results)
    if paired:
        n = int(next(iter(next(iter(paired.values())).values()))["conversations"])
        lines.append("")
        lines.append(f"{PAIRED_SYSTEM} against each system (paired bootstrap over the {n} conversations, 95 % intervals; "
                     "p: share of resamples where it is not ahead):")
        for name, by_metric in paired.items():
            cells = [f"{m} {b['ratio']:.3f}x ({b['ratio_low']:.3f}-{b['ratio_high']:.3f}), "
                     f"{b['difference']:+.4f} ({b['difference_low']:+.4f} to {b['difference_high']:+.4f}), "
                     f"p {b['p_not_above']:.3f}" for m, b in by_metric.items()]
            lines.append(f"  vs {name:<16}" + "; ".join(cells))
    followed = [r for r in results if r.following]
    if followed:
        lines.append("")
        lines.append(f"refinement-following in the live replay (share of the {N_SHOWN} shown tracks that move the "
                     f"asked way; {followed[0].following['turns']} relative turns):")
        for r in followed:
            lines.append(f"{r.name:<16}{r.following['rate']:>9.3f}")
    return "\n".join(lines)


def report_rows(results: Sequence[SystemResult]) -> list[dict]:
    """The JSON report: one row per system of the run, with its counts, times and per-kind metrics,
    and on the assistant's row its paired comparisons (:func:`paired_comparisons`)."""
    paired = paired_comparisons(results)
    return [{"system": r.name, **r.metrics, "p50_s": r.p50_s, "p95_s": r.p95_s, "by_kind": r.by_kind,
             "refinement_following": r.following, "words": r.words,
             **({"paired": paired} if r.name == PAIRED_SYSTEM and paired else {})} for r in results]


def baseline_rankers(index, seed: int = 0) -> dict[str, Ranker]:
    from index.baselines import BM25Recommender, DenseRecommender, PopularityRecommender, RandomRecommender

    systems = {
        "random": RandomRecommender(index.tracks, seed=seed),
        "popularity": PopularityRecommender(index.tracks, index.playlists),
        "bm25": BM25Recommender(index.tracks, index.playlists),
        "dense": DenseRecommender(index),
    }
    return {name: (lambda h, k, ex, r=r: r.recommend(h, k=k, exclude=ex)) for name, r in systems.items()}


def assistant_ranker(assistant, *, with_text: bool = False) -> Ranker:
    if with_text:
        return lambda history, k, exclude: assistant.answer_reply(history, k=k)
    return lambda history, k, exclude: assistant.rank(history, k=k)


def run_evaluation(model_dir: str | Path | None, index_dir: str | Path, conversations_path: str | Path, *,
                   base: str | None = None, include_base: bool = True, limit: int | None = None,
                   progress: bool = True, out: str | Path | None = None, ablations: bool = True,
                   predictions_out: str | Path | None = None, live: bool = True,
                   weights: str | None = None) -> list[SystemResult]:
    """Score the fine-tuned assistant, the untuned base model with the same retrieval, the engine
    without a model, and the baselines, in one run on the same conversations.

    With ``ablations`` the assistant's retrieval is also scored with the block alone
    ("block-only"), on the very replies the model generated for the "assistant" row (its times
    are therefore retrieval only). The "engine" row is the same fused retrieval with no model at
    all, so the model's share is the difference between the two rows; when the model has a
    learned re-ranker (``assistant.rerank``), "engine-reranked" is its fit without the model's
    features, so that learned fusion alone is not credited to the model. ``model_dir=None`` scores
    the rows that need no model. ``predictions_out`` writes the assistant's (else the engine's)
    turns as the Music-CRS challenge's submission JSON. With ``live``, the assistant, the engine,
    BM25 and dense are also replayed on their own picks to measure ``refinement_following``
    (the assistant's replay generates again, about as long as its scored pass). ``weights`` is how
    the fine-tuned and the untuned model keep their weights (``model_dir.WEIGHT_FORMATS``; None:
    the assistant's default).
    """
    from index.store import MusicIndex

    from .chat import MusicAssistant
    from .conversations import read_conversations
    from .rerank import load_rerankers

    index = MusicIndex.load(index_dir)
    conversations = read_conversations(conversations_path)[:limit]
    leaked = playlists_in_index(conversations, index)
    if leaked:
        print(f"warning: {leaked['conversations']} of {len(conversations)} conversations walk playlists the index "
              f"was built from (e.g. {leaked['names'][0]!r}), so every system that uses the index is scored on "
              "data it learned from and the figures are optimistic. Score the val or test conversations that "
              "`assistant train` writes: they walk the playlists the index holds out.", file=sys.stderr)
    results = []
    if model_dir is not None:
        tuned = MusicAssistant.load(index_dir, model_dir, weights=weights)
        tuned_rerankers = (tuned.retrieval.reranker, tuned.retrieval.later_reranker)
        tuned_words = tuned.retrieval.request_words
        replay_generations(tuned)
        results.append(evaluate_system("assistant", assistant_ranker(tuned, with_text=True), conversations,
                                       progress=progress, tracks_by_id=index.by_id))
        if live:
            results[-1].following = refinement_following(assistant_ranker(tuned), conversations, index.by_id,
                                                         progress=progress, name="assistant")
        if ablations:
            for name, variant in ablation_assistants(tuned).items():
                results.append(evaluate_system(name, assistant_ranker(variant), conversations, progress=progress))
        del tuned
        if include_base:
            untuned = untuned_assistant(index, base if base is not None else _recorded_base(model_dir), weights)
            untuned.retrieval.reranker, untuned.retrieval.later_reranker = tuned_rerankers  # the same retrieval
            untuned.retrieval.request_words = tuned_words  # and the same trust in the model's evidence
            results.append(evaluate_system("base-untuned", assistant_ranker(untuned), conversations, progress=progress))
            del untuned
    engine = MusicAssistant(index, name="engine")
    systems = {"engine": assistant_ranker(engine, with_text=model_dir is None)}
    learned = load_rerankers(model_dir).get("without_model") if model_dir is not None else None
    if learned is not None:  # the model's re-ranker fitted without its features: what learned fusion alone gives
        systems["engine-reranked"] = assistant_ranker(MusicAssistant(index, name="engine-reranked", reranker=learned))
    systems.update(baseline_rankers(index))
    for name, rank in systems.items():
        results.append(evaluate_system(name, rank, conversations, progress=progress))
        if live and name in ("engine", "bm25", "dense"):
            results[-1].following = refinement_following(rank, conversations, index.by_id, progress=progress,
                                                         name=name)
    if out is not None:
        Path(out).write_text(json.dumps(report_rows(results), indent=2) + "\n")
    if predictions_out is not None:
        written = next(r for r in results if r.predictions)
        Path(predictions_out).write_text(json.dumps(written.predictions, indent=2, ensure_ascii=False) + "\n")
    return results


def playlists_in_index(conversations: Sequence[dict], index) -> dict:
    """The conversations that walk a playlist the index learned from: {"conversations": n, "names": [...]},
    or {} when there are none (conversations that name no playlist cannot be checked)."""
    names = [c["playlist"] for c in conversations if c.get("playlist") and c["playlist"] in index.playlists]
    return {"conversations": len(names), "names": sorted(set(names))} if names else {}


def replay_generations(assistant) -> None:
    """Remember the assistant's blocks per history (``writer.ReplayedBlocks``), so that variants
    of its retrieval given its writer read the same blocks."""
    from .writer import ReplayedBlocks

    if not isinstance(assistant.writer, ReplayedBlocks):
        assistant.use_writer(ReplayedBlocks(assistant.writer))


def ablation_assistants(assistant) -> dict:
    """The assistant's retrieval by the block alone, on the same generations."""
    from .chat import MusicAssistant

    def variant(**kwargs):
        return MusicAssistant(assistant.index, writer=assistant.writer,
                              block_ranking=assistant.retrieval.block_ranking, **kwargs)

    return {"block-only": variant(text_fusion=False)}


def _recorded_base(model_dir) -> str | None:
    from .model_dir import SAVED_BASE_DIR, read_model_record

    base = read_model_record(model_dir).get("base")
    return str(Path(model_dir) / SAVED_BASE_DIR) if base == SAVED_BASE_DIR else base


def untuned_assistant(index, base: str | None, weights: str | None = None):
    """The base model with music tokens added (rows initialised from text) but no fine-tuning,
    its weights kept as ``weights`` (``model_dir.WEIGHT_FORMATS``; None: float32)."""
    from tokenizer.hf import add_music_tokens
    from tokenizer.vocab import MusicVocab

    from .chat import MusicAssistant
    from .llm import ensure_pad_token, load_base
    from .model_dir import quantize_int8

    model, tokenizer = load_base(base)
    tokenizer = ensure_pad_token(tokenizer)
    vocab = MusicVocab.from_manifest(index.manifest)
    add_music_tokens(tokenizer, model, vocab, index.code_descriptions())
    model.eval()
    if weights == "int8":
        model = quantize_int8(model)
    return MusicAssistant(index, model, tokenizer, vocab, name="base-untuned")
