"""Recommender baselines for evaluation: random, popularity, BM25 and dense text retrieval.

Every baseline answers the same question as the assistant: given the turns of
a conversation so far, rank ``k`` track ids. The evaluator passes the tracks
already played in ``exclude``; every recommender leaves them out.

The text baselines query with the user turns of the history, most recent
first (so that a truncating encoder keeps the latest request), then the
title, artist and tags of the tracks the earlier turns played: the same
history the assistant ranks from. When the
query gives nothing to rank by (no words the catalog knows, or fewer hits than
``k``), the list is completed in popularity order, so every system returns a
full ranking and is scored on equal terms.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Iterable, Protocol, runtime_checkable

from index.lexical import LexicalIndex, history_query
from index.track import Track


@runtime_checkable
class Recommender(Protocol):
    """Anything that ranks tracks for the next assistant turn."""

    name: str

    def recommend(self, history: list[dict], k: int = 20, exclude: Iterable[str] = ()) -> list[str]:
        """Return up to ``k`` track ids, best first, none of them in ``exclude``."""
        ...


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


class BM25Recommender:
    """BM25 over each track's text (``index.lexical``) against the conversation's user turns.

    Parameters
    ----------
    tracks : list of Track
        The catalog.
    playlists : dict or None
        For the popularity order that completes short rankings; None uses ``track.playlists``.
    include_assistant : bool
        Add the assistant's earlier replies to the query.
    with_played : bool
        Add the earlier turns' tracks (title, artist, tags) to the query, so the baseline sees
        the same history as the assistant does.
    """

    name = "bm25"

    def __init__(self, tracks: list[Track], playlists: dict[str, list[str]] | None = None,
                 include_assistant: bool = False, with_played: bool = True):
        if not tracks:
            raise ValueError("BM25Recommender needs at least one track")
        self.lexical = LexicalIndex(tracks)
        self.include_assistant = include_assistant
        self.catalog = {t.id: t for t in tracks} if with_played else None
        self.fallback = popularity_order(tracks, playlists)

    def recommend(self, history: list[dict], k: int = 20, exclude: Iterable[str] = ()) -> list[str]:
        k, exclude = _check_k(k), set(exclude)
        query = history_query(history, self.include_assistant, self.catalog)
        matched = self.lexical.search(query, k=len(self.lexical.ids), exclude=exclude)
        return _fill([tid for tid, _ in matched], self.fallback, k, exclude)


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
    with_played : bool
        Add the earlier turns' tracks (title, artist, tags) to the query.
    """

    name = "dense-minilm"

    def __init__(self, music_index, include_assistant: bool = False, with_played: bool = True):
        if not callable(getattr(music_index, "search_text", None)):
            raise ValueError("DenseRecommender needs an index with a search_text(query, k, exclude) method")
        self.index = music_index
        self.include_assistant = include_assistant
        tracks = getattr(music_index, "tracks", None) or []
        self.catalog = {t.id: t for t in tracks} if with_played else None
        self.fallback = popularity_order(tracks, getattr(music_index, "playlists", None)) if tracks else []

    def recommend(self, history: list[dict], k: int = 20, exclude: Iterable[str] = ()) -> list[str]:
        k, exclude = _check_k(k), set(exclude)
        query = history_query(history, self.include_assistant, self.catalog)
        hits = self.index.search_text(query, k=k, exclude=exclude) if query else []
        return _fill([tid for tid, _ in hits], self.fallback, k, exclude)
