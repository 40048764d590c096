"""A person's conversation: what the chat keeps between turns, and what a turn gives back.

A ``Session`` is all a turn reads of the past (its history, the tracks played and rejected, an
uploaded song, the model's cache); a ``Reply`` is what one turn says and plays, and a streamed
turn sends ``TurnUpdate``s on the way to it.

    session = Session()
    record(session, "something calm", reply)
    reference_for(session, read_request("faster", words), index.by_id)
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from index.track import Track

from .conversations import last_shown
from .generation import DecodeState
from .refine import Refinement, reference_track


@dataclass
class TrackCard:
    """A recommended track as shown to a person."""

    id: str
    title: str
    artist: str
    album: str
    year: str
    reason: str
    audio_path: str | None
    score: float


@dataclass
class UploadedSong:
    """A song the person uploaded: its measured analysis and its audio embedding (None when
    the embedding failed)."""

    name: str
    path: str
    analysis: dict[str, Any]
    audio_vector: np.ndarray | None


@dataclass
class Reply:
    """What the assistant says and plays for one user turn.

    ``text`` is what is said; the cards in ``tracks`` are for each front end to render.
    ``source`` tells where the tracks came from: "model" (the generated music block, fused
    with the engine's searches), "engine" (those searches alone: no model loaded, or a turn
    whose ranking does not read the block, which ``notes`` explain),
    "dense-fallback" (nothing else matched, or the model wrote no usable block: text search
    over the conversation), "upload" (nearest to an uploaded song), "track-codes" (nearest to a
    card the person asked for more like), or "none" (no tracks).
    ``generated`` is what the model wrote, ``own_words`` whether ``text`` opens with it, and
    ``dropped`` the sentences of it that the grounding check removed.
    """

    text: str
    tracks: list[TrackCard] = field(default_factory=list)
    ranked: list[str] = field(default_factory=list)
    source: str = "none"
    generated: str = ""
    notes: list[str] = field(default_factory=list)
    own_words: bool = False
    dropped: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # files offered for download (a melody as MIDI)


@dataclass
class TurnUpdate:
    """One step of a streamed turn: the text so far, the cards once chosen, the reply at the end."""

    text: str
    tracks: list[TrackCard] | None = None
    reply: Reply | None = None


@dataclass
class Session:
    """One person's conversation: nothing in it is shared with another session."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    history: list[dict] = field(default_factory=list)
    played: list[str] = field(default_factory=list)
    rejected: set[str] = field(default_factory=set)
    upload: UploadedSong | None = None
    # What "faster" etc. is relative to until the next reply: a card the person played or
    # liked, or an uploaded song; None means the first card of the last reply.
    reference: Track | None = None
    decode: DecodeState = field(default_factory=DecodeState, repr=False)  # the model's cache for this session


def reference_for(session: Session, refinement: Refinement, by_id: Mapping[str, Track]) -> Track | None:
    """The track a refinement in the session's next turn is relative to (``refine.reference_track``:
    "the second one", else the last reply's first card), or the card the person played, liked or
    uploaded since the last reply."""
    if refinement.reference is None and session.reference is not None:
        return session.reference
    ref_id = reference_track(session.history, refinement)
    return by_id.get(ref_id) if ref_id else session.reference


def first_and_last(session: Session, by_id: Mapping[str, Track]) -> tuple[Track | None, Track | None]:
    """The session's first played track and the last reply's first card: what "the first one"
    and "the last one" of a reply's "closer to the first one than to the last one" are."""
    shown = last_shown(session.history)
    return (by_id.get(session.played[0]) if session.played else None,
            by_id.get(shown[0]) if shown else None)


def record(session: Session, message: str, reply: Reply) -> None:
    """Add the turn to the session: the message, the reply and its cards, which now count as played."""
    shown = [c.id for c in reply.tracks]
    session.history.append({"role": "user", "content": message})
    session.history.append({"role": "assistant", "content": reply.text, "tracks": shown})
    session.played.extend(t for t in shown if t not in session.played)
    if shown:
        session.reference = None
