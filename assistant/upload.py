"""Answers about an uploaded song, written only from its measured analysis.

Every number in these answers is read from the analysis dictionary; nothing is estimated here.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

from index.melody import OPENING_NOTES
from index.vocabulary import brightness_word, energy_word, tempo_word

# intent -> words that ask for it
_INTENTS: dict[str, str] = {
    "similar": r"\b(like (this|it|that)|similar|sounds? like|songs like|tracks like|more like (this|it) one)\b",
    "key": r"\b(key|tonality|tonal centre|tonal center|major or minor|scale)\b",
    "tempo": r"\b(tempo|bpm|how fast|how slow|speed|beats per minute)\b",
    "chords": r"\b(chords?|harmony|progression)\b",
    "loudness": r"\b(loud(ness)?|lufs|dynamic range|dynamics|volume|mastered)\b",
    "melody": r"\b(melody|melodic|range|highest note|lowest note|pitch)\b",
    "notes": r"\b(notes|first note|opening note|starting note|(what|which) note|tune go|transcri\w*)\b",
    "midi": r"\b(midi|\.mid)\b",
    "structure": r"\b(structure|sections?|parts|form|segments?|chorus|verse)\b",
    "meter": r"\b(time signature|meter|metre|waltz|3/4|4/4|6/8)\b",
    "vocals": r"\b(vocals?|singing|singer|voice|instrumental|lyrics)\b",
    "duration": r"\b(how long|duration|length)\b",
    "describe": r"\b(describe|tell me about|what is this|what's this|analy[sz]e|about this song|about it|summary|summari[sz]e)\b",
}


def detect_intents(message: str) -> set[str]:
    """The questions a message asks about an uploaded song (may be empty)."""
    text = message.lower()
    return {name for name, pattern in _INTENTS.items() if re.search(pattern, text)}


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def _chord_summary(chords: list[dict[str, Any]], top: int = 4) -> str | None:
    labels = [c["label"] for c in chords if c.get("label") not in (None, "N")]
    if not labels:
        return None
    durations: Counter = Counter()
    for c in chords:
        if c.get("label") not in (None, "N"):
            durations[c["label"]] += float(c["end"]) - float(c["start"])
    common = ", ".join(label for label, _ in durations.most_common(top))
    opening = " - ".join(labels[:6])
    return f"The most frequent chords are {common}; it opens {opening}."


def fact_sentences(a: dict[str, Any]) -> dict[str, str]:
    """One sentence per measured fact, keyed by intent."""
    s: dict[str, str] = {}
    s["duration"] = f"It lasts {_fmt_time(a['duration_s'])}" + (
        f" (I analysed the first {_fmt_time(a['analysed_seconds'])})." if a.get("truncated") else ".")
    if a.get("key"):
        s["key"] = f"It is in {a['key']} (key confidence {a.get('key_confidence', 0):.2f})."
    if a.get("tempo_bpm"):
        s["tempo"] = f"The tempo is about {a['tempo_bpm']:.0f} BPM ({tempo_word(a['tempo_bpm'])})."
    meter = a.get("time_signature")
    if isinstance(meter, dict):
        meter = meter.get("value") or meter.get("label")
    if meter:
        s["meter"] = f"The meter looks like {meter}."
    chords = _chord_summary(a.get("chords") or [])
    if chords:
        s["chords"] = chords
    if a.get("loudness_lufs") is not None:
        dr = a.get("dynamic_range_db")
        s["loudness"] = f"Integrated loudness is {a['loudness_lufs']:.1f} LUFS" + (
            f", with a dynamic range of {dr:.1f} dB." if dr is not None else ".")
    if a.get("melody_range"):
        s["melody"] = f"The melody spans {a['melody_range']}."
    notes = a.get("melody_notes") or []
    if notes:
        opening = " ".join(n["name"] for n in notes[:OPENING_NOTES])
        s["notes"] = (f"The melody opens {opening} (from {_fmt_time(notes[0]['start'])}; "
                      f"{len(notes)} notes in all).")
        s["midi"] = f"Here is its melody as a MIDI file: {len(notes)} notes, as measured."
    else:
        s["midi"] = "I found no clear melody in it, so there is no MIDI file to give."
    vocals = a.get("vocals") or {}
    if vocals:
        word = "has vocals" if vocals.get("present") else "sounds instrumental"
        s["vocals"] = f"It {word} (confidence {float(vocals.get('confidence', 0)):.2f}, {vocals.get('method', 'heuristic')})."
    segments = a.get("segments") or []
    if segments:
        starts = ", ".join(_fmt_time(seg["start"]) for seg in segments[1:7])
        s["structure"] = f"I hear {len(segments)} sections" + (f", with changes at {starts}." if starts else ".")
    return s


def _character(a: dict[str, Any]) -> str:
    words = []
    e, b, p = a.get("energy"), a.get("brightness"), a.get("percussiveness")
    if e is not None:  # the words and thresholds the catalog's tags use (index.vocabulary)
        words.append(energy_word(e) or "moderately energetic")
    if b is not None:
        words.append(brightness_word(b) or "warm")
    if p is not None:
        words.append("percussive" if p > 0.5 else "mostly tonal (little percussion)")
    return ", ".join(words)


def describe(a: dict[str, Any]) -> str:
    """A paragraph built from the facts."""
    s = fact_sentences(a)
    character = _character(a)
    parts = [s["duration"]]
    head = []
    if "key" in s:
        head.append(f"in {a['key']}")
    if "tempo" in s:
        head.append(f"at about {a['tempo_bpm']:.0f} BPM")
    if head:
        parts.append("This song is " + " ".join(head) + (f", and it sounds {character}." if character else "."))
    for k in ("meter", "chords", "melody", "vocals", "loudness", "structure"):
        if k in s:
            parts.append(s[k])
    return " ".join(parts)


def answer(a: dict[str, Any], intents: set[str]) -> str:
    """Answer the asked questions from the facts; a description when none is recognised."""
    s = fact_sentences(a)
    if "notes" in intents or "midi" in intents:
        intents = intents - {"melody"}  # "the first notes of the melody": the notes, not the range
    asked = [k for k in ("key", "tempo", "meter", "chords", "melody", "notes", "midi", "vocals", "loudness", "structure",
                         "duration") if k in intents]
    if not asked or "describe" in intents:
        return describe(a)
    lines = [s.get(k, f"I could not measure the {k} of this song reliably.") for k in asked]
    return " ".join(lines)
