"""What a track's stored facts say: its measured tempo, whether it is sung, its year.

Shared by the conversation synthesizer (which only writes a request that is true of the
track) and the live refinement (which checks that the tracks shown move the asked way), so
the two read a track the same way.
"""
from __future__ import annotations

import math
import re

from index.track import Track

# Measured "vocals" (0..1) at or above VOCALS_ON is sung, at or below VOCALS_OFF instrumental.
VOCALS_ON, VOCALS_OFF = 0.6, 0.35


def descriptor_value(d: dict, key: str) -> float | None:
    """``d[key]`` as a float, or None when it is missing, not a number, or NaN."""
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)):
        return None
    return float(v)


def tempo_of(track: Track) -> float | None:
    """Measured tempo in BPM, or None."""
    bpm = descriptor_value(track.descriptors, "tempo_bpm")
    return bpm if bpm and bpm > 0 else None


def has_vocals(track: Track) -> bool | None:
    """True (clearly sung), False (clearly instrumental) or None (unclear).

    The measured ``vocals`` descriptor decides when present; otherwise an
    "instrumental" tag says False and lyrics text says True.
    """
    v = descriptor_value(track.descriptors, "vocals")
    if v is not None:
        return True if v >= VOCALS_ON else False if v <= VOCALS_OFF else None
    tags = {t.lower() for t in track.tags}
    if "instrumental" in tags:
        return False
    return True if track.lyrics.strip() else None


def year_of(track: Track) -> int | None:
    """The track's year as a number (the first four digits of ``year``), or None."""
    m = re.match(r"\s*(\d{4})", str(track.year or ""))
    return int(m.group(1)) if m else None
