"""A fine-tuned model directory, as the chat reads it: the system prompt it was trained with,
its record, the reply format it learned, and loading it.

``assistant.train`` writes these directories; everything that only uses a model (the chat,
the evaluation, the benches) reads them through this module and never imports the trainer.

- ``adapter_model.safetensors``, ``adapter_config.json``: LoRA weights and music-token rows
- tokenizer files with the music tokens, ``music_vocab.json``
- ``tonearm_model.json`` (``MODEL_RECORD``): the base model, the system prompt, the music-token ids
- ``train_state.pt`` and ``train_report.json``: the trainer's checkpoint and figures
- ``request_words.json``: the words its training requests used (``assistant.familiarity``)
- ``reranker.json``: the learned re-rankers with and without the model's features, and on which
  turns the model's are used (``assistant.rerank``)
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from assistant.llm import ensure_pad_token, load_model
from tokenizer.vocab import MusicVocab

DEFAULT_SYSTEM_PROMPT = (
    "You are a music assistant. Give the music block of a track that fits the request; then, "
    "from the catalog's facts about it, say in a sentence or two why it fits."
)
MODEL_RECORD = "tonearm_model.json"
# How an assistant turn is laid out: its music block, the catalog's facts about the chosen
# track and what of the request it meets (a tool message, read and not learned), then its
# words. The block comes first so the tracks can be shown after a handful of generated tokens,
# and the words are written from the facts of the track actually shown.
REPLY_FORMAT = "block-facts-asked-words"
FACTS_ROLE = "tool"
# facts_for(track_id, previous_id, first_id, request) -> the facts text (``assistant.synth.catalog_facts``)
FactsFor = Callable[[str, "str | None", "str | None", "str | None"], str]
SAVED_BASE_DIR = "base"  # a base model saved inside the model directory is recorded by this name
# How a loaded model keeps its weights: "float32" as trained; "bfloat16", half the bytes per
# generated token, quick only where the CPU computes bfloat16 natively (AVX512-BF16 or AMX); or
# "int8" (torch's dynamic quantization of every linear layer: weights in int8, activations
# quantized on the fly), a quarter of the bytes.
WEIGHT_FORMATS = ("float32", "bfloat16", "int8")


def assistant_messages(turn: dict, codes_for: Callable[[str], dict[str, int]], vocab: MusicVocab,
                       facts: str | None = None) -> list[dict]:
    """An assistant turn as the model learns and reads it (``REPLY_FORMAT``).

    Its first track's music block, then ``facts`` about that track as a ``FACTS_ROLE`` message
    (left out when None), then its words. A turn without tracks is its words alone.
    """
    content = str(turn.get("content", "")).strip()
    tracks = turn.get("tracks") or []
    if not tracks:
        return [{"role": "assistant", "content": content}]
    try:
        codes = codes_for(tracks[0])
    except KeyError:
        raise KeyError(f"track {tracks[0]!r} of an assistant turn is not in the index") from None
    messages = [{"role": "assistant", "content": vocab.format_block(codes)}]
    if facts is not None:
        messages.append({"role": FACTS_ROLE, "content": facts})
    if content:
        messages.append({"role": "assistant", "content": content})
    return messages


def conversation_messages(turns: Sequence[dict], codes_for: Callable[[str], dict[str, int]], vocab: MusicVocab,
                          facts_for: FactsFor | None = None) -> list[dict]:
    """A conversation as chat messages in ``REPLY_FORMAT``, as the model reads it at its last turn.

    Only a last assistant turn carries facts: about its first track, against the first track of
    the reply before it (the one a "faster" reacts to) and the session's first, and what of the
    user turn before it the track meets (``facts_for``; None leaves facts out). Earlier
    assistant turns are their block alone: their words were written from facts no longer in view,
    and a small model given them copies them ("an electronic, mid-tempo piece" of every card)
    rather than reading the facts it has. An earlier turn without tracks keeps its words, as
    context (``"learn": False``).
    """
    messages: list[dict] = []
    played: list[str] = []
    before: str | None = None  # the first track of the last reply that showed any
    request: str | None = None  # the last user turn
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            messages.append({"role": turn["role"], "content": str(turn["content"])})
            request = str(turn["content"]) if turn["role"] == "user" else request
            continue
        tracks = list(turn.get("tracks") or [])
        last = i == len(turns) - 1
        facts = None
        if last and tracks and facts_for is not None:
            facts = facts_for(tracks[0], before, played[0] if played else None, request)
        said = assistant_messages(turn, codes_for, vocab, facts)
        if not last and tracks:
            said = said[:1]  # the block
        elif not last:
            said[-1]["learn"] = False
        messages += said
        played += tracks
        before = tracks[0] if tracks else before
    return messages


def untie_output_rows(model) -> bool:
    """Give a tied output layer a weight of its own, a copy, so its rows can train apart.

    Returns whether anything changed (False for models already untied).
    """
    embeddings, output = model.get_input_embeddings(), model.get_output_embeddings()
    if output is None or output.weight.data_ptr() != embeddings.weight.data_ptr():
        return False
    output.weight = torch.nn.Parameter(embeddings.weight.detach().clone())
    model.config.tie_word_embeddings = False
    return True


def load_finetuned(model_dir: str | Path, *, merge: bool = True, weights: str = "float32"):
    """Load a model directory written by ``train``.

    Parameters
    ----------
    model_dir : path
    merge : bool
        Fold the LoRA weights and token rows into the base weights (faster generation);
        False keeps the peft wrapper.
    weights : {"float32", "bfloat16", "int8"}
        ``WEIGHT_FORMATS``: "bfloat16" casts the merged model; "int8" quantizes its linear
        layers for generation on a CPU (:func:`quantize_int8`). Both need ``merge``.

    Returns
    -------
    (model, tokenizer, MusicVocab)
        The model in eval mode.
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
    if weights != "float32" and not merge:
        raise ValueError(f"weights={weights!r} quantizes the merged model; it needs merge=True")
    directory = Path(model_dir)
    record_path = directory / MODEL_RECORD
    if not record_path.is_file():
        raise FileNotFoundError(f"{directory} has no {MODEL_RECORD}; train a model into it first")
    record = json.loads(record_path.read_text())
    vocab = MusicVocab.load(directory)
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(directory))
    base = record["base"]
    if base == SAVED_BASE_DIR:
        base = str(directory / SAVED_BASE_DIR)
    model = load_model(base, pad_token_id=tokenizer.pad_token_id)
    # The music rows are restored from the adapter; the resize only makes room for them.
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if record.get("untied_output"):
        untie_output_rows(model)
    model = PeftModel.from_pretrained(model, directory)
    if merge:
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.eval()
    if weights == "int8":
        model = quantize_int8(model)
    elif weights == "bfloat16":
        model = model.to(torch.bfloat16)
    return model, tokenizer, vocab


def quantize_int8(model):
    """``model`` with every ``torch.nn.Linear`` dynamically quantized to int8 (in place; returned).

    Generation on a CPU is bound by reading the weights once per token; int8 weights are a
    quarter of float32's. The embeddings stay float32. Inference only: the result cannot be
    trained. ``bench/decode_weights.py`` measures its speed and how often its blocks and words
    agree with float32's.
    """
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def reply_phrasebook(model_dir: str | Path, tokenizer):
    """The ``generation.Phrasebook`` of the replies ``model_dir`` was trained on (its training
    conversations), cut by its ``tokenizer``; None when it keeps none."""
    from .conversations import conversations_path, read_conversations
    from .generation import Phrasebook

    path = conversations_path(model_dir, "train")
    if not path.is_file():
        return None
    replies = [turn["content"] for conversation in read_conversations(path)
               for turn in conversation["turns"] if turn["role"] == "assistant" and turn.get("content")]
    return Phrasebook.from_texts(replies, tokenizer) if replies else None


def read_model_record(model_dir: str | Path) -> dict:
    """The ``tonearm_model.json`` of a model directory (base, system prompt, token ids)."""
    return json.loads((Path(model_dir) / MODEL_RECORD).read_text())


class OutdatedModelError(ValueError):
    """A model directory trained with another reply format than this version reads."""


def check_reply_format(model_dir: str | Path) -> None:
    """Raise ``OutdatedModelError`` when ``model_dir`` was trained for another ``REPLY_FORMAT``."""
    found = read_model_record(model_dir).get("reply_format", "words-then-block")
    if found != REPLY_FORMAT:
        raise OutdatedModelError(
            f"{model_dir} was trained to reply as {found!r}, and this version reads {REPLY_FORMAT!r}: "
            f"retrain it with `python -m assistant train INDEX --out {model_dir}` (into an empty directory)")


CATALOG_RECORD = "trained_catalog.json"


def _codes_by_track(index) -> dict[str, list[int]]:
    return {t.id: [int(c) for c in index.codes[i]] for i, t in enumerate(index.tracks)}


def write_catalog_record(model_dir: str | Path, index) -> Path:
    """Record which catalog a model was trained on: the index's track ids and their codes."""
    path = Path(model_dir) / CATALOG_RECORD
    record = {"index_created": index.manifest.get("created"), "tracks": _codes_by_track(index)}
    path.write_text(json.dumps(record) + "\n")
    return path


def catalog_changes(model_dir: str | Path, index) -> str | None:
    """A sentence saying how ``index`` differs from the catalog the model was trained on, or None.

    A model keeps working with an index whose codebook sizes are unchanged (an incremental
    rebuild); it just does not know the tracks added since, and a track whose codes moved is
    known to it by its old codes. None when nothing changed or the model has no record.
    """
    path = Path(model_dir) / CATALOG_RECORD
    if not path.is_file():
        return None
    trained = json.loads(path.read_text())["tracks"]
    now = _codes_by_track(index)
    added = sum(1 for t in now if t not in trained)
    removed = sum(1 for t in trained if t not in now)
    moved = sum(1 for t, codes in now.items() if t in trained and trained[t] != codes)
    if not (added or removed or moved):
        return None
    parts = [f"{n} {what}" for n, what in ((added, "added"), (removed, "removed"), (moved, "with new codes")) if n]
    return (f"The catalog changed since the model was trained ({', '.join(parts)} of {len(now)} tracks): its "
            f"picks come from the search for what it does not know. Retrain it to bring it up to date: "
            f"`python -m assistant train {index.root} --out NEW_MODEL_DIR`.")
