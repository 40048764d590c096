"""A fine-tuned model directory, as the chat reads it: the system prompt it was trained with,
its record, the reply format it learned, and loading it.

``assistant.train`` writes these directories; everything that only uses a model (the chat,
the evaluation, the benches) reads them through this module and never imports the trainer.

- ``adapter_model.safetensors``, ``adapter_config.json``: LoRA weights and music-token rows
- tokenizer files with the music tokens, ``music_vocab.json``
- ``tonearm_model.json`` (``MODEL_RECORD``): the base model, the system prompt, the music-token ids
- ``train_state.pt`` and ``train_report.json``: the trainer's checkpoint and figures
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from assistant.llm import ensure_pad_token, load_model
from tokenizer.vocab import MusicVocab

DEFAULT_SYSTEM_PROMPT = (
    "You are a music assistant. Answer in one or two sentences about a track that fits the request, "
    "then give that track's music block."
)
MODEL_RECORD = "tonearm_model.json"
SAVED_BASE_DIR = "base"  # a base model saved inside the model directory is recorded by this name


def assistant_target(turn: dict, codes_for: Callable[[str], dict[str, int]], vocab: MusicVocab) -> str:
    """The text an assistant turn is trained to produce: its words, then its first track's block."""
    content = str(turn.get("content", "")).strip()
    tracks = turn.get("tracks") or []
    if not tracks:
        return content
    try:
        codes = codes_for(tracks[0])
    except KeyError:
        raise KeyError(f"track {tracks[0]!r} of an assistant turn is not in the index") from None
    block = vocab.format_block(codes)
    return f"{content} {block}" if content else block


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


def load_finetuned(model_dir: str | Path, *, merge: bool = True):
    """Load a model directory written by ``train``.

    Parameters
    ----------
    model_dir : path
    merge : bool
        Fold the LoRA weights and token rows into the base weights (faster generation);
        False keeps the peft wrapper.

    Returns
    -------
    (model, tokenizer, MusicVocab)
        The model in eval mode.
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

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
    return model, tokenizer, vocab


def read_model_record(model_dir: str | Path) -> dict:
    """The ``tonearm_model.json`` of a model directory (base, system prompt, token ids)."""
    return json.loads((Path(model_dir) / MODEL_RECORD).read_text())
