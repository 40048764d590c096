"""A logits processor that keeps every generated music block well formed.

Outside a block the model may write any text and may open a block with ``<music>``,
but may not emit a code token or ``</music>``. Inside a block it must write exactly one
code of each modality, in ``MODALITIES`` order, and then ``</music>``. So every block a
constrained model writes parses into five real codes.
"""
from __future__ import annotations

import torch
from transformers import LogitsProcessor

from index.track import MODALITIES
from tokenizer.hf import music_token_ids
from tokenizer.vocab import MusicVocab


class MusicBlockLogitsProcessor(LogitsProcessor):
    """Constrain generation so music blocks are always complete and in order.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        Must already hold the music tokens (``tokenizer.hf.add_music_tokens``).
    vocab : MusicVocab
    max_new_tokens : int, optional
        The same value given to ``generate``. When set, a block is not opened unless
        there is room to finish it, so a reply is never cut off mid-block.

    Notes
    -----
    The state (inside a block or not, which modality is next) is read from ``input_ids``
    at every step, so the processor works for any batch size and also finishes a block
    left open at the end of the prompt. Pass it as
    ``model.generate(..., logits_processor=LogitsProcessorList([processor]))``;
    transformers applies it before temperature and top-k/top-p, so sampling only ever
    sees allowed tokens. With ``max_new_tokens`` it counts the tokens of its call, so make one
    processor per ``generate`` call: two calls running at once must not share one. (The chat
    does not use it: ``assistant.generation.Decoder`` restricts each code step itself and keeps
    its state in a ``DecodeState`` per session.)
    """

    def __init__(self, tokenizer, vocab: MusicVocab, *, max_new_tokens: int | None = None):
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        ids = music_token_ids(tokenizer, vocab)
        self.start_id: int = ids["start"]
        self.end_id: int = ids["end"]
        self.code_ids: list[torch.Tensor] = [torch.tensor(ids["codes"][m]) for m in MODALITIES]
        self.outside_banned = torch.tensor([self.end_id] + [i for m in MODALITIES for i in ids["codes"][m]])
        self.max_new_tokens = max_new_tokens
        # Detects a new generate() call: within one call the length grows by one a step.
        self._prompt_len: int | None = None
        self._last_len: int | None = None

    def _tokens_left(self, length: int) -> int | None:
        if self._last_len is None or length != self._last_len + 1:
            self._prompt_len = length
        self._last_len = length
        if self.max_new_tokens is None:
            return None
        return self.max_new_tokens - (length - self._prompt_len)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, length = input_ids.shape
        device = scores.device
        tokens_left = self._tokens_left(length)

        positions = torch.arange(length, device=input_ids.device)
        last_start = torch.where(input_ids == self.start_id, positions, -1).max(dim=1).values
        last_end = torch.where(input_ids == self.end_id, positions, -1).max(dim=1).values
        inside = (last_start > last_end).tolist()
        written = (length - 1 - last_start).tolist()  # tokens since <music>

        scores = scores.clone()
        for row in range(batch):
            if inside[row]:
                step = written[row]
                allowed = self.code_ids[step] if step < len(MODALITIES) else torch.tensor([self.end_id])
                allowed = allowed.to(device)
                kept = scores[row, allowed]
                if torch.isinf(kept).all():  # an earlier processor banned them all; keep the block valid
                    kept = torch.zeros_like(kept)
                scores[row] = float("-inf")
                scores[row, allowed] = kept
            else:
                scores[row, self.outside_banned.to(device)] = float("-inf")
                # <music> + one code per modality + </music> must all fit.
                if tokens_left is not None and tokens_left < len(MODALITIES) + 2:
                    scores[row, self.start_id] = float("-inf")
        return scores
