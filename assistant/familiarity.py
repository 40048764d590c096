"""How familiar a request's words are to the model: the share of its content words that some
training request used.

The model learned which codes the words of its training requests call for, and the re-ranker
learned how far to trust the block on validation requests in those same words. A person writes
other words ("something floaty and dreamy", "the one for the orcs"); on them both learned parts
ranked below the plain rank fusion of BM25, MiniLM and the session's neighbourhood, whose MiniLM
weight was chosen on hand-written requests. So a turn is ranked by the model and its re-ranker only
when its training requests used every content word of the request (``FAMILIAR``;
``Retrieval.knows_words``), and by that rank fusion otherwise.

    words = RequestWords.from_conversations(train_conversations)
    words.save(model_dir)
    RequestWords.load(model_dir).familiarity("something floaty and dreamy")  # 0.0 .. 1.0
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REQUEST_WORDS_FILE = "request_words.json"
# The share of known words from which the model and its re-ranker rank a turn. Chosen on two
# sets of hand-written requests kept for choosing (62 turns over the demo catalog, the demo
# model): nDCG@10 0.587 with the re-ranker and the model on every turn; 0.592 with the model's
# features weighed by the share; 0.600 with them counted only when every word is known; 0.622
# with the rank fusion, without the block, whenever a word is new. The engine alone: 0.626.
FAMILIAR = 1.0
_WORD = re.compile(r"[a-z0-9][a-z0-9'&-]*")


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry content: lower-cased, without stop words or single letters.

    >>> content_words("Could you play something calm, in D major?")
    ['play', 'something', 'calm', 'major']
    """
    from .synth import _STOPWORDS

    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    return [w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in _STOPWORDS]


@dataclass(frozen=True)
class RequestWords:
    """The content words the model's training requests used."""

    words: frozenset[str]

    @classmethod
    def from_conversations(cls, conversations: Iterable[dict]) -> "RequestWords":
        """The content words of every user turn of ``conversations`` (the design's format)."""
        words: set[str] = set()
        for conversation in conversations:
            for turn in conversation["turns"]:
                if turn["role"] == "user":
                    words.update(content_words(turn["content"]))
        return cls(frozenset(words))

    def familiarity(self, text: str) -> float:
        """The share of ``text``'s content words that a training request used; 1.0 when it has
        none (a bare "and then?" says nothing new).

        >>> RequestWords(frozenset({"calm", "piano"})).familiarity("calm piano for sleeping")
        0.6666666666666666
        """
        words = content_words(text)
        return sum(w in self.words for w in words) / len(words) if words else 1.0

    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / REQUEST_WORDS_FILE
        path.write_text(json.dumps({"words": sorted(self.words)}) + "\n")
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "RequestWords | None":
        """The words saved in ``model_dir``, or None for a model trained before they were kept."""
        path = Path(model_dir) / REQUEST_WORDS_FILE
        if not path.is_file():
            return None
        return cls(frozenset(json.loads(path.read_text())["words"]))
