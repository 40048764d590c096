"""One forward pass for the decoding steps of every session generating at the same time.

On a CPU a decoding step of a small model is bound by reading its weights: a step for four
sequences costs little more than a step for one. When several people chat at once, their
turns' steps are therefore gathered into one batch. Each session keeps its own key-value cache
(``generation.DecodeState``); for a batched step the caches are left-padded to one length and
stacked, the padding masked out, and each session's cache (now one token longer) is cut back
out of the batch.

Steps that feed several tokens at once (the prompt of a new turn) run one at a time, between
batched steps, so that a long prompt holds up the others for one pass only.

    batcher = StepBatcher(model)
    logits = batcher.run([token_id], cache)   # from any thread; blocks until the step is done
"""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

GATHER_WAIT_S = 0.01  # how long a step waits for the sessions of the last batch to come back


@dataclass
class _Step:
    ids: list[int]
    cache: Any  # transformers.DynamicCache, filled in place
    positions: int = 1  # how many of the last positions' logits to return
    done: threading.Event = field(default_factory=threading.Event)
    logits: torch.Tensor | None = None
    error: BaseException | None = None

    @property
    def batchable(self) -> bool:
        return len(self.ids) == 1 and self.positions == 1 and self.cache.get_seq_length() > 0


@torch.no_grad()
def feed(model, ids: Sequence[int], cache, *, positions: int = 1) -> torch.Tensor:
    """Run ``model`` over ``ids`` after what ``cache`` holds (filling it in place); the logits of
    the last ``positions`` positions, (positions, vocab) float32."""
    if not 1 <= positions <= len(ids):
        raise ValueError(f"positions must be between 1 and len(ids) = {len(ids)}, got {positions}")
    out = model(input_ids=torch.tensor([list(ids)]), cache=cache, use_cache=True, logits_to_keep=positions)
    return out.logits[0, -positions:].float()


def stack_caches(caches: Sequence[Any], rows: int | None = None) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Left-pad and stack one-sequence caches into one batch cache.

    Parameters
    ----------
    caches : sequence of DynamicCache
        One sequence each, at least one token long.
    rows : int, optional
        Rows of the batch (default: one per cache); rows beyond the caches repeat the first.

    Returns
    -------
    (cache, attention_mask, position_ids)
        The batch's ``DynamicCache``; a (rows, longest + 1) mask of the real positions and the
        step's new token; each row's next position, (rows, 1).
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if not caches:
        raise ValueError("no caches to stack")
    rows = len(caches) if rows is None else rows
    if rows < len(caches):
        raise ValueError(f"rows ({rows}) must be at least the number of caches ({len(caches)})")
    lengths = [c.get_seq_length() for c in caches]
    if min(lengths) < 1:
        raise ValueError("every cache must hold at least one token")
    order = list(range(len(caches))) + [0] * (rows - len(caches))
    longest = max(lengths)
    batch = DynamicCache()
    for layer in range(len(caches[0].layers)):
        stacked = DynamicLayer()
        first = caches[0].layers[layer]
        stacked.lazy_initialization(first.keys, first.values)
        for name in ("keys", "values"):
            like = getattr(first, name)
            # one copy: each sequence written into its place, zeros before it on the position axis
            out = like.new_zeros((rows, like.shape[1], longest, like.shape[3]))
            for row, i in enumerate(order):
                out[row, :, longest - lengths[i]:] = getattr(caches[i].layers[layer], name)[0]
            setattr(stacked, name, out)
        batch.layers.append(stacked)
    mask = torch.zeros(rows, longest + 1, dtype=torch.long)
    for row, i in enumerate(order):
        mask[row, longest - lengths[i]:] = 1
    positions = torch.tensor([lengths[i] for i in order], dtype=torch.long)[:, None]
    return batch, mask, positions


def unstack_cache(batch: Any, caches: Sequence[Any], lengths: Sequence[int]) -> None:
    """Give each one-sequence cache its row of ``batch`` (after a step: one token longer), padding
    cut off; rows beyond the caches are left out. The rows are views of the batch's tensors."""
    longest = batch.get_seq_length() - 1
    for layer, stacked in enumerate(batch.layers):
        for row, (c, n) in enumerate(zip(caches, lengths)):
            c.layers[layer].keys = stacked.keys[row:row + 1, :, longest - n:]
            c.layers[layer].values = stacked.values[row:row + 1, :, longest - n:]


def detach_cache(cache: Any) -> None:
    """Give ``cache`` tensors of its own where it holds views of a batch (after ``unstack_cache``),
    so that a session left idle does not keep the whole batch's memory alive."""
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() > t.numel() * t.element_size():
                setattr(layer, name, t.clone())


def batch_rows(n: int, multiple: int = 4) -> int:
    """Rows to run ``n`` sequences in: a multiple of ``multiple`` from two sequences up.

    CPU matrix products of two or three rows by a weight matrix read the weights once per row,
    like separate products; from four rows they read them once for all (measured with torch
    2.13: a 576 x 1536 layer took 81, 152, 220 and 195 us for 1 to 4 rows, 203 us for 8), so two
    sequences are quicker as four rows, two of them repeats.
    """
    if n < 1 or multiple < 1:
        raise ValueError(f"need n >= 1 and multiple >= 1, got {n} and {multiple}")
    return n if n == 1 else -(-n // multiple) * multiple


class StepBatcher:
    """Runs the model's decoding steps, several sessions' at once, on one thread of its own.

    Parameters
    ----------
    model
        A causal LM taking ``input_ids``, ``attention_mask``, ``position_ids``, ``cache``,
        ``use_cache`` and ``logits_to_keep`` (transformers).
    max_batch : int
        Most sequences in one step.
    gather_wait_s : float
        How long to wait for the sessions of the previous batch before stepping without them.
    """

    def __init__(self, model, *, max_batch: int = 8, gather_wait_s: float = GATHER_WAIT_S):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if gather_wait_s < 0:
            raise ValueError(f"gather_wait_s must be non-negative, got {gather_wait_s}")
        self.model, self.max_batch, self.gather_wait_s = model, max_batch, gather_wait_s
        self._pending: list[_Step] = []
        self._ready = threading.Condition()
        self._last_batch = 1
        self._last = None  # the last batched step's (caches, their views, batch cache, mask, positions)
        self.batched_steps = self.batched_sequences = 0  # steps of two or more, and the sequences in them
        self.stacked_steps = 0  # of those, the ones that had to stack the caches anew
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="step-batcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the batcher's thread once the steps it was given are done, and let go of the last
        batch's cache. A closed batcher takes no more steps."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def run(self, ids: Sequence[int], cache, *, positions: int = 1) -> torch.Tensor:
        """Feed ``ids`` after what ``cache`` holds (filling it) and return the logits of the last
        ``positions`` positions, (positions, vocab), as ``feed`` does."""
        if not 1 <= positions <= len(ids):
            raise ValueError(f"positions must be between 1 and len(ids) = {len(ids)}, got {positions}")
        step = _Step(list(ids), cache, positions)
        with self._ready:
            if self._closed:
                raise RuntimeError("this step batcher is closed")
            self._pending.append(step)
            self._ready.notify()
        step.done.wait()
        if step.error is not None:
            raise step.error
        return step.logits

    def _take(self) -> tuple[list[_Step], _Step | None]:
        """The next batch of one-token steps and at most one longer step, waiting briefly for
        the sessions that were in the last batch (each comes back a few ms after its step)."""
        with self._ready:
            while not self._pending:
                if self._closed:
                    return [], None
                self._ready.wait()
            deadline = time.monotonic() + self.gather_wait_s
            while sum(s.batchable for s in self._pending) < min(self._last_batch, self.max_batch):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            batch = [s for s in self._pending if s.batchable][: self.max_batch]
            longer = next((s for s in self._pending if not s.batchable), None)
            taken = set(map(id, batch)) | ({id(longer)} if longer is not None else set())
            self._pending = [s for s in self._pending if id(s) not in taken]
        return batch, longer

    def _serve(self) -> None:
        while True:
            batch, longer = self._take()
            if not batch and longer is None:  # closed, nothing left
                self._last = None
                return
            if batch:
                self._last_batch = len(batch)
                self._finish(batch, self._step_batch)
            if longer is not None:
                self._finish([longer], self._step_one)

    @staticmethod
    def _finish(steps: list[_Step], compute) -> None:
        try:
            compute(steps)
        except BaseException as err:  # the waiting sessions get the error, the server keeps serving
            for s in steps:
                s.error = err
        for s in steps:
            s.done.set()

    def _step_one(self, steps: list[_Step]) -> None:
        (s,) = steps
        s.logits = feed(self.model, s.ids, s.cache, positions=s.positions)

    @torch.no_grad()
    def _step_batch(self, steps: list[_Step]) -> None:
        if len(steps) == 1:
            self._step_one(steps)
            return
        self.batched_steps += 1
        self.batched_sequences += len(steps)
        steps, batch, mask, positions = self._continue_last(steps)
        caches = [s.cache for s in steps]
        lengths = [c.get_seq_length() for c in caches]
        if batch is None:
            self.stacked_steps += 1
            batch, mask, positions = stack_caches(caches, rows=batch_rows(len(steps)))
        ids = [s.ids for s in steps] + [steps[0].ids] * (mask.shape[0] - len(steps))  # repeats fill the rows
        out = self.model(input_ids=torch.tensor(ids), attention_mask=mask, position_ids=positions, cache=batch,
                         use_cache=True, logits_to_keep=1)
        unstack_cache(batch, caches, lengths)
        self._last = (caches, [c.layers[0].keys for c in caches], batch, mask, positions)
        logits = out.logits[:, -1:].float()
        for row, s in enumerate(steps):
            s.logits = logits[row]

    def _continue_last(self, steps: list[_Step]):
        """When ``steps`` are the sessions of the last batch and nothing else touched their caches
        since (each still holds the view of the batch it was given), the steps in the last batch's
        order and that batch with its mask and positions one step on: no stacking again."""
        if self._last is None:
            return steps, None, None, None
        caches, views, batch, mask, positions = self._last
        by_cache = {id(s.cache): s for s in steps}
        if len(steps) != len(caches) or set(by_cache) != {id(c) for c in caches} or \
                any(c.layers[0].keys is not v for c, v in zip(caches, views)):
            return steps, None, None, None
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        return [by_cache[id(c)] for c in caches], batch, mask, positions + 1
