"""Recommender baselines for evaluation: random, popularity, BM25 and dense text retrieval.

Every baseline answers the same question as the assistant: given the turns of
a conversation so far, rank ``k`` track ids. The evaluator passes the tracks
already played in ``exclude``; every recommender leaves them out.

The text baselines query with the user turns of the history, most recent
first (so that a truncating encoder keeps the latest request). When the
query gives nothing to rank by (no words the catalog knows, or fewer hits than
``k``), the list is completed in popularity order, so every system returns a
full ranking and is scored on equal terms.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from typing import Iterable, Protocol, runtime_checkable

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


@runtime_checkable
class Recommender(Protocol):
    """Anything that ranks tracks for the next assistant turn."""

    name: str

    def recommend(self, history: list[dict], k: int = 20, exclude: Iterable[str] = ()) -> list[str]:
        """Return up to ``k`` track ids, best first, none of them in ``exclude``."""
        ...


# --------------------------------------------------------------------------- shared text

def track_text(track: Track) -> str:
    """The text a text baseline indexes for one track: title, artist, album, year, genre, tags, description, lyrics."""
    parts = [track.title, f"by {track.artist}" if track.artist else "", track.album, str(track.year or ""),
             track.genre, ", ".join(track.tags), track.description, track.lyrics]
    return ". ".join(p.strip() for p in parts if p and p.strip())


def history_query(history: list[dict], include_assistant: bool = False) -> str:
    """The query text for a conversation so far: its user turns, most recent first.

    Parameters
    ----------
    history : list of dict
        Turns with "role" and "content".
    include_assistant : bool
        Also use the assistant's text (it names what was played, which helps "more like that").
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
    return "\n".join(reversed(texts))


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return k


def playlist_counts(tracks: list[Track], playlists: dict[str, list[str]] | None = None) -> dict[str, int]:
    """How many times each track appears in the playlists (from ``track.playlists`` when none are given)."""
    known = {t.id for t in tracks}
    if playlists is None:
        return {t.id: len(t.playlists) for t in tracks}
    counts = Counter(i for ids in playlists.values() for i in ids if i in known)
    return {t.id: counts.get(t.id, 0) for t in tracks}


def popularity_order(tracks: list[Track], playlists: dict[str, list[str]] | None = None) -> list[str]:
    """Track ids by playlist count, most frequent first; ties by id."""
    counts = playlist_counts(tracks, playlists)
    return sorted(counts, key=lambda i: (-counts[i], i))


def _fill(ranked: list[str], fallback: list[str], k: int, exclude: set[str]) -> list[str]:
    """``ranked`` less excluded ids, completed from ``fallback`` up to ``k`` distinct ids."""
    out, seen = [], set(exclude)
    for tid in list(ranked) + list(fallback):
        if len(out) == k:
            break
        if tid not in seen:
            seen.add(tid)
            out.append(tid)
    return out


# --------------------------------------------------------------------------- baselines

class RandomRecommender:
    """Uniformly random ranking; seeded, so the same calls in the same order give the same lists."""

    name = "random"

    def __init__(self, tracks: list[Track], seed: int = 0):
        if not tracks:
            raise ValueError("RandomRecommender needs at least one track")
        self.ids = [t.id for t in tracks]
        self.rng = random.Random(seed)

    def recommend(self, history: list[dict], k: int = 20, exclude: Iterable[str] = ()) -> list[str]:
        k, exclude = _check_k(k), set(exclude)
        pool = [i for i in self.ids if i not in exclude]
        return self.rng.sample(pool, min(k, len(pool)))


class PopularityRecommender:
    """The tracks found in the most playlists, whatever was asked."""

    name = "popularity"

    def __init__(self, tracks: list[Track], playlists: dict[str, list[str]] | None = None):
        if not tracks:
            raise ValueError("PopularityRecommender needs at least one track")
        self.order = popularity_order(tracks, playlists)

    def recommend(self, history: list[dict], k: int = 20, exclude: Iterable[str] = ()) -> list[str]:
        return _fill([], self.order, _check_k(k), set(exclude))


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


class BM25Recommender:
    """BM25 (bm25s) over :func:`track_text` against the conversation's user turns.

    Parameters
    ----------
    tracks : list of Track
        The catalog.
    playlists : dict or None
        For the popularity order that completes short rankings; None uses ``track.playlists``.
    include_assistant : bool
        Add the assistant's earlier replies to the query.
    """

    name = "bm25"

    def __init__(self, tracks: list[Track], playlists: dict[str, list[str]] | None = None,
                 include_assistant: bool = False):
        if not tracks:
            raise ValueError("BM25Recommender needs at least one track")
        self.ids = [t.id for t in tracks]
        self.include_assistant = include_assistant
        self.fallback = popularity_order(tracks, playlists)
        self.model = bm25s.BM25()
        self.model.index(bm25_tokens([track_text(t) for t in tracks]), show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every track (index order) for ``query``; all zero when no query word is known."""
        tokens = [w for w in bm25_tokens([query])[0] if w in self.model.vocab_dict]
        if not tokens:
            return np.zeros(len(self.ids), dtype=np.float32)
        return np.asarray(self.model.get_scores(tokens), dtype=np.float32)

    def recommend(self, history: list[dict], k: int = 20, exclude: Iterable[str] = ()) -> list[str]:
        k, exclude = _check_k(k), set(exclude)
        scores = self.scores(history_query(history, self.include_assistant))
        matched = [i for i in np.argsort(-scores, kind="stable") if scores[i] > 0]
        return _fill([self.ids[i] for i in matched], self.fallback, k, exclude)


class DenseRecommender:
    """MiniLM text retrieval: the conversation's user turns against the index's text embeddings.

    Parameters
    ----------
    music_index : MusicIndex-like
        Anything with ``search_text(query, k, exclude) -> [(track_id, score)]``; its
        ``tracks`` and ``playlists`` (when present) give the popularity order that
        completes short rankings and answers an empty query.
    include_assistant : bool
        Add the assistant's earlier replies to the query.
    """

    name = "dense-minilm"

    def __init__(self, music_index, include_assistant: bool = False):
        if not callable(getattr(music_index, "search_text", None)):
            raise ValueError("DenseRecommender needs an index with a search_text(query, k, exclude) method")
        self.index = music_index
        self.include_assistant = include_assistant
        tracks = getattr(music_index, "tracks", None) or []
        self.fallback = popularity_order(tracks, getattr(music_index, "playlists", None)) if tracks else []

    def recommend(self, history: list[dict], k: int = 20, exclude: Iterable[str] = ()) -> list[str]:
        k, exclude = _check_k(k), set(exclude)
        query = history_query(history, self.include_assistant)
        hits = self.index.search_text(query, k=k, exclude=exclude) if query else []
        return _fill([tid for tid, _ in hits], self.fallback, k, exclude)
