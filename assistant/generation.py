"""Decoding a turn with the fine-tuned model: the music block first, then the words.

A turn is two short decodes over one key-value cache. The block is five greedy steps, each
restricted to its modality's codes, so it always parses and its log-probabilities over every
code come for free; the tracks can be chosen as soon as it ends. The words are then decoded,
token by token, after the catalog's facts about the chosen track.

The cache is kept per session (``DecodeState``): each call feeds only the tokens after the
longest prefix it already holds, so a turn does not re-read the system prompt and the earlier
turns, and the words phase does not re-read the prompt the block was decoded from.

    decoder = Decoder(model, tokenizer, vocab)
    block = decoder.block(prompt_ids, state)
    for text in decoder.words(reply_prompt_ids, state):
        print(text)
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from .batching import StepBatcher, detach_cache, feed

MAX_WORDS_TOKENS = 60  # a reply is one or two sentences


@dataclass
class DecodeState:
    """A session's key-value cache and the token ids it holds (empty: nothing cached yet)."""

    ids: list[int] = field(default_factory=list)
    cache: Any = None


@dataclass
class Block:
    """A decoded music block: the code per modality and the log-probabilities it was drawn from."""

    codes: dict[str, int]
    log_probs: dict[str, np.ndarray]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Decoder:
    """Greedy decoding of blocks and words for one model, reusing each session's cache.

    Parameters
    ----------
    model
        A causal LM with the music tokens (``assistant.model_dir.load_finetuned``).
    tokenizer, vocab
        Its tokenizer and ``MusicVocab``.
    max_words_tokens : int
        Longest reply, in tokens.
    batched : bool
        Run the model's steps through a ``batching.StepBatcher``, so that sessions decoding in
        other threads at the same time share each forward pass.
    """

    def __init__(self, model, tokenizer, vocab, *, max_words_tokens: int = MAX_WORDS_TOKENS,
                 batched: bool = False):
        from tokenizer.hf import music_token_ids

        if max_words_tokens < 1:
            raise ValueError(f"max_words_tokens must be at least 1, got {max_words_tokens}")
        self.model, self.tokenizer, self.vocab = model, tokenizer, vocab
        # Sessions decoding at the same time (a server's) share one forward pass per step.
        self.batcher = StepBatcher(model) if batched else None
        self.max_words_tokens = max_words_tokens
        ids = music_token_ids(tokenizer, vocab)
        self.start_id, self.end_id = ids["start"], ids["end"]
        self.code_ids = {m: torch.tensor(v) for m, v in ids["codes"].items()}
        # Words never contain music tokens: a second block would be read by no one.
        self._banned = torch.tensor(ids["all"])
        self._stop = {i for i in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))
                      if isinstance(i, int) and i >= 0}

    @torch.no_grad()
    def _feed(self, ids: list[int], state: DecodeState) -> torch.Tensor:
        """The next-token logits after ``ids``, running the model only past the cached prefix."""
        from transformers import DynamicCache

        keep = min(common_prefix(state.ids, ids), len(ids) - 1) if state.cache is not None else 0
        if state.cache is None or keep == 0:
            state.cache, keep = DynamicCache(), 0
        elif keep < len(state.ids):
            state.cache.crop(keep - len(state.ids))
        # The cache is filled in place; only the last position's logits are needed.
        run = self.batcher.run if self.batcher is not None else partial(feed, self.model)
        logits = run(ids[keep:], state.cache)
        state.ids = list(ids)
        return logits

    def block(self, prompt_ids: Sequence[int], state: DecodeState | None = None) -> tuple[Block, list[int]]:
        """Decode a music block after ``prompt_ids`` (which end where the assistant's reply begins).

        Returns the block and the ids of prompt and block, ``</music>`` included.
        """
        state = state if state is not None else DecodeState()
        ids = list(prompt_ids) + [self.start_id]
        codes, log_probs = {}, {}
        for modality, token_ids in self.code_ids.items():
            scores = torch.log_softmax(self._feed(ids, state)[token_ids], dim=-1)
            code = int(torch.argmax(scores))
            codes[modality], log_probs[modality] = code, scores.numpy()
            ids.append(int(token_ids[code]))
        return Block(codes, log_probs), ids + [self.end_id]

    def words(self, prompt_ids: Sequence[int], state: DecodeState | None = None) -> Iterator[str]:
        """Yield the reply's text as it grows, one decoded token at a time, after ``prompt_ids``."""
        state = state if state is not None else DecodeState()
        ids, new, text = list(prompt_ids), [], ""
        try:
            for _ in range(self.max_words_tokens):
                logits = self._feed(ids + new, state)
                logits[self._banned] = float("-inf")
                token = int(torch.argmax(logits))
                if token in self._stop:
                    break
                new.append(token)
                now = self.tokenizer.decode(new, skip_special_tokens=True)
                if now != text and not now.endswith("\ufffd"):  # wait out a character split over tokens
                    text = now
                    yield text
        finally:
            if self.batcher is not None:  # the turn is over: the session's cache stops sharing a batch's memory
                detach_cache(state.cache)
