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
- ``bm25`` and ``engine-no-model``: the baseline, and the engine's fusion of word match, session
  neighbourhood and request facts with no block at all.

    .venv/bin/python bench/retrieval_ceiling.py [--index DIR] [--conversations FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.chat import MusicAssistant  # noqa: E402
from assistant.metrics import aggregate, eval_turns, score_turn  # noqa: E402
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, default=demo_dir() / "index")
    p.add_argument("--conversations", type=Path, default=conversations_path(demo_dir() / "model", "test"))
    args = p.parse_args(argv)
    index = MusicIndex.load(args.index)
    conversations = read_conversations(args.conversations)
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
    print(f"{len(conversations)} conversations from {args.conversations}")
    print(f"{'system':<18}{'hit@1':>8}{'hit@3':>8}{'hit@10':>8}{'mrr':>8}{'ndcg@10':>9}")
    for name, rank in systems.items():
        per = [[score_turn(rank(index, h, rel, c), rel) for h, rel in eval_turns(c)] for c in conversations]
        m = aggregate(per)
        print(f"{name:<18}{m['hit@1']:>8.3f}{m['hit@3']:>8.3f}{m['hit@10']:>8.3f}{m['mrr']:>8.3f}{m['ndcg@10']:>9.3f}")
    print(f"({int(m['turns'])} scored turns)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
