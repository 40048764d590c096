"""The chat engine end to end on a tiny catalog with a tiny trained model."""
from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import soundfile as sf

from assistant.chat import MusicAssistant
from assistant.retrieval import FUSION_WEIGHTS
from assistant.session import TrackCard, first_and_last
from assistant.facts import mode_of
from assistant.generation import FINISH_TOKENS
from assistant.refine import parse_refinement, satisfies
from tiny_catalog import SR, synth_track


@pytest.fixture(scope="module")
def dirs(tiny_assistant_dirs):
    return tiny_assistant_dirs


@pytest.fixture(scope="module")
def assistant(dirs):
    index_dir, model_dir = dirs
    return MusicAssistant.load(index_dir, model_dir)


def test_reply_returns_catalog_tracks_from_a_music_block(assistant):
    session = assistant.new_session()
    reply = assistant.reply(session, "calm piano")  # in the training requests' words: the block is read
    assert reply.source == "model"  # the constrained decoder always yields a valid block
    assert len(reply.tracks) == 3 and len(reply.ranked) >= 3
    assert all(t.id in assistant.index.by_id for t in reply.tracks)
    assert reply.text and all(card.reason for card in reply.tracks)
    assert "\n- " not in reply.text  # the cards are for the front end to show, not listed in the text
    assert session.played == [c.id for c in reply.tracks]
    assert session.history[-1]["tracks"] == session.played


def test_int8_weights_answer_from_the_same_model_with_quantized_linear_layers(dirs, assistant, one_torch_thread):
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    index_dir, model_dir = dirs
    int8 = MusicAssistant.load(index_dir, model_dir, weights="int8")
    assert int8.weights == "int8" and assistant.weights == "float32"
    linear = [m for m in int8.model.modules() if isinstance(m, (torch.nn.Linear, Int8Linear))]
    assert linear and all(isinstance(m, Int8Linear) for m in linear)
    reply = int8.reply(int8.new_session(), "calm piano")
    assert reply.source == "model" and len(reply.tracks) == 3
    assert all(t.id in int8.index.by_id for t in reply.tracks)
    # The same weights, rounded: the block's log-probabilities stay close to float32's.
    history = [{"role": "user", "content": "calm piano music please"}]
    exact, rounded = assistant.writer.block(history), int8.writer.block(history)
    for modality, scores in exact.code_log_probs.items():
        assert np.abs(np.exp(scores) - np.exp(rounded.code_log_probs[modality])).max() < 0.05
    with pytest.raises(ValueError, match="weights must be one of"):
        MusicAssistant.load(index_dir, model_dir, weights="int4")


def test_bfloat16_weights_answer_from_the_same_model_cast(dirs, assistant, one_torch_thread):
    import torch

    index_dir, model_dir = dirs
    half = MusicAssistant.load(index_dir, model_dir, weights="bfloat16")
    assert half.weights == "bfloat16"
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    reply = half.reply(half.new_session(), "calm piano")
    assert reply.source == "model" and len(reply.tracks) == 3
    history = [{"role": "user", "content": "calm piano music please"}]
    exact, rounded = assistant.writer.block(history), half.writer.block(history)
    for modality, scores in exact.code_log_probs.items():
        assert rounded.code_log_probs[modality].dtype == np.float32  # logits come back as float32
        assert np.abs(np.exp(scores) - np.exp(rounded.code_log_probs[modality])).max() < 0.05


def test_played_and_rejected_tracks_are_not_repeated(assistant):
    session = assistant.new_session()
    first = assistant.reply(session, "something fast and electronic")
    rejected = first.tracks[0].id
    second = assistant.feedback(session, rejected, liked=False)
    assert rejected in session.rejected
    shown_again = {c.id for c in second.tracks} & {c.id for c in first.tracks}
    assert not shown_again
    assert rejected not in second.ranked


def test_refinement_moves_in_the_asked_direction(assistant):
    session = assistant.new_session()
    first = assistant.reply(session, "calm piano")
    reply = assistant.reply(session, "faster please")
    reference = assistant.index.by_id[first.tracks[0].id]  # the card the person reacts to
    top = assistant.index.by_id[reply.tracks[0].id]
    assert top.descriptors["tempo_bpm"] > reference.descriptors["tempo_bpm"]
    assert "faster than" in reply.tracks[0].reason
    assert satisfies(top, reference, parse_refinement("faster please"))


def test_absolute_facts_in_a_request_are_read_and_checked():
    from index.track import Track

    r = parse_refinement("An orchestral piece in F# minor at around 120 BPM, from the 1990s")
    assert r and not r.is_relative
    assert (r.bpm, r.key, r.decade) == (120.0, (6, "minor"), 1990)
    fits = Track(id="a", year="1994", descriptors={"tempo_bpm": 124.0, "key": "Gb minor"})
    assert satisfies(fits, None, r)  # Gb is F#
    for wrong in ({"year": "1984"}, {"descriptors": {"tempo_bpm": 135.0, "key": "F# minor"}},
                  {"descriptors": {"tempo_bpm": 120.0, "key": "F# major"}}, {"descriptors": {"key": "F# minor"}}):
        kwargs = {"id": "b", "year": "1994", "descriptors": {"tempo_bpm": 120.0, "key": "F# minor"}, **wrong}
        assert not satisfies(Track(**kwargs), None, r)
    # "a minor key" is an article and a mode, not the key of A minor; numbers without BPM are not tempi.
    r = parse_refinement("something in a minor key, top 40 hits")
    assert r.key is None and r.mode == "minor" and r.bpm is None and r.is_relative
    assert not parse_refinement("something calm")


def test_a_tempo_asked_by_number_comes_first(assistant):
    target = sorted(assistant.index.tracks, key=lambda t: t.descriptors.get("tempo_bpm") or 0)[-1]
    bpm = round(float(target.descriptors["tempo_bpm"]))
    reply = assistant.reply(assistant.new_session(), f"something at around {bpm} BPM")
    top = assistant.index.by_id[reply.tracks[0].id]
    assert abs(float(top.descriptors["tempo_bpm"]) - bpm) <= 0.06 * bpm


def test_more_like_this_stays_close(assistant):
    session = assistant.new_session()
    first = assistant.reply(session, "folk fiddle reel")
    liked = assistant.index.by_id[first.tracks[0].id]
    reply = assistant.feedback(session, liked.id, liked=True)
    assert reply.tracks and liked.id not in {c.id for c in reply.tracks}
    unplayed_same_album = [t for t in assistant.index.tracks
                           if t.album == liked.album and t.id not in {c.id for c in first.tracks}]
    if unplayed_same_album:
        assert assistant.index.by_id[reply.tracks[0].id].album == liked.album


def test_which_end_of_the_session_a_track_is_more_like_is_checked(assistant):
    from assistant.synth import LIKENESS_MARGIN, likeness

    tracks = assistant.index.tracks
    # a track, one it is clearly more like than it is like another
    subject, near, far = next((s, a, b) for s in tracks for a in tracks for b in tracks
                              if len({s.id, a.id, b.id}) == 3
                              and likeness(s, a) > likeness(s, b) + LIKENESS_MARGIN)
    card = assistant._card(subject.id, 0.0, assistant.new_session(), parse_refinement(""))
    claim = "It's closer to the first one than to the last one."
    assert assistant.grounded_sentences(claim, [card], first_and_last=(near, far)) == claim
    assert assistant.grounded_sentences(claim, [card], first_and_last=(far, near)) == ""
    reverse = "It's more like the last track than the very first one."
    assert assistant.grounded_sentences(reverse, [card], first_and_last=(far, near)) == reverse
    assert assistant.grounded_sentences(reverse, [card], first_and_last=(near, far)) == ""
    # another track named so is not one the check can tell
    for said in ("closer to the first one than to the second one", "closer to the first one than to the next one",
                 "closer to the 2010s than to the last one", "closer to its roots than to the last one",
                 "closer to the \ufffd Sinner piece than to the \ufffd Sinne piece"):
        assert assistant.grounded_sentences(f"It's {said}.", [card], first_and_last=(near, far)) == ""
    waltz = "It's more like a waltz than a march."  # not about the session
    assert assistant.grounded_sentences(waltz, [card], first_and_last=(near, far)) == waltz
    # while it is written, the guard lets the true claim grow and refuses the other end begun
    from assistant.reply_check import likeness_false

    growing = "it's closer to the first one than to the "
    assert not any(likeness_false(growing + tail, subject, (near, far), growing=True)
                   for tail in ("", "la", "last", "last one", "very la"))
    assert all(likeness_false(growing + tail, subject, (near, far), growing=True) for tail in ("ne", "fi"))
    # the end it is not more like is refused as soon as it is begun, so the true one can be written
    assert likeness_false("it's closer to the fi", subject, (far, near), growing=True)
    assert not likeness_false("it's closer to the la", subject, (far, near), growing=True)
    assert assistant.grounded_sentences("It's closer to the last one.", [card], first_and_last=(far, near)) == \
        "It's closer to the last one."
    # with nothing to compare (a first turn, or one track played), the claim has no ground
    assert assistant.grounded_sentences(claim, [card]) == ""
    assert assistant.grounded_sentences(claim, [card], first_and_last=(near, near)) == ""
    # in a session, the ends are its first track and the card the last reply opened with
    session = assistant.new_session()
    session.played = [near.id, far.id]
    session.history = [{"role": "user", "content": "calm piano"},
                       {"role": "assistant", "content": "ok", "tracks": [near.id]},
                       {"role": "user", "content": "something faster"},
                       {"role": "assistant", "content": "ok", "tracks": [far.id]}]
    assert first_and_last(session, assistant.index.by_id) == (near, far)


def test_text_never_names_tracks_that_were_not_retrieved(assistant):
    session = assistant.new_session()
    reply = assistant.reply(session, "calm piano")
    other = next(t for t in assistant.index.tracks if t.id not in {c.id for c in reply.tracks} and t.title)
    fake = f'Try "{other.title}" at 999 BPM in F# minor. Or "Nonexistent Song" by Nobody.'
    assert assistant.grounded_sentences(fake, reply.tracks) == ""
    good_title = reply.tracks[0].title
    assert good_title in assistant.grounded_sentences(f'Here is "{good_title}".', reply.tracks)
    # A comparison the model makes on its own is dropped, even on a first turn with nothing before.
    said = f'Here is "{good_title}". It\'s calmer than the last one. It is darker.'
    assert assistant.grounded_sentences(said, reply.tracks) == f'Here is "{good_title}".'
    # Against the track played before, a comparison stands when it is true of the first card.
    by_tempo = sorted((t for t in assistant.index.tracks if t.descriptors.get("tempo_bpm")),
                      key=lambda t: float(t.descriptors["tempo_bpm"]))
    slowest, fastest = by_tempo[0], by_tempo[-1]
    card = lambda t: assistant._card(t.id, 0.0, assistant.new_session(), parse_refinement(""))  # noqa: E731
    claim = "It's faster than the last one."
    assert assistant.grounded_sentences(claim, [card(fastest)], reference=slowest) == claim
    # "a minor-key piece" names no key, only the mode, and "by <artist> fits" names the artist alone.
    mode = mode_of(fastest)
    for said in (f'Try "{fastest.title}": a {mode}-key piece.', f'"{fastest.title}" by {fastest.artist} fits: a piece.'):
        assert assistant.grounded_sentences(said, [card(fastest)]) == said
    other_mode = {"major": "minor", "minor": "major"}[mode]
    assert assistant.grounded_sentences(f'Try "{fastest.title}": a {other_mode}-key piece.', [card(fastest)]) == ""
    assert assistant.grounded_sentences(claim, [card(slowest)], reference=fastest) == ""
    # The track before lends its numbers to a comparison, never to a plain claim about the card.
    slow_bpm, fast_bpm = (round(float(t.descriptors["tempo_bpm"])) for t in (slowest, fastest))
    if abs(slow_bpm - fast_bpm) > 2:
        plain = f"It moves at about {slow_bpm} BPM."
        assert assistant.grounded_sentences(plain, [card(fastest)], reference=slowest) == ""
        versus = f"It is faster than the last one ({fast_bpm} vs {slow_bpm} BPM)."
        assert assistant.grounded_sentences(versus, [card(fastest)], reference=slowest) == versus
    # Words of a band ("slow", "dark") hold by the card's measurements or its tags, else are dropped.
    assert assistant.grounded_sentences(f'Try "{fastest.title}": a slow piece.', [card(fastest)]) == ""
    assert assistant.grounded_sentences(f'Try "{slowest.title}": a fast piece.', [card(slowest)]) == ""
    kept = f'Try "{fastest.title}": a fast piece.'
    assert assistant.grounded_sentences(kept, [card(fastest)]) == kept
    # So do the catalog's tags: "piano" of a track not tagged so is dropped.
    piano = next(t for t in assistant.index.tracks if "piano" in t.tags)
    other = next(t for t in assistant.index.tracks if "piano" not in t.tags and t.title and t.tags)
    said = lambda t: f'Try "{t.title}": a piano piece.'  # noqa: E731
    assert assistant.grounded_sentences(said(piano), [card(piano)]) == said(piano)
    assert assistant.grounded_sentences(said(other), [card(other)]) == ""
    # A year is one of a card's numbers, but not as its tempo.
    dated = next(t for t in by_tempo if str(t.year).isdigit())
    assert assistant.grounded_sentences(f"It is from {dated.year}.", [card(dated)]) == f"It is from {dated.year}."
    decade = int(dated.year) // 10 * 10
    assert assistant.grounded_sentences(f"It is from the {decade}s.", [card(dated)]) == f"It is from the {decade}s."
    assert assistant.grounded_sentences(f"It is from the {decade - 10}s.", [card(dated)]) == ""
    assert assistant.grounded_sentences(f"It moves at about {dated.year}.", [card(dated)]) == ""
    # "from" and a capital names the card's album; any other is dropped.
    with_album = next(t for t in assistant.index.tracks if t.album and t.title)
    elsewhere = next(t.album for t in assistant.index.tracks if t.album and t.album != with_album.album)
    named = f'Here is "{with_album.title}" from {with_album.album}.'
    assert assistant.grounded_sentences(named, [card(with_album)]) == named
    assert assistant.grounded_sentences(f'Here is "{with_album.title}" from {elsewhere}.', [card(with_album)]) == ""
    # Fragments of echoed track cards are not sentences, even when every fact in them is true.
    year = next((c.year for c in reply.tracks if c.year), "")
    echoed = f'1, {year}): piano; about. a fine one by the same Piano'
    assert assistant.grounded_sentences(echoed, reply.tracks) == ""


def test_without_a_model_the_engine_answers_and_dense_search_is_the_last_resort(dirs, caplog):
    index_dir, _ = dirs
    plain = MusicAssistant.load(index_dir, None)
    reply = plain.reply(plain.new_session(), "dark orchestral strings")
    assert reply.source == "engine" and not reply.notes
    assert assistant_albums(plain, reply)[0] == "Dark Orchestral"
    # no word matches and nothing is played yet: the MiniLM match in the fusion still answers
    reply = plain.reply(plain.new_session(), "zzzz qqqq")
    assert reply.source == "engine" and len(reply.tracks) == 3
    words_only = MusicAssistant.load(index_dir, None, fusion_weights=dict(FUSION_WEIGHTS, dense=0.0))
    with caplog.at_level(logging.INFO, logger="tonearm.retrieval"):
        reply = words_only.reply(words_only.new_session(), "zzzz qqqq")
    assert reply.source == "dense-fallback" and any("dense fallback" in n for n in reply.notes)
    assert "dense fallback" in caplog.text


def test_warm_up_builds_the_word_searches_before_the_first_turn(dirs):
    index_dir, _ = dirs
    plain = MusicAssistant.load(index_dir, None)
    assert "lexical" not in vars(plain.index) and "text_encoder" not in vars(plain.index)
    plain.warm_up()
    assert "lexical" in vars(plain.index) and "text_encoder" in vars(plain.index)


def test_a_failed_warm_up_is_logged_and_the_server_goes_on(dirs, monkeypatch, caplog):
    index_dir, _ = dirs
    plain = MusicAssistant.load(index_dir, None)

    def broken(texts):
        raise OSError("no MiniLM here")

    monkeypatch.setattr(plain.index, "encode_text", broken)
    with caplog.at_level(logging.WARNING, logger="tonearm.chat"):
        plain.warm_up()
    assert "no MiniLM here" in caplog.text and "first turn" in caplog.text


def test_a_model_attached_later_answers_the_next_turn(dirs):
    index_dir, model_dir = dirs
    assistant = MusicAssistant.load(index_dir, None)
    session = assistant.new_session()
    assert assistant.reply(session, "calm piano").source == "engine"
    assistant.load_model(model_dir)
    later = assistant.reply(session, "something faster")
    assert later.source != "engine" and not any("no model loaded" in n for n in later.notes)  # the model was asked
    assert len(session.played) == 6


def assistant_albums(a, reply):
    return [a.index.by_id[c.id].album for c in reply.tracks]


def test_long_history_is_trimmed_oldest_first(dirs):
    index_dir, model_dir = dirs
    small = MusicAssistant.load(index_dir, model_dir, max_context_tokens=120)
    history = []
    for i in range(12):
        history += [{"role": "user", "content": f"request number {i} for calm piano music"},
                    {"role": "assistant", "content": "Here you go.", "tracks": []}]
    history.append({"role": "user", "content": "the latest request: fast electronic"})
    ids = small.writer.prompt_ids(small.writer.messages(history))
    text = small.tokenizer.decode(ids)
    assert len(ids) <= 120 and "the latest request" in text and "request number 0 " not in text
    assert text.index("<|im_start|>user") < text.index("<|im_start|>assistant")  # whole turns were dropped


def test_fusion_lifts_the_best_word_match_and_can_be_turned_off(dirs):
    index_dir, model_dir = dirs
    fused = MusicAssistant.load(index_dir, model_dir)
    blocks_only = MusicAssistant(fused.index, fused.model, fused.tokenizer, fused.vocab, text_fusion=False,
                                 block_ranking="likelihood")
    history = [{"role": "user", "content": "fast electronic dance music with synths"}]
    session = blocks_only.new_session()
    by_block, source, _ = blocks_only._rank(history, session, parse_refinement(""), 100, blocks_only.writer)
    generation = blocks_only.writer.block(history)
    by_likelihood = blocks_only.index.rank_by_code_log_probs(generation.code_log_probs, k=100)
    assert source == "model" and [t for t, _ in by_block] == [t for t, _ in by_likelihood]
    codes_only = MusicAssistant(fused.index, fused.model, fused.tokenizer, fused.vocab, text_fusion=False)
    by_codes = codes_only._rank(history, session, parse_refinement(""), 100, codes_only.writer)[0]
    assert [t for t, _ in by_codes] == [t for t, _ in blocks_only.index.retrieve(codes=generation.codes, k=100)]
    best_words = fused.index.search_lexical(history[0]["content"], k=1)[0][0]
    # Fused with the same block ranking (every track, by likelihood), so only the order can differ:
    # the codes' own matches depend on what the tiny model happens to write.
    words_too = MusicAssistant(fused.index, fused.model, fused.tokenizer, fused.vocab, block_ranking="likelihood")
    by_both = [t for t, _ in words_too._rank(history, words_too.new_session(), parse_refinement(""), 100,
                                             words_too.writer)[0]]
    # The best word match can only rise: whatever stays above it was also above it by the block.
    assert by_both.index(best_words) <= [t for t, _ in by_block].index(best_words)
    assert sorted(by_both) == sorted(t for t, _ in by_block)


def test_assistants_sharing_a_replayed_writer_decode_each_turn_once(dirs):
    from assistant.evaluate import replay_generations
    from assistant.writer import ReplayedBlocks

    index_dir, model_dir = dirs
    tuned = MusicAssistant.load(index_dir, model_dir)
    tuned.retrieval.reranker = tuned.retrieval.later_reranker = tuned.retrieval.request_words = None
    replay_generations(tuned)
    replay_generations(tuned)  # wrapped once, however often asked
    assert isinstance(tuned.writer, ReplayedBlocks) and not isinstance(tuned.writer.writer, ReplayedBlocks)
    decoded, inner = [], tuned.writer.writer
    block = inner.block
    inner.block = lambda *args, **kw: decoded.append(args[0]) or block(*args, **kw)
    blocks_only = MusicAssistant(tuned.index, writer=tuned.writer, text_fusion=False)
    assert blocks_only.model is tuned.model and blocks_only.writer is tuned.writer
    history = [{"role": "user", "content": "calm piano music"}]
    alone, fused = blocks_only.answer_reply(history, with_text=False), tuned.answer_reply(history, with_text=False)
    assert alone.source == fused.source == "model" and len(decoded) == 1
    again = MusicAssistant(tuned.index, writer=tuned.writer, text_fusion=False).answer_reply(history, with_text=False)
    assert again.ranked == alone.ranked and len(decoded) == 1  # the block read back, not decoded again
    assert tuned.writer.block(history) is tuned.writer.block(history)


def test_generation_keeps_the_distributions_its_block_was_drawn_from(dirs):
    index_dir, model_dir = dirs
    a = MusicAssistant.load(index_dir, model_dir)
    generation = a.writer.block([{"role": "user", "content": "calm piano for reading"}])
    assert generation.codes is not None and set(generation.code_log_probs) == set(a.vocab.codebook_sizes)
    for modality, log_probs in generation.code_log_probs.items():
        assert log_probs.shape == (a.vocab.codebook_sizes[modality],)
        assert np.exp(log_probs).sum() == pytest.approx(1.0, abs=1e-4)
        # Greedy decoding picked the most probable code, which the constraint allowed.
        assert generation.codes[modality] == int(np.argmax(log_probs))
    with pytest.raises(ValueError, match="block_ranking"):
        MusicAssistant(a.index, block_ranking="nearest")


def test_fusion_follows_the_session_and_checks_its_weights(dirs):
    index_dir, model_dir = dirs
    base = MusicAssistant.load(index_dir, model_dir)
    only_session = MusicAssistant(base.index, base.model, base.tokenizer, base.vocab,
                                  fusion_weights={"block": 0.0, "session": 1.0})
    members = next(iter(base.index.playlists.values()))  # a playlist the index learned from
    played = members[:2]
    session = only_session.new_session()
    session.played = list(played)
    history = [{"role": "user", "content": "another one"}]
    ranked = [t for t, _ in only_session._rank(history, session, parse_refinement(""), 20, only_session.writer)[0]]
    # tracks of held-out playlists borrow their neighbours' playlist vectors; among the others, this playlist leads
    first = next(t for t in ranked if any(t in m for m in base.index.playlists.values()))
    assert first in members and not set(played) & set(ranked)
    with pytest.raises(ValueError, match="fusion_weights"):
        MusicAssistant(base.index, fusion_weights={"blocks": 1.0})
    with pytest.raises(ValueError, match="fusion_weights"):
        MusicAssistant(base.index, fusion_weights={"block": -1.0})


def test_a_request_in_words_the_model_never_trained_on_is_ranked_without_it(dirs):
    from assistant.conversations import conversations_path, read_conversations
    from assistant.familiarity import RequestWords
    from assistant.rerank import Reranker, feature_names

    index_dir, model_dir = dirs
    a = MusicAssistant.load(index_dir, model_dir)
    trained = read_conversations(conversations_path(model_dir, "train"))
    known = next(t["content"] for c in trained for t in c["turns"] if t["role"] == "user")
    assert a.retrieval.request_words == RequestWords.from_conversations(trained)  # training kept them
    assert a.retrieval.knows_words([{"role": "user", "content": known}])
    strange = [{"role": "user", "content": known}, {"role": "assistant", "content": "ok"},
               {"role": "user", "content": "zyzzyva quokka marimbaphone"}]
    assert not a.retrieval.knows_words(strange)
    assert not a.retrieval.knows_words([{"role": "user", "content": known + " quokka"}])  # one new word is enough
    engine_fusion = MusicAssistant(a.index, a.model, a.tokenizer, a.vocab,
                                   fusion_weights=dict(FUSION_WEIGHTS, block=0.0))

    def fused(assistant, history):
        ranked, source, notes = assistant._rank(history, assistant.new_session(), parse_refinement(""), 50,
                                                assistant.writer)
        return source, [t for t, score in ranked if score > 0], notes

    blocks = []
    generate = a.writer.block
    a.writer.block = lambda *args, **kw: blocks.append(args[0]) or generate(*args, **kw)
    source, ranked, notes = fused(a, strange)
    # the block is not read on such a turn, so the model is not asked for one
    assert source == "engine" and not blocks and any("words the model never trained on" in n for n in notes)
    assert ranked == fused(engine_fusion, strange)[1]
    # A re-ranker, learned on requests in the training words, is not used on other words either.
    names = feature_names(True)
    a.retrieval.reranker = Reranker(names, -np.ones(len(names)), np.zeros(len(names)), np.ones(len(names)))
    assert fused(a, strange)[1] == ranked
    asked = [{"role": "user", "content": known}]
    assert fused(a, asked)[1] != fused(engine_fusion, asked)[1]
    # a model trained before its words were kept: every request is known
    a.retrieval.reranker, a.retrieval.request_words = None, None
    assert a.retrieval.knows_words(strange) and fused(a, strange)[1] != ranked


def test_a_reranker_that_reads_the_model_is_not_used_on_a_turn_without_its_block(dirs):
    from assistant.rerank import Reranker, feature_names

    index_dir, _ = dirs
    engine = MusicAssistant.load(index_dir, None)
    names = feature_names(True)
    col = names.index("rr_lexical")
    against_words = Reranker(names, -np.eye(len(names))[col], np.zeros(len(names)), np.ones(len(names)))
    history = [{"role": "user", "content": "calm piano music"}]
    plain = engine.answer_reply(history, with_text=False).ranked
    # a model loaded while the turn ran: its re-ranker is set, and this turn has no block for it
    engine.retrieval.reranker = against_words
    assert engine.answer_reply(history, with_text=False).ranked == plain
    without_model = Reranker(feature_names(False), -np.eye(len(feature_names(False)))[col],
                             np.zeros(len(feature_names(False))), np.ones(len(feature_names(False))))
    engine.retrieval.reranker = without_model  # one that needs no block still ranks
    assert engine.answer_reply(history, with_text=False).ranked != plain


def test_a_later_turn_is_ranked_by_the_later_reranker_when_one_is_set(dirs):
    from assistant.rerank import Reranker, feature_names

    index_dir, model_dir = dirs
    a = MusicAssistant.load(index_dir, model_dir)
    a.retrieval.request_words = None
    names = feature_names(False)
    col = names.index("rr_lexical")
    by_words, against_words = (Reranker(names, np.eye(len(names))[col] * sign, np.zeros(len(names)),
                                        np.ones(len(names))) for sign in (1.0, -1.0))
    a.retrieval.reranker, a.retrieval.later_reranker = by_words, against_words
    history = [{"role": "user", "content": "calm piano music"}]
    first = a.new_session()
    later = a.new_session()
    later.played = [a.index.tracks[0].id]

    def order(session):
        exclude = set(session.played)
        return [t for t, _ in a.retrieval.fuse([], history, session, 20, exclude)]

    words = [t for t, _ in a.index.search_lexical("calm piano music", k=20, exclude=set(later.played))]
    assert order(first)[0] == a.index.search_lexical("calm piano music", k=1)[0][0]  # a first request
    assert order(later)[0] != words[0] and order(later).index(words[0]) > order(later).index(words[-1])
    a.retrieval.later_reranker = None  # then one re-ranker ranks every turn
    assert order(later)[0] == words[0]


def test_the_model_is_asked_for_a_block_only_on_turns_whose_ranking_reads_it(dirs):
    from assistant.rerank import Reranker, feature_names

    index_dir, model_dir = dirs
    a = MusicAssistant.load(index_dir, model_dir)
    a.retrieval.request_words = None
    fit = {w: Reranker(feature_names(w), np.ones(len(feature_names(w))), np.zeros(len(feature_names(w))),
                       np.ones(len(feature_names(w)))) for w in (True, False)}
    a.retrieval.reranker, a.retrieval.later_reranker = fit[True], fit[False]  # the model's features on first requests only
    blocks = []
    generate = a.writer.block
    a.writer.block = lambda *args, **kw: blocks.append(args[0]) or generate(*args, **kw)
    session = a.new_session()
    first = a.reply(session, "calm piano music")
    assert first.source == "model" and len(blocks) == 1
    later = a.reply(session, "something faster")
    assert later.source == "engine" and len(blocks) == 1 and len(later.tracks) == 3
    assert any("without the model's block" in n for n in later.notes)
    assert later.generated  # the model still writes the reply about the tracks shown
    assert not {c.id for c in later.tracks} & {c.id for c in first.tracks}
    a.retrieval.later_reranker = fit[True]
    assert a.reply(session, "something slower").source == "model" and len(blocks) == 2


def test_weighted_rank_fusion():
    from assistant.retrieval import rrf

    a, b = [("x", 0), ("y", 0)], [("y", 0), ("x", 0)]
    assert [t for t, _ in rrf([a, b])] == ["x", "y"]  # a tie, broken by id
    assert [t for t, _ in rrf([a, b], weights=[1.0, 2.0])] == ["y", "x"]
    assert [t for t, _ in rrf([a, b], weights=[0.0, 1.0])] == ["y", "x"]
    with pytest.raises(ValueError):
        rrf([a, b], weights=[1.0])


def test_the_words_keep_to_their_budget_and_write_no_music_tokens(assistant):
    short = MusicAssistant(assistant.index, assistant.model, assistant.tokenizer, assistant.vocab, max_new_tokens=9)
    session = short.new_session()
    reply = short.reply(session, "calm piano music please")
    assert reply.source == "model" and not any("malformed" in n for n in reply.notes)
    written = short.tokenizer(reply.generated, add_special_tokens=False)["input_ids"]
    # the budget, and past it only the tokens that finish the sentence begun
    assert len(written) <= 9 + FINISH_TOKENS + 1 and "<music>" not in reply.generated and "<tag-" not in reply.generated


def test_a_sentence_open_at_the_budget_may_finish_and_nothing_more(assistant):
    from assistant.generation import DecodeState, Decoder

    ids = assistant.writer.prompt_ids(assistant.writer.messages([{"role": "user", "content": "calm piano"}]))
    _, block_ids = assistant.decoder.block(ids, DecodeState())
    for draft in (0, 8):
        decoder = Decoder(assistant.model, assistant.tokenizer, assistant.vocab, draft_tokens=draft, max_words_tokens=4)
        count = lambda texts: len(assistant.tokenizer(texts[-1], add_special_tokens=False)["input_ids"])  # noqa: E731
        never = list(decoder.words(block_ids, DecodeState(), may_end=lambda text: False))
        assert abs(count(never) - (4 + FINISH_TOKENS)) <= 2, never  # re-encoding may merge a token or two
        unguarded = list(decoder.words(block_ids, DecodeState()))
        assert count(unguarded) <= 4 + 1  # no sentence to finish without a may_end
        ends_at = never[5]  # a "sentence" that ends past the budget
        finished = list(decoder.words(block_ids, DecodeState(), may_end=lambda text: len(text) >= len(ends_at)))
        assert finished[-1] == ends_at, (finished, ends_at)


def test_a_streamed_turn_shows_the_tracks_before_the_words(assistant):
    session = assistant.new_session()
    updates = list(assistant.stream(session, "calm piano music please"))
    assert updates[0].tracks and updates[0].text == "" and updates[0].reply is None
    final = updates[-1].reply
    assert final is not None and [c.id for c in final.tracks] == [c.id for c in updates[0].tracks]
    texts = [u.text for u in updates[1:-1]]
    assert texts == sorted(texts, key=len) and all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    assert not texts or final.generated == texts[-1]
    assert session.played == [c.id for c in final.tracks] and len(session.history) == 2


def test_rank_for_evaluation_is_stateless_and_excludes_played(assistant):
    tid = assistant.index.tracks[0].id
    history = [{"role": "user", "content": "calm piano"}, {"role": "assistant", "content": "ok", "tracks": [tid]},
               {"role": "user", "content": "slower"}]
    ranked = assistant.rank(history, k=10)
    assert len(ranked) == 10 and tid not in ranked and len(set(ranked)) == 10
    assert assistant.rank(history, k=10) == ranked


def test_upload_questions_are_answered_from_the_analysis(assistant, tmp_path):
    path = tmp_path / "song.wav"
    sf.write(path, synth_track(120, 62, False, True, 12.0, seed=3), SR)
    session = assistant.new_session()
    reply = assistant.reply(session, "what key is this in?", upload=path)
    key = session.upload.analysis["key"]
    assert key in reply.text and re.search(r"[A-G][#b]? (major|minor)", reply.text)
    reply = assistant.reply(session, "how fast is it?")
    assert f"{session.upload.analysis['tempo_bpm']:.0f} BPM" in reply.text
    reply = assistant.reply(session, "describe it")
    assert key in reply.text and "BPM" in reply.text
    reply = assistant.reply(session, "find me songs like this")
    assert reply.source == "upload" and reply.tracks
    # the nearest catalog tracks by the catalog's own audio embedding
    up = session.upload.audio_vector
    sims = assistant.index.embeddings["audio"] @ up
    assert assistant.index.row_of[reply.tracks[0].id] == int(np.argmax(sims))


def test_chords_first_notes_and_the_melody_as_midi(assistant, tmp_path):
    """Every chord, note name and count in these answers is one the analysis measured."""
    import pretty_midi

    sr, beat = SR, 0.5
    tune = [60, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72]  # C major up and down, then an arpeggio
    n = np.arange(int(beat * sr))
    melody = np.concatenate([sum(a * np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * h * n / sr)
                                 for h, a in ((1, 1.0), (2, 0.4))) * np.exp(-2 * n / sr) for m in tune])
    path = tmp_path / "tune.wav"
    sf.write(path, (0.3 * melody).astype(np.float32), sr)
    session = assistant.new_session()
    assistant.reply(session, "what key is this in?", upload=path)
    a = session.upload.analysis

    chords = assistant.reply(session, "what chords does it use?")
    used = [c["label"] for c in a["chords"] if c["label"] != "N"]
    assert used and all(label in chords.text for label in used[:2])
    assert not chords.files

    first = assistant.reply(session, "what are the first notes of the melody?")
    names = [note["name"] for note in a["melody_notes"]]
    assert names[:8] == ["C4", "D4", "E4", "F4", "G4", "F4", "E4", "D4"]
    assert " ".join(names[:8]) in first.text and f"{len(names)} notes" in first.text

    midi = assistant.reply(session, "give me the melody as MIDI")
    assert len(midi.files) == 1 and midi.files[0].endswith("tune-melody.mid")
    back = pretty_midi.PrettyMIDI(midi.files[0]).instruments[0].notes
    assert [note.pitch for note in back] == [note["pitch"] for note in a["melody_notes"]]
    assert f"{len(back)} notes" in midi.text


def test_bad_uploads_get_a_message_and_the_session_goes_on(assistant, tmp_path):
    session = assistant.new_session()
    bad = tmp_path / "notes.mp3"
    bad.write_text("this is not audio")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR * 5, np.float32), SR)
    short = tmp_path / "short.wav"
    sf.write(short, synth_track(120, 60, False, False, 1.0, seed=1), SR)
    for path in (bad, silent, short):
        reply = assistant.reply(session, "what key is this?", upload=path)
        assert reply.text.startswith("I couldn't use that file") and not reply.tracks
    reply = assistant.reply(session, "calm piano")
    assert reply.tracks
    json.dumps(session.history)  # the history stays serialisable


def test_evaluation_scores_every_system_and_the_ablations(dirs, tmp_path):
    from assistant.evaluate import run_evaluation
    from assistant.synth import REFINEMENTS as REFINEMENT_NAMES
    from assistant.conversations import write_conversations
    from assistant.synth import synthesize_conversations

    index_dir, model_dir = dirs
    from index.store import MusicIndex

    index = MusicIndex.load(index_dir)
    conversations = write_conversations(synthesize_conversations(index.tracks, index.playlists, seed=1, progress=False),
                                tmp_path / "conversations.jsonl")
    out, predictions = tmp_path / "report.json", tmp_path / "submission.json"
    results = run_evaluation(model_dir, index_dir, conversations, limit=3, progress=False, out=out,
                             predictions_out=predictions)
    names = [r.name for r in results]
    assert names == ["assistant", "block-only", "base-untuned", "engine", "random", "popularity", "bm25", "dense"]
    rows = json.loads(out.read_text())
    assert [r["system"] for r in rows] == names
    for row in rows:
        assert row["conversations"] == 3 and row["turns"] >= 3
        assert all(0.0 <= row[m] <= 1.0 for m in ("hit@1", "hit@3", "hit@10", "mrr", "ndcg@1", "ndcg@10", "ndcg@20"))
        assert row["hit@1"] <= row["hit@3"] <= row["hit@10"]
        assert sum(kind["turns"] for kind in row["by_kind"].values()) == row["turns"]
        followed = row["refinement_following"]
        assert (followed is not None) == (row["system"] in ("assistant", "engine", "bm25", "dense"))
        if followed and followed["turns"]:
            assert 0.0 <= followed["rate"] <= 1.0 and set(followed["by_relation"]) <= set(REFINEMENT_NAMES)
    # The assistant's row compares it, conversation by conversation, with the untuned model and the engine.
    paired = rows[0]["paired"]
    assert set(paired) == {"base-untuned", "engine"} and "paired" not in rows[1]
    for by_metric in paired.values():
        assert set(by_metric) == {"ndcg@10", "hit@3"}
        for b in by_metric.values():
            assert b["conversations"] == 3 and b["difference_low"] <= b["difference"] <= b["difference_high"]
    engine = next(r for r in results if r.name == "engine")
    assert len(engine.per_conversation) == 3
    assert paired["engine"]["ndcg@10"]["difference"] == pytest.approx(
        rows[0]["ndcg@10"] - next(r for r in rows if r["system"] == "engine")["ndcg@10"])
    submitted = json.loads(predictions.read_text())
    assert len(submitted) == rows[0]["turns"]
    assert {"session_id", "user_id", "turn_number", "predicted_track_ids", "predicted_response"} <= set(submitted[0])
    assert all(len(p["predicted_track_ids"]) <= 20 and p["predicted_response"] for p in submitted)


def test_every_system_ranks_from_the_same_history(dirs, monkeypatch):
    """Each system is handed the same turns (user words and earlier tracks) and the same played set."""
    import assistant.evaluate as evaluate
    from index.store import MusicIndex

    index = MusicIndex.load(dirs[0])
    conversation = {"id": "c", "turns": [
        {"role": "user", "content": "calm piano"}, {"role": "assistant", "content": "", "tracks": [index.tracks[0].id]},
        {"role": "user", "content": "faster"}, {"role": "assistant", "content": "", "tracks": [index.tracks[1].id]}]}
    seen: dict[str, list] = {}

    def spy(name, rank):
        return lambda history, k, played: seen.setdefault(name, []).append((history, played)) or rank(history, k, played)

    systems = {name: spy(name, rank) for name, rank in evaluate.baseline_rankers(index).items()}
    systems["engine"] = spy("engine", evaluate.assistant_ranker(MusicAssistant(index)))
    for name, rank in systems.items():
        evaluate.evaluate_system(name, rank, [conversation], progress=False)
    first = seen["engine"]
    assert [played for _, played in first] == [set(), {index.tracks[0].id}]
    assert all(calls == first for calls in seen.values())


def test_a_claim_about_singing_must_match_the_cards(assistant):
    from assistant.refine import has_vocals

    reply = assistant.reply(assistant.new_session(), "calm piano")
    shown = [assistant.index.by_id[c.id] for c in reply.tracks]
    said = "It's a piece with vocals. It is instrumental."
    kept = assistant.grounded_sentences(said, reply.tracks)
    if any(has_vocals(t) for t in shown):
        assert kept == "It's a piece with vocals."
    else:
        assert kept == "It is instrumental."


def test_a_garbled_claim_of_singing_is_still_read_as_one():
    from assistant.reply_check import says_false
    from index.track import Track

    instrumental = Track(id="i", descriptors={"vocals": 0.05})
    before = Track(id="b", descriptors={"vocals": 0.05})
    # A first `make demo` model wrote this of an instrumental sonata after "no vocals please".
    assert says_false("It has more vocally than the last one.", instrumental, before)
    assert says_false("It has more vocals than the last one.", instrumental, before)
    assert not says_false("It is instrumental.", instrumental, before)


def test_the_decoder_reuses_its_cache_and_decodes_the_same(assistant):
    from assistant.generation import DecodeState, common_prefix

    decoder = assistant.decoder
    ids = assistant.writer.prompt_ids(assistant.writer.messages([{"role": "user", "content": "calm piano"}]))
    state = DecodeState()
    block, block_ids = decoder.block(ids, state)
    assert block_ids[: len(ids)] == ids and set(block.codes) == set(assistant.vocab.codebook_sizes)
    cached = list(decoder.words(block_ids, state))
    assert state.ids[: len(block_ids)] == block_ids  # the words went on from the block's cache
    assert cached == list(decoder.words(block_ids, DecodeState()))  # and decoded what a fresh pass does
    # A prompt that shares only part of the cache is cut back to the shared prefix, not confused by the rest.
    other = ids[:-3] + assistant.tokenizer("zz", add_special_tokens=False)["input_ids"]
    assert decoder.block(other, state)[0].codes == decoder.block(other)[0].codes
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2 and common_prefix([], [1]) == 0


def test_words_guessed_from_the_context_are_the_greedy_words(assistant):
    from assistant.generation import DecodeState, Decoder, lookup_draft

    ids = assistant.writer.prompt_ids(assistant.writer.messages([{"role": "user", "content": "calm piano"}]))
    _, block_ids = assistant.decoder.block(ids, DecodeState())
    one_a_pass = Decoder(assistant.model, assistant.tokenizer, assistant.vocab, draft_tokens=0)
    guessing = Decoder(assistant.model, assistant.tokenizer, assistant.vocab, draft_tokens=8)
    expected = list(one_a_pass.words(block_ids, DecodeState()))
    assert list(guessing.words(block_ids, DecodeState())) == expected  # the same text, token by token
    assert one_a_pass.drafted == 0 and one_a_pass.passes >= len(expected)
    assert guessing.drafted > 0 and guessing.passes < one_a_pass.passes  # guesses were kept: fewer passes
    # the guess: what followed the latest earlier occurrence of the last three tokens, else of the last two
    assert lookup_draft([5, 1, 2, 3, 4, 9, 1, 2], max_tokens=2) == [3, 4]
    assert lookup_draft([2, 8, 1, 2, 8, 4, 2, 8], max_tokens=5) == [4, 2, 8]
    assert lookup_draft([2, 8, 1, 3, 2, 8], max_tokens=5, ngrams=(3, 2)) == [1, 3, 2, 8]
    assert lookup_draft([1, 2, 3], max_tokens=4) == [] and lookup_draft([], max_tokens=4) == []
    with pytest.raises(ValueError):
        lookup_draft([1, 2], max_tokens=0)


def test_guesses_from_a_phrasebook_keep_the_greedy_words_in_fewer_passes(assistant):
    from assistant.generation import DecodeState, Decoder, Phrasebook

    ids = assistant.writer.prompt_ids(assistant.writer.messages([{"role": "user", "content": "calm piano"}]))
    _, block_ids = assistant.decoder.block(ids, DecodeState())
    one_a_pass, state = Decoder(assistant.model, assistant.tokenizer, assistant.vocab, draft_tokens=0), DecodeState()
    expected = list(one_a_pass.words(block_ids, state))
    written = state.ids[len(block_ids):]  # the reply's tokens as generated (the last is never fed)
    assert len(written) >= 4
    unread = Decoder(assistant.model, assistant.tokenizer, assistant.vocab, draft_tokens=8)
    assert list(unread.words(block_ids, DecodeState())) == expected
    # a book of replies like this one: its guesses are the model's own words
    book = Phrasebook.from_ids([written, written])
    reading = Decoder(assistant.model, assistant.tokenizer, assistant.vocab, draft_tokens=8, phrasebook=book)
    assert list(reading.words(block_ids, DecodeState())) == expected  # the same text, token by token
    assert reading.passes < unread.passes and reading.accepted > unread.accepted
    # a wrong book costs passes at most, never words
    wrong = Phrasebook.from_ids([[(t + 1) % assistant.model.config.vocab_size for t in written]] * 2)
    misled = Decoder(assistant.model, assistant.tokenizer, assistant.vocab, draft_tokens=8, phrasebook=wrong)
    assert list(misled.words(block_ids, DecodeState())) == expected


def test_a_phrasebook_guesses_what_most_often_followed_the_longest_ngram():
    from assistant.generation import Phrasebook

    book = Phrasebook.from_ids([[1, 2, 3, 4], [1, 2, 3, 4], [7, 2, 3, 5], [7, 2, 3, 5], [9, 2, 3, 5]])
    assert book.draft([1, 2, 3], max_tokens=5) == [4]  # the trigram (1, 2, 3) says 4; then nothing follows (3, 4) twice
    assert book.draft([8, 2, 3], max_tokens=5) == [5]  # no such trigram: the bigram (2, 3), 5 three times of five
    assert book.draft([1, 2], max_tokens=1) == [3] and book.draft([4, 4], max_tokens=3) == []
    assert Phrasebook.from_ids([[1, 2, 3]]).draft([1, 2], max_tokens=2) == []  # seen once: not a habit
    assert Phrasebook.from_ids([[1, 2, 3]], min_count=1).draft([1, 2], max_tokens=2) == [3]
    assert Phrasebook({}).draft([1, 2, 3], max_tokens=4) == [] and len(book) > 0
    with pytest.raises(ValueError):
        Phrasebook.from_ids([[1, 2, 3]], min_count=0)


def test_what_the_claim_guard_allows_the_check_after_the_fact_keeps(assistant):
    from assistant.grounding import ClaimGuard

    track = next(t for t in assistant.index.tracks if t.descriptors.get("tempo_bpm") and t.descriptors.get("key"))
    card = TrackCard(id=track.id, title=track.title, artist=track.artist, album=track.album, year=track.year,
                     reason="", audio_path=None, score=1.0)
    guard = ClaimGuard.for_tracks(track)
    bpm, key = round(float(track.descriptors["tempo_bpm"])), str(track.descriptors["key"])
    for said in (f"It runs at about {bpm} BPM.", f"It is in {key}.", f"It runs at about {bpm + 40} BPM."):
        assert guard.allows(said) == (assistant.grounded_sentences(said, [card]) == said), said
    assert not guard.allows(f"It runs at about {bpm + 40} BPM.")


def test_an_artist_with_initials_is_named_whole(assistant, monkeypatch):
    track = assistant.index.tracks[0]
    monkeypatch.setattr(track, "artist", "Joseph G. Toscano")
    card = TrackCard(id=track.id, title=track.title, artist=track.artist, album=track.album, year=track.year,
                     reason="", audio_path=None, score=1.0)
    said = "It is by Joseph G. Toscano, a calm piece."
    assert assistant.grounded_sentences(said, [card]) == said
    assert assistant.grounded_sentences("It is by Joseph K. Toscano, a calm piece.", [card]) == ""
    monkeypatch.setattr(track, "artist", "Joseph G. Toscano (Zhaytee)")  # the name without its alias
    assert assistant.grounded_sentences(said, [card]) == said


def test_the_guard_passes_over_a_comparison_that_is_false(assistant):
    from assistant.reply_check import says_false
    from assistant.grounding import ClaimGuard

    by_tempo = sorted((t for t in assistant.index.tracks if t.descriptors.get("tempo_bpm")),
                      key=lambda t: float(t.descriptors["tempo_bpm"]))
    slowest, fastest = by_tempo[0], by_tempo[-1]
    guard = ClaimGuard.for_tracks(fastest, slowest, holds=lambda s: not says_false(s, fastest, slowest))
    assert guard.allows("It's faster than the last one.") and not guard.allows("It's slower than the last one.")
    assert not guard.allows("It's faster. It's slower")  # the sentence being written is judged
    unguarded = ClaimGuard.for_tracks(fastest, slowest)
    assert unguarded.allows("It's slower than the last one.")


def test_the_guard_refuses_another_catalog_name_once_it_is_written_whole(assistant, monkeypatch):
    tracks = assistant.index.tracks
    subject = next(t for t in tracks if t.artist == "Lena Harrow")
    other = next(t for t in tracks if t.artist == "Circuit Veil")
    prefix = next(t for t in tracks if t.artist == "Lena Harrow" and t is not subject)
    monkeypatch.setattr(subject, "title", prefix.title + "2")  # "Calm Piano No. 12" on screen, "... No. 1" not
    fresh = MusicAssistant(assistant.index)  # reads the titles as they now are
    shown = [subject]
    strangers = lambda text, growing=True: fresh.check.names_strangers(text, shown, shown, growing=growing)  # noqa: E731
    assert strangers("A calm piece from Circuit Veil") and strangers("A calm piece from Circuit Veil ")
    assert not strangers("A calm piece from Circuit") and not strangers("A calm piece by Lena Harrow.")
    # a title not on screen that the one on screen goes on from counts only once it ends there
    assert not strangers(f"This is {prefix.title}") and strangers(f"This is {prefix.title},")
    assert strangers(f"This is {prefix.title}", growing=False) and not strangers(f"This is {subject.title},")
    card = TrackCard(id=subject.id, title=subject.title, artist=subject.artist, album=subject.album,
                     year=subject.year, reason="", audio_path=None, score=1.0)
    assert fresh.grounded_sentences(f"A calm piece from {other.artist}.", [card]) == ""
    # "by" a name that only begins the artist's is one once something follows it
    assert not strangers("A calm piece by Lena") and not strangers("A calm piece by Lena ")
    assert strangers("A calm piece by Lena, at about") and strangers("A calm piece by Lena.", growing=False)
    monkeypatch.setattr(subject, "title", prefix.title + ", but longer")  # another title begins this one
    longer = MusicAssistant(assistant.index)
    assert not longer.check.names_strangers(f'Try "{prefix.title}, but', shown, shown, growing=True)
    assert longer.check.names_strangers(f'Try "{prefix.title}, and', shown, shown, growing=True)


def test_a_stop_the_guard_does_not_allow_gives_way_to_the_next_token(assistant):
    import torch

    from assistant.generation import Decoder

    decoder = Decoder(assistant.model, assistant.tokenizer, assistant.vocab)
    stop = min(decoder._stop)
    logits = torch.full((assistant.model.config.vocab_size,), -10.0)
    logits[stop], logits[42] = 5.0, 4.0
    assert decoder._allowed(logits, [], None, lambda text: False) == 42
    assert decoder._allowed(logits, [], None, lambda text: True) == stop
    assert decoder._allowed(logits, [], lambda text: False, lambda text: False) is None  # nothing passes


def test_a_title_begun_and_not_among_the_likeliest_is_written_out(assistant):
    from assistant.generation import DecodeState, Decoder

    ids = assistant.writer.prompt_ids(assistant.writer.messages([{"role": "user", "content": "calm piano"}]))
    _, block_ids = assistant.decoder.block(ids, DecodeState())
    title = '"Airship Overture"'
    allows = lambda text: text.startswith(title)  # noqa: E731  no token on its own passes
    for draft in (0, 8):
        decoder = Decoder(assistant.model, assistant.tokenizer, assistant.vocab, draft_tokens=draft, max_words_tokens=12)
        never_ends = lambda text: False  # noqa: E731  a stop is no way out either
        texts = list(decoder.words(block_ids, DecodeState(), allows=allows, may_end=never_ends,
                                   complete=lambda text: title if text == "" else None))
        assert texts and texts[-1].startswith(title) and len(texts[-1]) > len(title), texts  # and went on
        stopped = list(decoder.words(block_ids, DecodeState(), allows=allows, may_end=never_ends))
        assert stopped == []  # without a completion the reply ends rather than say something else
    # The last token of a completion is left to the model (a name's end often merges with what
    # follows it: "(Zhaytee)," is "...tee", "),"); a one-token completion is forced whole.
    whole = assistant.tokenizer(title, add_special_tokens=False)["input_ids"]
    forced = decoder._completion([], 20, None, lambda text: title)
    assert forced == whole[:-1] and len(whole) > 1
    one = assistant.tokenizer.decode(whole[:1])
    assert decoder._completion([], 20, None, lambda text: one) == whole[:1]


def test_a_guarded_reply_says_only_what_its_guard_allows(assistant):
    import re

    from assistant.generation import DecodeState, Decoder

    ids = assistant.writer.prompt_ids(assistant.writer.messages([{"role": "user", "content": "calm piano"}]))
    _, block_ids = assistant.decoder.block(ids, DecodeState())
    no_digits = lambda text: not re.search(r"[0-9]", text)  # noqa: E731
    texts = {}
    for draft in (0, 8):
        decoder = Decoder(assistant.model, assistant.tokenizer, assistant.vocab, draft_tokens=draft)
        texts[draft] = list(decoder.words(block_ids, DecodeState(), allows=no_digits))
        assert texts[draft] and all(no_digits(t) for t in texts[draft])
    assert texts[0] == texts[8]  # guessing changes the passes, not the words


# ---- the session means what the person means -----------------------------------------------------

def test_faster_is_against_the_first_card_or_the_one_played(assistant):
    from assistant.request import read_request

    session = assistant.new_session()
    first = assistant.reply(session, "calm piano")
    faster = read_request("faster")
    assert assistant.reference_for(session, faster).id == first.tracks[0].id
    assistant.focus(session, first.tracks[2].id)  # the person played the third card
    assert assistant.reference_for(session, faster).id == first.tracks[2].id
    reply = assistant.reply(session, "faster")
    assert f"than {first.tracks[2].title}" in reply.tracks[0].reason or "Nothing left" in reply.text
    assert assistant.reference_for(session, faster).id == reply.tracks[0].id  # a new reply, a new reference
    with pytest.raises(KeyError):
        assistant.focus(session, "no-such-track")


def test_the_second_one_counts_within_the_last_reply(assistant):
    from assistant.request import read_request

    session = assistant.new_session()
    assistant.reply(session, "calm piano")
    second = assistant.reply(session, "something else, fast electronic")
    asked = read_request("the second one, but slower and without vocals", assistant.words)
    assert asked.reference == 1 and asked.relative == [("tempo_bpm", -1)] and asked.vocals is False
    assert assistant.reference_for(session, asked).id == second.tracks[1].id
    very_first = read_request("go back to the very first track")
    assert assistant.reference_for(session, very_first).id == session.played[0]


def test_not_for_me_excludes_the_track_steers_away_and_never_searches_its_title(assistant, monkeypatch):
    session = assistant.new_session()
    first = assistant.reply(session, "calm piano")
    rejected = first.tracks[0]
    queries = []
    search = assistant.index.search_lexical
    monkeypatch.setattr(assistant.index, "search_lexical", lambda q, **kw: queries.append(q) or search(q, **kw))
    again = assistant.feedback(session, rejected.id, liked=False)
    assert rejected.id not in {c.id for c in again.tracks}
    assert all(rejected.title.lower() not in q.lower() for q in queries)
    # The reply replaces the one the track was in; the request is the person's own words.
    assert [t["content"] for t in session.history if t["role"] == "user"] == ["calm piano"]
    assert session.history[-1]["tracks"] == [c.id for c in again.tracks]
    codes = assistant.index.track_codes(rejected.id)
    alike = lambda t: sum(assistant.index.track_codes(t)[m] == c for m, c in codes.items()) >= 3  # noqa: E731
    # What is much like the rejected track comes after what is not, among the tracks that carry
    # what was asked for ("piano" still outranks everything else).
    piano = [t for t in again.ranked if "piano" in assistant.index.by_id[t].tags]
    first_alike = next((i for i, t in enumerate(piano) if alike(t)), len(piano))
    assert not any(not alike(t) for t in piano[first_alike:])


def test_when_nothing_meets_a_refinement_the_reply_says_so_and_shows_the_closest(assistant):
    session = assistant.new_session()
    assistant.reply(session, "fast electronic")
    fastest = max((t for t in assistant.index.tracks if t.descriptors.get("tempo_bpm")),
                  key=lambda t: float(t.descriptors["tempo_bpm"]))
    assistant.focus(session, fastest.id)
    reply = assistant.reply(session, "faster")
    assert reply.text.startswith(f'Nothing left in this catalog meets that (faster against "{fastest.title}")')
    assert reply.tracks and all("BPM" in c.reason and fastest.title in c.reason for c in reply.tracks)


def test_content_words_outrank_mood_words_on_a_first_request(assistant):
    reply = assistant.reply(assistant.new_session(), "calm electronic music")
    top = assistant.index.by_id[reply.tracks[0].id]
    assert "electronic" in top.tags


def test_grounding_checks_each_fact_against_the_track_it_is_about(assistant):
    reply = assistant.reply(assistant.new_session(), "calm piano")
    shown = [assistant.index.by_id[c.id] for c in reply.tracks]
    other = next(t for t in assistant.index.tracks if t.id not in {s.id for s in shown}
                 and t.artist and t.artist != shown[0].artist)
    ground = lambda s: assistant.grounded_sentences(s, reply.tracks)  # noqa: E731
    # An artist of the catalog who is not the one it is said of.
    assert ground(f"It is by {other.artist}.") == ""
    assert ground(f"It is by {shown[0].artist}.") == f"It is by {shown[0].artist}."
    # A sentence leaning on one dropped for naming a track not on screen goes with it.
    assert ground(f'Try "{other.title}". It is calm.') == ""
    # A number is checked against the track named, not any card.
    a, b = shown[0], next((s for s in shown[1:] if abs(float(s.descriptors["tempo_bpm"])
                                                         - float(shown[0].descriptors["tempo_bpm"])) > 5), None)
    if b is not None:
        claim = f'"{b.title}" moves at about {round(float(a.descriptors["tempo_bpm"]))} BPM.'
        assert ground(claim) == ""
    # Titles are matched as whole words: "Night Wordsmith" does not name "Night Words".
    if "Night Words" not in {s.title for s in shown}:
        assert ground("A night wordsmith would like it.") == "A night wordsmith would like it."
        assert ground("It sits well next to Night Words.") == ""


def test_two_turns_at_once_decode_as_they_would_alone(assistant):
    import threading

    from assistant.generation import DecodeState

    histories = [[{"role": "user", "content": "calm piano please"}],
                 [{"role": "user", "content": "fast electronic dance music"}]]
    alone = [assistant.writer.block(h, DecodeState()) for h in histories]
    together: list = [None, None]
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        barrier.wait()
        together[i] = [assistant.writer.block(histories[i], DecodeState()) for _ in range(3)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        for g in together[i]:
            assert g.codes == alone[i].codes and not g.errors
            assert set(g.codes) == set(assistant.index.codebook_sizes)
            assert all(0 <= c < assistant.index.codebook_sizes[m] for m, c in g.codes.items())


def test_sessions_answered_at_once_with_shared_steps_get_the_replies_they_would_alone(dirs, assistant, one_torch_thread):
    import threading

    index_dir, model_dir = dirs
    shared = MusicAssistant.load(index_dir, model_dir, batch_sessions=True)
    messages = ["calm piano music please", "something fast with drums", "a sad folk song"]
    expected = [assistant.reply(assistant.new_session(), m) for m in messages]
    got: list = [None] * len(messages)
    start = threading.Barrier(len(messages))

    def turn(i):
        start.wait()
        got[i] = shared.reply(shared.new_session(), messages[i])

    threads = [threading.Thread(target=turn, args=(i,)) for i in range(len(messages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [r.text for r in got] == [r.text for r in expected]
    assert [[c.id for c in r.tracks] for r in got] == [[c.id for c in r.tracks] for r in expected]
    assert shared.decoder.batcher.batched_steps > 0


def test_sentences_split_at_ends_not_at_initials_abbreviations_or_titles():
    from assistant.grounding import sentences as _sentences

    assert _sentences('Try "Revelation" by Joseph G. Toscano (Zhaytee): a cinematic piece. It is fast!') == [
        'Try "Revelation" by Joseph G. Toscano (Zhaytee): a cinematic piece.', "It is fast!"]
    assert _sentences("J. S. Bach wrote it. It is calm.") == ["J. S. Bach wrote it.", "It is calm."]
    assert _sentences('Play St. Louis Blues. Or "Reel No. 2". From Op. 28 too?') == [
        "Play St. Louis Blues.", 'Or "Reel No. 2".', "From Op. 28 too?"]
    assert _sentences("It is by Chopin. A mazurka.") == ["It is by Chopin.", "A mazurka."]


def test_words_never_take_a_special_token_that_decodes_to_nothing(assistant):
    from assistant.generation import Decoder

    decoder = Decoder(assistant.model, assistant.tokenizer, assistant.vocab)
    specials = [i for i, t in assistant.tokenizer.added_tokens_decoder.items() if t.special and i not in decoder._stop]
    assert specials and set(specials) <= set(decoder._banned.tolist())  # "<filename>" would pass any guard
    assert not decoder._stop & set(decoder._banned.tolist())  # the stops stay
