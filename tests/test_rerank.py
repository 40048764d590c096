"""The learned re-ranker: its features, its fit, and its place in the turn and the evaluation."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from assistant.chat import MusicAssistant
from assistant.conversations import conversations_path, read_conversations
from assistant.rerank import (RERANKER_FILE, Reranker, candidate_features, feature_names, fit_reranker,
                              load_rerankers, rerankers_by_turn)
from index.track import MODALITIES


@pytest.fixture(scope="module")
def dirs(tiny_assistant_dirs):
    return tiny_assistant_dirs


def test_candidate_features_read_every_ranking_and_the_codes_log_probabilities():
    codes = {"a": dict.fromkeys(MODALITIES, 0), "b": dict.fromkeys(MODALITIES, 1), "c": dict.fromkeys(MODALITIES, 1)}
    rankings = {"lexical": [("a", 3.0), ("b", 1.0)], "block": [("b", 0.9), ("c", 0.5)], "session": []}
    log_probs = {m: np.log(np.array([0.75, 0.25])) for m in MODALITIES}
    candidates, rows = candidate_features(rankings, log_probs, codes.__getitem__, with_model=True)
    names = feature_names(True)
    assert candidates == ["a", "b", "c"] and rows.shape == (3, len(names))
    col = {n: i for i, n in enumerate(names)}
    assert rows[0, col["rr_lexical"]] == 1.0 and rows[1, col["rr_lexical"]] == pytest.approx(10 / 11)
    assert rows[2, col["in_lexical"]] == 0 and rows[2, col["in_block"]] == 1 and rows[:, col["in_session"]].sum() == 0
    # Log-probabilities are relative to the best code: 0 for "a", log(1/3) per modality for "b".
    assert rows[0, col["lp_sum"]] == 0 and rows[1, col["lp_audio"]] == pytest.approx(np.log(1 / 3))
    assert rows[1, col["lp_sum"]] == pytest.approx(5 * np.log(1 / 3))
    plain, rows_plain = candidate_features(rankings, log_probs, codes.__getitem__, with_model=False)
    assert plain == ["a", "b", "c"] and rows_plain.shape == (3, len(feature_names(False)))
    assert not any(n.startswith(("lp_", "rr_block", "in_block")) for n in feature_names(False))


def test_a_session_that_walks_one_album_or_artist_marks_the_candidates_that_continue_it():
    from index.track import Track

    tracks = {t.id: t for t in (Track(id="p1", album="Suite", artist="Ann"), Track(id="p2", album="Suite", artist="Bo"),
                                Track(id="a", album="Suite", artist="Bo"), Track(id="b", album="Other", artist="Bo"),
                                Track(id="c", album="", artist=""))}
    codes = dict.fromkeys(tracks, dict.fromkeys(MODALITIES, 0))
    rankings = {"lexical": [("a", 1.0), ("b", 0.5), ("c", 0.2)]}
    col = {n: i for i, n in enumerate(feature_names(False))}

    def shared(played):
        _, rows = candidate_features(rankings, None, codes.__getitem__, with_model=False, played=played,
                                     track_of=tracks.get)
        return rows[:, col["same_album"]].tolist(), rows[:, col["same_artist"]].tolist()

    # One album throughout, two artists: only the album is shared, and an empty album never is.
    assert shared(["p1", "p2"]) == ([1.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert shared(["p2"]) == ([1.0, 0.0, 0.0], [1.0, 1.0, 0.0])
    assert shared([]) == ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert shared(["gone", "p2"]) == shared(["p2"])  # a played id the catalog lost is passed over
    # A re-ranker fitted before these features reads only its own, in its own order.
    old = [n for n in feature_names(False) if not n.startswith("same_")][::-1]
    _, rows = candidate_features(rankings, None, codes.__getitem__, with_model=False, played=["p2"],
                                 track_of=tracks.get, features=old)
    assert rows.shape == (3, len(old)) and rows[0, old.index("rr_lexical")] == 1.0
    with pytest.raises(ValueError, match="fit the re-ranker again"):
        candidate_features(rankings, None, codes.__getitem__, with_model=False, features=["rr_lexical", "rr_mood"])


def test_the_fit_ranks_true_candidates_first_and_round_trips():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(400, 3))
    labels = rows[:, 1] > 1.0  # only the second feature tells
    fitted = fit_reranker(rows, labels, ("x", "y", "z"))
    assert np.argmax(np.abs(fitted.weights)) == 1 and fitted.weights[1] > 0
    order = [t for t, _ in fitted.rank([f"t{i}" for i in range(400)], rows)]
    top = order[: labels.sum()]
    assert sum(labels[int(t[1:])] for t in top) >= 0.9 * labels.sum()  # the true ones come first
    again = Reranker.from_dict(fitted.to_dict())
    np.testing.assert_allclose(again.score(rows), fitted.score(rows))
    with pytest.raises(ValueError, match="both"):
        fit_reranker(rows, np.zeros(400, bool), ("x", "y", "z"))
    with pytest.raises(ValueError, match="rows must be"):
        fit_reranker(rows, labels, ("x", "y"))


def _turn(conversation: str, position: str, rankings: dict, true: str) -> dict:
    codes = dict.fromkeys("abcdef", dict.fromkeys(MODALITIES, 0))
    turn = {"conversation": conversation, "relevant": {true}, "position": position}
    for with_model in (True, False):
        candidates, rows = candidate_features(rankings, None, codes.__getitem__, with_model=with_model)
        turn[with_model] = (candidates, rows, np.array([c == true for c in candidates]))
    return turn


def test_the_model_features_are_kept_for_the_turns_where_they_rank_better():
    from assistant.rerank import choose_by_turn, describe_by_turn

    rng = np.random.default_rng(0)
    turns, fold_of = [], {}
    for n in range(20):
        conversation, true = f"c{n}", "abcdef"[n % 6]
        others = [t for t in "abcdef" if t != true]
        fold_of[conversation] = n % 5
        # A first request: MiniLM's order is chance, the block found the true track first.
        turns.append(_turn(conversation, "first", {"dense": [(t, 0.0) for t in rng.permutation(list("abcdef"))],
                                                   "block": [(t, 0.0) for t in [true] + others]}, true))
        # A later turn: the words found the true track first; the block's order is chance.
        turns.append(_turn(conversation, "later", {"lexical": [(t, 0.0) for t in [true] + others[::-1]],
                                                   "block": [(t, 0.0) for t in rng.permutation(list("abcdef"))]},
                           true))
    report = choose_by_turn(turns, fold_of, 5)
    assert report["model_features_on"] == ["first"]
    assert report["first"]["turns"] == report["later"]["turns"] == 20
    assert report["first"]["with_model"] > report["first"]["without_model"]
    assert report["later"]["with_model"] <= report["later"]["without_model"] == 1.0
    assert "first requests with them" in describe_by_turn(report) and "later turns without" in describe_by_turn(report)
    # Without folds to score there is no evidence against the model's features: they stay.
    assert choose_by_turn(turns, fold_of, 1)["model_features_on"] == ["first", "later"]


def test_blocks_generated_sessions_at_once_are_those_of_one_turn_at_a_time(dirs):
    from assistant.metrics import eval_turns
    from assistant.rerank import generate_turns

    index_dir, model_dir = dirs
    assistant = MusicAssistant.load(index_dir, model_dir)
    sessions = [[h for h, _ in eval_turns(c)] for c in read_conversations(conversations_path(model_dir, "val"))]
    assert max(map(len, sessions)) > 1  # a session's later turns reuse its cache
    alone = [[assistant.writer.block(h) for h in session] for session in sessions]
    assistant = MusicAssistant.load(index_dir, model_dir, batch_sessions=True)
    plain = assistant.decoder
    together = generate_turns(assistant, sessions, workers=3, progress=False)
    assistant.decoder.batcher.close()
    assert assistant.decoder is plain and [len(s) for s in together] == [len(s) for s in sessions]
    for a, b in zip((g for s in alone for g in s), (g for s in together for g in s)):
        assert a.codes == b.codes
        for m in a.code_log_probs:
            np.testing.assert_allclose(a.code_log_probs[m], b.code_log_probs[m], atol=1e-4)


def test_cross_validation_holds_out_whole_playlists():
    from assistant.rerank import assign_folds

    convs = [{"id": f"c{i}", "playlist": p, "turns": []} for i, p in enumerate("AABBCCDA")]
    fold_of, by = assign_folds(convs, 3)
    assert by == "playlist"
    for p in "ABCD":  # every session over a playlist is in one fold
        assert len({fold_of[c["id"]] for c in convs if c["playlist"] == p}) == 1
    assert set(fold_of.values()) == {0, 1, 2}
    one = [c for c in convs if c["playlist"] == "A"]
    fold_of, by = assign_folds(one, 2)
    assert by == "conversation" and sorted(fold_of.values()) == [0, 0, 1]
    with pytest.raises(ValueError, match="folds"):
        assign_folds(convs, 0)


def test_fitted_on_validation_the_reranker_is_used_and_scored_against_its_no_model_fit(dirs, tmp_path):
    from assistant.evaluate import run_evaluation
    from assistant.pipeline import fit_reranker_for
    from index.store import MusicIndex

    index_dir, model_dir = dirs
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    val = read_conversations(conversations_path(model, "val"))
    # the tiny catalog has a few validation turns; a library would need min_fit_turns()
    report = fit_reranker_for(model, MusicIndex.load(index_dir), val, folds=2, progress=False, min_turns=1)
    assert (model / RERANKER_FILE).is_file() and report["turns"] > 0
    assert report["folds_by"] == "conversation"  # the tiny catalog holds out one validation playlist
    assert set(report["cross_validated"]) == {"assistant (rank fusion)", "engine (rank fusion)",
                                              "assistant (re-ranker)", "engine (re-ranker)"}
    rerankers = load_rerankers(model)
    assert rerankers["with_model"].with_model and not rerankers["without_model"].with_model
    on = report["by_turn"]["model_features_on"]
    assert set(on) <= {"first", "later"}
    loaded = MusicAssistant.load(index_dir, model)
    assert loaded.retrieval.reranker.with_model == ("first" in on)
    assert (loaded.retrieval.later_reranker or loaded.retrieval.reranker).with_model == ("later" in on)
    # A fit from before the choice of turns uses the model's features on every turn.
    data = json.loads((model / RERANKER_FILE).read_text())
    del data["report"]["by_turn"]
    (model / RERANKER_FILE).write_text(json.dumps(data))
    old = MusicAssistant.load(index_dir, model)
    assert old.retrieval.reranker.with_model and old.retrieval.later_reranker is None
    both = rerankers_by_turn(model)
    assert set(both) == {"first", "later"}
    assert all(r.to_dict() == rerankers["with_model"].to_dict() for r in both.values())
    reply = loaded.reply(loaded.new_session(), "calm piano")  # known words: the choice decides
    assert reply.source == ("model" if "first" in on else "engine") and len(reply.tracks) == 3
    results = run_evaluation(model, index_dir, conversations_path(model, "test"), include_base=False, live=False,
                             progress=False)
    assert "engine-reranked" in [r.name for r in results]
    assert load_rerankers(model_dir) == {}  # a model directory without one: rank fusion


def test_too_few_validation_turns_fit_no_reranker_and_remove_an_old_one(dirs, tmp_path):
    from assistant.metrics import eval_turns
    from assistant.pipeline import fit_reranker_for
    from assistant.rerank import min_fit_turns
    from index.store import MusicIndex

    index_dir, model_dir = dirs
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    val = read_conversations(conversations_path(model, "val"))
    turns = sum(len(eval_turns(c)) for c in val)
    assert 0 < turns < min_fit_turns()
    (model / RERANKER_FILE).write_text("{}")  # one fitted before, on other conversations
    report = fit_reranker_for(model, MusicIndex.load(index_dir), val, folds=0, progress=False)
    assert report["turns"] == turns and "rank fusion" in report["skipped"]
    assert not (model / RERANKER_FILE).exists()
    assert MusicAssistant.load(index_dir, model).retrieval.reranker is None
