"""Reading requests: the phrasing sets in tests/data, the synthesizer's own phrasings, and the
vocabulary every part reads words by."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from assistant.request import (CatalogWords, clauses, load_phrasings, normalise, read_request, reading_of,
                               relation_phrasings, score_reader)
from index import vocabulary
from index.track import Track

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["requests.jsonl", "requests_heldout.jsonl"])
def test_the_phrasing_sets_are_read_right(name):
    words, items = load_phrasings(DATA / name)
    score = score_reader(items, words)
    wrong = "\n".join(f"{t!r}: expected {e}, read {r}" for t, e, r in score.wrong)
    assert score.accuracy >= 0.95, f"{score.to_text()}\n{wrong}"


def test_the_phrasing_sets_are_many_and_varied():
    _, items = load_phrasings(DATA / "requests.jsonl")
    _, held_out = load_phrasings(DATA / "requests_heldout.jsonl")
    assert len(items) >= 150
    kinds = {i["kind"] for i in items}
    assert {"negation", "typo", "multi", "first", "none", "reference"} <= kinds
    assert not {i["text"].lower() for i in items} & {i["text"].lower() for i in held_out}


@pytest.mark.parametrize("which", ["TRAINING_WORDING", "HELD_OUT_WORDING"])
def test_every_phrasing_of_the_synthesizer_is_read_as_its_relation(which):
    from assistant import synth

    score = score_reader(relation_phrasings(getattr(synth, which)), CatalogWords(artists=("Maxstack",)))
    assert score.accuracy == 1.0, score.wrong


def test_negation_reaches_to_the_end_of_its_clause_only():
    assert reading_of(read_request("faster but not louder")) == {"tempo": 1}
    assert reading_of(read_request("not so fast, and with vocals")) == {"tempo": -1, "vocals": True}
    assert reading_of(read_request("no vocals and faster")) == {"vocals": False, "tempo": 1}
    assert clauses(normalise("the second one, but slower and without vocals")) == [
        "the second one", "slower", "without vocals"]


def test_typos_are_mended_only_where_the_word_is_not_english():
    assert normalise("fastr plz") == "faster please"
    assert normalise("a master piece") == "a master piece"
    assert reading_of(read_request("the master tapes")) == {}


@pytest.mark.parametrize("text, reading", [
    ("something in c# minor", {"key": "C# minor"}), ("in the key of e minor please", {"key": "E minor"}),
    ("a piece in b flat major", {"key": "Bb major"}), ("anything in D minor?", {"key": "D minor"}),
    ("something in a minor key", {"mode": "minor"}), ("in a minor mood", {"mode": "minor"}),
])
def test_a_key_typed_in_lower_case_is_a_key_and_a_minor_stays_the_mode(text, reading):
    assert reading_of(read_request(text)) == reading


def test_a_quoted_title_is_not_read_as_a_request():
    assert reading_of(read_request('Play "Slow Air for the Dark Night" please')) == {}


def test_catalog_words_come_from_the_tracks_and_leave_audio_words_out():
    tracks = [Track(id="a", title="x", artist="Scott Joplin", tags=["ragtime", "piano", "fast"],
                    descriptors={"tempo_bpm": 140.0}),
              Track(id="b", title="y", artist="Frédéric Chopin", tags=["piano", "instrumental"], genre="Classical")]
    words = CatalogWords.from_tracks(tracks)
    assert words.artists == ("Scott Joplin", "Frédéric Chopin")
    assert set(words.tags) == {"ragtime", "piano", "classical"}
    assert read_request("more chopin please", words).artist_name == "Frédéric Chopin"
    assert read_request("calm piano music", words).content == ["piano"]


def test_read_request_validates_its_input():
    with pytest.raises(TypeError):
        read_request(None)  # type: ignore[arg-type]


# ---- the vocabulary ----------------------------------------------------------------------------

def test_bands_and_steps():
    assert vocabulary.tempo_word(vocabulary.FAST_FROM_BPM) == "fast"
    assert vocabulary.tempo_word(vocabulary.SLOW_BELOW_BPM - 1) == "slow"
    assert vocabulary.tempo_word(None) is None and vocabulary.tempo_word(float("nan")) is None
    assert vocabulary.energy_word(0.2) == "calm" and vocabulary.energy_word(0.5) is None
    assert vocabulary.brightness_word(0.1) == "dark" and vocabulary.brightness_word(0.9) == "bright"
    assert vocabulary.vocal_state(0.9) is True and vocabulary.vocal_state(0.1) is False
    assert vocabulary.vocal_state(0.45) is None
    # A step no one hears is no change: 0.41 against 0.43 is not "darker".
    assert vocabulary.audible_change("brightness", 0.43, 0.41) == 0
    assert vocabulary.audible_change("brightness", 0.43, 0.30) == -1
    assert vocabulary.audible_change("tempo_bpm", 100, 107) == 0
    assert vocabulary.audible_change("tempo_bpm", 100, 110) == 1
    with pytest.raises(ValueError):
        vocabulary.audible_change("loudness", 1, 2)
    assert vocabulary.parse_key("F# major") == vocabulary.parse_key("Gb major") == (6, "major")
    assert vocabulary.same_key("C# minor", "Db minor") and not vocabulary.same_key("C minor", "C major")
    assert vocabulary.decade_of("1994-05-02") == 1990 and vocabulary.decade_of("") is None


def test_tags_cards_and_the_synthesizer_read_by_the_same_numbers():
    """The audio tags, the refinement check and the synthesizer's relations agree on every pair."""
    from assistant.refine import Refinement, satisfies
    from assistant.synth import REFINEMENTS
    from index.audio import descriptor_tags

    rng = random.Random(0)
    tracks = [Track(id=str(i), title=str(i), descriptors={
        "tempo_bpm": rng.uniform(50, 190), "energy": rng.random(), "brightness": rng.random(), "vocals": rng.random()})
        for i in range(60)]
    for t in tracks:
        tags = descriptor_tags(t.descriptors)
        for d in ("tempo_bpm", "energy", "brightness"):
            word = vocabulary.band_word(d, t.descriptors[d])
            assert (word in tags) if word else True
        assert ("instrumental" in tags) == (vocabulary.vocal_state(t.descriptors["vocals"]) is False)
    relations = {"faster": ("tempo_bpm", 1), "slower": ("tempo_bpm", -1), "brighter": ("brightness", 1),
                 "darker": ("brightness", -1), "calmer": ("energy", -1), "more energetic": ("energy", 1)}
    for a, b in zip(tracks, tracks[1:]):
        for name, (d, sign) in relations.items():
            assert REFINEMENTS[name].holds(a, b, a) == satisfies(b, a, Refinement(relative=[(d, sign)]))
