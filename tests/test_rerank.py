"""The learned re-ranker: its features, its fit, and its place in the turn and the evaluation."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from assistant.chat import MusicAssistant
from assistant.conversations import conversations_path, read_conversations
from assistant import rerank
from assistant.rerank import (RERANKER_FILE, LinearReranker, Reranker, TreeReranker, candidate_features,
                              feature_names, fit_from_rows, fit_lambdamart, fit_reranker, load_rerankers)
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
    written_before_kinds = {k: v for k, v in fitted.to_dict().items() if k != "kind"}
    assert isinstance(Reranker.from_dict(written_before_kinds), LinearReranker)
    with pytest.raises(ValueError, match="both"):
        fit_reranker(rows, np.zeros(400, bool), ("x", "y", "z"))
    with pytest.raises(ValueError, match="rows must be"):
        fit_reranker(rows, labels, ("x", "y"))


def _turns_led_by_one_feature(rng, turns, size=12):
    """Rows of ``turns`` turns of ``size`` candidates; each turn's true one has the largest second
    feature, so only a comparison within the turn tells it."""
    rows = rng.normal(size=(turns * size, 3))
    labels = np.zeros(turns * size, bool)
    for t in range(turns):
        labels[t * size + np.argmax(rows[t * size:(t + 1) * size, 1])] = True
    return rows, labels, [size] * turns


def test_lambdamart_puts_each_turns_true_candidate_first_and_round_trips():
    rng = np.random.default_rng(0)
    rows, labels, groups = _turns_led_by_one_feature(rng, 300)
    fitted = fit_lambdamart(rows, labels, groups, ("x", "y", "z"))
    held_rows, held_labels, _ = _turns_led_by_one_feature(rng, 100)
    firsts = [held_labels[t * 12 + np.argmax(fitted.score(held_rows[t * 12:(t + 1) * 12]))] for t in range(100)]
    assert np.mean(firsts) >= 0.75  # chance: 1 in 12
    again = Reranker.from_dict(json.loads(json.dumps(fitted.to_dict())))  # as reranker.json keeps it
    assert isinstance(again, TreeReranker) and again.features == ("x", "y", "z") and not again.with_model
    np.testing.assert_allclose(again.score(rows), fitted.score(rows))
    order = [t for t, _ in again.rank([f"t{i}" for i in range(12)], held_rows[:12])]
    assert held_labels[int(order[0][1:])] == firsts[0]
    with pytest.raises(ValueError, match="groups"):
        fit_lambdamart(rows, labels, groups[:-1], ("x", "y", "z"))
    with pytest.raises(ValueError, match="unknown re-ranker kind"):
        Reranker.from_dict({**fitted.to_dict(), "kind": "forest"})
    with pytest.raises(ValueError, match="trees read 3 features"):
        TreeReranker(("x", "y"), fitted.model)


def test_trees_are_fitted_only_from_enough_turns(monkeypatch):
    rng = np.random.default_rng(1)
    names = feature_names(False)

    def turns(n):
        out = []
        for i in range(n):
            rows = rng.normal(size=(8, len(names)))
            out.append({"conversation": f"c{i}", False: ([f"t{j}" for j in range(8)], rows, rows[:, 0] == rows[:, 0].max())})
        return out

    monkeypatch.setattr(rerank, "TREE_MIN_TURNS", 60)
    assert isinstance(fit_from_rows(turns(59), False), LinearReranker)
    assert isinstance(fit_from_rows(turns(60), False), TreeReranker)
    assert isinstance(fit_from_rows(turns(60), False, kind="linear"), LinearReranker)
    with pytest.raises(ValueError, match="kind"):
        fit_from_rows(turns(10), False, kind="forest")


def test_the_rerankers_sessions_walk_the_validation_playlists_apart_from_the_validation_set(dirs, tmp_path):
    from assistant.conversations import RERANK_SET
    from assistant.pipeline import rerank_conversations
    from index.store import MusicIndex

    index_dir, model_dir = dirs
    index = MusicIndex.load(index_dir)
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    shutil.rmtree(model / "conversations" / RERANK_SET, ignore_errors=True)  # a model directory from before
    sessions = rerank_conversations(model, index)
    assert conversations_path(model, RERANK_SET).is_file() and sessions
    val_playlists = {n for n, h in index.heldout_playlists.items() if h["split"] == "val"}
    assert {c["playlist"] for c in sessions} == val_playlists
    assert all(c["split"] == RERANK_SET and c["id"].startswith(f"{RERANK_SET}-") for c in sessions)
    val = read_conversations(conversations_path(model, "val"))
    assert [c["turns"] for c in sessions] != [c["turns"] for c in val]  # another draw
    assert rerank_conversations(model, index) == sessions  # written once, then read


def test_blocks_generated_sessions_at_once_are_those_of_one_turn_at_a_time(dirs):
    from assistant.metrics import eval_turns
    from assistant.rerank import generate_turns

    index_dir, model_dir = dirs
    assistant = MusicAssistant.load(index_dir, model_dir)
    sessions = [[h for h, _ in eval_turns(c)] for c in read_conversations(conversations_path(model_dir, "val"))]
    alone = [[assistant._generate(h) for h in session] for session in sessions]
    plain = assistant.decoder
    together = generate_turns(assistant, sessions, workers=3, progress=False)
    assert assistant.decoder is plain and [len(s) for s in together] == [len(s) for s in sessions]
    for a, b in zip((g for s in alone for g in s), (g for s in together for g in s)):
        assert a.codes == b.codes
        for m in a.code_log_probs:
            np.testing.assert_allclose(a.code_log_probs[m], b.code_log_probs[m], atol=1e-4)


def test_fitted_on_validation_the_reranker_is_used_and_scored_against_its_no_model_fit(dirs, tmp_path):
    from assistant.evaluate import run_evaluation
    from assistant.pipeline import fit_reranker_for
    from index.store import MusicIndex

    index_dir, model_dir = dirs
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    val = read_conversations(conversations_path(model, "val"))
    report = fit_reranker_for(model, MusicIndex.load(index_dir), val, folds=2, progress=False)
    assert (model / RERANKER_FILE).is_file() and report["turns"] > 0
    assert set(report["cross_validated"]) == {"assistant (rank fusion)", "engine (rank fusion)",
                                              "assistant (re-ranker)", "engine (re-ranker)"}
    rerankers = load_rerankers(model)
    assert rerankers["with_model"].with_model and not rerankers["without_model"].with_model
    loaded = MusicAssistant.load(index_dir, model)
    assert loaded.reranker is not None and loaded.reranker.with_model
    reply = loaded.reply(loaded.new_session(), "calm piano music")
    assert reply.source == "model" and len(reply.tracks) == 3
    results = run_evaluation(model, index_dir, conversations_path(model, "test"), include_base=False, live=False,
                             progress=False)
    assert "engine-reranked" in [r.name for r in results]
    # Fitted on one set and scored on another, the report is of the held-out set, not folds.
    report = fit_reranker_for(model, MusicIndex.load(index_dir), val[1:], held_out=val[:1], kind="linear",
                              progress=False)
    assert report["held_out"]["conversations"] == 1 and "cross_validated" not in report
    assert report["kind"] == "linear" and "assistant (re-ranker)" in report["held_out"]
    assert load_rerankers(model_dir) == {}  # a model directory without one: rank fusion
