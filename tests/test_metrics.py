"""Music-CRS metrics against values worked out by hand."""
import math

import pytest

from assistant.metrics import (METRIC_KEYS, aggregate, eval_turns, hit_at_k, ndcg_at_k, paired_bootstrap,
                               reciprocal_rank, score_turn)

RANKED = ["a", "b", "c", "d"]


def test_hit_at_k():
    assert hit_at_k(RANKED, {"c"}, 1) == 0.0
    assert hit_at_k(RANKED, {"c"}, 2) == 0.0
    assert hit_at_k(RANKED, {"c"}, 3) == 1.0
    assert hit_at_k(RANKED, ["a", "z"], 1) == 1.0
    assert hit_at_k(RANKED, {"z"}, 10) == 0.0


def test_reciprocal_rank():
    assert reciprocal_rank(RANKED, {"c"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(RANKED, {"d", "b"}) == pytest.approx(1 / 2)
    assert reciprocal_rank(RANKED, {"z"}) == 0.0
    assert reciprocal_rank(RANKED, {"c"}, k=2) == 0.0


def test_ndcg_single_relevant():
    # the only relevant id at rank 3: DCG = 1/log2(4) = 0.5, ideal = 1
    assert ndcg_at_k(RANKED, {"c"}, 10) == pytest.approx(0.5)
    assert ndcg_at_k(RANKED, {"c"}, 2) == 0.0
    assert ndcg_at_k(RANKED, {"a"}, 1) == 1.0


def test_ndcg_two_relevant():
    # relevant at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    assert ndcg_at_k(RANKED, {"b", "d"}, 10) == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(RANKED, {"b", "d"}, 10) == pytest.approx(0.65092, abs=1e-5)
    # k=2: only rank 2 counts; the ideal still has two relevant ids in two slots
    assert ndcg_at_k(RANKED, {"b", "d"}, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(RANKED, {"b", "d"}, 1) == 0.0


def test_ndcg_ideal_uses_min_of_k_and_relevant():
    # three relevant ids but k=1: one relevant id on top is already ideal
    assert ndcg_at_k(["x", "a"], {"x", "y", "z"}, 1) == 1.0
    assert ndcg_at_k(["x", "y", "z"], {"x", "y", "z"}, 20) == pytest.approx(1.0)


def test_empty_ranking_scores_zero():
    scores = score_turn([], {"a"})
    assert set(scores) == set(METRIC_KEYS)
    assert all(v == 0.0 for v in scores.values())


def test_score_turn_values():
    ranked = [f"t{i}" for i in range(30)]
    s = score_turn(ranked, {"t4"})  # rank 5
    assert s == pytest.approx({"hit@1": 0.0, "hit@3": 0.0, "hit@10": 1.0, "mrr": 0.2, "ndcg@1": 0.0,
                               "ndcg@10": 1 / math.log2(6), "ndcg@20": 1 / math.log2(6)})
    s = score_turn(ranked, {"t14"})  # rank 15: outside 10, inside 20
    assert s["hit@10"] == 0.0 and s["ndcg@10"] == 0.0
    assert s["ndcg@20"] == pytest.approx(1 / math.log2(16))
    assert s["mrr"] == pytest.approx(1 / 15)


@pytest.mark.parametrize("call", [
    lambda: hit_at_k(RANKED, {"a"}, 0),
    lambda: hit_at_k(RANKED, {"a"}, 1.5),
    lambda: ndcg_at_k(RANKED, {"a"}, -1),
    lambda: reciprocal_rank(RANKED, {"a"}, k=0),
    lambda: hit_at_k(RANKED, set(), 1),
    lambda: hit_at_k("abc", {"a"}, 1),
    lambda: hit_at_k(RANKED, "a", 1),
    lambda: ndcg_at_k(["a", "b", "a"], {"a"}, 3),
    lambda: score_turn([1, 2], {"a"}),
])
def test_bad_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


def test_aggregate_averages_turns_then_conversations():
    one = {k: 1.0 for k in METRIC_KEYS}
    zero = {k: 0.0 for k in METRIC_KEYS}
    # conversation A: mean 0.5; conversation B: mean 1.0 -> 0.75 (a plain turn mean would give 2/3)
    agg = aggregate([[one, zero], [one], []])
    assert all(agg[k] == pytest.approx(0.75) for k in METRIC_KEYS)
    assert agg["conversations"] == 2 and agg["turns"] == 3
    assert list(agg)[:len(METRIC_KEYS)] == list(METRIC_KEYS)


def test_aggregate_rejects_mixed_keys_and_nothing():
    with pytest.raises(ValueError, match="differ"):
        aggregate([[{"hit@1": 1.0}], [{"mrr": 1.0}]])
    with pytest.raises(ValueError, match="nothing to aggregate"):
        aggregate([[], []])


def test_eval_turns_gives_history_and_targets():
    conv = {"id": "c", "turns": [
        {"role": "user", "content": "calm piano"},
        {"role": "assistant", "content": "Try this.", "tracks": ["t1", "t2"]},
        {"role": "user", "content": "why that one?"},
        {"role": "assistant", "content": "Because it is calm."},
        {"role": "user", "content": "faster"},
        {"role": "assistant", "content": "Here.", "tracks": ["t3"]},
    ]}
    points = eval_turns(conv)
    assert [rel for _, rel in points] == [["t1", "t2"], ["t3"]]
    assert points[0][0] == conv["turns"][:1]
    assert points[1][0] == conv["turns"][:5]
    points[1][0].append({"role": "user", "content": "x"})
    assert len(conv["turns"]) == 6, "the history is a new list"


def test_eval_turns_validates():
    with pytest.raises(ValueError):
        eval_turns({"id": "c"})
    with pytest.raises(ValueError):
        eval_turns({"id": "c", "turns": [{"role": "assistant", "content": "", "tracks": "t1"}]})


def test_hit_at_3_counts_what_the_chat_shows():
    ranked = ["a", "b", "c", "d"]
    assert score_turn(ranked, {"c"})["hit@3"] == 1.0
    assert score_turn(ranked, {"d"})["hit@3"] == 0.0


def test_turn_kinds_and_their_own_averages():
    from assistant.metrics import aggregate_by_kind, turn_kind

    def user(text, **extra):
        return {"role": "user", "content": text, **extra}

    played = {"role": "assistant", "content": "Here.", "tracks": ["t1"]}
    assert turn_kind([user("calm piano")]) == "first request"
    assert turn_kind([user("calm piano"), played, user("Something faster.")]) == "relative refinement"
    assert turn_kind([user("calm piano"), played, user("no vocals this time")]) == "relative refinement"
    assert turn_kind([user("calm piano"), played, user("more like the first one")]) == "more like #n"
    assert turn_kind([user("calm piano"), played, user("Go back.", refinement="like first")]) == "more like #n"
    assert turn_kind([user("calm piano"), played, user("Tone it down.", refinement="calmer")]) == "relative refinement"
    assert turn_kind([user("calm piano"), played, user("something in D minor")]) == "absolute refinement"
    assert turn_kind([user("calm piano"), played, user("now some jazz")]) == "other"
    with pytest.raises(ValueError, match="no user turn"):
        turn_kind([played])

    one, zero = ({k: v for k in METRIC_KEYS} for v in (1.0, 0.0))
    by_kind = aggregate_by_kind([[("first request", one), ("relative refinement", zero)],
                                 [("first request", zero)]])
    assert set(by_kind) == {"first request", "relative refinement"}
    assert by_kind["first request"]["hit@3"] == 0.5 and by_kind["first request"]["conversations"] == 2
    assert by_kind["relative refinement"]["hit@3"] == 0.0 and by_kind["relative refinement"]["turns"] == 1


def test_refinement_following_checks_the_shown_tracks_against_the_systems_own_pick():
    from assistant.evaluate import refinement_following
    from index.track import Track

    tracks = {f"t{bpm}": Track(id=f"t{bpm}", title=f"At {bpm}", descriptors={"tempo_bpm": float(bpm)})
              for bpm in (80, 100, 120, 140, 150)}
    conversation = {"id": "c", "turns": [
        {"role": "user", "content": "something calm"},
        {"role": "assistant", "content": "", "tracks": ["t80"]},  # the dataset's pick: replaced by the system's
        {"role": "user", "content": "Something faster.", "refinement": "faster"},
        {"role": "assistant", "content": "", "tracks": ["t150"]}]}
    seen = []

    def scripted(history, k, played):
        seen.append((len(history), set(played)))
        return ["t100", "t80"] if len(history) == 1 else ["t140", "t120", "t80", "t150"]

    result = refinement_following(scripted, [conversation], tracks, progress=False)
    # Against t100, the system's own first pick: 140 and 120 are faster by the 8 % margin, 80 is not.
    assert result == {"rate": pytest.approx(2 / 3), "turns": 1, "by_relation": {"faster": pytest.approx(2 / 3)}}
    assert seen == [(1, set()), (3, {"t100", "t80"})]


def test_paired_bootstrap_tells_a_steady_lead_from_noise():
    import numpy as np

    rng = np.random.default_rng(0)
    b = rng.uniform(0.2, 0.8, size=200)
    # A steady lead of 0.05 on every conversation: an interval around it, above 0, never behind.
    steady = paired_bootstrap(b + 0.05, b)
    assert steady["difference"] == pytest.approx(0.05)
    assert steady["difference_low"] == pytest.approx(0.05) and steady["difference_high"] == pytest.approx(0.05)
    assert steady["ratio_low"] > 1.0 and steady["p_not_above"] == 0.0 and steady["conversations"] == 200
    # The same mean lead as noise of +-0.5 per conversation: the interval takes in 0.
    noisy = paired_bootstrap(b + 0.05 + rng.choice([-0.5, 0.5], size=200), b)
    assert noisy["difference_low"] < 0 < noisy["difference_high"]
    assert noisy["ratio_low"] < 1.0 < noisy["ratio_high"] and 0.0 < noisy["p_not_above"] < 0.5
    # The same seed gives the same intervals.
    assert paired_bootstrap(b + 0.05, b, seed=3) == paired_bootstrap(b + 0.05, b, seed=3)


@pytest.mark.parametrize("call", [
    lambda: paired_bootstrap([0.1, 0.2], [0.1]),
    lambda: paired_bootstrap([0.1], [0.2]),
    lambda: paired_bootstrap([0.1, float("nan")], [0.1, 0.2]),
    lambda: paired_bootstrap([0.1, 0.2], [0.1, 0.2], confidence=1.0),
    lambda: paired_bootstrap([0.1, 0.2], [0.1, 0.2], n_resamples=0),
])
def test_paired_bootstrap_validates(call):
    with pytest.raises(ValueError):
        call()
