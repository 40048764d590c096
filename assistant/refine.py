"""Refinements relative to what was played: "faster", "no vocals", "more like the second one".

The model proposes codes; these rules make sure the tracks shown actually move in the asked
direction relative to the reference track, using the measured descriptors.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from index.track import Track

from .facts import has_vocals as vocal_state
from .facts import year_of

ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "fifth": 4,
            "last": -1, "previous": -1, "that": -1, "this": -1}

# (pattern, descriptor, direction): direction +1 means "more than the reference".
_RELATIVE = [
    (r"\b(faster|quicker|speed (it )?up|more up-?tempo|higher tempo|pick up the pace)\b", "tempo_bpm", +1),
    (r"\b(slower|slow (it )?down|less fast|lower tempo|more laid[- ]back)\b", "tempo_bpm", -1),
    (r"\b(brighter|lighter|more sparkl\w*|more treble)\b", "brightness", +1),
    (r"\b(darker|warmer|gloomier|more somber|more sombre|murkier)\b", "brightness", -1),
    (r"\b(calmer|quieter|softer|more relaxed|more chill\w*|gentler|mellower|less intense|less energetic)\b", "energy", -1),
    (r"\b(more energetic|more energy|louder|more intense|heavier|harder|punchier|more upbeat|livelier)\b", "energy", +1),
]
_NO_VOCALS = r"\b(no vocals|without vocals|instrumental|no singing|without singing|no voice|no lyrics)\b"
_VOCALS = r"\b(with vocals|with singing|with lyrics|someone singing|sung|a singer|vocal)\b"
_SAME_ARTIST = r"\b(same (artist|composer|band)|more (by|from) (this|that|the same) (artist|composer|band)|more from them)\b"
_OTHER_ARTIST = r"\b(different|another|other|someone else|new) (artist|composer|band)\b|\bsomeone else\b"
_MORE_LIKE = r"\bmore like (the )?(?P<which>first|1st|second|2nd|third|3rd|fourth|fifth|last|previous|that|this)\b(?: one)?"
_MODE = r"\b(?P<mode>minor|major)[- ]key\b|\bin (a )?(?P<mode2>minor|major)\b"
# Absolute facts a request can pin down that word matching can't: a tempo number, a key, a decade.
_BPM = re.compile(r"\b(\d{2,3})\s*bpm\b", re.IGNORECASE)
# A capital letter, so that "a minor key" (an article) is not read as A minor.
_KEY = re.compile(r"\b([A-G])(#|♯|b|♭| sharp| flat)?\s+(major|minor)\b(?![-\s]key)")
_DECADE = re.compile(r"\b(1[5-9]|20)(\d)0s\b")
_PITCH = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
TEMPO_TOLERANCE = 0.06  # "around 120 BPM" is met from about 113 to 127


@dataclass
class Refinement:
    """What a user turn asks relative to earlier tracks."""

    relative: list[tuple[str, int]] = field(default_factory=list)  # (descriptor, +1/-1)
    vocals: bool | None = None
    same_artist: bool | None = None
    mode: str | None = None
    reference: int | None = None  # index into played tracks ("more like the second one"); None = last
    bpm: float | None = None  # "around 120 BPM"
    key: tuple[int, str] | None = None  # (pitch class, "major"/"minor") for "in D minor"
    decade: int | None = None  # 1990 for "from the 1990s"

    def __bool__(self) -> bool:
        return self.is_relative or any(v is not None for v in (self.bpm, self.key, self.decade))

    @property
    def is_relative(self) -> bool:
        """Whether the turn is asked against an earlier track (rather than by absolute facts alone)."""
        return bool(self.relative) or any(v is not None for v in (self.vocals, self.same_artist, self.mode, self.reference))


def parse_refinement(message: str) -> Refinement:
    """Read the refinement a message asks for; an empty Refinement when it asks none."""
    text = message.lower()
    r = Refinement()
    for pattern, descriptor, direction in _RELATIVE:
        if re.search(pattern, text):
            r.relative.append((descriptor, direction))
    if re.search(_NO_VOCALS, text):
        r.vocals = False
    elif re.search(_VOCALS, text):
        r.vocals = True
    if re.search(_SAME_ARTIST, text):
        r.same_artist = True
    elif re.search(_OTHER_ARTIST, text):
        r.same_artist = False
    m = re.search(_MODE, text)
    if m:
        r.mode = m.group("mode") or m.group("mode2")
    m = re.search(_MORE_LIKE, text)
    if m:
        r.reference = ORDINALS[m.group("which")]
    m = _BPM.search(message)
    if m and 30 <= int(m.group(1)) <= 300:
        r.bpm = float(m.group(1))
    m = _KEY.search(message)
    if m:
        r.key = (_pitch_class(m.group(1), m.group(2)), m.group(3))
    m = _DECADE.search(message)
    if m:
        r.decade = int(m.group(1) + m.group(2) + "0")
    return r


def _pitch_class(letter: str, accidental: str | None) -> int:
    shift = {"#": 1, "♯": 1, " sharp": 1, "b": -1, "♭": -1, " flat": -1}.get(accidental or "", 0)
    return (_PITCH[letter.upper()] + shift) % 12


def tonic_and_mode(track: Track) -> tuple[int, str] | None:
    """A track's measured key as (pitch class, mode), or None when it has no readable key."""
    m = _KEY.fullmatch(str(track.descriptors.get("key") or "").strip())
    return (_pitch_class(m.group(1), m.group(2)), m.group(3)) if m else None


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
    if reference is None:
        return True
    if refinement.same_artist is not None and reference.artist:
        if (candidate.artist == reference.artist) != refinement.same_artist:
            return False
    for descriptor, direction in refinement.relative:
        a, b = candidate.descriptors.get(descriptor), reference.descriptors.get(descriptor)
        if a is None or b is None:
            return False
        margin = 0.03 * abs(b) if descriptor == "tempo_bpm" else 0.02  # a step people can hear
        if direction * (float(a) - float(b)) <= margin:
            return False
    return True


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


def reference_track(played: Sequence[str], refinement: Refinement) -> str | None:
    """The played track a refinement is relative to: the named ordinal, else the last one."""
    if not played:
        return None
    i = -1 if refinement.reference is None else refinement.reference
    if i >= len(played):
        i = -1
    return played[i]
