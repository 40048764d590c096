"""Refinements relative to what was played: "faster", "no vocals", "more like the second one".

``assistant.request.read_request`` reads them from a message; the checks here make sure the
tracks shown move the asked way relative to the reference track, by the measured descriptors
and the steps of ``index.vocabulary`` (the same the conversation synthesizer uses).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from index import vocabulary
from index.track import Track

from .facts import has_vocals as vocal_state
from .facts import year_of

TEMPO_TOLERANCE = 0.06  # "around 120 BPM" is met from about 113 to 127


@dataclass
class Refinement:
    """What a user turn asks relative to earlier tracks."""

    relative: list[tuple[str, int]] = field(default_factory=list)  # (descriptor, +1/-1)
    vocals: bool | None = None
    same_artist: bool | None = None
    artist_name: str | None = None  # "more Scott Joplin": a catalog artist, by name
    avoid_artist: str | None = None  # "no more Bach"
    mode: str | None = None
    reference: int | None = None  # a card of the last reply (0 first, -1 last); None: the one reacted to
    from_session: bool = False  # ``reference`` counts the whole session ("the very first track")
    bpm: float | None = None  # "around 120 BPM"
    key: tuple[int, str] | None = None  # (pitch class, "major"/"minor") for "in D minor"
    key_name: str | None = None  # the key as written ("F# major")
    decade: int | None = None  # 1990 for "from the 1990s"
    feel: dict[str, str] = field(default_factory=dict)  # descriptor -> plain word wanted ("energy": "calm")
    content: list[str] = field(default_factory=list)  # catalog tags named ("piano"), ahead of ``feel``

    def __bool__(self) -> bool:
        """Whether the turn asks anything the shown tracks must satisfy (``feel`` and ``content``
        only order them)."""
        return self.is_relative or any(v is not None for v in (self.bpm, self.key, self.decade, self.artist_name,
                                                               self.avoid_artist))

    @property
    def is_relative(self) -> bool:
        """Whether the turn is asked against an earlier track (rather than by absolute facts alone)."""
        return bool(self.relative) or any(v is not None for v in (self.vocals, self.same_artist, self.mode, self.reference))

    def describe(self) -> str:
        """The constraints in words ("faster, without vocals"), for a reply that says what it did."""
        parts = [vocabulary.comparative(d, s) for d, s in self.relative]
        if self.vocals is not None:
            parts.append("with vocals" if self.vocals else "without vocals")
        if self.same_artist is not None:
            parts.append("by the same artist" if self.same_artist else "by another artist")
        if self.artist_name:
            parts.append(f"by {self.artist_name}")
        if self.avoid_artist:
            parts.append(f"not by {self.avoid_artist}")
        if self.key_name or self.mode:
            parts.append(f"in {self.key_name}" if self.key_name else f"in a {self.mode} key")
        if self.bpm is not None:
            parts.append(f"around {self.bpm:.0f} BPM")
        if self.decade is not None:
            parts.append(f"from the {self.decade}s")
        return ", ".join(parts)


def parse_refinement(message: str, words=None) -> Refinement:
    """Read the refinement a message asks for (``assistant.request.read_request``)."""
    from .request import read_request

    return read_request(message, words)


def tonic_and_mode(track: Track) -> tuple[int, str] | None:
    """A track's key (the library's, else measured) as (pitch class, mode), or None when it has none."""
    return vocabulary.parse_key(str(track.descriptors.get("key") or ""))


def has_vocals(track: Track) -> bool:
    """Clearly sung (the same rule the training conversations use); unclear counts as not sung."""
    return vocal_state(track) is True


def satisfies(candidate: Track, reference: Track | None, refinement: Refinement) -> bool:
    """Whether a candidate fulfils every constraint of the refinement relative to the reference."""
    if refinement.vocals is not None and vocal_state(candidate) is not refinement.vocals:
        return False
    if refinement.mode and candidate.descriptors.get("mode") != refinement.mode:
        return False
    if refinement.bpm is not None:
        bpm = candidate.descriptors.get("tempo_bpm")
        if not bpm or abs(float(bpm) - refinement.bpm) > TEMPO_TOLERANCE * refinement.bpm:
            return False
    if refinement.key is not None and tonic_and_mode(candidate) != refinement.key:
        return False
    if refinement.decade is not None:
        year = year_of(candidate)
        if year is None or not refinement.decade <= year < refinement.decade + 10:
            return False
    if refinement.artist_name and _artist(candidate) != _artist_name(refinement.artist_name):
        return False
    if refinement.avoid_artist and _artist(candidate) == _artist_name(refinement.avoid_artist):
        return False
    if reference is None:
        return True
    if refinement.same_artist is not None and reference.artist:
        if (_artist(candidate) == _artist(reference)) != refinement.same_artist:
            return False
    for descriptor, direction in refinement.relative:
        # The step a listener hears (index.vocabulary), the one the training conversations use.
        if vocabulary.audible_change(descriptor, reference.descriptors.get(descriptor),
                                     candidate.descriptors.get(descriptor)) != direction:
            return False
    return True


def _artist(track: Track) -> str:
    return _artist_name(track.artist)


def _artist_name(name: str) -> str:
    return " ".join(str(name or "").lower().split())


def apply_refinement(candidates: Sequence[str], tracks: dict[str, Track], reference: Track | None,
                     refinement: Refinement) -> list[str]:
    """Candidates (best first) that satisfy the refinement, in their order, then the rest.

    Keeping the rest after them means a refinement never empties the list; the caller can tell
    how many satisfied it with ``satisfies``.
    """
    if not refinement:
        return list(candidates)
    good = [c for c in candidates if satisfies(tracks[c], reference, refinement)]
    rest = [c for c in candidates if c not in set(good)]
    return good + rest


def reference_track(history: Sequence[dict], refinement: Refinement) -> str | None:
    """The track a refinement in the turn after ``history`` is relative to.

    The person reacts to the reply on screen: "faster" is against its first card, "the second
    one" is its second card. "The very first track" counts over the whole session. An ordinal
    past the end names the last card. None before any reply with tracks.
    """
    from .conversations import last_shown, played_tracks

    pool = played_tracks(history) if refinement.from_session else last_shown(history)
    if not pool:
        return None
    i = 0 if refinement.reference is None else refinement.reference
    return pool[i] if -len(pool) <= i < len(pool) else pool[-1]
