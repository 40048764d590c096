"""Text and trivial recommender baselines on a tiny catalog."""
import pytest

from index.baselines import (BM25Recommender, DenseRecommender, PopularityRecommender, RandomRecommender,
                             Recommender, popularity_order)
from index.lexical import history_query, track_text
from index.track import Track


def make_tracks():
    spec = [
        ("reel", "The Morning Reel", "Kathleen Doyle", "Fiddle Tunes", ["reel", "folk", "fiddle", "D major"], ""),
        ("nocturne", "Nocturne in Blue", "Ada Hart", "Night Pieces", ["piano", "calm", "classical", "minor key"], ""),
        ("anthem", "Burn the Sky", "Steel Harbor", "Anthems", ["rock", "guitar", "energetic"],
         "we burn the sky tonight\nhands up in the thunder"),
        ("lullaby", "Small Boat", "Ada Hart", "Night Pieces", ["lullaby", "calm", "vocals"],
         "sail my small boat over the sea of dreams"),
        ("jig", "Kitchen Jig", "Kathleen Doyle", "Fiddle Tunes", ["jig", "folk", "fiddle", "G major"], ""),
        ("drone", "Cold Field", "Lumen", "Fields", ["ambient", "drone", "dark"], ""),
        ("march", "Brass Parade", "Steel Harbor", "Parades", ["march", "brass", "fast"], ""),
        ("waltz", "Last Waltz", "Lumen", "Fields", ["waltz", "strings", "F# minor"], ""),
    ]
    return [Track(id=i, title=t, artist=a, album=al, genre="", tags=tags, lyrics=ly, year="2001")
            for i, t, a, al, tags, ly in spec]


PLAYLISTS = {
    "folk night": ["reel", "jig", "lullaby"],
    "calm": ["nocturne", "lullaby", "drone", "waltz"],
    "loud": ["anthem", "march", "jig"],
    "sleep": ["lullaby", "nocturne"],
}


def ask(*texts):
    turns = []
    for i, text in enumerate(texts):
        turns.append({"role": "user", "content": text})
        if i < len(texts) - 1:
            turns.append({"role": "assistant", "content": "Here you go.", "tracks": ["x"]})
    return turns


@pytest.fixture(scope="module")
def tracks():
    return make_tracks()


@pytest.fixture(scope="module")
def bm25(tracks):
    return BM25Recommender(tracks, PLAYLISTS)


def test_track_text_has_every_field(tracks):
    text = track_text(tracks[2])
    for part in ("Burn the Sky", "Steel Harbor", "Anthems", "2001", "rock, guitar, energetic", "hands up in the thunder"):
        assert part in text


def test_history_query_puts_the_latest_request_first():
    history = ask("calm piano", "faster please")
    assert history_query(history) == "faster please\ncalm piano"
    assert "Here you go." in history_query(history, include_assistant=True)
    with pytest.raises(ValueError):
        history_query([{"role": "user"}])


def test_popularity_order_counts_playlists_ties_by_id(tracks):
    # lullaby 3; jig, nocturne 2; anthem, drone, march, reel, waltz 1 (ids alphabetical)
    assert popularity_order(tracks, PLAYLISTS) == ["lullaby", "jig", "nocturne", "anthem", "drone", "march",
                                                   "reel", "waltz"]
    rec = PopularityRecommender(tracks, PLAYLISTS)
    assert rec.recommend(ask("anything"), k=3) == ["lullaby", "jig", "nocturne"]
    assert rec.recommend(ask("anything"), k=3, exclude=["jig"]) == ["lullaby", "nocturne", "anthem"]


def test_bm25_finds_the_matching_track(bm25):
    assert bm25.recommend(ask("a fiddle reel in D major"), k=5)[0] == "reel"
    assert bm25.recommend(ask("Play something with brass, please."), k=5)[0] == "march"
    assert bm25.recommend(ask('The one that goes "hands up in the thunder"'), k=5)[0] == "anthem"
    assert bm25.recommend(ask("something in F# minor"), k=5)[0] == "waltz"
    # plural in the request, singular in the tags
    assert bm25.recommend(ask("I love waltzes"), k=3)[0] == "waltz"


def test_bm25_uses_the_whole_history(bm25):
    # "faster" matches nothing; the earlier request still steers the ranking
    assert bm25.recommend(ask("calm piano music", "faster"), k=3)[0] == "nocturne"


def test_bm25_honours_exclude_and_fills_to_k(bm25, tracks):
    ranked = bm25.recommend(ask("fiddle folk"), k=8, exclude=["reel"])
    assert "reel" not in ranked
    assert ranked[0] == "jig"
    assert len(ranked) == 7 and len(set(ranked)) == 7


def test_bm25_empty_query_falls_back_to_popularity(bm25):
    expected = popularity_order(make_tracks(), PLAYLISTS)[:4]
    assert bm25.recommend([], k=4) == expected
    assert bm25.recommend(ask("please play something"), k=4) == expected  # only stopwords


def test_random_is_deterministic_per_call_order(tracks):
    a, b = RandomRecommender(tracks, seed=3), RandomRecommender(tracks, seed=3)
    calls_a = [a.recommend(ask("x"), k=5) for _ in range(3)]
    calls_b = [b.recommend(ask("x"), k=5) for _ in range(3)]
    assert calls_a == calls_b
    assert len({tuple(c) for c in calls_a}) > 1, "successive calls draw new lists"
    assert RandomRecommender(tracks, seed=4).recommend([], k=8) != RandomRecommender(tracks, seed=3).recommend([], k=8)
    ranked = a.recommend([], k=20, exclude=["reel", "jig"])
    assert sorted(ranked) == sorted(t.id for t in tracks if t.id not in ("reel", "jig"))


class FakeIndex:
    """Stands in for MusicIndex: records queries and ignores exclude, to show the recommender enforces it."""

    def __init__(self, tracks, playlists, hits):
        self.tracks, self.playlists, self.hits, self.queries = tracks, playlists, hits, []

    def search_text(self, query, k=20, exclude=()):
        self.queries.append((query, k, set(exclude)))
        return [(tid, 1.0 / (i + 1)) for i, tid in enumerate(self.hits)][:k]


def test_dense_queries_the_index_and_honours_exclude(tracks):
    fake = FakeIndex(tracks, PLAYLISTS, hits=["waltz", "drone", "nocturne"])
    rec = DenseRecommender(fake)
    ranked = rec.recommend(ask("dark strings", "slower"), k=5, exclude=["drone"])
    assert fake.queries == [("slower\ndark strings", 5, {"drone"})]
    assert ranked[:2] == ["waltz", "nocturne"]
    assert "drone" not in ranked and len(ranked) == 5
    assert ranked[2:] == [t for t in popularity_order(tracks, PLAYLISTS) if t not in ("waltz", "nocturne", "drone")][:3]


def test_dense_empty_history_uses_popularity(tracks):
    fake = FakeIndex(tracks, PLAYLISTS, hits=["waltz"])
    assert DenseRecommender(fake).recommend([], k=3) == ["lullaby", "jig", "nocturne"]
    assert fake.queries == []
    with pytest.raises(ValueError, match="search_text"):
        DenseRecommender(object())


def test_all_baselines_follow_the_protocol(tracks, bm25):
    recs = [RandomRecommender(tracks, 0), PopularityRecommender(tracks, PLAYLISTS), bm25,
            DenseRecommender(FakeIndex(tracks, PLAYLISTS, ["reel"]))]
    assert all(isinstance(r, Recommender) for r in recs)
    assert len({r.name for r in recs}) == 4
    for r in recs:
        with pytest.raises(ValueError):
            r.recommend(ask("x"), k=0)


def test_text_baselines_see_the_tracks_played_before(tracks):
    from index.lexical import history_query

    catalog = {t.id: t for t in tracks}
    first = tracks[0]
    history = [{"role": "user", "content": "something calm"},
               {"role": "assistant", "content": "Here.", "tracks": [first.id, "not-in-catalog"]},
               {"role": "user", "content": "more like that"}]
    query = history_query(history, catalog=catalog)
    assert query.split("\n")[:2] == ["more like that", "something calm"]
    assert query.split("\n")[2].startswith(first.title)
    fake = FakeIndex(tracks, PLAYLISTS, hits=[])
    DenseRecommender(fake).recommend(history, k=3)
    DenseRecommender(fake, with_played=False).recommend(history, k=3)
    assert [q for q, _, _ in fake.queries] == [query, "more like that\nsomething calm"]
