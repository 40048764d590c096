"""Music tokens: vocabulary, block parsing, adding tokens to a model, constrained generation."""
from __future__ import annotations

import random
import re

import pytest
import torch
from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList

from index.track import MODALITIES
from tokenizer.blocks import parse_reply
from tokenizer.constraint import MusicBlockLogitsProcessor
from tokenizer.hf import add_music_tokens, music_token_ids, token_descriptions
from tokenizer.vocab import MusicVocab

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_codes(vocab: MusicVocab, rng: random.Random) -> dict[str, int]:
    return {m: rng.randrange(size) for m, size in vocab.codebook_sizes.items()}


# ---- vocabulary ----------------------------------------------------------------------------


def test_vocab_tokens_are_unique_and_ordered(music_vocab):
    tokens = music_vocab.all_tokens()
    assert tokens[:2] == ["<music>", "</music>"]
    assert len(tokens) == len(set(tokens)) == 2 + sum(music_vocab.codebook_sizes.values()) == len(music_vocab)
    assert music_vocab.token("tags", 3) == "<tag-3>"
    assert music_vocab.token("metadata", 0) == "<meta-0>"
    assert tokens[2] == "<playlist-0>" and tokens[-1] == "<audio-9>"


def test_format_block_follows_modality_order(music_vocab):
    codes = {"audio": 9, "lyrics": 2, "metadata": 5, "tags": 11, "playlist": 0}  # any key order
    assert music_vocab.format_block(codes) == (
        "<music><playlist-0><tag-11><meta-5><lyrics-2><audio-9></music>"
    )
    import numpy as np

    assert music_vocab.format_block({m: np.int64(1) for m in MODALITIES}).count("-1>") == 5


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"playlist": 4, "tags": 4, "metadata": 4, "lyrics": 4}, "missing"),
        ({"playlist": 4, "tags": 4, "metadata": 4, "lyrics": 4, "audio": 4, "genre": 3}, "unexpected"),
        ({"playlist": 0, "tags": 4, "metadata": 4, "lyrics": 4, "audio": 4}, "positive"),
    ],
)
def test_vocab_rejects_bad_codebook_sizes(sizes, message):
    with pytest.raises(ValueError, match=message):
        MusicVocab(sizes)


def test_format_block_rejects_bad_codes(music_vocab):
    codes = {m: 0 for m in MODALITIES}
    with pytest.raises(ValueError, match="out of range"):
        music_vocab.format_block({**codes, "lyrics": 3})
    with pytest.raises(ValueError, match="lack"):
        music_vocab.format_block({m: 0 for m in MODALITIES[:-1]})
    with pytest.raises(ValueError, match="integer"):
        music_vocab.format_block({**codes, "tags": 1.5})


def test_vocab_save_load_and_manifest(tmp_path, music_vocab):
    music_vocab.save(tmp_path)
    assert MusicVocab.load(tmp_path) == music_vocab
    manifest = {"codebook_sizes": {m: str(s) for m, s in reversed(music_vocab.codebook_sizes.items())}}
    assert MusicVocab.from_manifest(manifest) == music_vocab
    with pytest.raises(FileNotFoundError, match="music_vocab.json"):
        MusicVocab.load(tmp_path / "elsewhere")
    with pytest.raises(KeyError, match="codebook_sizes"):
        MusicVocab.from_manifest({})


# ---- parsing ---------------------------------------------------------------------------------


def test_format_then_parse_round_trips(music_vocab):
    rng = random.Random(7)
    words = ["Here", "is", "something", "calm.", "And another!"]
    for _ in range(50):
        codes = [random_codes(music_vocab, rng) for _ in range(rng.randint(1, 3))]
        text = ""
        for i, word in enumerate(words):
            text += word
            if i < len(codes):  # glued to the word or spaced, as a model may write it
                text += rng.choice(["", " "]) + music_vocab.format_block(codes[i])
            text += " "
        parsed = parse_reply(text, music_vocab)
        assert parsed.errors == [] and parsed.ok
        assert parsed.blocks == codes
        assert parsed.text == " ".join(words)


def test_parse_tidies_whitespace_left_by_blocks(music_vocab):
    block = music_vocab.format_block({m: 1 for m in MODALITIES})
    parsed = parse_reply(f"  Try this one.{block}\n\n\n\nAnything   else?  ", music_vocab)
    assert parsed.text == "Try this one.\n\nAnything else?"
    assert parsed.blocks == [{m: 1 for m in MODALITIES}]


@pytest.mark.parametrize(
    "text, blocks, error_words",
    [
        # a modality missing: the block keeps the other four
        ("a <music><playlist-1><tag-2><meta-3><audio-4></music> b",
         [{"playlist": 1, "tags": 2, "metadata": 3, "audio": 4}], ["missing lyrics"]),
        # out-of-range code dropped, the rest kept
        ("<music><playlist-1><tag-99><meta-3><lyrics-0><audio-4></music>",
         [{"playlist": 1, "metadata": 3, "lyrics": 0, "audio": 4}], ["out of range", "missing tags"]),
        # wrong order: codes kept, order reported
        ("<music><tag-2><playlist-1><meta-3><lyrics-0><audio-4></music>",
         [{"tags": 2, "playlist": 1, "metadata": 3, "lyrics": 0, "audio": 4}], ["out of order"]),
        # unclosed at the end of the text
        ("ok <music><playlist-1><tag-2>", [{"playlist": 1, "tags": 2}], ["not closed"]),
        # a second <music> before the first closed
        ("<music><playlist-1><music><playlist-2><tag-1><meta-1><lyrics-1><audio-1></music>",
         [{"playlist": 1}, {"playlist": 2, "tags": 1, "metadata": 1, "lyrics": 1, "audio": 1}], ["not closed"]),
        # stray tokens outside any block, a lone </music>, an empty block
        ("x <tag-3> y </music> z <music></music>", [], ["outside a block", "without a matching", "no valid codes"]),
        # a duplicated modality and loose words inside the block
        ("<music><playlist-1><playlist-2> hello <tag-1><meta-1><lyrics-1><audio-1></music>",
         [{"playlist": 1, "tags": 1, "metadata": 1, "lyrics": 1, "audio": 1}], ["second playlist", "unexpected text"]),
    ],
)
def test_parse_reports_malformed_blocks(music_vocab, text, blocks, error_words):
    parsed = parse_reply(text, music_vocab)
    assert parsed.blocks == blocks
    assert not parsed.ok
    for words in error_words:
        assert any(words in error for error in parsed.errors), (words, parsed.errors)
    assert not re.search(r"</?(music|playlist|tag|meta|lyrics|audio)", parsed.text)  # tokens left the prose


def test_parse_never_raises_on_noise(music_vocab):
    rng = random.Random(3)
    pieces = ["<music>", "</music>", "<tag-1>", "<tag-999>", "<audio-", "<meta--2>", "hi", " ", "\n", "<lyrics-0>"]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 20)))
        parsed = parse_reply(text, music_vocab)
        for block in parsed.blocks:
            assert block and all(0 <= code < music_vocab.codebook_sizes[m] for m, code in block.items())
    assert parse_reply(None, music_vocab).errors  # not a string: reported, not raised


# ---- adding tokens to a model ------------------------------------------------------------------


def test_add_music_tokens_resizes_and_encodes_single_tokens(base_tokenizer, tiny_model, music_vocab):
    rows_before = tiny_model.get_input_embeddings().num_embeddings
    ids = add_music_tokens(base_tokenizer, tiny_model, music_vocab)
    assert len(ids) == len(music_vocab) and len(set(ids)) == len(ids)
    assert tiny_model.get_input_embeddings().num_embeddings == rows_before + len(music_vocab)
    assert tiny_model.get_output_embeddings().weight.shape[0] == rows_before + len(music_vocab)
    block = music_vocab.format_block({m: 2 for m in MODALITIES})
    encoded = base_tokenizer(f"Try this. {block}", add_special_tokens=False)["input_ids"]
    assert encoded[-7:] == [ids[0]] + [music_token_ids(base_tokenizer, music_vocab)["codes"][m][2]
                                       for m in MODALITIES] + [ids[1]]
    assert base_tokenizer.decode(encoded) == f"Try this. {block}"
    assert base_tokenizer.decode(encoded, skip_special_tokens=True).strip() == "Try this."
    # Idempotent: a second call adds nothing.
    assert add_music_tokens(base_tokenizer, tiny_model, music_vocab) == ids
    assert tiny_model.get_input_embeddings().num_embeddings == rows_before + len(music_vocab)


def test_new_rows_are_mean_of_description_embeddings(smollm2_tokenizer_dir, base_tokenizer, tiny_model,
                                                     music_vocab):
    descriptions = {"tags": {3: "calm piano minor key", "7": "loud distorted guitars"}}
    base_rows = tiny_model.get_input_embeddings().weight.detach().clone()
    ids = add_music_tokens(base_tokenizer, tiny_model, music_vocab, descriptions)
    weight = tiny_model.get_input_embeddings().weight.detach()
    expected_text = token_descriptions(music_vocab, descriptions)
    assert expected_text["<tag-3>"] == "calm piano minor key"
    assert expected_text["<tag-7>"] == "loud distorted guitars"  # string keys, as after JSON
    assert expected_text["<audio-4>"] == "audio sound cluster 4"
    for token in ["<tag-3>", "<tag-7>", "<audio-4>", "<music>"]:
        # Tokenise with a fresh base tokenizer: the description words, not music tokens.
        word_ids = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)(
            expected_text[token], add_special_tokens=False)["input_ids"]
        row = weight[base_tokenizer.convert_tokens_to_ids(token)]
        torch.testing.assert_close(row, base_rows[word_ids].mean(dim=0))
    # Different descriptions give different rows; tied output rows follow the input rows.
    assert not torch.allclose(weight[ids[2]], weight[ids[3]])
    torch.testing.assert_close(tiny_model.get_output_embeddings().weight[ids], weight[ids])


def test_untied_output_rows_initialised_from_output_matrix(smollm2_tokenizer_dir, base_tokenizer, music_vocab):
    from assistant.llm import tiny_model_like

    model = tiny_model_like(base_tokenizer, tie_word_embeddings=False)
    output_before = model.get_output_embeddings().weight.detach().clone()
    add_music_tokens(base_tokenizer, model, music_vocab)
    word_ids = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)(
        "music tag cluster 5", add_special_tokens=False)["input_ids"]
    row = base_tokenizer.convert_tokens_to_ids("<tag-5>")
    torch.testing.assert_close(model.get_output_embeddings().weight[row].detach(),
                               output_before[word_ids].mean(dim=0))
    assert model.get_output_embeddings().weight.shape[0] == len(base_tokenizer)


def test_music_token_ids_lookups(base_tokenizer, tiny_model, music_vocab):
    with pytest.raises(KeyError, match="add_music_tokens"):
        music_token_ids(base_tokenizer, music_vocab)
    add_music_tokens(base_tokenizer, tiny_model, music_vocab)
    lookup = music_token_ids(base_tokenizer, music_vocab)
    assert base_tokenizer.convert_ids_to_tokens(lookup["start"]) == "<music>"
    assert base_tokenizer.convert_ids_to_tokens(lookup["end"]) == "</music>"
    for modality, size in music_vocab.codebook_sizes.items():
        assert len(lookup["codes"][modality]) == size
        for code, token_id in enumerate(lookup["codes"][modality]):
            assert lookup["code_of"][token_id] == (modality, code)
            assert base_tokenizer.convert_ids_to_tokens(token_id) == music_vocab.token(modality, code)


def test_tokens_survive_save_and_load(tmp_path, base_tokenizer, tiny_model, music_vocab):
    ids = add_music_tokens(base_tokenizer, tiny_model, music_vocab)
    base_tokenizer.save_pretrained(tmp_path)
    music_vocab.save(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    vocab = MusicVocab.load(tmp_path)
    assert music_token_ids(reloaded, vocab) == music_token_ids(base_tokenizer, music_vocab)
    block = vocab.format_block({m: 1 for m in MODALITIES})
    assert len(reloaded(block, add_special_tokens=False)["input_ids"]) == 7
    assert reloaded.convert_tokens_to_ids(vocab.all_tokens()) == ids


# ---- constrained generation ----------------------------------------------------------------


class _PushMusicTokens(LogitsProcessor):
    """Makes a random model eager to write music tokens anywhere, as a stress test."""

    def __init__(self, ids: list[int], boost: float):
        self.ids = torch.tensor(ids)
        self.boost = boost

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.ids] += self.boost
        return scores


def _generate(model, tokenizer, processors, *, batch=4, new_tokens=60, seed=0):
    prompts = ["Something calm with piano", "Play me a loud rock song", "hello", "more like the last one"][:batch]
    tokenizer.padding_side = "left"
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=True,
                         top_k=0, logits_processor=LogitsProcessorList(processors),
                         pad_token_id=tokenizer.pad_token_id)
    return [tokenizer.decode(row[inputs["input_ids"].shape[1]:]) for row in out]


def test_processor_forces_well_formed_blocks(base_tokenizer, tiny_model, music_vocab):
    ids = add_music_tokens(base_tokenizer, tiny_model, music_vocab)
    eager = _PushMusicTokens(ids, boost=12.0)

    # Without the constraint a model that likes music tokens writes broken blocks...
    unconstrained = [parse_reply(text, music_vocab)
                     for text in _generate(tiny_model, base_tokenizer, [eager], new_tokens=30)]
    assert any(p.errors for p in unconstrained)

    # ...with it, every block is complete, in order and in range, even cut off by max_new_tokens.
    for seed in range(2):
        texts = _generate(tiny_model, base_tokenizer,
                          [eager, MusicBlockLogitsProcessor(base_tokenizer, music_vocab, max_new_tokens=60)],
                          seed=seed)
        parsed = [parse_reply(text, music_vocab) for text in texts]
        assert sum(len(p.blocks) for p in parsed) >= 4
        for p in parsed:
            assert p.errors == []
            assert all(list(block) == list(MODALITIES) for block in p.blocks)


def test_processor_masks_by_position(base_tokenizer, tiny_model, music_vocab):
    add_music_tokens(base_tokenizer, tiny_model, music_vocab)
    lookup = music_token_ids(base_tokenizer, music_vocab)
    processor = MusicBlockLogitsProcessor(base_tokenizer, music_vocab)
    text_id = base_tokenizer("hello", add_special_tokens=False)["input_ids"][0]
    vocab_size = len(base_tokenizer)
    rows = [
        [text_id, text_id, text_id],                                       # outside
        [text_id, lookup["start"], lookup["codes"]["playlist"][1]],        # tags next
        [lookup["start"]] + [lookup["codes"][m][0] for m in MODALITIES[:2]],  # metadata next
    ]
    closing = [lookup["start"]] + [lookup["codes"][m][0] for m in MODALITIES]
    scores = processor(torch.tensor(rows), torch.zeros(3, vocab_size))
    allowed = [set(torch.nonzero(torch.isfinite(row)).flatten().tolist()) for row in scores]
    assert lookup["start"] in allowed[0] and text_id in allowed[0]
    assert not allowed[0] & (set(lookup["all"]) - {lookup["start"]})
    assert allowed[1] == set(lookup["codes"]["tags"])
    assert allowed[2] == set(lookup["codes"]["metadata"])
    end_only = processor(torch.tensor([closing]), torch.zeros(1, vocab_size))
    assert torch.nonzero(torch.isfinite(end_only[0])).flatten().tolist() == [lookup["end"]]


def test_processor_does_not_open_a_block_it_cannot_finish(base_tokenizer, tiny_model, music_vocab):
    add_music_tokens(base_tokenizer, tiny_model, music_vocab)
    start = music_token_ids(base_tokenizer, music_vocab)["start"]
    # A block is 7 tokens: <music>, five codes, </music>.
    processor = MusicBlockLogitsProcessor(base_tokenizer, music_vocab, max_new_tokens=7)
    prompt = torch.tensor([[5, 6, 7]])
    assert torch.isfinite(processor(prompt, torch.zeros(1, len(base_tokenizer)))[0, start])  # 7 left: fits
    grown = torch.tensor([[5, 6, 7, 9]])
    assert not torch.isfinite(processor(grown, torch.zeros(1, len(base_tokenizer)))[0, start])  # 6 left
    # A new generate() call (the length does not grow by one) starts counting afresh.
    assert torch.isfinite(processor(torch.tensor([[5, 6]]), torch.zeros(1, len(base_tokenizer)))[0, start])
