"""What a track's stored facts say: its measured tempo, whether it is sung, its year.

Shared by the conversation synthesizer (which only writes a request that is true of the
track) and the live refinement (which checks that the tracks shown move the asked way), so
the two read a track the same way; the words' thresholds are ``index.vocabulary``'s.
"""
from __future__ import annotations

import re

from index.track import Track
from index.vocabulary import number, vocal_state


def descriptor_value(d: dict, key: str) -> float | None:
    """``d[key]`` as a float, or None when it is missing, not a number, or NaN."""
    return number(d.get(key))


def tempo_of(track: Track) -> float | None:
    """Measured tempo in BPM, or None."""
    bpm = descriptor_value(track.descriptors, "tempo_bpm")
    return bpm if bpm and bpm > 0 else None


def has_vocals(track: Track) -> bool | None:
    """True (clearly sung), False (clearly instrumental) or None (unclear).

    The measured ``vocals`` descriptor decides when present (``index.vocabulary.vocal_state``);
    otherwise an "instrumental" tag says False and lyrics text says True.
    """
    v = descriptor_value(track.descriptors, "vocals")
    if v is not None:
        return vocal_state(v)
    tags = {t.lower() for t in track.tags}
    if "instrumental" in tags:
        return False
    return True if track.lyrics.strip() else None


def year_of(track: Track) -> int | None:
    """The track's year as a number (the first four digits of ``year``), or None."""
    m = re.match(r"\s*(\d{4})", str(track.year or ""))
    return int(m.group(1)) if m else None
