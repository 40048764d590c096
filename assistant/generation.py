"""Decoding a turn with the fine-tuned model: the music block first, then the words.

A turn is two short decodes over one key-value cache. The block is five greedy steps, each
restricted to its modality's codes, so it always parses and its log-probabilities over every
code come for free; the tracks can be chosen as soon as it ends. The words are then decoded,
token by token, after the catalog's facts about the chosen track.

The cache is kept per session (``DecodeState``): each call feeds only the tokens after the
longest prefix it already holds, so a turn does not re-read the system prompt and the earlier
turns, and the words phase does not re-read the prompt the block was decoded from.

Replies copy much of their context (a title, an artist, a tempo from the facts), so the words
are decoded speculatively when the turn is the only one decoding: the tokens that followed the
latest earlier occurrence of the last few tokens are guessed to come next, all of them are
checked in one forward pass, and the guesses the model agrees with are kept (prompt lookup
decoding). Where the context has no such occurrence, the guess is what most often followed those
tokens in the replies the model was trained on (a ``Phrasebook``: " than the last one" after "It's
faster"), as in retrieval-based speculative decoding (REST, He et al. 2024).
On a CPU a pass over eight tokens costs about as much as a pass over one. The text
is the greedy decode's up to rounding, which differs between a pass over one token and over
several: with float32 weights every validation reply came out the same (21 of 21), with
bfloat16 weights, whose rounding is coarser, 17 of 31 did (the rest part at a near-tie).

    decoder = Decoder(model, tokenizer, vocab, phrasebook=Phrasebook.from_texts(replies, tokenizer))
    block = decoder.block(prompt_ids, state)
    for text in decoder.words(reply_prompt_ids, state):
        print(text)
"""
from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from .batching import StepBatcher, detach_cache, feed

MAX_WORDS_TOKENS = 60  # a reply is one or two sentences
FINISH_TOKENS = 20  # past MAX_WORDS_TOKENS, this many more may finish the sentence begun
DRAFT_TOKENS = 8  # most tokens guessed from the context for one pass
DRAFT_NGRAMS = (3, 2)  # the context is searched for the last three tokens, then the last two
GUARD_FALLBACK_CANDIDATES = 1024  # tokens tried, likeliest first, when a guard passes over untrue ones


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


def lookup_draft(ids: Sequence[int], max_tokens: int, ngrams: Sequence[int] = DRAFT_NGRAMS) -> list[int]:
    """The tokens that followed the latest earlier occurrence of the last ``n`` tokens of ``ids``
    (the first ``n`` of ``ngrams`` that occurs), at most ``max_tokens``; [] when none occurs.

    >>> lookup_draft([5, 1, 2, 3, 4, 9, 1, 2], max_tokens=2)
    [3, 4]
    """
    if max_tokens < 1 or any(n < 1 for n in ngrams):
        raise ValueError(f"max_tokens and every n-gram length must be positive, got {max_tokens} and {list(ngrams)}")
    seq = np.asarray(ids, dtype=np.int64)
    for n in ngrams:
        if seq.size <= n:
            continue
        # windows that start before the last n tokens, so each has at least one token after it
        windows = np.lib.stride_tricks.sliding_window_view(seq[:-1], n)
        hits = np.flatnonzero((windows == seq[-n:]).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return seq[start:start + max_tokens].tolist()
    return []


class Phrasebook:
    """What most often followed a few tokens in a body of replies: guesses for decoding where the
    context offers none.

    ``follows`` maps each n-gram of token ids (one of ``DRAFT_NGRAMS``' lengths) that was seen
    followed by the same token at least ``min_count`` times to that token.

    >>> book = Phrasebook.from_ids([[1, 2, 3, 4], [1, 2, 3, 4]])
    >>> book.draft([9, 1, 2], max_tokens=5)
    [3, 4]
    """

    def __init__(self, follows: dict[tuple[int, ...], int]):
        self.follows = follows
        self.ngrams = sorted({len(k) for k in follows}, reverse=True)

    @classmethod
    def from_ids(cls, replies: Iterable[Sequence[int]], ngrams: Sequence[int] = DRAFT_NGRAMS,
                 min_count: int = 2) -> "Phrasebook":
        """The phrasebook of ``replies``, each a sequence of token ids."""
        if min_count < 1 or any(n < 1 for n in ngrams):
            raise ValueError(f"min_count and every n-gram length must be positive, got {min_count} and {list(ngrams)}")
        counts: dict[tuple[int, ...], Counter] = defaultdict(Counter)
        for ids in replies:
            ids = list(ids)
            for n in ngrams:
                for i in range(n, len(ids)):
                    counts[tuple(ids[i - n:i])][ids[i]] += 1
        follows = {}
        for gram, after in counts.items():
            token, count = after.most_common(1)[0]
            if count >= min_count:
                follows[gram] = token
        return cls(follows)

    @classmethod
    def from_texts(cls, replies: Iterable[str], tokenizer, **kwargs) -> "Phrasebook":
        """The phrasebook of ``replies`` as ``tokenizer`` cuts them (as the model writes them)."""
        return cls.from_ids((tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies), **kwargs)

    def draft(self, ids: Sequence[int], max_tokens: int) -> list[int]:
        """Up to ``max_tokens`` tokens to follow ``ids``, each the one that most often followed the
        longest n-gram before it; [] when the book has none."""
        out, draft = list(ids[-max(self.ngrams, default=0):]), []
        while len(draft) < max_tokens:
            token = next((self.follows[g] for n in self.ngrams if (g := tuple(out[-n:])) in self.follows), None)
            if token is None:
                break
            draft.append(token)
            out.append(token)
        return draft

    def __len__(self) -> int:
        return len(self.follows)


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
        Longest reply, in tokens; with ``may_end``, a sentence still open there may take up to
        ``FINISH_TOKENS`` more to end, and the reply stops where it does.
    batched : bool
        Run the model's steps through a ``batching.StepBatcher``, so that sessions decoding in
        other threads at the same time share each forward pass.
    draft_tokens : int
        Most tokens guessed from the context and checked in one pass while a turn decodes alone;
        0 decodes one token a pass.
    phrasebook : Phrasebook, optional
        Where guesses come from when the context has none (the replies the model learned).
    """

    def __init__(self, model, tokenizer, vocab, *, max_words_tokens: int = MAX_WORDS_TOKENS,
                 batched: bool = False, draft_tokens: int = DRAFT_TOKENS, phrasebook: Phrasebook | None = None):
        from tokenizer.hf import music_token_ids

        if max_words_tokens < 1:
            raise ValueError(f"max_words_tokens must be at least 1, got {max_words_tokens}")
        self.model, self.tokenizer, self.vocab = model, tokenizer, vocab
        # Sessions decoding at the same time (a server's) share one forward pass per step.
        self.batcher = StepBatcher(model) if batched else None
        self.max_words_tokens = max_words_tokens
        if draft_tokens < 0:
            raise ValueError(f"draft_tokens must be non-negative, got {draft_tokens}")
        self.draft_tokens, self.phrasebook = draft_tokens, phrasebook
        # Turns decoding now: a guess costs a pass's worth of compute that others could use.
        self._decoding, self._decoding_lock = 0, threading.Lock()
        self.passes = self.drafted = self.accepted = 0  # words passes, guessed tokens, guesses kept
        ids = music_token_ids(tokenizer, vocab)
        self.start_id, self.end_id = ids["start"], ids["end"]
        self.code_ids = {m: torch.tensor(v) for m, v in ids["codes"].items()}
        self._stop = {i for i in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))
                      if isinstance(i, int) and i >= 0}
        # Words never contain music tokens (a second block would be read by no one), nor special
        # tokens other than a stop: "<filename>" decodes to nothing, so a guard would pass it.
        special = [i for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items()
                   if token.special and i not in self._stop and i < model.config.vocab_size]
        self._banned = torch.tensor(sorted(set(ids["all"]) | set(special)))

    @torch.no_grad()
    def _feed(self, ids: list[int], state: DecodeState, positions: int = 1) -> torch.Tensor:
        """The next-token logits at the last ``positions`` positions of ``ids``, (positions, vocab),
        running the model only past the cached prefix."""
        from transformers import DynamicCache

        keep = min(common_prefix(state.ids, ids), len(ids) - positions) if state.cache is not None else 0
        if state.cache is None or keep == 0:
            state.cache, keep = DynamicCache(), 0
        elif keep < len(state.ids):
            state.cache.crop(keep - len(state.ids))
        # The cache is filled in place; only the asked positions' logits are computed.
        run = self.batcher.run if self.batcher is not None else partial(feed, self.model)
        logits = run(ids[keep:], state.cache, positions=positions)
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
            scores = torch.log_softmax(self._feed(ids, state)[-1, token_ids], dim=-1)
            code = int(torch.argmax(scores))
            codes[modality], log_probs[modality] = code, scores.numpy()
            ids.append(int(token_ids[code]))
        return Block(codes, log_probs), ids + [self.end_id]

    def words(self, prompt_ids: Sequence[int], state: DecodeState | None = None,
              allows: Callable[[str], bool] | None = None,
              may_end: Callable[[str], bool] | None = None,
              complete: Callable[[str], str | None] | None = None) -> Iterator[str]:
        """Yield the reply's text as it grows, one decoded token at a time, after ``prompt_ids``.

        With ``allows``, each token is the model's most likely one whose text ``allows`` accepts
        (of its ``GUARD_FALLBACK_CANDIDATES`` likeliest); where none is, ``complete`` (if given)
        may name the text that must follow (the rest of a title or artist the reply has begun),
        which is written out and decoding goes on after it; otherwise the reply ends. With
        ``may_end``, the reply stops only where ``may_end`` accepts the text so far (a sentence
        finished, say); elsewhere the model's stop gives way to its next likeliest token.
        """
        state = state if state is not None else DecodeState()
        ids, new, text = list(prompt_ids), [], ""
        # A reply cut inside a sentence loses that sentence, after the page has shown it growing.
        finish = self.max_words_tokens + (FINISH_TOKENS if may_end is not None else 0)
        with self._decoding_lock:
            self._decoding += 1
        try:
            while len(new) < self.max_words_tokens or (len(new) < finish and not may_end(text)):
                limit = self.max_words_tokens if len(new) < self.max_words_tokens else finish
                for token in self._next_tokens(ids, new, state, limit - len(new), allows, may_end, complete):
                    if token in self._stop:
                        return
                    new.append(token)
                    now = self.tokenizer.decode(new, skip_special_tokens=True)
                    if now != text and not now.endswith("\ufffd"):  # wait out a character split over tokens
                        text = now
                        yield text
                    if len(new) >= self.max_words_tokens and may_end is not None and may_end(text):
                        return  # past the limit only to finish a sentence, and it is finished
        finally:
            with self._decoding_lock:
                self._decoding -= 1
            if self.batcher is not None:  # the turn is over: the session's cache stops sharing a batch's memory
                detach_cache(state.cache)

    def _next_tokens(self, prompt: list[int], new: list[int], state: DecodeState, room: int,
                     allows: Callable[[str], bool] | None,
                     may_end: Callable[[str], bool] | None,
                     complete: Callable[[str], str | None] | None = None) -> list[int]:
        """The greedy continuation of the reply ``new`` after ``prompt`` from one pass: one token,
        or, when a guess from the context was checked in the same pass, every guessed token the
        model agrees with and the model's own token after them (at most ``room``); where the
        guard allows none of the likeliest, the tokens of ``complete``'s text, or a stop."""
        ids = prompt + new
        alone = self._decoding <= 1
        draft = self._draft(ids, min(self.draft_tokens, room - 1)) if alone and self.draft_tokens and room > 1 else []
        logits = self._feed(ids + draft, state, positions=len(draft) + 1)
        logits[:, self._banned] = float("-inf")
        if allows is None and may_end is None:
            chosen = torch.argmax(logits, dim=-1).tolist()
        else:
            chosen = []
            for row in logits:  # row i follows the guess's first i tokens: a choice after what is kept
                token = self._allowed(row, new + chosen, allows, may_end)
                if token is None:  # nothing true among the likeliest: finish what was begun, or stop
                    kept = len(chosen)  # every earlier choice agreed with the guess
                    forced = self._completion(new + chosen, room - kept, allows, complete)
                    self.passes, self.drafted, self.accepted = self.passes + 1, self.drafted + len(draft), \
                        self.accepted + kept
                    return chosen + (forced or [min(self._stop) if self._stop else int(torch.argmax(row))])
                chosen.append(token)
                if len(chosen) > len(draft) or chosen[-1] != draft[len(chosen) - 1]:
                    break
        agreed = next((i for i, (guess, token) in enumerate(zip(draft, chosen)) if guess != token), len(draft))
        self.passes, self.drafted, self.accepted = self.passes + 1, self.drafted + len(draft), self.accepted + agreed
        return chosen[:agreed + 1]

    def _draft(self, ids: list[int], max_tokens: int) -> list[int]:
        """A guess at the next tokens: from the context, else from the phrasebook."""
        draft = lookup_draft(ids, max_tokens)
        if not draft and self.phrasebook is not None:
            draft = self.phrasebook.draft(ids, max_tokens)
        return draft

    def _completion(self, new: list[int], room: int, allows: Callable[[str], bool] | None,
                    complete: Callable[[str], str | None] | None) -> list[int]:
        """The tokens of the text ``complete`` says must follow ``new``, but the last of several
        ([] when it names none, when they do not fit in ``room``, or when ``allows`` refuses the
        result)."""
        if complete is None:
            return []
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        rest = complete(text)
        if not rest:
            return []
        forced = self.tokenizer(rest, add_special_tokens=False)["input_ids"]
        whole = self.tokenizer.decode(new + forced, skip_special_tokens=True)
        if len(forced) > room or whole != text + rest or (allows is not None and not allows(whole)):
            return []
        # The last token is left to the model: in its training text a name's end is often one
        # token with what follows it ("(Zhaytee)," ends in "),"), and after a lone ")" that it
        # never saw there it wrote nonsense. Where it still cannot go on, the rest is forced then.
        return forced[:-1] if len(forced) > 1 else forced

    def _allowed(self, logits: torch.Tensor, new: list[int], allows: Callable[[str], bool] | None,
                 may_end: Callable[[str], bool] | None) -> int | None:
        """The likeliest token after ``new`` whose text ``allows`` accepts, or a stop token where
        ``may_end`` accepts the text so far; None where none of the likeliest is (the reply must
        not say something untrue)."""
        # The likeliest nearly always holds: the longer tail is ranked only where it does not (a
        # title being copied that the model would have ended otherwise, say).
        best = int(torch.argmax(logits))
        for token in self._ranked_from(best, logits):
            if token in self._stop:
                if may_end is None or may_end(self.tokenizer.decode(new, skip_special_tokens=True)):
                    return token
            elif allows is None or allows(self.tokenizer.decode(new + [token], skip_special_tokens=True)):
                return token
        return None

    @staticmethod
    def _ranked_from(best: int, logits: torch.Tensor) -> Iterator[int]:
        """``best`` (the argmax), then the rest of the ``GUARD_FALLBACK_CANDIDATES`` likeliest."""
        yield best
        tail = torch.topk(logits, min(GUARD_FALLBACK_CANDIDATES, logits.numel())).indices.tolist()
        yield from (t for t in tail if t != best)
