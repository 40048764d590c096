"""Training examples: a conversation as token ids with labels on the assistant's replies only.

Each assistant turn becomes the music block of its first track, the catalog's facts about
that track, and its words (``assistant.model_dir.REPLY_FORMAT``); the block and the words are
learned, every other token (the facts included) is labelled ``IGNORE``. The
trainer learns from these, and ``bench/code_accuracy.py`` scores a model on them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from assistant.conversations import ConversationFormatError, validate_conversation
from assistant.llm import chat_prompt
from assistant.model_dir import FactsFor, conversation_messages
from tokenizer.hf import music_token_ids
from tokenizer.vocab import MusicVocab

IGNORE = -100  # label of tokens that carry no loss


def _check_conversation(conversation: dict) -> list[dict]:
    """The turns of a training conversation: the conversations.jsonl format, and no system turn
    (training adds the model's own system prompt)."""
    validate_conversation(conversation)
    turns = conversation["turns"]
    if any(turn["role"] == "system" for turn in turns):
        raise ConversationFormatError(f"conversation {conversation['id']!r}: a training conversation has no "
                                      "system turn; the model's system prompt is added to every example")
    return turns


def _pieces(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """Split the rendered chat into (text, is_target) pieces, target = an assistant message
    not marked ``"learn": False``.

    Renders growing prefixes of the conversation so any chat template works, as long as
    rendering more messages only appends text.
    """
    pieces: list[tuple[str, bool]] = []
    done = ""
    for k, message in enumerate(messages, start=1):
        if message["role"] == "assistant":
            prompt = chat_prompt(tokenizer, messages[: k - 1], add_generation_prompt=True)
            full = chat_prompt(tokenizer, messages[:k], add_generation_prompt=False)
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise ValueError("the chat template is not prefix-stable; cannot tell assistant tokens apart")
            pieces += [(prompt[len(done):], False), (full[len(prompt):], message.get("learn", True))]
        else:
            full = chat_prompt(tokenizer, messages[:k], add_generation_prompt=False)
            if not full.startswith(done):
                raise ValueError("the chat template is not prefix-stable; cannot tell assistant tokens apart")
            pieces.append((full[len(done):], False))
        done = full
    return pieces


def _encode(tokenizer, messages: list[dict]) -> tuple[list[int], list[int], int]:
    """Token ids, labels, and how many leading tokens belong to the system prompt."""
    ids: list[int] = []
    labels: list[int] = []
    system_len = 0
    for index, (text, is_target) in enumerate(_pieces(tokenizer, messages)):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if is_target else [IGNORE] * len(piece)
        if index == 0 and messages[0]["role"] == "system":
            system_len = len(piece)
    return ids, labels, system_len


def build_examples(
    conversations: Sequence[dict],
    codes_for: Callable[[str], dict[str, int]],
    tokenizer,
    vocab: MusicVocab,
    system_prompt: str,
    seq_len: int,
    facts_for: FactsFor | None = None,
) -> list[dict]:
    """Turn conversations into token ids with loss only on what the assistant writes.

    One example per assistant turn, seen as the chat sees it when answering that turn
    (``model_dir.conversation_messages``): the turn's block, facts and words after the
    conversation so far. The loss covers that turn's block and words and the earlier turns'
    blocks (whose context is the same as when they were written); the earlier words, written from
    facts that are no longer in view, are left out of the context.

    Parameters
    ----------
    conversations : sequence of dict
        ``{"id", "turns": [{"role", "content", "tracks"?}, ...]}`` as in the design.
    codes_for : callable
        Track id to its ``{modality: code}``.
    tokenizer
        Must already hold the music tokens.
    vocab : MusicVocab
    system_prompt : str
        Kept at the start of every example.
    facts_for : callable, optional
        ``(track_id, previous_id, first_id) -> text``: the facts placed after each block
        (``assistant.synth.catalog_facts`` over the index); None leaves them out.
    seq_len : int
        Longest example; the oldest turns are dropped (whole user/assistant exchanges) until
        it fits; a single exchange still too long loses its first tokens after the system prompt.

    Returns
    -------
    list of dict
        ``{"id", "input_ids", "labels"}`` with ``len(input_ids) <= seq_len``, ids
        ``"<conversation id>#<turn>"``; conversations without an assistant turn give none.
    """
    if seq_len < 8:
        raise ValueError(f"seq_len must be at least 8, got {seq_len}")
    music_token_ids(tokenizer, vocab)  # fails early, with advice, if the tokens are missing
    examples = []
    for conversation in conversations:
        turns = _check_conversation(conversation)
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        for end, turn in enumerate(turns):
            if turn["role"] != "assistant":
                continue
            messages = conversation_messages(turns[: end + 1], codes_for, vocab, facts_for)
            example = _fit(tokenizer, system, messages, seq_len)
            if example is not None:
                examples.append({"id": f"{conversation.get('id', '')}#{end}", **example})
    return examples


def _fit(tokenizer, system: list[dict], messages: list[dict], seq_len: int) -> dict | None:
    """Encode ``messages`` after the system prompt in at most ``seq_len`` tokens, dropping the
    oldest exchanges first; a last exchange still too long loses its first tokens instead."""
    starts = [0] + [i for i, m in enumerate(messages) if m["role"] == "user" and i > 0]
    for start in starts:
        ids, labels, system_len = _encode(tokenizer, system + messages[start:])
        if len(ids) <= seq_len:
            break
    else:
        room = seq_len - system_len
        ids = ids[:system_len] + ids[-room:]
        labels = labels[:system_len] + labels[-room:]
    if all(label == IGNORE for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def collate(examples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example; padding is masked out of attention and loss.

    Examples carrying replayed bottom-layer states (``add_replay_states``) bring them along,
    as ``"replay"`` of shape (batch, width, hidden).
    """
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"])
        labels[row, :n] = torch.tensor(example["labels"])
        attention[row, :n] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    if all("replay" in e for e in examples):
        replay = torch.zeros(len(examples), width, examples[0]["replay"].shape[-1])
        for row, example in enumerate(examples):
            replay[row, : len(example["input_ids"])] = example["replay"].float()
        batch["replay"] = replay
    return batch
