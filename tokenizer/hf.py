"""Putting the music tokens into a Hugging Face tokenizer and causal LM.

New embedding rows start from text, not noise: each token's row is the mean input
embedding of the words that describe it (``"calm piano minor key"`` for a tag cluster),
so the model begins with a sensible idea of what every code means and fine-tuning only
has to sharpen it.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from tokenizers import AddedToken

from index.track import MODALITIES
from tokenizer.vocab import MusicVocab

# Words used when a code has no description of its own.
_FALLBACK_WORDS = {
    "playlist": "playlist cluster",
    "tags": "music tag cluster",
    "metadata": "song metadata cluster",
    "lyrics": "song lyrics cluster",
    "audio": "audio sound cluster",
}
_BLOCK_WORDS = {
    MusicVocab.BLOCK_START: "music recommendation begins",
    MusicVocab.BLOCK_END: "music recommendation ends",
}


def token_descriptions(
    vocab: MusicVocab, code_descriptions: Mapping[str, Mapping[int, str]] | None = None
) -> dict[str, str]:
    """The text each music token's embedding is initialised from, keyed by token string.

    Parameters
    ----------
    vocab : MusicVocab
    code_descriptions : mapping, optional
        ``code_descriptions[modality][code]`` is free text for that cluster (keys may be
        ints or their string form, as after a JSON round trip). Missing or blank entries
        fall back to words such as ``"music tag cluster 12"``.
    """
    code_descriptions = code_descriptions or {}
    unknown = set(code_descriptions) - set(MODALITIES)
    if unknown:
        raise ValueError(f"code_descriptions has unknown modalities {sorted(unknown)}; expected {list(MODALITIES)}")
    described = dict(_BLOCK_WORDS)
    for modality, size in vocab.codebook_sizes.items():
        given = code_descriptions.get(modality) or {}
        for code in range(size):
            text = given.get(code, given.get(str(code), "")) or ""
            if not str(text).strip():
                text = f"{_FALLBACK_WORDS[modality]} {code}"
            described[vocab.token(modality, code)] = str(text).strip()
    return described


def add_music_tokens(
    tokenizer,
    model,
    vocab: MusicVocab,
    code_descriptions: Mapping[str, Mapping[int, str]] | None = None,
) -> list[int]:
    """Add the music tokens to ``tokenizer`` and ``model``, initialising new rows from text.

    Tokens already in the tokenizer are left as they are (calling this twice is harmless).
    The embedding matrix grows only when the new ids do not fit (some models ship padded
    matrices); an untied ``lm_head`` grows with it and its new rows are initialised the
    same way from its own rows.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        Modified in place.
    model : transformers causal LM
        Modified in place.
    vocab : MusicVocab
    code_descriptions : mapping, optional
        See ``token_descriptions``.

    Returns
    -------
    list of int
        The ids of all music tokens, in ``vocab.all_tokens()`` order.
    """
    tokens = vocab.all_tokens()
    descriptions = token_descriptions(vocab, code_descriptions)
    present = tokenizer.get_vocab()
    new_tokens = [t for t in tokens if t not in present]
    # Tokenise descriptions with the base vocabulary, before any music token exists.
    description_ids = {t: _word_ids(tokenizer, descriptions[t], t) for t in new_tokens}
    if new_tokens:
        # special: never split, never normalised, and dropped by decode(skip_special_tokens=True).
        tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False, single_word=False, lstrip=False, rstrip=False)
             for t in new_tokens],
            special_tokens=True,
        )
    ids = tokenizer.convert_tokens_to_ids(tokens)

    rows_needed = max(ids) + 1
    embeddings = model.get_input_embeddings()
    if embeddings.num_embeddings < rows_needed:
        model.resize_token_embeddings(rows_needed, mean_resizing=False)
        embeddings = model.get_input_embeddings()
    output = model.get_output_embeddings()
    untied_output = output is not None and output.weight.data_ptr() != embeddings.weight.data_ptr()

    with torch.no_grad():
        for token in new_tokens:
            row = tokenizer.convert_tokens_to_ids(token)
            source = torch.tensor(description_ids[token], dtype=torch.long, device=embeddings.weight.device)
            embeddings.weight[row] = embeddings.weight[source].mean(dim=0)
            if untied_output:
                output.weight[row] = output.weight[source].mean(dim=0)
                if getattr(output, "bias", None) is not None:
                    output.bias[row] = output.bias[source].mean()
    return list(ids)


def _word_ids(tokenizer, description: str, token: str) -> list[int]:
    ids = tokenizer(description, add_special_tokens=False)["input_ids"]
    if not ids:  # e.g. a description made only of characters the tokenizer drops
        ids = tokenizer(token.strip("<>/").replace("-", " "), add_special_tokens=False)["input_ids"]
    return ids


def music_token_ids(tokenizer, vocab: MusicVocab) -> dict:
    """Token ids of the music vocabulary in ``tokenizer``.

    Returns
    -------
    dict
        ``"start"`` and ``"end"``: the block delimiters' ids; ``"codes"``: modality to the
        list of ids indexed by code; ``"code_of"``: id to ``(modality, code)``;
        ``"all"``: every music id in ``vocab.all_tokens()`` order.

    Raises
    ------
    KeyError
        When the tokenizer lacks music tokens (call ``add_music_tokens`` first).
    """
    known = tokenizer.get_vocab()
    missing = [t for t in vocab.all_tokens() if t not in known]
    if missing:
        raise KeyError(
            f"tokenizer lacks {len(missing)} music tokens (first: {missing[0]}); "
            "call tokenizer.hf.add_music_tokens or load a fine-tuned model directory"
        )
    codes = {
        modality: [known[vocab.token(modality, code)] for code in range(size)]
        for modality, size in vocab.codebook_sizes.items()
    }
    code_of = {i: (modality, code) for modality, ids in codes.items() for code, i in enumerate(ids)}
    start, end = known[vocab.BLOCK_START], known[vocab.BLOCK_END]
    return {
        "start": start,
        "end": end,
        "codes": codes,
        "code_of": code_of,
        "all": [start, end] + [i for ids in codes.values() for i in ids],
    }
