"""Word search over the catalog: BM25 (bm25s) of each track's text, the engine's strongest signal.

The chat fuses it with the model's block and the session's neighbourhood; the evaluation's
BM25 baseline ranks by it alone. Both query with the user turns, most recent first
(``history_query``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN_PLUS

from index.track import Track

# Request words that say nothing about the music ("play me something, please").
# Words that occur in lyrics and titles ("love", "time", "one") are kept.
REQUEST_STOPWORDS = frozenset({
    "play", "something", "anything", "please", "find", "want", "hear", "listen", "recommend", "suggestions",
    "suggest", "looking", "mood", "got", "put", "could", "would", "maybe", "ideally", "preferably", "hi", "hey",
    "hello", "thanks", "track", "tracks", "song", "songs", "tune", "piece", "music",
})
STOPWORDS = frozenset(STOPWORDS_EN_PLUS) | REQUEST_STOPWORDS
# Capital letter only, and not "a minor key": there "a" is an article.
_KEY_RE = re.compile(r"\b([A-G])(#|♯|b|♭)?\s*(major|minor)\b(?![-\s]key)")
_ACCIDENTAL = {"#": "sharp", "♯": "sharp", "b": "flat", "♭": "flat"}


def track_text(track: Track) -> str:
    """The text a text baseline indexes for one track: title, artist, album, year, genre, tags, description, lyrics."""
    parts = [track.title, f"by {track.artist}" if track.artist else "", track.album, str(track.year or ""),
             track.genre, ", ".join(track.tags), track.description, track.lyrics]
    return ". ".join(p.strip() for p in parts if p and p.strip())


def played_track_text(track: Track) -> str:
    """What a query says of a track heard earlier: "Title by Artist: tag, tag, tag"."""
    by = f" by {track.artist}" if track.artist else ""
    tags = f": {', '.join(track.tags[:6])}" if track.tags else ""
    return f"{track.title or track.id}{by}{tags}"


def history_query(history: list[dict], include_assistant: bool = False,
                  catalog: Mapping[str, Track] | None = None) -> str:
    """The query text for a conversation so far: its user turns, most recent first.

    Parameters
    ----------
    history : list of dict
        Turns with "role" and "content" (assistant turns may list their "tracks").
    include_assistant : bool
        Also use the assistant's text (it names what was played, which helps "more like that").
    catalog : mapping of id to Track, optional
        When given, the tracks the assistant turns named follow the user turns, most recent
        first, as :func:`played_track_text` (the Music-CRS BM25 baseline queries so); ids not
        in the catalog are skipped.
    """
    if not isinstance(history, list):
        raise ValueError(f"history must be a list of turn dicts, got {type(history).__name__}")
    roles = ("user", "assistant") if include_assistant else ("user",)
    texts = []
    for i, turn in enumerate(history):
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str):
            raise ValueError(f"history turn {i} must be a dict with a string 'content'")
        if turn.get("role") in roles and turn["content"].strip():
            texts.append(turn["content"].strip())
    played = []
    if catalog is not None:
        for turn in history:
            if turn.get("role") == "assistant":
                played += [played_track_text(catalog[t]) for t in turn.get("tracks", []) if t in catalog]
    return "\n".join(list(reversed(texts)) + list(reversed(played)))


def _normalise_keys(text: str) -> str:
    """Write musical keys as one token ("F# minor" -> "f_sharp_minor") so the tokenizer keeps the key letter."""
    def one(m: re.Match) -> str:
        acc = f"_{_ACCIDENTAL[m.group(2)]}" if m.group(2) else ""
        return f" {m.group(1).lower()}{acc}_{m.group(3).lower()} {m.group(3).lower()} "
    return _KEY_RE.sub(one, text)


def _light_stem(word: str) -> str:
    """Strip an English plural ("reels" -> "reel", "waltzes" -> "waltz", "melodies" -> "melody")."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    return word[:-1]


def bm25_tokens(texts: list[str]) -> list[list[str]]:
    """Tokenize for BM25: keys as single tokens, lower case, English and request stopwords out, plurals stripped."""
    raw = bm25s.tokenize([_normalise_keys(t) for t in texts], lower=True, stopwords=list(STOPWORDS),
                         return_ids=False, show_progress=False)
    return [[_light_stem(w) for w in doc] for doc in raw]


class LexicalIndex:
    """BM25 over :func:`track_text` of every track, in catalog order.

    Parameters
    ----------
    tracks : list of Track
    """

    def __init__(self, tracks: list[Track]):
        if not tracks:
            raise ValueError("LexicalIndex needs at least one track")
        self.ids = [t.id for t in tracks]
        self.model = bm25s.BM25()
        self.model.index(bm25_tokens([track_text(t) for t in tracks]), show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every track (catalog order) for ``query``; all zero when no query word is known."""
        tokens = [w for w in bm25_tokens([query])[0] if w in self.model.vocab_dict]
        if not tokens:
            return np.zeros(len(self.ids), dtype=np.float32)
        return np.asarray(self.model.get_scores(tokens), dtype=np.float32)

    def search(self, query: str, k: int = 20, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """(track id, score) of the tracks that match a query word, best first, none in ``exclude``."""
        scores = self.scores(query)
        excluded = set(exclude)
        order = np.argsort(-scores, kind="stable")
        hits = [(self.ids[i], float(scores[i])) for i in order if scores[i] > 0]
        return [(t, s) for t, s in hits if t not in excluded][:k]
