"""What the fine-tuned model writes in a turn: its music block, then its words about the track
shown first.

The conversation is laid out as in training (``model_dir.REPLY_FORMAT``): each earlier reply as
its first track's block, and the reply being written as the block and the catalog's facts about
the track the person will hear. ``ModelWriter`` turns a history into those prompts and decodes
them (``generation.Decoder``); ``ReplayedBlocks`` remembers its blocks, so that variants of the
retrieval scored side by side read the same blocks, each decoded once.

    writer = ModelWriter(model, tokenizer, vocab, index, system_prompt=prompt)
    generation = writer.block(history, session.decode)
    for text in writer.words(history, track_id, session.decode):
        print(text)
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .generation import Decoder, DecodeState

MAX_CONTEXT_TOKENS = 768  # the prompt's budget; the oldest turns go first beyond it


def check_index(vocab, index) -> None:
    """Raise ValueError unless a model with music tokens ``vocab`` can read ``index``'s codes."""
    if vocab.codebook_sizes != index.codebook_sizes:
        raise ValueError(f"the model was trained for another index (codebook sizes {vocab.codebook_sizes} "
                         f"vs {index.codebook_sizes}); retrain it on {index.root}")


@dataclass
class Generation:
    """What the model wrote for a turn.

    ``codes`` is its last music block (None without a valid one); ``code_log_probs`` the
    log-probabilities over each modality's codes that the block was drawn from.
    """

    text: str
    codes: dict[str, int] | None
    errors: list[str]
    code_log_probs: dict[str, np.ndarray] | None = None


class ModelWriter:
    """The fine-tuned model as a turn uses it, over one index.

    Parameters
    ----------
    model, tokenizer, vocab
        A causal LM that knows the music tokens (``assistant.train.load_finetuned``).
    index : MusicIndex
        The catalog whose tracks' codes and facts go into the prompts.
    system_prompt : str
    max_context_tokens : int
        Prompt budget; the oldest turns are dropped first beyond it.
    max_new_tokens : int
        The reply's length in tokens (a sentence begun may finish past it).
    batched : bool
        Let the sessions decoding at the same time (in other threads: a server's) share one
        forward pass per step (``assistant.batching``).
    phrasebook : generation.Phrasebook, optional
        Lends its guesses to the decoding of the words.
    """

    def __init__(self, model, tokenizer, vocab, index, *, system_prompt: str,
                 max_context_tokens: int = MAX_CONTEXT_TOKENS, max_new_tokens: int = 60, batched: bool = False,
                 phrasebook=None):
        check_index(vocab, index)
        self.model, self.tokenizer, self.vocab, self.index = model, tokenizer, vocab, index
        self.system_prompt = system_prompt
        self.max_context_tokens = max_context_tokens
        self.decoder = Decoder(model, tokenizer, vocab, max_words_tokens=max_new_tokens, batched=batched,
                               phrasebook=phrasebook)

    def block(self, history: list[dict], state: DecodeState | None = None) -> Generation:
        """The model's music block for the turn that ``history`` ends with; ``state`` is the
        session's cache (None: decoded from nothing)."""
        block, _ = self.decoder.block(self.prompt_ids(self.messages(history)), state)
        return Generation(self.vocab.format_block(block.codes), dict(block.codes), [], block.log_probs)

    def words(self, history: list[dict], track_id: str, state: DecodeState | None = None, *,
              allows: Callable[[str], bool] | None = None, may_end: Callable[[str], bool] | None = None,
              complete: Callable[[str], str | None] | None = None) -> Iterator[str]:
        """The model's reply about ``track_id`` after ``history``, as it grows.

        The context is the conversation, then the block and facts of ``track_id`` (the track the
        person will hear, not the one the model guessed), laid out as in training. ``allows``,
        ``may_end`` and ``complete`` steer the decoding (``grounding.ClaimGuard``).
        """
        turn = {"role": "assistant", "content": "", "tracks": [track_id]}
        ids = self.prompt_ids(self.messages(list(history) + [turn]))
        yield from self.decoder.words(ids, state, allows=allows, may_end=may_end, complete=complete)

    def messages(self, history: list[dict]) -> list[dict]:
        """The conversation as the model reads it: every assistant turn as its first track's
        block, the catalog's facts about it, and its words (``model_dir.REPLY_FORMAT``)."""
        from .model_dir import conversation_messages
        from .synth import facts_lookup

        by_id = self.index.by_id
        turns = [dict(t, tracks=[x for x in t.get("tracks", []) if x in by_id])
                 if t["role"] == "assistant" else t for t in history]
        return conversation_messages(turns, self.index.track_codes, self.vocab, facts_lookup(by_id))

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the system prompt and ``messages``, ready for the assistant to reply.

        Beyond ``max_context_tokens`` the oldest turns are dropped, whole, first; the system
        prompt and the last user turn always stay.
        """
        from .llm import chat_prompt

        system = {"role": "system", "content": self.system_prompt}
        while True:
            text = chat_prompt(self.tokenizer, [system] + messages)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            users = [i for i, m in enumerate(messages) if m["role"] == "user"]
            if len(ids) <= self.max_context_tokens or len(users) <= 1:
                return ids
            messages = messages[users[1]:]


class ReplayedBlocks:
    """A writer whose blocks are remembered by history: the assistants that share it (variants of
    the retrieval, scored side by side) read the same block for the same turn, decoded once.
    Everything else is the wrapped writer's."""

    def __init__(self, writer: ModelWriter):
        self.writer = writer
        self.seen: dict[str, Generation] = {}

    def block(self, history: list[dict], state: DecodeState | None = None) -> Generation:
        key = json.dumps(history, sort_keys=True)
        if key not in self.seen:
            self.seen[key] = self.writer.block(history, state)
        return self.seen[key]

    def __getattr__(self, name: str):
        return getattr(self.writer, name)
