"""What the words people describe music with mean in measured values.

One vocabulary for every part that turns measurements into words or words into checks: the
audio tags of the index, the conversation synthesizer, the chat's refinement checks and card
comparisons, and the answers about an uploaded song. A card that says "fast" and a request
for "something faster" are then read by the same numbers.

Two kinds of meaning are kept:

* **Bands**: where a plain word holds ("fast" is at least ``FAST_FROM_BPM``; "calm" is an
  energy below ``LOW_LEVEL``). Between the bands no word is given.
* **Steps**: the smallest difference worth a comparative ("faster" is at least ``TEMPO_STEP``
  more tempo, about what a listener notices; "darker" is ``LEVEL_STEP`` less brightness on
  its 0..1 scale). Smaller differences are within measurement noise and are never claimed.

Descriptors are those of ``index.audio.AudioFeatures.descriptors``: ``tempo_bpm``,
``energy``, ``brightness`` and ``vocals`` (all but tempo on 0..1), ``key`` and ``mode``.
"""
from __future__ import annotations

import math
import re

# ---- bands -------------------------------------------------------------------------------------

SLOW_BELOW_BPM = 85.0
FAST_FROM_BPM = 125.0
LOW_LEVEL = 0.35    # energy below it is "calm"; brightness below DARK_BELOW is "dark"
HIGH_LEVEL = 0.65   # energy from it is "energetic", brightness from it "bright"
DARK_BELOW = 0.30
VOCALS_ON = 0.60    # the measured vocal likelihood from which a track counts as sung
VOCALS_OFF = 0.30   # ... and below which it counts as instrumental; between is unclear
KEY_CONFIDENCE_MIN = 0.5  # a key estimate below this is not named

# ---- steps -------------------------------------------------------------------------------------

TEMPO_STEP = 0.08   # "faster": at least 8 % more tempo
LEVEL_STEP = 0.10   # "calmer", "darker", ...: at least 0.10 on the 0..1 scale

# The comparative words for each direction of a descriptor: (more, less).
COMPARATIVES = {
    "tempo_bpm": ("faster", "slower"),
    "energy": ("more energetic", "calmer"),
    "brightness": ("brighter", "darker"),
}
DESCRIPTORS = tuple(COMPARATIVES)

_PITCH = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_ACCIDENTAL = {"#": 1, "♯": 1, "sharp": 1, "b": -1, "♭": -1, "flat": -1, "": 0}
_KEY = re.compile(r"^\s*([A-Ga-g])\s*(#|♯|b|♭|sharp|flat)?\s+(major|minor)\s*$")


def number(value) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, NaN, a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def tempo_word(bpm) -> str | None:
    """"slow", "moderate tempo" or "fast" for a tempo in BPM; None when unknown."""
    bpm = number(bpm)
    if not bpm or bpm <= 0:
        return None
    return "slow" if bpm < SLOW_BELOW_BPM else "fast" if bpm >= FAST_FROM_BPM else "moderate tempo"


def energy_word(energy) -> str | None:
    """"calm" or "energetic" for an energy on 0..1; None in between or when unknown."""
    e = number(energy)
    if e is None:
        return None
    return "calm" if e < LOW_LEVEL else "energetic" if e >= HIGH_LEVEL else None


def brightness_word(brightness) -> str | None:
    """"dark", "warm" or "bright" for a brightness on 0..1; None when unknown."""
    b = number(brightness)
    if b is None:
        return None
    return "dark" if b < DARK_BELOW else "bright" if b >= HIGH_LEVEL else "warm"


def vocal_state(vocals) -> bool | None:
    """True (sung), False (instrumental) or None (unclear or unknown) for a vocal likelihood."""
    v = number(vocals)
    if v is None:
        return None
    return True if v >= VOCALS_ON else False if v < VOCALS_OFF else None


def band_word(descriptor: str, value) -> str | None:
    """The plain word for ``value`` of ``descriptor`` ("tempo_bpm", "energy", "brightness")."""
    words = {"tempo_bpm": tempo_word, "energy": energy_word, "brightness": brightness_word}
    if descriptor not in words:
        raise ValueError(f"descriptor must be one of {sorted(words)}, got {descriptor!r}")
    return words[descriptor](value)


def in_band(descriptor: str, word: str, value) -> bool:
    """Whether the plain ``word`` ("fast", "calm", "dark", ...) holds of ``value``."""
    return band_word(descriptor, value) == word


def audible_change(descriptor: str, before, after) -> int:
    """+1 when ``after`` is audibly more than ``before``, -1 audibly less, 0 otherwise.

    Tempo is compared as a ratio (``TEMPO_STEP``), energy and brightness by difference
    (``LEVEL_STEP``); a missing value gives 0.
    """
    if descriptor not in COMPARATIVES:
        raise ValueError(f"descriptor must be one of {sorted(COMPARATIVES)}, got {descriptor!r}")
    a, b = number(before), number(after)
    if a is None or b is None:
        return 0
    if descriptor == "tempo_bpm":
        if a <= 0 or b <= 0:
            return 0
        return 1 if b > a * (1 + TEMPO_STEP) else -1 if b * (1 + TEMPO_STEP) < a else 0
    return 1 if b - a > LEVEL_STEP else -1 if a - b > LEVEL_STEP else 0


def comparative(descriptor: str, direction: int) -> str:
    """"faster" for ("tempo_bpm", +1), "darker" for ("brightness", -1), ..."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    return COMPARATIVES[descriptor][0 if direction > 0 else 1]


def parse_key(text: str) -> tuple[int, str] | None:
    """("D minor" -> (2, "minor")): a key name as (pitch class, mode), or None when it is not one."""
    m = _KEY.match(str(text or ""))
    if not m:
        return None
    return (_PITCH[m.group(1).lower()] + _ACCIDENTAL[m.group(2) or ""]) % 12, m.group(3)


_KEY_FIELD = re.compile(r"^\s*([A-Ga-g])\s*-?\s*(#|♯|b|♭|sharp|flat)?\s*(major|minor|maj|min|m)?\s*$", re.IGNORECASE)
_CAMELOT = re.compile(r"^\s*0?(\d{1,2})\s*([AaBb])\s*$")
# How a key of each pitch class is usually spelled (a Camelot code gives only the pitch class).
_SPELLING = {"major": ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"),
             "minor": ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")}


def key_label(text: str) -> str | None:
    """A key name written the one way the catalog states keys ("c sharp minor" -> "C# minor"),
    or None when ``text`` is not a key name with its mode.

    >>> key_label("bb major"), key_label("C sharp minor"), key_label("calm")
    ('Bb major', 'C# minor', None)
    """
    m = _KEY.match(str(text or ""))
    if not m:
        return None
    accidental = {"♯": "#", "sharp": "#", "♭": "b", "flat": "b"}.get(m.group(2) or "", m.group(2) or "")
    return f"{m.group(1).upper()}{accidental} {m.group(3)}"


def key_from_field(text: str) -> str | None:
    """The key a file's key field holds (ID3 ``TKEY``, ``INITIALKEY``), as ``key_label`` writes it.

    Taggers write it many ways: "Am", "F#m", "Ebmin", "C", "D-flat major", or the Camelot
    wheel's "8A" (A minor) to "12B" (E major). A letter alone is major; "o" (off key), an
    empty field and anything else give None.

    >>> [key_from_field(x) for x in ("Am", "F#", "Ebmin", "D-flat major", "8A", "1A", "o")]
    ['A minor', 'F# major', 'Eb minor', 'Db major', 'A minor', 'G# minor', None]
    """
    text = str(text or "").strip()
    camelot = _CAMELOT.match(text)
    if camelot:
        number, letter = int(camelot.group(1)), camelot.group(2).upper()
        if not 1 <= number <= 12:
            return None
        mode = "minor" if letter == "A" else "major"
        tonic = ((9 if mode == "minor" else 0) + 7 * (number - 8)) % 12  # 8A is A minor, 8B C major
        return f"{_SPELLING[mode][tonic]} {mode}"
    m = _KEY_FIELD.match(text)
    if not m:
        return None
    # "Bb" is B flat; a lone "b" after the letter cannot also be a mode.
    mode = "minor" if (m.group(3) or "").lower() in ("minor", "min", "m") else "major"
    accidental = m.group(2) or ""
    return key_label(f"{m.group(1)}{accidental.lower() if len(accidental) > 1 else accidental} {mode}")


def same_key(a: str, b: str) -> bool:
    """Whether two key names name the same key (enharmonics too: "C# minor" is "Db minor")."""
    ka, kb = parse_key(a), parse_key(b)
    return ka is not None and ka == kb


def decade_of(year) -> int | None:
    """The decade (1990) of a year given as a number or text ("1994", "1994-05-02"), or None."""
    m = re.match(r"\s*(\d{4})", str(year or ""))
    return int(m.group(1)) // 10 * 10 if m else None
