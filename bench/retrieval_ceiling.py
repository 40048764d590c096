"""How much of each recommended track do the conversations determine? Ceilings for the evaluation.

Scores, on one conversation split, rankers that are told something no real system knows, beside
BM25 and the engine's retrieval without its model, so the assistant's figures can be read
against what the conversations allow:

- ``codes-oracle``: the engine's retrieval from the true track's own five codes. The most a
  music block can do; what is lost here is lost to the codebooks.
- ``playlist-oracle``: told the session's source playlist (the conversation's ``"playlist"`` key,
  which the synthesized conversations carry; a held-out playlist is read from the index's record of
  what it held out). Its tracks come first, in BM25 order over the user
  turns, and the request's facts and refinements ("faster", "in D minor", "no vocals") are then
  checked against the measured descriptors, as the engine checks them.
- ``words-oracle``: told exactly what each request was written from (a synthesized user turn's
  ``"asked"``: its facts, artist, title or lyric words, and its relation to the track before),
  it ranks first, in random order, every track not yet played that all of it holds for. No
  reading of the words can do better without knowing more than the words say, so on a first
  request this is the most any system can reach with the catalog's tracks equally likely; on
  later turns a system may add what the session's tracks tell of its playlist.
- ``words+playlist-oracle``: the same, told the session's playlist too; the tracks that meet
  the request and are in the playlist come first. The synthesizer draws a refinement's target
  uniformly from exactly that set, so on those turns this is the best ranking there is.
- ``bm25`` and ``engine-no-model``: the baseline, and the engine's fusion of word match, session
  neighbourhood and request facts with no block at all.

The two words oracles are scored by their expectation over the random order (a turn whose
request allows m tracks, the true one among them, gets hit@1 1/m, and so on). Conversations
written before user turns carried ``"asked"`` are synthesized again from the index with the
same seed and used only if their words and tracks are the same to the letter.

nDCG@10 is also printed by kind of turn (``assistant.metrics.turn_kind``).

    .venv/bin/python bench/retrieval_ceiling.py [--index DIR] [--conversations FILE] [--seed N]
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.chat import MusicAssistant  # noqa: E402
from assistant.metrics import METRIC_KEYS, aggregate, aggregate_by_kind, eval_turns, score_turn, turn_kind  # noqa: E402
from assistant.synth import REFINEMENTS, allows, write_splits  # noqa: E402
from assistant.refine import parse_refinement, reference_track, satisfies  # noqa: E402
from assistant.conversations import conversations_path, played_tracks, read_conversations  # noqa: E402
from index.baselines import BM25Recommender  # noqa: E402
from index.lexical import history_query  # noqa: E402
from index.paths import demo_dir  # noqa: E402
from index.store import MusicIndex  # noqa: E402

K = 20


def codes_oracle(index: MusicIndex, history: list[dict], relevant: list[str], conversation: dict) -> list[str]:
    return [t for t, _ in index.retrieve(codes=index.track_codes(relevant[0]), k=K, exclude=played_tracks(history))]


def playlist_oracle(index: MusicIndex, history: list[dict], relevant: list[str], conversation: dict) -> list[str]:
    scores = index.lexical.scores(history_query(history)).astype(np.float64)
    in_playlist = set(index.playlist_members(conversation.get("playlist") or ""))
    refinement = parse_refinement(history[-1]["content"])
    reference = index.by_id.get(reference_track(history[:-1], refinement) or "")
    bonus = np.array([1000.0 * (t.id in in_playlist) + (100.0 * satisfies(t, reference, refinement) if refinement else 0)
                      for t in index.tracks])
    excluded = set(played_tracks(history))
    order = np.argsort(-(scores + bonus), kind="stable")
    return [index.tracks[i].id for i in order if index.tracks[i].id not in excluded][:K]


def allowed_tracks(index: MusicIndex, history: list[dict]) -> list[str] | None:
    """The tracks not yet played that the last user turn's ``"asked"`` facts and its relation to
    the tracks played hold for; None when the turn does not record what it asked."""
    request = next(t for t in reversed(history) if t["role"] == "user")
    if "asked" not in request:
        return None
    played = [index.by_id[t] for t in played_tracks(history) if t in index.by_id]
    played_ids = {p.id for p in played}
    relation = REFINEMENTS.get(request.get("refinement") or "")
    return [t.id for t in index.tracks if t.id not in played_ids
            and all(allows(t, kind, value) for kind, value in request["asked"])
            and (relation is None or not played or relation.holds(played[-1], t, played[0]))]


def expected_scores(first_group: int, relevant_in_it: bool) -> dict[str, float]:
    """Expected metrics of a ranking whose first ``first_group`` tracks come in random order and
    hold the one relevant track (when ``relevant_in_it``; otherwise it is counted as missed)."""
    m = first_group
    if not relevant_in_it or m < 1:
        return {k: 0.0 for k in METRIC_KEYS}
    gain = [1 / math.log2(r + 1) for r in range(1, m + 1)]
    return {"hit@1": 1 / m, "hit@3": min(3, m) / m, "hit@10": min(10, m) / m,
            "mrr": sum(1 / r for r in range(1, m + 1)) / m, "ndcg@1": 1 / m,
            "ndcg@10": sum(gain[:10]) / m, "ndcg@20": sum(gain[:20]) / m}


def words_oracle(index: MusicIndex, history: list[dict], relevant: list[str], conversation: dict) -> dict:
    allowed = allowed_tracks(index, history)
    return expected_scores(len(allowed), relevant[0] in allowed)


def words_playlist_oracle(index: MusicIndex, history: list[dict], relevant: list[str], conversation: dict) -> dict:
    in_playlist = set(index.playlist_members(conversation.get("playlist") or ""))
    allowed = [t for t in allowed_tracks(index, history) if t in in_playlist]
    return expected_scores(len(allowed), relevant[0] in allowed)


def with_asked(conversations: list[dict], index: MusicIndex, seed: int) -> list[dict] | None:
    """The conversations as synthesized again from ``index`` with ``seed``, where every one
    (words, tracks, ids) is the same bar the ``"asked"`` record; None if any differs."""
    def bare(c):
        return {**c, "turns": [{k: v for k, v in t.items() if k != "asked"} for t in c["turns"]]}

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_splits(index.tracks, index.playlists, tmp, heldout_playlists=index.heldout_playlists, seed=seed)
        again = {c["id"]: c for path in paths.values() for c in read_conversations(path)}
    out = [again.get(c["id"]) for c in conversations]
    return out if all(a is not None and bare(a) == bare(c) for a, c in zip(out, conversations)) else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, default=demo_dir() / "index")
    p.add_argument("--conversations", type=Path, default=conversations_path(demo_dir() / "model", "test"))
    p.add_argument("--seed", type=int, default=0,
                   help="the synthesizer's seed, to write again conversations that predate the 'asked' record")
    args = p.parse_args(argv)
    index = MusicIndex.load(args.index)
    conversations = read_conversations(args.conversations)
    if not all("asked" in t for c in conversations for t in c["turns"] if t["role"] == "user"):
        again = with_asked(conversations, index, args.seed)
        print("the conversations do not record what each request asked; synthesized again with seed "
              f"{args.seed}: {'the same, with the record' if again else 'they differ, so the words oracles are left out'}")
        conversations = again or conversations
    recorded = all("asked" in t for c in conversations for t in c["turns"] if t["role"] == "user")
    if not any(c.get("playlist") for c in conversations):
        print("note: no conversation names its playlist; the playlist oracle knows nothing here", file=sys.stderr)
    # The engine's own turn without a model: word match, session and request facts.
    engine = MusicAssistant(index)

    def engine_no_model(index, history, relevant, conversation):
        return engine.rank(history, k=K)

    lexical = BM25Recommender(index.tracks, index.playlists)

    def bm25(index, history, relevant, conversation):
        return lexical.recommend(history, k=K, exclude=played_tracks(history))

    systems = {"bm25": bm25, "engine-no-model": engine_no_model, "playlist-oracle": playlist_oracle,
               "codes-oracle": codes_oracle}
    # every scorer gives a turn's metrics: the rankers' scored, the words oracles' expected
    scorers = {name: (lambda rank: lambda *a: score_turn(rank(*a), a[2]))(rank) for name, rank in systems.items()}
    if recorded:
        scorers.update({"words-oracle": words_oracle, "words+playlist-oracle": words_playlist_oracle})
    print(f"{len(conversations)} conversations from {args.conversations}")
    print(f"{'system':<22}{'hit@1':>8}{'hit@3':>8}{'hit@10':>8}{'mrr':>8}{'ndcg@10':>9}")
    by_kind = {}
    for name, score in scorers.items():
        per = [[(turn_kind(h), score(index, h, rel, c)) for h, rel in eval_turns(c)] for c in conversations]
        m = aggregate([[scores for _, scores in turns] for turns in per])
        by_kind[name] = aggregate_by_kind(per)
        print(f"{name:<22}{m['hit@1']:>8.3f}{m['hit@3']:>8.3f}{m['hit@10']:>8.3f}{m['mrr']:>8.3f}{m['ndcg@10']:>9.3f}")
    print(f"({int(m['turns'])} scored turns)")
    kinds = list(by_kind["bm25"])
    print("\nnDCG@10 by kind of turn (turns)")
    print(f"{'system':<22}" + "".join(f"{k[:18] + ' (' + str(int(by_kind['bm25'][k]['turns'])) + ')':>26}" for k in kinds))
    for name, scores in by_kind.items():
        print(f"{name:<22}" + "".join(f"{scores[k]['ndcg@10']:>26.3f}" for k in kinds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
