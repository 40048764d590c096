"""Held-out playlists: linked playlists are held out together, shares are respected, nothing leaks."""
import pytest

from index.holdout import cooccurrence_overlap, hold_out_playlists, linked, ordered_pairs, playlist_groups


def test_ordered_pairs_are_steps_in_order():
    assert ordered_pairs(["a", "b", "b", "c"]) == {("a", "b"), ("b", "c")}
    assert ordered_pairs(["a"]) == set()


def test_linked_by_a_shared_step_or_by_mostly_the_same_tracks():
    package = [f"p{i}" for i in range(20)]
    world = package[4:9]                                  # an ordered excerpt: walks the package's steps
    assert linked(package, world) and linked(world, package)
    shuffled = ["p8", "p4", "p6", "p5", "p7"]             # same tracks, no shared step, a quarter of the package
    assert not linked(package, shuffled)
    assert linked(package[:10], list(reversed(package[:10])))  # the same ten tracks: mostly the same playlist
    mix = [f"m{i}" for i in range(30)] + ["p3", "p11"]    # a long mix that includes two of the package's tracks
    assert not linked(package, mix)
    assert not linked(["a", "b"], ["a", "c"])             # one shared track is no overlap


def test_groups_are_connected_components():
    playlists = {"A": ["1", "2", "3"], "B": ["2", "3", "4"], "C": ["4", "5", "6", "7"], "D": ["9", "8"],
                 "E": ["5", "6"]}
    # A-B share the step 2->3; C-E share 5->6; B and C share only track 4.
    assert playlist_groups(playlists) == [["A", "B"], ["C", "E"], ["D"]]


def make_playlists(n=30, size=6):
    return {f"pl{i:02d}": [f"t{i}-{j}" for j in range(size)] for i in range(n)}


def test_hold_out_keeps_groups_whole_and_near_their_shares():
    playlists = make_playlists()
    playlists["pl00-copy"] = list(playlists["pl00"])      # linked to pl00
    split_of = hold_out_playlists(playlists, {"val": 0.1, "test": 0.2}, seed=3)
    assert set(split_of) == set(playlists) and set(split_of.values()) == {"train", "val", "test"}
    assert split_of["pl00"] == split_of["pl00-copy"]
    entries = {s: sum(len(playlists[n]) for n in playlists if split_of[n] == s) for s in ("val", "test")}
    total = sum(len(m) for m in playlists.values())
    assert abs(entries["val"] / total - 0.1) < 0.05 and abs(entries["test"] / total - 0.2) < 0.05
    assert hold_out_playlists(playlists, {"val": 0.1, "test": 0.2}, seed=3) == split_of  # deterministic
    assert set(hold_out_playlists(playlists, {}).values()) == {"train"}


def test_hold_out_keeps_a_dominant_group_in_training_and_holds_one_of_each_when_small():
    playlists = {"big": [f"b{i}" for i in range(100)], "big-part": [f"b{i}" for i in range(10, 20)],
                 "x": ["x1", "x2"], "y": ["y1", "y2"], "z": ["z1", "z2"]}
    for seed in range(5):
        split_of = hold_out_playlists(playlists, seed=seed)
        assert split_of["big"] == split_of["big-part"] == "train"
        held = list(split_of.values())
        assert held.count("val") >= 1 and held.count("test") >= 1 and held.count("train") >= 2


@pytest.mark.parametrize("shares", [{"val": 1.0}, {"val": 0.6, "test": 0.5}, {"train": 0.1}, {"test": -0.1}])
def test_hold_out_rejects_bad_shares(shares):
    with pytest.raises(ValueError):
        hold_out_playlists(make_playlists(), shares)


def test_cooccurrence_overlap_measures_what_training_still_knows():
    playlists = {"train-a": ["1", "2", "3"], "test-a": ["1", "2", "9"], "val-a": ["7", "8"]}
    split_of = {"train-a": "train", "test-a": "test", "val-a": "val"}
    # test-a's pairs: (1,2) (1,9) (2,9); only (1,2) co-occurs in training
    assert cooccurrence_overlap(playlists, split_of) == {"val": 0.0, "test": pytest.approx(1 / 3)}
