"""Synthesized conversations: honest requests, honest refinements, playlist splits, jsonl files."""
import json
import random
import re

import pytest

from assistant import synth
from assistant.conversations import SPLITS, ConversationFormatError, read_conversations, write_conversations
from assistant.synth import REFINEMENTS, split_by_playlist, split_key, synthesize_conversations, write_splits
from index import vocabulary
from index.track import Track

KEYS = ["D major", "A minor", "G major", "E minor", "C major", "F# minor", "Bb major"]
HUMAN_TAGS = [["reel", "folk", "fiddle"], ["orchestral", "cinematic"], ["jazz", "piano"], ["rock", "guitar"],
              ["ambient", "drone"]]
LYRICS = "Down by the river where the willows grow\nWe walk the long road home tonight\nRiver river carry me"


def make_catalog(n=20):
    """Tracks with spread-out descriptors, four playlists (overlapping) and two tracks in no playlist."""
    rng = random.Random(7)
    tracks = []
    for i in range(n):
        key = KEYS[i % len(KEYS)]
        tempo = 60 + (i * 37) % 110
        tracks.append(Track(
            id=f"t{i:02d}", title=f"Title {i}", artist=f"Artist {i % 5}", album=f"Album {i % 3}",
            year=str(1960 + 3 * i), genre=["Folk", "Classical", "Jazz", "Rock"][i % 4],
            tags=HUMAN_TAGS[i % 5] + ["fast" if tempo > 120 else "slow", key],
            lyrics=LYRICS if i % 3 == 0 else "",
            descriptors={"tempo_bpm": tempo + rng.random(), "key": key, "mode": key.split()[1],
                         "energy": ((i * 7) % 20) / 19, "brightness": ((i * 11) % 20) / 19,
                         "vocals": 0.9 if i % 3 == 0 else 0.1}))
    ids = [t.id for t in tracks]
    playlists = {"evening": ids[0:7], "workout": ids[5:12], "road trip": ids[10:16], "focus": ids[14:18]}
    return tracks, playlists


@pytest.fixture(scope="module")
def catalog():
    return make_catalog()


@pytest.fixture(scope="module")
def conversations(catalog):
    tracks, playlists = catalog
    convs = []
    for seed in range(6):
        for c in synthesize_conversations(tracks, playlists, seed=seed, sessions_per_playlist=8,
                                          refine_share=0.7, progress=False):
            convs.append({**c, "id": f"{seed}-{c['id']}"})
    return convs


def targets(conv):
    return [t["tracks"][0] for t in conv["turns"] if t["role"] == "assistant"]


def test_sessions_walk_their_playlist(catalog, conversations):
    tracks, playlists = catalog
    for conv in conversations:
        roles = [t["role"] for t in conv["turns"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        ids = targets(conv)
        assert len(ids) == len(set(ids)), "a session never plays a track twice"
        if conv["playlist"] is None:
            assert len(ids) == 1
        else:
            assert set(ids) <= set(playlists[conv["playlist"]])
            assert 1 <= len(ids) <= min(5, len(playlists[conv["playlist"]]))
            assert len(ids) >= 2


def test_orphan_tracks_get_single_turn_sessions(catalog, conversations):
    tracks, playlists = catalog
    in_playlists = {i for ids in playlists.values() for i in ids}
    orphans = {t.id for t in tracks} - in_playlists
    assert orphans == {"t18", "t19"}
    seen = {targets(c)[0] for c in conversations if c["playlist"] is None}
    assert seen == orphans


def _vocal(track):
    return track.descriptors["vocals"] >= 0.6


def _instrumental(track):
    return track.descriptors["vocals"] <= 0.35


def test_every_refinement_is_true_of_the_chosen_track(catalog, conversations):
    by_id = {t.id: t for t in catalog[0]}
    kinds_seen = set()
    for conv in conversations:
        played = []
        for i, turn in enumerate(conv["turns"]):
            if turn["role"] != "user":
                played.append(by_id[turn["tracks"][0]])
                continue
            kind = turn.get("refinement")
            if kind is None:
                continue
            kinds_seen.add(kind)
            prev, first = played[-1], played[0]
            new = by_id[conv["turns"][i + 1]["tracks"][0]]
            d0, d1 = prev.descriptors, new.descriptors
            assert any(turn["content"].startswith(a.format(artist=prev.artist).rstrip(".!?"))
                       for a in REFINEMENTS[kind].asks), turn["content"]
            check = {
                "faster": lambda: d1["tempo_bpm"] > d0["tempo_bpm"],
                "slower": lambda: d1["tempo_bpm"] < d0["tempo_bpm"],
                "brighter": lambda: d1["brightness"] > d0["brightness"],
                "darker": lambda: d1["brightness"] < d0["brightness"],
                "calmer": lambda: d1["energy"] < d0["energy"],
                "more energetic": lambda: d1["energy"] > d0["energy"],
                "with vocals": lambda: _vocal(new) and _instrumental(prev),
                "without vocals": lambda: _instrumental(new) and _vocal(prev),
                "same artist": lambda: new.artist == prev.artist,
                "other artist": lambda: new.artist != prev.artist,
                "like first": lambda: first.id != prev.id and synth.likeness(new, first) > synth.likeness(new, prev),
            }[kind]
            assert check(), f"{kind!r} is false: {prev.id} -> {new.id} in {conv['id']}"
            reply = conv["turns"][i + 1]["content"]
            if kind in ("faster", "slower"):
                assert f"about {round(d1['tempo_bpm'])} BPM against {round(d0['tempo_bpm'])}" in reply
    assert len(kinds_seen) >= 8, f"too few kinds of refinement exercised: {sorted(kinds_seen)}"


def test_plain_requests_state_only_true_facts(catalog, conversations):
    by_id = {t.id: t for t in catalog[0]}
    checked = {"bpm": 0, "key": 0, "mode": 0, "artist": 0, "lyrics": 0, "era": 0, "vocals": 0}
    for conv in conversations:
        for i, turn in enumerate(conv["turns"]):
            if turn["role"] != "user" or "refinement" in turn:
                continue
            text, t = turn["content"], by_id[conv["turns"][i + 1]["tracks"][0]]
            for m in re.finditer(r"around (\d+) BPM", text):
                assert abs(int(m.group(1)) - t.descriptors["tempo_bpm"]) <= 3.5, (text, t.descriptors)
                checked["bpm"] += 1
            for m in re.finditer(r"\b([A-G][#b]? (?:major|minor))\b", text):
                assert m.group(1) == t.descriptors["key"], (text, t.id)
                checked["key"] += 1
            for m in re.finditer(r"\b(major|minor)[- ]key", text):
                assert m.group(1) == t.descriptors["mode"], (text, t.id)
                checked["mode"] += 1
            for m in re.finditer(r"\bby (Artist \d)", text):
                assert m.group(1) == t.artist
                checked["artist"] += 1
            for m in re.finditer(r'"([^"]+)"', text):
                if not m.group(1).startswith("Title"):
                    assert m.group(1).lower() in t.lyrics.lower(), (text, t.id)
                    checked["lyrics"] += 1
            for m in re.finditer(r"from the (\d{4})s", text):
                assert int(t.year) // 10 * 10 == int(m.group(1))
                checked["era"] += 1
            if re.search(r"\binstrumental\b|without vocals", text):
                assert _instrumental(t), (text, t.id)
                checked["vocals"] += 1
            if re.search(r"with (vocals|singing)", text):
                assert _vocal(t), (text, t.id)
                checked["vocals"] += 1
    assert all(n > 0 for n in checked.values()), checked


def test_every_user_turn_records_what_it_asked_and_that_holds_for_its_track(catalog, conversations):
    by_id = {t.id: t for t in catalog[0]}
    kinds = set()
    for conv in conversations:
        for i, turn in enumerate(conv["turns"]):
            if turn["role"] != "user":
                continue
            target = by_id[conv["turns"][i + 1]["tracks"][0]]
            assert isinstance(turn["asked"], list), turn
            for kind, value in turn["asked"]:
                assert synth.allows(target, kind, value), (turn["content"], kind, value, target.id)
                kinds.add(kind)
            if "refinement" not in turn:
                assert turn["asked"], f"a plain request pins something down: {turn['content']!r}"
    assert {"tag", "bpm", "key", "mode", "artist", "vocals", "era"} <= kinds, kinds


def test_allows_tells_the_tracks_a_request_holds_for_from_the_rest(catalog):
    tracks = catalog[0]
    t0, t1 = tracks[0], tracks[1]  # reel/folk vs orchestral/classical, D major vs A minor
    assert synth.allows(t0, "tag", "reel") and not synth.allows(t1, "tag", "reel")
    assert synth.allows(t1, "genre", "classical") and synth.allows(t1, "tag", "Classical")
    assert synth.allows(t0, "key", "D major") and not synth.allows(t1, "key", "D major")
    assert synth.allows(t1, "mode", "minor key") and not synth.allows(t0, "mode", "minor key")
    assert synth.allows(t0, "artist", t0.artist) and not synth.allows(t1, "artist", t0.artist)
    assert synth.allows(t0, "vocals", "with vocals") and synth.allows(t1, "vocals", "instrumental")
    assert synth.allows(t0, "era", "1960s") and synth.allows(t0, "era", "1960") and not synth.allows(t0, "era", "1970s")
    assert synth.allows(t0, "lyric word", "river") and not synth.allows(t1, "lyric word", "river")
    assert synth.allows(t0, "lyric line", "walk the long road") and not synth.allows(t1, "lyric line", "walk the long road")
    slow = [t for t in tracks if t.descriptors["tempo_bpm"] < vocabulary.SLOW_BELOW_BPM]
    fast = [t for t in tracks if t.descriptors["tempo_bpm"] >= vocabulary.FAST_FROM_BPM]
    assert slow and fast
    assert all(synth.allows(t, "tempo", "unhurried") and not synth.allows(t, "tempo", "uptempo") for t in slow)
    assert all(synth.allows(t, "tempo", "quick") for t in fast)
    with pytest.raises(ValueError, match="unknown kind"):
        synth.allows(t0, "mood", "happy")


def test_requests_are_varied_and_rarely_name_the_title(catalog, conversations):
    by_id = {t.id: t for t in catalog[0]}
    plain = [(turn["content"], by_id[conv["turns"][i + 1]["tracks"][0]])
             for conv in conversations for i, turn in enumerate(conv["turns"])
             if turn["role"] == "user" and "refinement" not in turn]
    assert len({text for text, _ in plain}) > 0.8 * len(plain)
    titled = sum(f'"{t.title}"' in text for text, t in plain)
    assert 0 < titled < 0.1 * len(plain)
    assert not any(", ".join(t.tags) in text for text, t in plain), "requests must not copy the tag string"
    lengths = [len(text.split()) for text, _ in plain]
    assert min(lengths) <= 4 and max(lengths) >= 10, "vague and specific requests both occur"


def test_assistant_turns_name_the_track(catalog, conversations):
    by_id = {t.id: t for t in catalog[0]}
    for conv in conversations:
        for turn in conv["turns"]:
            if turn["role"] == "assistant":
                t = by_id[turn["tracks"][0]]
                assert f'"{t.title}" by {t.artist}' in turn["content"]


def test_same_seed_same_conversations(catalog):
    tracks, playlists = catalog
    a = synthesize_conversations(tracks, playlists, seed=3, progress=False)
    b = synthesize_conversations(tracks, playlists, seed=3, progress=False)
    c = synthesize_conversations(tracks, playlists, seed=4, progress=False)
    assert a == b
    assert a != c
    assert len({x["id"] for x in a}) == len(a)


def test_bad_arguments_are_refused(catalog):
    tracks, playlists = catalog
    with pytest.raises(ValueError, match="turns_per_session"):
        synthesize_conversations(tracks, playlists, turns_per_session=(3, 2), progress=False)
    with pytest.raises(ValueError, match="unique"):
        synthesize_conversations(tracks + tracks[:1], playlists, progress=False)
    with pytest.raises(ValueError, match="no conversations"):
        synthesize_conversations([], {"x": ["nope"]}, progress=False)


def test_a_library_without_playlists_gets_varied_multi_turn_sessions_up_to_the_floor(catalog):
    tracks, _ = catalog
    plain = synthesize_conversations(tracks, {}, seed=0, progress=False)
    assert len(plain) == len(tracks) and all(len(targets(c)) == 1 for c in plain)  # one single turn a track

    convs = synthesize_conversations(tracks, {}, seed=0, min_turns=300, refine_share=0.7, progress=False)
    near = [c for c in convs if "neighbourhood" in c]
    turns = sum(len(targets(c)) for c in convs)
    assert 300 <= turns < 300 + 5 and len(convs) == len(tracks) + len(near)
    by_id = {t.id: t for t in tracks}
    for c in near:
        ids = targets(c)
        assert ids[0] == c["neighbourhood"] and len(ids) == len(set(ids)) and c["playlist"] is None
        assert set(ids) <= {t.id for t in synth.neighbourhood(by_id[ids[0]], tracks)}
    assert {c["neighbourhood"] for c in near} == {t.id for t in tracks}  # every track seeds sessions
    assert sum(len(targets(c)) > 1 for c in near) > 0.9 * len(near)
    assert any(t.get("refinement") for c in near for t in c["turns"])
    first_requests = [c["turns"][0]["content"] for c in near]
    assert len(set(first_requests)) > 0.9 * len(first_requests)  # the same track is asked for in other words

    # Sessions of one seed stay in one split.
    splits = split_by_playlist(convs, seed=0)
    where = {}
    for split, members in splits.items():
        for c in members:
            assert where.setdefault(split_key(c), split) == split
    with pytest.raises(ValueError, match="min_turns"):
        synthesize_conversations(tracks, {}, min_turns=-1, progress=False)


def test_neighbourhood_is_the_most_alike_tracks():
    tracks, _ = make_catalog()
    seed = tracks[0]
    near = synth.neighbourhood(seed, tracks, size=4)
    assert near[0] is seed and len(near) == 4
    rest = [t for t in tracks if t not in near]
    assert min(synth.likeness(seed, t) for t in near[1:]) >= max(synth.likeness(seed, t) for t in rest)


def test_split_shares_no_playlist(catalog):
    tracks, playlists = catalog
    convs = synthesize_conversations(tracks, playlists, seed=0, progress=False)
    splits = split_by_playlist(convs, val=0.1, test=0.15, seed=0)
    assert set(splits) == set(SPLITS)
    assert sorted(c["id"] for s in splits.values() for c in s) == sorted(c["id"] for c in convs)
    keys = {s: {split_key(c) for c in convs_} for s, convs_ in splits.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    assert all(splits[s] for s in SPLITS), {s: len(v) for s, v in splits.items()}
    assert all(c["split"] == s for s, v in splits.items() for c in v)
    with pytest.raises(ValueError):
        split_by_playlist(convs, val=0.5, test=0.5)


def test_jsonl_round_trip(tmp_path, catalog):
    convs = synthesize_conversations(*catalog, seed=1, progress=False)
    path = write_conversations(convs, tmp_path / "c" / "conversations.jsonl")
    assert read_conversations(path) == convs
    assert len(path.read_text().splitlines()) == len(convs)


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"turns": [{"role": "user", "content": "hi"}]}), '"id"'),
    (json.dumps({"id": "x", "turns": []}), "non-empty list"),
    (json.dumps({"id": "x", "turns": [{"role": "robot", "content": "hi"}]}), "role must be"),
    (json.dumps({"id": "x", "turns": [{"role": "user", "content": 3}]}), "content"),
    (json.dumps({"id": "x", "turns": [{"role": "user", "content": "a", "tracks": ["t1"]}]}), "only assistant"),
    (json.dumps({"id": "x", "turns": [{"role": "assistant", "content": "a", "tracks": "t1"}]}), "list of"),
    (json.dumps({"id": "c1", "turns": [{"role": "user", "content": "again"}]}), "already used on line 1"),
])
def test_reader_names_the_bad_line(tmp_path, line, message):
    good = json.dumps({"id": "c1", "turns": [{"role": "user", "content": "calm"},
                                             {"role": "assistant", "content": "ok", "tracks": ["t1"]}]})
    path = tmp_path / "conversations.jsonl"
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(ConversationFormatError, match=re.escape("conversations.jsonl:3: ") + ".*" + re.escape(message)):
        read_conversations(path)


def test_reader_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_splits"):
        read_conversations(tmp_path / "absent.jsonl")


def test_write_splits(tmp_path, catalog):
    paths = write_splits(*catalog, tmp_path, seed=2, progress=False)
    assert {s: p.relative_to(tmp_path).as_posix() for s, p in paths.items()} == \
        {s: f"{s}/conversations.jsonl" for s in (*SPLITS, synth.HELD_OUT_PHRASING)}
    read = {s: read_conversations(p) for s, p in paths.items()}
    assert all(read[s] and all(c["split"] == s for c in read[s]) for s in SPLITS)
    train_keys = {split_key(c) for c in read["train"]}
    assert not train_keys & {split_key(c) for c in read["val"] + read["test"]}


def test_write_splits_takes_val_and_test_from_held_out_playlists_only(tmp_path, catalog):
    tracks, playlists = catalog
    held = {"focus": {"split": "test", "tracks": playlists["focus"]},
            "road trip": {"split": "val", "tracks": playlists["road trip"]}}
    in_index = {n: m for n, m in playlists.items() if n not in held}
    read = {s: read_conversations(p) for s, p in write_splits(tracks, in_index, tmp_path, heldout_playlists=held,
                                                              seed=0, progress=False).items()}
    assert {c["playlist"] for c in read["test"]} == {"focus"} and {c["playlist"] for c in read["val"]} == {"road trip"}
    assert {c["playlist"] for c in read["train"]} == {"evening", "workout", None}
    # every track the training playlists miss (held-out ones included) is still learned from its own text
    singles = {targets(c)[0] for c in read["train"] if c["playlist"] is None and "neighbourhood" not in c}
    assert singles == {t.id for t in tracks} - {i for m in in_index.values() for i in m}
    ids = [c["id"] for s in read for c in read[s]]
    assert len(ids) == len(set(ids))


def _template_pattern(template: str) -> str:
    literal = re.split(r"\{\w+\}", template)
    return ".+".join(re.escape(part) for part in literal)


def _held_out_patterns() -> list[re.Pattern]:
    w = synth.HELD_OUT_WORDING
    greet = "(?:" + "|".join(re.escape(g) for g in synth.TRAINING_WORDING.greetings + w.greetings) + ")?"
    extra = "(?: (?:" + "|".join(_template_pattern(e) for e in synth.TRAINING_WORDING.extras + w.extras) + "))?"
    templates = (list(w.openers) + list(w.artist_asks) + list(w.title_asks) + list(w.lyric_line_asks)
                 + list(w.lyric_word_asks) + [a for asks in w.refinements.values() for a in asks])
    patterns = [re.compile(greet + _template_pattern(t) + extra, re.I) for t in templates]
    patterns += [re.compile(".+" + re.escape(end)) for end in w.terse_endings]
    return patterns


def test_held_out_phrasing_never_reaches_training_and_rewords_the_test_sessions(tmp_path, catalog):
    paths = write_splits(*catalog, tmp_path, seed=5, progress=False)
    read = {s: read_conversations(p) for s, p in paths.items()}
    patterns = _held_out_patterns()
    training_turns = [t["content"] for s in ("train", "val") for c in read[s] for t in c["turns"] if t["role"] == "user"]
    assert training_turns and not [u for u in training_turns if any(p.fullmatch(u) for p in patterns)]
    test, reworded = read["test"], read[synth.HELD_OUT_PHRASING]
    assert [c["id"] + "-phrasing" for c in test] == [c["id"] for c in reworded]
    for before, after in zip(test, reworded):
        assert after["phrasing"] == "held-out" and targets(after) == targets(before)
        for a, b in zip(before["turns"], after["turns"]):
            assert a["role"] == b["role"] and a.get("refinement") == b.get("refinement")
            if a["role"] == "assistant":
                assert a == b
            else:
                assert any(p.fullmatch(b["content"]) for p in patterns), b["content"]


def test_held_out_wording_covers_every_relation_with_new_words():
    held, trained = synth.HELD_OUT_WORDING, synth.TRAINING_WORDING
    assert set(held.refinements) == set(REFINEMENTS) == set(trained.refinements)
    for kind, asks in held.refinements.items():
        assert asks and not set(asks) & set(trained.refinements[kind])


def test_the_replies_band_words_are_the_ones_the_grounding_check_reads():
    from assistant.facts import BAND_WORDS, false_descriptions

    for band, words in [*synth.TEMPO_WORDS.items(), *synth.ENERGY_WORDS.items()]:
        descriptor = "tempo_bpm" if band in ("slow", "fast", "moderate tempo") else "energy"
        assert set(words) <= set(BAND_WORDS[descriptor, band])
    fast = Track(id="f", tags=["dark ambient"], descriptors={"tempo_bpm": 185.0, "energy": 0.5, "brightness": 0.7})
    assert false_descriptions("a slow, calm, dark piece that is never intense", fast) == ["slow", "calm"]  # "dark": a tag
    assert false_descriptions("a fast piece, and calm", fast) == ["calm"]  # read as soon as it is written
    rng = random.Random(0)
    for _ in range(50):  # what the synthesizer says of a track, the check lets stand
        assert false_descriptions(synth.compose_reply(fast, rng).lower() + " ", fast) == []
    with pytest.raises(TypeError):
        false_descriptions(None, fast)


def test_a_reply_gives_its_track_only_tags_it_has():
    from assistant.facts import unfounded_tags

    reel = Track(id="r", title="Reel", tags=["folk", "fiddle tune", "irish"], genre="Folk")
    catalog = ["folk", "fiddle", "fiddle tune", "piano", "dark ambient", "ambient", "irish"]
    assert unfounded_tags("an irish fiddle tune, folk", reel, catalog) == []  # "fiddle": a word of its own tag
    assert unfounded_tags("a dark ambient piano piece", reel, catalog) == ["dark ambient", "piano"]
    rng = random.Random(0)
    for _ in range(30):  # what the synthesizer says of a track, the check lets stand
        assert unfounded_tags(synth.compose_reply(reel, rng).lower(), reel, catalog) == []
    with pytest.raises(TypeError):
        unfounded_tags(None, reel, catalog)


def test_a_reply_says_what_of_the_request_its_track_meets():
    from assistant.evaluate import answers_request
    from assistant.facts import false_descriptions

    track = Track(id="n", title="Nocturne", artist="Chopin", year="1835", tags=["piano", "romantic"],
                  descriptors={"tempo_bpm": 68.0, "energy": 0.2, "brightness": 0.5, "vocals": 0.1,
                               "key": "C# minor", "mode": "minor"})
    request = "Something mellow with piano, minor-key, from the 1830s, no organ and nothing fast."
    assert synth.request_met(request, track) == ["piano", "minor-key", "mellow", "1830s"]  # not "organ", not "fast"
    assert synth.request_met("not piano, and nothing too slow", track) == []  # turned around
    said = synth.said_facts(track, request)
    assert [(f.kind, f.adj or f.mod) for f in said] == [
        ("tag", "piano"), ("mode", "minor-key"), ("energy", "mellow"), ("era", "from the 1830s")]
    for seed in range(20):
        reply = synth.compose_reply(track, random.Random(seed), request=request)
        assert "a piano, minor-key piece." in reply, reply  # the first two, in the request's words
        assert "BPM" not in reply  # the card shows the tempo; the reply gives it when asked
        assert "at about 68 BPM" in synth.compose_reply(track, random.Random(seed), request="piano around 70 BPM")
        assert answers_request(reply, track, request) is True
        assert false_descriptions(reply.lower() + " ", track) == []
    assert "Asked for, and true of it: piano, minor-key, mellow, 1830s." in synth.catalog_facts(track, request=request)
    assert "Asked for" not in synth.catalog_facts(track, request="play something by Bach")
    assert answers_request("Here is a romantic piece.", track, request) is False
    assert answers_request("Here is a calm piece.", track, request) is True  # any word of the band
    assert answers_request("Here is a romantic piece.", track, "organ music") is None  # nothing asked is met
    with pytest.raises(TypeError):
        answers_request(None, track, request)


def test_the_facts_put_the_relation_asked_for_first():
    before = Track(id="a", title="Reel", artist="Trad", descriptors={"tempo_bpm": 100.0, "energy": 0.8,
                                                                     "brightness": 0.8, "vocals": 0.9})
    now = Track(id="b", title="Air", artist="Purcell", descriptors={"tempo_bpm": 140.0, "energy": 0.3,
                                                                    "brightness": 0.2, "vocals": 0.05})
    assert synth.asked_relations("Less bright this time.") == ["darker"]
    assert synth.asked_relations("Switch to a different artist.") == ["other artist"]
    assert synth.asked_relations("More like the very first one.") == ["like first"]
    assert synth.asked_relations("some piano music") == []
    facts = synth.catalog_facts(now, before, before, "Less bright this time.")
    assert "Asked for, and true of it: darker." in facts and ": darker, faster, calmer," in facts
    assert "Asked for" not in synth.catalog_facts(now, before, before, "Something slower.")  # it is not slower
    # a voice the request's own words already met is not said twice
    assert "Asked for, and true of it: no vocals." in synth.catalog_facts(now, before, before, "No vocals this time.")
    plain = synth.catalog_facts(now, before, before, "some piano music")
    assert "Asked for" not in plain and ": faster, darker, calmer, without vocals, other artist." in plain


def test_a_reply_is_read_for_the_relation_the_request_asked():
    from assistant.evaluate import says_relation

    before = Track(id="a", artist="Trad", descriptors={"tempo_bpm": 90.0, "brightness": 0.8, "vocals": 0.9})
    now = Track(id="b", artist="Purcell", descriptors={"tempo_bpm": 140.0, "brightness": 0.2, "vocals": 0.05})
    assert says_relation("It has a darker sound than the previous track.", now, before, before, "Less bright this time.")
    assert says_relation("It's faster than the last one.", now, before, before, "Less bright this time.") is False
    assert says_relation("An instrumental piece.", now, before, before, "No vocals this time.")
    assert says_relation("This time it's Purcell rather than Trad.", now, before, before, "Another artist, please.")
    assert says_relation("It's slower.", now, before, before, "Something slower.") is None  # it is not: nothing to say
    assert says_relation("A piece.", now, None, None, "Something faster.") is None  # no track before
    assert says_relation("A piece.", now, before, before, "some piano music") is None
    with pytest.raises(TypeError):
        says_relation(None, now, before, before, "Faster!")


def test_what_a_request_asked_changes_the_reply_and_nothing_else():
    tracks = [Track(id=f"t{i}", title=f"Song {i}", artist=f"Artist {i % 3}", year=str(1960 + 3 * i),
                    tags=[["piano", "calm"], ["folk", "fiddle"], ["orchestral", "battle"]][i % 3],
                    descriptors={"tempo_bpm": 60.0 + 9 * i, "energy": (i % 10) / 10, "brightness": (i % 7) / 7})
              for i in range(24)]
    playlists = {f"p{j}": [t.id for t in tracks[j::3]] for j in range(3)}
    plain = synth.compose_reply
    try:  # the same sessions written with replies that ignore what was asked
        synth.compose_reply = lambda track, rng, request="", **kw: plain(track, rng, **kw)
        before = synth.synthesize_conversations(tracks, playlists, seed=3, progress=False)
    finally:
        synth.compose_reply = plain
    after = synth.synthesize_conversations(tracks, playlists, seed=3, progress=False)
    changed = 0
    for a, b in zip(before, after, strict=True):
        for x, y in zip(a["turns"], b["turns"], strict=True):
            assert x.get("tracks") == y.get("tracks") and (x["role"] == "assistant" or x == y)
            changed += x["content"] != y["content"]
    assert changed > 0


def test_a_word_begun_that_can_only_become_a_false_description_is_refused():
    from assistant.facts import false_descriptions, false_start

    card = Track(id="d", year="2012", tags=["electronic"], descriptors={"tempo_bpm": 129.0})
    tags = ["electronic", "electronic rock", "orchestral"]
    assert false_start("an electronic, mid-tem", card, tags) == "mid-tem"  # only "mid-tempo", false at 129 BPM
    assert false_start("an orches", card, tags) == "orches"
    assert false_start("a fas", card, tags) is None  # "fast" holds
    assert false_start("an electronic", card, tags) is None  # whole, and its own tag
    assert false_start("a track from the", card, tags) is None  # no band word or tag begins so
    assert false_descriptions("a piece from the 2012s ", card) == ["2012s"]  # a year is not a decade
    assert false_descriptions("a piece from the 2010s ", card) == []
