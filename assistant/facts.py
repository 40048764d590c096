"""What a track's stored facts say: its measured tempo, whether it is sung, its year, and
which words describe it ("slow", "calm", "dark": ``false_descriptions``).

Shared by the conversation synthesizer (which only writes a request that is true of the
track), the live refinement (which checks that the tracks shown move the asked way) and the
grounding of replies, so all read a track the same way; the words' thresholds are
``index.vocabulary``'s.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from index.track import Track
from index.vocabulary import in_band, number, vocal_state


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


def mode_of(track: Track) -> str | None:
    """"major", "minor" or None, from the ``mode`` descriptor or else the key."""
    for source in (track.descriptors.get("mode"), track.descriptors.get("key")):
        s = str(source or "").lower()
        if "minor" in s or s == "min":
            return "minor"
        if "major" in s or s == "maj":
            return "major"
    return None


def year_of(track: Track) -> int | None:
    """The track's year as a number (the first four digits of ``year``), or None."""
    m = re.match(r"\s*(\d{4})", str(track.year or ""))
    return int(m.group(1)) if m else None


# The words that describe each band of a measured descriptor (``index.vocabulary``), as the
# synthesizer's replies use them; a reply's use of one is a claim about the track.
BAND_WORDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("tempo_bpm", "slow"): ("slow", "unhurried", "slow-paced"),
    ("tempo_bpm", "fast"): ("fast", "uptempo", "quick"),
    ("tempo_bpm", "moderate tempo"): ("mid-tempo", "medium-paced"),
    ("energy", "calm"): ("calm", "gentle", "mellow", "low-key"),
    ("energy", "energetic"): ("energetic", "high-energy", "intense", "lively"),
    ("brightness", "dark"): ("dark", "dark-sounding"),
    ("brightness", "bright"): ("bright", "bright-sounding"),
}
_BAND_OF = {word: band for band, words in BAND_WORDS.items() for word in words}
_BAND_WORD = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _BAND_OF), key=len, reverse=True)) + r")(?=\W|$)")
# A mode said of the track ("a minor-key piece", "in a major key", "an electronic, minor piece",
# and the mode of a key, "C minor"), read as soon as the word is whole, so a reply that may not say
# "major-key" cannot go on to "major-piano" instead.
_MODE_WORD = re.compile(r"\b(major|minor)(?!\w)")
# A decade ("from the 1990s"): the track's year must lie in it ("the 2012s" is none).
_DECADE = re.compile(r"\b(\d{4})s\b")
# "not fast", "isn't dark", "as fast as", "less calm", "too slow": no claim that the track is so.
_NOT_A_DESCRIPTION = re.compile(r"(?:\b(?:not|never|no|as|less|more|too|so|nor)|n't)\s+$")


def false_descriptions(text: str, track: Track) -> list[str]:
    """The words of ``text`` (lowercased, names taken out) that put ``track`` in a band ("slow",
    "calm", "dark", ...) its measurements do not, and that none of its tags or its genre says;
    or that give it a mode ("minor-key", "a minor piece") or a decade ("from the 1990s") that is not
    its own.

    A word is read as soon as it is written whole, so a sentence being written cannot stop on it
    (one on its way to "darker" as " dark" and "er" goes with it); a word after "not", "as",
    "too", ... claims nothing.

    >>> t = Track(id="m", tags=["romantic"], descriptors={"tempo_bpm": 185.0, "brightness": 0.7})
    >>> false_descriptions("a slow, romantic, dark piece.", t), false_descriptions("a fast, bright one.", t)
    (['slow', 'dark'], [])
    >>> m = Track(id="k", year="1994", descriptors={"key": "C# minor", "mode": "minor"})
    >>> false_descriptions("a major-key piece from the 1980s", m), false_descriptions("a minor-key piece from the 1990s", m)
    (['major', '1980s'], [])
    >>> false_descriptions("a piece from the 1994s", m)
    ['1994s']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    said = {w for tag in [*track.tags, track.genre] for w in re.findall(r"[\w-]+", tag.lower())}
    false = []
    for m in _BAND_WORD.finditer(text):
        word = m.group(1)
        descriptor, band = _BAND_OF[word]
        if _NOT_A_DESCRIPTION.search(text[:m.start()]) or word in said or word.split("-")[0] in said:
            continue
        if not in_band(descriptor, band, track.descriptors.get(descriptor)):
            false.append(word)
    for m in _MODE_WORD.finditer(text):
        if not _NOT_A_DESCRIPTION.search(text[:m.start()]) and mode_of(track) != m.group(1):
            false.append(m.group(0))
    year = year_of(track)
    for m in _DECADE.finditer(text):
        if not _NOT_A_DESCRIPTION.search(text[:m.start()]) and (year is None or year // 10 * 10 != int(m.group(1))):
            false.append(m.group(0))
    return false


def _tag_owner(track: Track):
    """``owns(tag)``: whether a lowercased tag is ``track``'s, one of its tags or its genre, or made
    of their words ("romantic" of "romantic classical")."""
    own = {tag.lower() for tag in [*track.tags, track.genre] if tag}
    own_words = {w for tag in own for w in re.findall(r"[\w-]+", tag)}
    return lambda tag: tag in own or all(w in own_words for w in re.findall(r"[\w-]+", tag))


def unfounded_tags(text: str, track: Track, catalog_tags: Sequence[str]) -> list[str]:
    """The catalog's tags that ``text`` (lowercased, names taken out) says and ``track`` does not
    have: "a piano piece" of an orchestral track. A tag counts as the track's when it is one of its
    tags or its genre, or when each of its words is in them ("romantic" of "romantic classical").
    Like ``false_descriptions``, a tag is read as soon as it is written whole.

    >>> t = Track(id="b", tags=["romantic classical", "orchestral"])
    >>> unfounded_tags("a romantic, orchestral piano piece", t, ["piano", "orchestral", "romantic", "violin"])
    ['piano']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    owns = _tag_owner(track)
    out = []
    for tag in sorted({t.lower() for t in catalog_tags if t.strip()}, key=len, reverse=True):
        if owns(tag):
            continue
        if re.search(r"(?<![\w-])" + re.escape(tag) + r"(?![\w-])", text) and \
                not any(tag in o for o in out):  # "dark ambient" said is not "ambient" said again
            out.append(tag)
    return out


def false_start(text: str, track: Track, catalog_tags: Sequence[str]) -> str | None:
    """The word ``text`` (lowercased, names taken out) ends part-way through, when every band word
    or catalog tag it can still become is false of ``track`` (``false_descriptions``,
    ``unfounded_tags``): "mid-tem" of a card at 129 BPM, which can only go on to a false
    "mid-tempo" or to junk. None when it is no such start, or is one of a word that holds.

    >>> t = Track(id="f", tags=["electronic"], descriptors={"tempo_bpm": 129.0})
    >>> false_start("an electronic, mid-tem", t, ["electronic", "orchestral"]), false_start("a fa", t, [])
    ('mid-tem', None)
    >>> false_start("an orches", t, ["electronic", "orchestral"]), false_start("an elec", t, ["electronic"])
    ('orches', None)
    >>> false_start("an electronic", t, ["electronic", "electronic rock"])  # whole, and its own

    """
    part = re.search(r"(?<![\w-])[\w-]{3,}$", text)
    if part is None:
        return None
    start = part.group()
    tags = {t.lower() for t in catalog_tags if t.strip()}
    words = [w for w in (*_BAND_OF, *tags) if w.startswith(start)]  # itself too
    if not words:
        return None
    # a word alone is an unfounded tag exactly when it is a catalog tag the track does not own:
    # asked per candidate token while a reply is written, so no search over the whole catalog
    owns = _tag_owner(track)
    if any(not false_descriptions(f"a {w} ", track) and (w not in tags or owns(w)) for w in words):
        return None
    return start
