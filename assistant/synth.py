"""Training and evaluation conversations synthesized from the catalog.

A session walks through an ordered sample of one playlist (or album, or
collection). Each user turn asks for the next track the way a person would:
from its tags, metadata, lyrics or measured audio facts, vaguely ("something
calm") or precisely ("orchestral, minor key, around 90 BPM"), and sometimes
relative to the track just played ("faster", "darker", "same artist"). A
relative request is only written when it is true: the next track is chosen
among the playlist's tracks for which the relation holds, by comparing their
descriptors. Each assistant turn names the track, says a few true things about
it, and lists its id in ``tracks``.

Output follows the ``conversations.jsonl`` contract: one conversation a line,
``{"id", "turns": [{"role", "content"[, "tracks"]}, ...]}``, plus the extra
conversation keys ``"playlist"`` (the session's source, None for a session outside
playlists), ``"neighbourhood"`` (for a session that walks the tracks most alike to one track,
that track's id) and, after splitting, ``"split"``. User
turns that refine carry ``"refinement"`` (the relation's name, see
:data:`REFINEMENTS`), and every synthesized user turn ``"asked"``: what its words pin down, as
``[kind, value]`` pairs (the facts drawn, an artist, a title, a lyric line or word), so the data
can be audited and ``bench/retrieval_ceiling.py`` can tell how many tracks a request allows.

Val and test sessions walk the playlists that the index holds out (``index.holdout``), so
nothing learned from the index or from training sessions comes from them; ``write_splits``
writes ``OUT/{train,val,test}/conversations.jsonl``. User turns are written from templates
(:class:`Wording`): training uses :data:`TRAINING_WORDING` only, and
``OUT/test-phrasing/conversations.jsonl`` repeats the test sessions in
:data:`HELD_OUT_WORDING`, words no training conversation uses.
"""
from __future__ import annotations

import math
import os
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from index import vocabulary
from index.track import Track

from .conversations import SPLITS, write_conversations
from .facts import BAND_WORDS, descriptor_value, has_vocals, mode_of, tempo_of, year_of

# What "fast", "calm", "faster", ... mean, and how different two tracks must be before a
# comparative is claimed, are index.vocabulary's: the same numbers the chat checks by.
LIKENESS_MARGIN = 0.05    # "more like the first one": closer to the first than to the last by this much
# A catalog whose playlists give fewer training turns than this gets sessions over neighbourhoods
# of alike tracks as well: a 61-track library without playlists otherwise gives 61 single-turn
# sessions, which a model learns by heart within minutes.
MIN_TRAINING_TURNS = 1000
NEIGHBOURHOOD_SIZE = 8    # a seed track and its 7 most alike

_STOPWORDS = frozenset(
    "a about above after again all also am an and any are as at be because been before being below between both "
    "but by can could did do does doing down during each few for from further had has have having he her here "
    "hers him his how i if in into is it its itself just let me more most my myself no nor not now of off on once "
    "only or other our out over own same she should so some such than that the their them then there these they "
    "this those through to too under until up very was we were what when where which while who whom why will "
    "with would you your yours yeah oh ooh ah la na hey gonna wanna got get just like know dont don't i'm it's "
    "you're can't won't ain't".split()
)
_KEY_RE = re.compile(r"^[A-Ga-g][#b♯♭]?\s+(major|minor)$")
_LRC_TIME_RE = re.compile(r"\[[0-9:.]+\]")


# --------------------------------------------------------------------------- facts about one track

class Fact:
    """One true statement about a track, in the three shapes a request can use.

    Parameters
    ----------
    kind : str
        What the fact is about: "tag", "genre", "tempo", "bpm", "key", "mode", "energy",
        "brightness", "vocals" or "era".
    short : str
        Terse form for list-like requests ("minor key", "around 90 BPM").
    adj : str or None
        Form that goes before a noun ("minor-key", "calm"); None when there is none.
    mod : str or None
        Form that goes after a noun ("in a minor key", "from the 1990s"); None when there is none.
    """

    __slots__ = ("kind", "short", "adj", "mod")

    def __init__(self, kind: str, short: str, adj: str | None = None, mod: str | None = None):
        if adj is None and mod is None:
            raise ValueError(f"fact {kind!r} needs an adjective or a modifier form")
        self.kind, self.short, self.adj, self.mod = kind, short, adj, mod

    def __repr__(self) -> str:
        return f"Fact({self.kind!r}, {self.short!r})"





def energy_of(track: Track) -> float | None:
    return descriptor_value(track.descriptors, "energy")


def brightness_of(track: Track) -> float | None:
    return descriptor_value(track.descriptors, "brightness")


def key_of(track: Track) -> str | None:
    key = str(track.descriptors.get("key") or "").strip()
    return key if _KEY_RE.match(key) else None


def _is_audio_tag(tag: str) -> bool:
    """Tags the audio analysis writes duplicate the descriptor facts; leave them to those."""
    t = tag.lower().strip()
    return bool(_KEY_RE.match(tag.strip())) or t in {
        "fast", "slow", "moderate", "mid-tempo", "medium tempo", "uptempo", "downtempo", "major key", "minor key",
        "major", "minor", "bright", "dark", "energetic", "high energy", "low energy", "percussive", "vocal",
        "vocals", "instrumental",
    }


def human_tags(track: Track) -> list[str]:
    """The track's tags less those that restate measured audio facts, de-duplicated, in order."""
    seen: set[str] = set()
    out = []
    for tag in track.tags:
        t = tag.strip()
        if t and not _is_audio_tag(t) and t.lower() not in seen and t.lower() != track.genre.lower():
            seen.add(t.lower())
            out.append(t)
    return out


# The words a request may use for a band of tempo or energy (a word listed twice is drawn twice as often).
TEMPO_WORDS = {"slow": ["slow", "slow", "unhurried", "slow-paced"], "fast": ["fast", "fast", "uptempo", "quick"],
               "moderate tempo": ["mid-tempo", "medium-paced"]}
ENERGY_WORDS = {"calm": ["calm", "gentle", "mellow", "low-key"], "energetic": ["energetic", "high-energy", "intense", "lively"]}


def track_facts(track: Track, rng: random.Random) -> list[Fact]:
    """Every true fact a request could use about ``track``, with wording drawn from ``rng``.

    Tempo, energy and brightness words are only given where the value lies inside the
    word's band (``index.vocabulary``); numbers are rounded and said with "around".
    """
    facts: list[Fact] = []
    for tag in human_tags(track):
        t = tag.lower()
        facts.append(Fact("tag", t, adj=t))
    if track.genre.strip():
        g = track.genre.strip().lower()
        facts.append(Fact("genre", g, adj=g))
    bpm = tempo_of(track)
    if bpm is not None:
        word = TEMPO_WORDS.get(vocabulary.tempo_word(bpm) or "")
        word = rng.choice(word) if word else None
        if word:
            facts.append(Fact("tempo", word, adj=word))
        about = int(5 * round(bpm / 5))
        facts.append(Fact("bpm", f"around {about} BPM", mod=rng.choice([f"at around {about} BPM", f"around {about} BPM"])))
    key, mode = key_of(track), mode_of(track)
    if key:
        facts.append(Fact("key", key, mod=f"in {key}"))
    if mode:
        facts.append(Fact("mode", f"{mode} key", adj=f"{mode}-key", mod=f"in a {mode} key"))
    energy = energy_of(track)
    if vocabulary.energy_word(energy) == "calm":
        w = rng.choice(ENERGY_WORDS["calm"])
        facts.append(Fact("energy", w, adj=w, mod=rng.choice(["with low energy", "with a relaxed feel"])))
    elif vocabulary.energy_word(energy) == "energetic":
        w = rng.choice(ENERGY_WORDS["energetic"])
        facts.append(Fact("energy", w, adj=w, mod=rng.choice(["with a lot of energy", "with plenty of drive"])))
    bright = brightness_of(track)
    if vocabulary.brightness_word(bright) == "dark":
        w = rng.choice(["dark", "dark-sounding", "deep, dark"])
        facts.append(Fact("brightness", "dark", adj=w, mod="with a dark sound"))
    elif vocabulary.brightness_word(bright) == "bright":
        w = rng.choice(["bright", "bright-sounding"])
        facts.append(Fact("brightness", "bright", adj=w, mod="with a bright sound"))
    vocals = has_vocals(track)
    if vocals is True:
        facts.append(Fact("vocals", "with vocals", mod=rng.choice(["with vocals", "with singing"])))
    elif vocals is False:
        facts.append(Fact("vocals", "instrumental", adj="instrumental", mod="without vocals"))
    year = year_of(track)
    if year:
        decade = f"{year // 10 * 10}s"
        era = rng.choice([f"from the {decade}", f"from the {decade}", f"from {year}"])
        facts.append(Fact("era", era.removeprefix("from the ").removeprefix("from "), mod=era))
    return facts


def allows(track: Track, kind: str, value: str) -> bool:
    """Whether a request that states ``[kind, value]`` (a user turn's ``"asked"`` pair) holds
    for ``track``: the same tag or genre, tempo band, rounded BPM, key, mode, energy or brightness
    word, vocals, decade or year, artist or title; a lyric line or word that its lyrics hold.
    A tag and a genre are read alike, as a person asking for "tracker music" means either."""
    value = str(value)
    if kind in ("tag", "genre"):
        return value.lower() in {t.strip().lower() for t in [*track.tags, track.genre]}
    if kind == "tempo":
        band = next((b for b, words in TEMPO_WORDS.items() if value in words), None)
        return band is not None and vocabulary.tempo_word(tempo_of(track)) == band
    if kind == "bpm":
        bpm = tempo_of(track)
        return bpm is not None and f"around {int(5 * round(bpm / 5))} BPM" == value
    if kind == "key":
        return key_of(track) == value
    if kind == "mode":
        return mode_of(track) is not None and f"{mode_of(track)} key" == value
    if kind == "energy":
        band = next((b for b, words in ENERGY_WORDS.items() if value in words), None)
        return band is not None and vocabulary.energy_word(energy_of(track)) == band
    if kind == "brightness":
        return vocabulary.brightness_word(brightness_of(track)) == value
    if kind == "vocals":
        return has_vocals(track) is (value == "with vocals")
    if kind == "era":
        year = year_of(track)
        return bool(year) and (str(year) == value if value.isdigit() else f"{year // 10 * 10}s" == value)
    if kind == "artist":
        return track.artist == value
    if kind == "title":
        return track.title == value
    if kind == "lyric line":
        return any(value in " ".join(line.split()) for line in lyric_lines(track))
    if kind == "lyric word":
        return value in lyric_theme_words(track)
    raise ValueError(f"unknown kind of request fact {kind!r}")


def lyric_lines(track: Track) -> list[str]:
    """Non-empty lyric lines, LRC time stamps removed."""
    lines = (_LRC_TIME_RE.sub("", ln).strip() for ln in track.lyrics.splitlines())
    return [ln for ln in lines if ln and not ln.startswith("[")]


def lyric_theme_words(track: Track) -> list[str]:
    """Content words of the lyrics, most frequent first (ties alphabetical)."""
    words = re.findall(r"[a-z][a-z']{3,}", " ".join(lyric_lines(track)).lower())
    counts = Counter(w for w in words if w not in _STOPWORDS)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def lyric_snippet(track: Track, rng: random.Random, max_words: int = 6) -> str | None:
    """A short run of words taken verbatim from one lyric line (3 to ``max_words`` words), or None."""
    lines = [ln for ln in lyric_lines(track) if len(ln.split()) >= 3]
    if not lines:
        return None
    words = rng.choice(lines).split()
    n = min(len(words), rng.randint(3, max_words))
    start = rng.randint(0, len(words) - n)
    return " ".join(words[start:start + n]).strip(" ,.;:!?\"'")


# --------------------------------------------------------------------------- refinements

def likeness(a: Track, b: Track) -> float:
    """How alike two tracks are: tag overlap plus closeness of their measured descriptors."""
    ta, tb = {t.lower() for t in a.tags}, {t.lower() for t in b.tags}
    tags = len(ta & tb) / len(ta | tb) if ta | tb else 0.0
    diffs = []
    for get, scale in ((tempo_of, 100.0), (energy_of, 1.0), (brightness_of, 1.0)):
        va, vb = get(a), get(b)
        if va is not None and vb is not None:
            diffs.append(min(1.0, abs(va - vb) / scale))
    ma, mb = mode_of(a), mode_of(b)
    if ma and mb:
        diffs.append(0.0 if ma == mb else 1.0)
    audio = 1.0 - sum(diffs) / len(diffs) if diffs else 0.0
    return tags + audio


def more_like(track: Track, a: Track | None, b: Track | None) -> bool:
    """Whether ``track`` is more like ``a`` than like ``b`` by more than ``LIKENESS_MARGIN``
    (:func:`likeness`); False where either is missing or both are one track."""
    if a is None or b is None or a.id == b.id:
        return False
    return likeness(track, a) > likeness(track, b) + LIKENESS_MARGIN


def _more(descriptor: str, sign: int):
    """The relation "audibly more (sign +1) or less (-1) ``descriptor`` than the previous track"."""
    def holds(prev: Track, cand: Track, first: Track) -> bool:
        return vocabulary.audible_change(descriptor, prev.descriptors.get(descriptor),
                                         cand.descriptors.get(descriptor)) == sign
    return holds


def _same_artist(prev: Track, cand: Track, first: Track) -> bool:
    return bool(prev.artist.strip()) and cand.artist.strip().lower() == prev.artist.strip().lower()


def _other_artist(prev: Track, cand: Track, first: Track) -> bool:
    return bool(prev.artist.strip() and cand.artist.strip()) and \
        cand.artist.strip().lower() != prev.artist.strip().lower()


def _like_first(prev: Track, cand: Track, first: Track) -> bool:
    return more_like(cand, first, prev)


class Refinement:
    """A request relative to the track just played, and the test that makes it true.

    Parameters
    ----------
    name : str
        The relation ("faster", "darker", ...).
    holds : callable
        ``holds(previous, candidate, first) -> bool``: whether the request is true of ``candidate``.
    asks : list of str
        User phrasings. ``{artist}`` is the previous track's artist.
    tells : list of str
        Assistant clauses stating the relation; may use ``{artist}``, ``{prev_artist}``, ``{bpm}``, ``{prev_bpm}``.
    met : callable, optional
        ``met(previous, candidate, first) -> bool``: whether a track shown in answer meets the
        request, when that asks less than ``holds`` (which also makes the request make sense:
        "no vocals this time" is only written after a sung track, but any instrumental track
        answers it). Default: ``holds``.
    """

    def __init__(self, name: str, holds, asks: list[str], tells: list[str], met=None):
        self.name, self.holds, self.asks, self.tells = name, holds, asks, tells
        self.met = met or holds


REFINEMENTS: dict[str, Refinement] = {r.name: r for r in [
    Refinement("faster", _more("tempo_bpm", +1),
               ["Something faster.", "Can you pick up the tempo?", "A bit quicker, please.", "Faster!",
                "That's a little slow for me. Something faster?", "Faster, please."],
               ["It's faster than the last one: about {bpm} BPM against {prev_bpm}."]),
    Refinement("slower", _more("tempo_bpm", -1),
               ["Something slower.", "Slow it down a little.", "Can we go slower?", "A slower one, please.",
                "Too fast. Something more relaxed in tempo?"],
               ["It's slower than the last one: about {bpm} BPM against {prev_bpm}."]),
    Refinement("brighter", _more("brightness", +1),
               ["Something brighter.", "Brighter sound, please.", "Less dark, more sparkle.",
                "Can you find something that sounds brighter?"],
               ["It sounds brighter than the previous track."]),
    Refinement("darker", _more("brightness", -1),
               ["Something darker.", "Darker sound, please.", "Can we go a bit darker?",
                "Less bright this time."],
               ["It has a darker sound than the previous track."]),
    Refinement("calmer", _more("energy", -1),
               ["Something calmer.", "Calmer, please.", "Tone it down a bit.", "Less intense, please.",
                "Can we relax the energy?"],
               ["It's calmer than the last one."]),
    Refinement("more energetic", _more("energy", +1),
               ["More energy!", "Something more energetic.", "Give me something with more drive.",
                "Can you turn up the intensity?"],
               ["It has more energy than the last one."]),
    Refinement("with vocals", lambda p, c, f: has_vocals(p) is False and has_vocals(c) is True,
               ["Now something with vocals.", "Can I get one with singing?", "I'd like vocals this time.",
                "Something with a voice in it."],
               ["This one has vocals."], met=lambda p, c, f: has_vocals(c) is True),
    Refinement("without vocals", lambda p, c, f: has_vocals(p) is True and has_vocals(c) is False,
               ["Something instrumental now.", "No vocals this time.", "Can you find one without singing?",
                "An instrumental one, please."],
               ["This one is instrumental."], met=lambda p, c, f: has_vocals(c) is False),
    Refinement("same artist", lambda p, c, f: _same_artist(p, c, f) and p.id != c.id,
               ["More by this artist.", "Another one from {artist}.", "What else do you have by them?",
                "I like {artist}. Play another."],
               ["Another one by {artist}."]),
    Refinement("other artist", _other_artist,
               ["Something by a different artist.", "Someone other than {artist} now.",
                "Another artist, please.", "Switch to a different artist."],
               ["This time it's {artist} rather than {prev_artist}."]),
    Refinement("like first", _like_first,
               ["More like the very first one.", "Go back to something like the first track.",
                "I preferred the very first one. Something closer to that?"],
               ["It's closer to the first track than to the last one."]),
]}


# --------------------------------------------------------------------------- wording

@dataclass(frozen=True)
class Wording:
    """The templates user turns are written with. Two families exist: :data:`TRAINING_WORDING`,
    which every training conversation uses, and :data:`HELD_OUT_WORDING`, which none does, so a
    test set written with it measures understanding of new words rather than recall of these.

    Placeholders: ``{x}`` a request phrase ("something calm"), ``{what}`` a phrase naming the artist,
    ``{artist}``, ``{title}``, ``{by}`` (" by Artist" or ""), ``{snippet}`` a lyric line, ``{word}`` a
    lyric word, ``{m}`` a fact after a noun ("in a minor key").
    """

    openers: tuple[str, ...]
    greetings: tuple[str, ...]
    nouns: tuple[str, ...]
    terse_endings: tuple[str, ...]
    artist_asks: tuple[str, ...]
    title_asks: tuple[str, ...]
    lyric_line_asks: tuple[str, ...]
    lyric_word_asks: tuple[str, ...]
    extras: tuple[str, ...]
    refinements: dict[str, tuple[str, ...]]


TRAINING_WORDING = Wording(
    openers=("Play {x}.", "Can you find {x}?", "I'm in the mood for {x}.", "Looking for {x}.", "Recommend {x}, please.",
             "Got {x}?", "Put on {x}.", "I want to hear {x}.", "Could you play {x}?", "Any suggestions for {x}?",
             "I'd love {x} right now.", "Find me {x}."),
    greetings=("Hi! ", "Hey! ", "Hello. ", "Hi there! "),
    nouns=("track", "piece", "tune"),
    terse_endings=("", ", please", "?"),
    artist_asks=("Play {what}.", "Anything by {artist}?", "I'd like to hear {what}.", "Do you have {what}?"),
    title_asks=('Can you play "{title}"{by}?', 'Play "{title}"{by}.', 'I\'m looking for "{title}"{by}.'),
    lyric_line_asks=('The one that goes "{snippet}".', 'Find the song with the line "{snippet}".',
                     'What\'s the song with the words "{snippet}"?'),
    lyric_word_asks=("A song that mentions {word}.", 'Something with "{word}" in the lyrics.',
                     "I want lyrics that mention {word}.", 'Play a song where they sing the word "{word}".'),
    extras=("Ideally {m}.", "Maybe {m}?", "Preferably {m}."),
    refinements={name: tuple(r.asks) for name, r in REFINEMENTS.items()},
)

# Written once, before any model was scored on it; never used to train.
HELD_OUT_WORDING = Wording(
    openers=("Queue up {x}.", "I need {x} right now.", "Let's hear {x}.", "Please suggest {x}.", "Could I get {x}?",
             "Show me {x}.", "I'm after {x}.", "Any chance of {x}?"),
    greetings=("Good evening. ", "Hiya! ", "Morning! "),
    nouns=("number", "recording", "composition"),
    terse_endings=(", thanks", " - anything?", " if you have it"),
    artist_asks=("Queue up {what}.", "I'm after {what}.", "What do you have from {artist}?", "Is there {what} in here?"),
    title_asks=('Is "{title}"{by} in the catalog?', 'Put "{title}"{by} on for me.', 'I want "{title}"{by}.'),
    lyric_line_asks=('Which track has the lyric "{snippet}"?', 'I remember a line: "{snippet}". Which song is it?',
                     'There is a song that sings "{snippet}"; do you have it?'),
    lyric_word_asks=("A song about {word}.", "Lyrics about {word}, please.", "Something whose words are about {word}."),
    extras=("If possible {m}.", "Bonus points if it's {m}.", "Something {m} would be nice."),
    refinements={
        "faster": ("Speed things up a bit.", "Could the next one be quicker?", "Something with a higher tempo.",
                   "Up the pace, please."),
        "slower": ("Take the tempo down a notch.", "Could the next one be less rushed?", "Something at a lower tempo.",
                   "Ease off the pace, please."),
        "brighter": ("Something with a lighter, brighter tone.", "More treble and shine, please.",
                     "Could the next one sound less murky?"),
        "darker": ("Something moodier and darker in tone.", "A gloomier sound, please.",
                   "Could the next one sound less shiny?"),
        "calmer": ("Something more laid-back.", "Could we bring the energy down?", "Gentler, please."),
        "more energetic": ("Something livelier.", "Pump it up a little.", "Could the next one be punchier?"),
        "with vocals": ("Now a track where someone sings.", "Something with a singer, please.",
                        "Could the next one have a vocal part?"),
        "without vocals": ("Now a track nobody sings on.", "Just instruments this time.",
                           "Could the next one be purely instrumental?"),
        "same artist": ("Stay with {artist} for another.", "Is there more from {artist}?", "Same artist again, please."),
        "other artist": ("Not {artist} this time.", "Let's hear a different band or composer.", "Anyone besides {artist}?"),
        "like first": ("Back toward the very first track, please.", "Closer to what you played at the start.",
                       "Return to the feel of the opening track."),
    },
)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _join(items: Sequence[str], last: str = " and ") -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + last + items[-1]


def _pick_facts(facts: list[Fact], n: int, rng: random.Random) -> list[Fact]:
    """Up to ``n`` facts, at most two tags, never two facts that say the same thing twice."""
    redundant = {"key": {"mode"}, "mode": {"key"}, "tempo": {"bpm"}, "bpm": {"tempo"}}
    out: list[Fact] = []
    for f in rng.sample(facts, len(facts)):
        if len(out) == n:
            break
        if f.kind == "tag" and sum(g.kind == "tag" for g in out) >= 2:
            continue
        if any(g.kind in redundant.get(f.kind, ()) or (g.kind == f.kind and f.kind != "tag") for g in out):
            continue
        out.append(f)
    return out


def phrase_facts(facts: list[Fact], rng: random.Random, shape: str | None = None,
                 wording: Wording = TRAINING_WORDING) -> tuple[str, str]:
    """Turn facts into a request phrase: "something calm in D major", "a fast, orchestral piece", ...

    Parameters
    ----------
    shape : {"something", "noun", "terse"} or None
        The phrase's shape; None picks one at random. A terse list ("orchestral, minor
        key, around 90 BPM") needs two facts or more, else "something" is used.

    Returns
    -------
    (phrase, shape) : tuple of str
        The bare phrase (no opener) and the shape used.
    """
    if not facts:
        return "something", "something"
    shape = shape or rng.choices(["something", "noun", "terse"], weights=[4, 3, 2])[0]
    if shape == "terse" and len(facts) < 2:
        shape = "something"
    if shape == "terse":
        return ", ".join(f.short for f in facts), shape
    adjs, mods = [], []
    for f in facts:
        use_adj = f.adj is not None and (f.mod is None or rng.random() < 0.65)
        (adjs if use_adj else mods).append(f.adj if use_adj else f.mod)
    tail = (" " + _join(mods, ", ") if len(mods) > 2 else " " + " ".join(mods)) if mods else ""
    if shape == "noun":
        head = (", ".join(adjs) + " " if adjs else "") + rng.choice(wording.nouns)
        return f"{_article(head)} {head}{tail}", shape
    return ("something " + _join(adjs) if adjs else "something") + tail, "something"


def _sentence(phrase: str, shape: str, rng: random.Random, first: bool, wording: Wording) -> str:
    greet = rng.choice(wording.greetings) if first and rng.random() < 0.2 else ""
    if shape == "terse":
        text = phrase + rng.choice(wording.terse_endings)  # typed like a search box
    else:
        text = rng.choice(wording.openers).format(x=phrase)
    text = greet + text
    return text[0].upper() + text[1:]


def compose_request(track: Track, rng: random.Random, *, first: bool = False,
                    wording: Wording = TRAINING_WORDING) -> tuple[str, str, list[list[str]]]:
    """A plain user request for ``track`` (no reference to earlier turns), in ``wording``'s templates.

    Returns
    -------
    (text, how, asked) : tuple
        ``how`` names the source of the request: "facts", "artist", "lyrics" or "title";
        ``asked`` lists what the words pin down, as ``[kind, value]`` pairs (:func:`asked_of`):
        the facts drawn, the artist, the title, a lyric line or word.
    """
    facts = track_facts(track, rng)
    roll = rng.random()
    if roll < 0.08 and track.artist.strip():
        extra = _pick_facts(facts, 1, rng) if rng.random() < 0.5 else []
        what = phrase_facts(extra, rng, shape="something", wording=wording)[0] + f" by {track.artist}"
        text = rng.choice(wording.artist_asks).format(what=what, artist=track.artist)
        return _sentence_case(text), "artist", [["artist", track.artist], *asked_of(extra)]
    if roll < 0.11 and track.title.strip():
        by = f" by {track.artist}" if track.artist.strip() and rng.random() < 0.6 else ""
        text = rng.choice(wording.title_asks).format(title=track.title, by=by)
        return text, "title", [["title", track.title], *([["artist", track.artist]] if by else [])]
    if roll < 0.24 and track.lyrics.strip():
        snippet = lyric_snippet(track, rng) if rng.random() < 0.5 else None
        themes = lyric_theme_words(track)[:3]
        if snippet:
            text = rng.choice(wording.lyric_line_asks).format(snippet=snippet)
            return text, "lyrics", [["lyric line", snippet]]
        if themes:
            word = rng.choice(themes)
            text = rng.choice(wording.lyric_word_asks).format(word=word)
            return text, "lyrics", [["lyric word", word]]
    if not facts:  # nothing measured or tagged: metadata is all there is
        if track.artist.strip():
            what = f"something by {track.artist}"
            return wording.artist_asks[0].format(what=what, artist=track.artist), "artist", [["artist", track.artist]]
        return wording.title_asks[0].format(title=track.title or track.id, by=""), "title", [["title", track.title]]
    n = rng.choices([1, 2, 3, 4], weights=[35, 35, 20, 10])[0]
    chosen = _pick_facts(facts, n, rng)
    phrase, shape = phrase_facts(chosen, rng, wording=wording)
    return _sentence(phrase, shape, rng, first, wording), "facts", asked_of(chosen)


def asked_of(facts: Sequence[Fact]) -> list[list[str]]:
    """Facts as the ``[kind, value]`` pairs a user turn's ``"asked"`` records (the value as
    requests state it: "tracker music", "minor key", "around 120 BPM", "uptempo")."""
    return [[f.kind, f.short] for f in facts]


def _sentence_case(text: str) -> str:
    return text[0].upper() + text[1:] if text else text


_REFINED_KINDS = {"faster": {"tempo", "bpm"}, "slower": {"tempo", "bpm"}, "brighter": {"brightness"},
                  "darker": {"brightness"}, "calmer": {"energy"}, "more energetic": {"energy"},
                  "with vocals": {"vocals"}, "without vocals": {"vocals"}}


def compose_refinement(kind: str, previous: Track, target: Track, rng: random.Random,
                       wording: Wording = TRAINING_WORDING) -> tuple[str, list[list[str]]]:
    """User text for the relation ``kind``, sometimes with one more true fact about ``target``,
    and that fact as ``asked`` pairs (:func:`asked_of`; empty without one)."""
    text = rng.choice(wording.refinements[kind]).format(artist=previous.artist or "them")
    extra: list[Fact] = []
    if rng.random() < 0.3:
        # one more fact about the target, never on the refined dimension ("darker, and bright" would confuse)
        skip = _REFINED_KINDS.get(kind, set())
        extra = _pick_facts([f for f in track_facts(target, rng) if f.mod and f.kind not in skip], 1, rng)
        if extra:
            text += " " + rng.choice(wording.extras).format(m=extra[0].mod)
    return text, asked_of(extra)


def said_facts(track: Track, request: str) -> list[Fact]:
    """What of a person's ``request`` ``track`` meets (:func:`request_met`), as facts a reply can
    say in the request's own words ("mellow", "minor-key", "from the 1990s")."""
    out: list[Fact] = []
    for fact, word in _met(request, track):
        if fact.kind in ("tempo", "energy", "brightness"):
            out.append(Fact(fact.kind, word, adj=word))
        elif fact.kind == "mode":
            out.append(Fact(fact.kind, fact.short, adj=fact.short.replace(" ", "-")))
        elif fact.kind == "key":
            out.append(Fact(fact.kind, fact.short, mod=f"in {fact.short}"))
        elif fact.kind == "vocals":
            out.append(Fact(fact.kind, fact.short, adj="instrumental") if fact.short == "instrumental"
                       else Fact(fact.kind, fact.short, mod="with vocals"))
        elif fact.kind == "era":
            year = year_of(track)
            out.append(Fact(fact.kind, fact.short, mod=f"from {year}" if word == str(year) else f"from the {fact.short}"))
        else:
            out.append(Fact(fact.kind, fact.short, adj=fact.short))
    return out


REPLY_FACTS = 2  # facts a reply gives its track; the card beside it lists the rest


def describe_track(track: Track, rng: random.Random, request: str = "") -> str:
    """A short noun phrase of true facts about ``track``: "a fast, minor-key piece".

    What of the person's ``request`` the track meets (:func:`said_facts`) comes first, in its
    words; the rest is drawn from the track's facts, ``REPLY_FACTS`` in all. The tempo in BPM is
    said only when the request asks for one: the card shows it, and each word the model writes
    costs the person time. ``rng`` is drawn from the same way whatever the request, so a
    session's other turns do not depend on it.
    """
    listed = set(fact_labels(track))  # what the model will read about the track
    facts = [f for f in track_facts(track, rng) if f.kind != "bpm" and (f.kind not in ("tag", "genre")
                                                                      or f.short in listed)]
    drawn = _pick_facts(facts, rng.randint(1, 3), rng)
    said = said_facts(track, request)[:REPLY_FACTS]
    same = {"key": {"mode"}, "mode": {"key"}, "genre": {"tag"}, "tag": {"genre"}}
    chosen = said + [f for f in drawn if not any(
        g.kind == f.kind or g.kind in same.get(f.kind, ()) or g.short == f.short for g in said)][: REPLY_FACTS - len(said)]
    adjs = [f.adj for f in chosen if f.adj]
    mods = [f.mod for f in chosen if not f.adj and f.mod]
    bpm = tempo_of(track)
    tempo_asked = bpm is not None and re.search(r"\bbpm\b", request.lower()) is not None
    if bpm is not None:
        rng.random()  # drawn as when the tempo was said half the time, so sessions stay the same
    if tempo_asked:
        mods.append(f"at about {round(bpm)} BPM")
    head = (", ".join(adjs) + " " if adjs else "") + "piece"
    return f"{_article(head)} {head}" + (" " + " ".join(mods) if mods else "")


CATALOG_FACT_TAGS = 4  # tags a reply's facts list: enough to say why it fits, few enough to stay short


def fact_labels(track: Track) -> list[str]:
    """The tags and genre that ``catalog_facts`` lists (at most ``CATALOG_FACT_TAGS``, each once);
    a reply names no other."""
    labels: list[str] = []
    for f in track_facts(track, _FirstChoice()):
        for label in (x.strip() for x in f.short.split(";")):
            if f.kind in ("tag", "genre") and label and label not in labels:
                labels.append(label)
    return labels[:CATALOG_FACT_TAGS]


class _FirstChoice(random.Random):
    """A stand-in rng that always takes the first wording: the plain word for every fact."""

    def choice(self, seq):
        return seq[0]


# A word that something before it turns around: "not fast", "nothing with piano"; and for a
# band, "too fast", "less intense", "more energetic" (a comparison, read against the track before).
_NEGATED = re.compile(r"(?:\b(?:not|never|no|nothing|without|nor)|n't)\s+(?:\w+\s+)?$")
_TURNED = re.compile(r"(?:\b(?:not|never|no|nothing|without|nor|less|more|too|as)|n't)\s+(?:\w+\s+)?$")


def stated(fact: Fact, text: str) -> str | None:
    """Where lowercased ``text`` states ``fact``, the words that do ("mellow" for a calm track,
    "minor-key", "1990s", "without vocals"), else None. A band is stated by any of its words, a
    mode, key, singing or decade as a request or a reply would put it; a word that something
    before it turns around ("not too fast") states nothing."""
    value = fact.short.lower()
    if fact.kind in ("tempo", "energy", "brightness"):
        words = next((w for w in BAND_WORDS.values() if value in w), (value,))
        pattern = "|".join(map(re.escape, words))
    elif fact.kind == "mode":
        mode = value.split()[0]
        pattern = f"{mode}-key|{mode} key|{mode} mode"
    elif fact.kind == "vocals":
        pattern = ("instrumental|without vocals|no vocals|without singing|no singing" if value == "instrumental"
                   else "with vocals|vocals|vocal|sung|singing|sings|singer|voices?")
    elif fact.kind == "era" and not value.isdigit():
        decade = int(value[:4])
        pattern = "|".join([re.escape(value), f"'?{value[2:]}", *(str(y) for y in range(decade, decade + 10))])
    else:
        pattern = re.escape(value)
    turned = _TURNED if fact.kind in ("tempo", "energy", "brightness") else _NEGATED
    for m in re.finditer(r"(?<![\w-])(?:" + pattern + r")(?![\w-])", text):
        if not turned.search(text[:m.start()]):
            return m.group(0)
    return None


def _met(request: str, track: Track) -> list[tuple[Fact, str]]:
    """(fact, the request's words for it) for each fact of ``track`` its catalog facts list that
    ``request`` states."""
    low = " ".join(str(request).lower().split())
    listed = {label.lower() for label in fact_labels(track)}
    out: list[tuple[Fact, str]] = []
    for fact in track_facts(track, _FirstChoice()):
        if fact.kind == "bpm" or (fact.kind in ("tag", "genre") and fact.short not in listed):
            continue
        word = stated(fact, low)
        if word is not None and all(word != w for _, w in out):
            out.append((fact, word))
    return out


def request_met(request: str, track: Track) -> list[str]:
    """The words of a person's ``request`` that ask for something ``track`` is and that its
    catalog facts list, as the request words them: "something mellow with piano" of a calm piano
    piece gives ``["piano", "mellow"]``. Read the same way in training and in the chat, this is
    what the model is told the track answers (:func:`catalog_facts`)."""
    return [word for _, word in _met(request, track)]


def asked_relations(request: str) -> list[str]:
    """The relations of ``REFINEMENTS`` (their names) that a person's ``request`` asks of a track
    against the one before, read as the chat reads a request (``assistant.request.read_request``):
    "Less bright this time." asks ``["darker"]``."""
    from .request import read_request

    asked = read_request(request)
    # the engine's word for a step ("faster" for tempo up) is the relation's name
    out = [word for word in (vocabulary.comparative(d, sign) for d, sign in asked.relative) if word in REFINEMENTS]
    if asked.vocals is not None:
        out.append("with vocals" if asked.vocals else "without vocals")
    if asked.same_artist is not None:
        out.append("same artist" if asked.same_artist else "other artist")
    if asked.reference == 0 and asked.from_session:
        out.append("like first")
    return out


def catalog_facts(track: Track, previous: Track | None = None, first: Track | None = None,
                  request: str | None = None) -> str:
    """What the catalog states about ``track``, as the model reads it before it writes a reply.

    The name, album and year; the tags and the measured facts in plain words, with the exact
    tempo; given the person's ``request``, what of it the track meets, in its words
    (:func:`request_met`); and, given the track played before it (and the session's first), which
    of the refinement relations hold against it ("faster", "same artist", ...), those the request
    asks for (:func:`asked_relations`) first and also among what it meets. Every fact the
    synthesized replies state is here, so a model that copies from it says only true things.
    """
    name = f'"{track.title}"' if track.title.strip() else "An untitled track"
    if track.artist.strip():
        name += f" by {track.artist}"
    if track.album.strip():
        name += f", from {track.album}"
    year = year_of(track)
    if year:
        name += f" ({year})"
    facts = track_facts(track, _FirstChoice())
    has_key = any(f.kind == "key" for f in facts)
    words = fact_labels(track) + [f.short for f in facts if f.kind not in ("tag", "genre", "bpm", "era")
                                           and not (f.kind == "mode" and has_key)]
    bpm = tempo_of(track)
    if bpm is not None:
        words.append(f"{round(bpm)} BPM")
    text = name + (": " + ", ".join(words) if words else "") + "."
    met_facts = _met(request, track) if request else []
    met = [word for _, word in met_facts]
    held = [r.name for r in REFINEMENTS.values() if previous is not None and
            (first is not None or r.name != "like first") and r.holds(previous, track, first or previous)]
    if held and request:
        asked = asked_relations(request)
        held = sorted(held, key=lambda name: name not in asked)  # what was asked for, first
        sung = any(fact.kind == "vocals" for fact, _ in met_facts)  # "no vocals" is met already
        met += [name for name in held if name in asked and not (sung and "vocals" in name)]
    if met:
        text += " Asked for, and true of it: " + ", ".join(met) + "."
    if previous is not None:
        before = ", ".join(x for x in (f"by {previous.artist}" if previous.artist.strip() else "",
                                        f"{round(tempo_of(previous))} BPM" if tempo_of(previous) else "") if x)
        text += " Against the last track" + (f" ({before})" if before else "") + ": " + (", ".join(held) if held else "no clear change") + "."
    return text


def facts_lookup(by_id: dict[str, Track]) -> Callable[[str, "str | None", "str | None", "str | None"], str]:
    """``facts_for(track_id, previous_id, first_id, request)`` over a catalog: its tracks' ``catalog_facts``."""
    def facts_for(track_id: str, previous_id: str | None = None, first_id: str | None = None,
                  request: str | None = None) -> str:
        return catalog_facts(by_id[track_id], by_id.get(previous_id) if previous_id else None,
                             by_id.get(first_id) if first_id else None, request)

    return facts_for


def compose_reply(track: Track, rng: random.Random, *, previous: Track | None = None,
                  refinement: str | None = None, request: str = "") -> str:
    """Assistant text grounded in the track's facts, saying first what of the person's ``request``
    the track meets, and the refinement's relation when there is one."""
    name = f'"{track.title}"' if track.title.strip() else "this track"
    if track.artist.strip():
        name += f" by {track.artist}"
    if track.album.strip():
        rng.random()  # drawn as when the album was named, so sessions stay the same; the card names it
    desc = describe_track(track, rng, request)
    text = rng.choice([f"Here's {name}, {desc}.", f"Try {name}: {desc}.", f"How about {name}? It's {desc}.",
                       f"{_sentence_case(name)} fits: {desc}."])
    if refinement is not None and previous is not None:
        bpm, prev_bpm = tempo_of(track), tempo_of(previous)
        clause = rng.choice(REFINEMENTS[refinement].tells).format(
            artist=track.artist, prev_artist=previous.artist,
            bpm=round(bpm) if bpm else "?", prev_bpm=round(prev_bpm) if prev_bpm else "?")
        text = f"{text} {clause}"
    return text


# --------------------------------------------------------------------------- sessions

def _session(pool: list[Track], n_turns: int, rng: random.Random, refine_share: float,
             first: Track | None = None) -> list[dict]:
    """Turns for one session over ``pool`` (a playlist's tracks, in order); ``first``, if given,
    is the first request's target."""
    n_turns = min(n_turns, len(pool))
    plan = [pool[i] for i in sorted(rng.sample(range(len(pool)), n_turns))]  # an ordered subset
    if first is not None:
        plan = [first, *(t for t in plan if t.id != first.id)][:n_turns]
    used: set[str] = set()
    played: list[Track] = []
    turns: list[dict] = []
    for t in range(n_turns):
        target, kind = None, None
        if played and rng.random() < refine_share:
            for name in rng.sample(list(REFINEMENTS), len(REFINEMENTS)):
                cands = [c for c in pool if c.id not in used and REFINEMENTS[name].holds(played[-1], c, played[0])]
                if cands:
                    target, kind = rng.choice(cands), name
                    break
        if target is None:
            target = next((p for p in plan if p.id not in used), None) or \
                next((p for p in pool if p.id not in used), None)
            if target is None:
                break
        if kind is None:
            text, _, asked = compose_request(target, rng, first=not played)
            turns.append({"role": "user", "content": text, "asked": asked})
        else:
            text, asked = compose_refinement(kind, played[-1], target, rng)
            turns.append({"role": "user", "content": text, "refinement": kind, "asked": asked})
        reply = compose_reply(target, rng, previous=played[-1] if played else None, refinement=kind,
                              request=turns[-1]["content"])
        turns.append({"role": "assistant", "content": reply, "tracks": [target.id]})
        used.add(target.id)
        played.append(target)
    return turns


def neighbourhood(seed_track: Track, tracks: Sequence[Track], size: int = NEIGHBOURHOOD_SIZE) -> list[Track]:
    """``seed_track`` and the ``size - 1`` tracks most alike to it (:func:`likeness`), most alike first."""
    others = sorted((t for t in tracks if t.id != seed_track.id), key=lambda t: (-likeness(seed_track, t), t.id))
    return [seed_track, *others[: size - 1]]


def _neighbourhood_sessions(tracks: list[Track], seeds: list[Track], want_turns: int, lo: int, hi: int,
                            rng: random.Random, refine_share: float) -> list[tuple[None, str, list[dict]]]:
    """Sessions over neighbourhoods of alike tracks, seeds in turn, until ``want_turns`` assistant
    turns are written. Each session starts with its seed: a first request about it, then
    requests and refinements among its neighbours."""
    pools: dict[str, list[Track]] = {}
    out: list[tuple[None, str, list[dict]]] = []
    written = 0
    while written < want_turns and seeds:
        for seed_track in seeds:
            if written >= want_turns:
                break
            if seed_track.id not in pools:
                pools[seed_track.id] = neighbourhood(seed_track, tracks)
            turns = _session(pools[seed_track.id], rng.randint(lo, hi), rng, refine_share, first=seed_track)
            out.append((None, seed_track.id, turns))
            written += sum(t["role"] == "assistant" for t in turns)
    return out


def synthesize_conversations(
    tracks: list[Track],
    playlists: dict[str, list[str]],
    *,
    seed: int = 0,
    turns_per_session: tuple[int, int] = (2, 5),
    sessions_per_playlist: int | None = None,
    refine_share: float = 0.5,
    single_turn_orphans: bool = True,
    min_turns: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Synthesize conversations from a catalog's tracks and playlists.

    Parameters
    ----------
    tracks : list of Track
        The catalog.
    playlists : dict
        Playlist (album, collection) name -> ordered track ids. Ids not in ``tracks`` are skipped.
    seed : int
        Seed; the same inputs and seed give the same conversations.
    turns_per_session : (int, int)
        Inclusive range of requests (assistant turns) per session; capped by the playlist's length.
    sessions_per_playlist : int or None
        Sessions drawn from each playlist. None: enough for each track to be a target about twice,
        ``ceil(2 * len / mean turns)``, at most 50.
    refine_share : float
        Chance that a follow-up request is relative to the last track (when a true one exists).
    single_turn_orphans : bool
        Also write one single-turn session for every track in no playlist.
    min_turns : int
        When the sessions above hold fewer assistant turns than this, add sessions over
        neighbourhoods of alike tracks (:func:`neighbourhood`), seeded by the tracks in no
        playlist first, then by every track, until they hold this many (about; a session is
        not cut). Such sessions have ``"neighbourhood"`` set to their seed's id.
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of dict
        Conversations with keys "id", "playlist" and "turns", in playlist-name order.
    """
    lo, hi = _check_range(turns_per_session)
    if sessions_per_playlist is not None and (not isinstance(sessions_per_playlist, int) or sessions_per_playlist < 1):
        raise ValueError(f"sessions_per_playlist must be a positive int or None, got {sessions_per_playlist!r}")
    if not 0.0 <= refine_share <= 1.0:
        raise ValueError(f"refine_share must be in [0, 1], got {refine_share}")
    by_id = {t.id: t for t in tracks}
    if len(by_id) != len(tracks):
        raise ValueError("track ids must be unique")
    if not isinstance(min_turns, int) or min_turns < 0:
        raise ValueError(f"min_turns must be a non-negative int, got {min_turns!r}")
    rng = random.Random(seed)
    sessions: list[tuple[str | None, str | None, list[dict]]] = []  # (playlist, neighbourhood seed, turns)
    in_playlist: set[str] = set()
    names = sorted(playlists)
    for name in tqdm(names, desc="synthesizing conversations", disable=not progress or not names):
        pool = [by_id[i] for i in dict.fromkeys(playlists[name]) if i in by_id]  # de-duplicated, in order
        in_playlist.update(t.id for t in pool)
        if not pool:
            continue
        n_sessions = sessions_per_playlist or min(50, math.ceil(2 * len(pool) / ((lo + hi) / 2)))
        for _ in range(n_sessions):
            turns = _session(pool, rng.randint(lo, hi), rng, refine_share)
            if turns:
                sessions.append((name, None, turns))
    orphans = [t for t in tracks if t.id not in in_playlist]
    if single_turn_orphans:
        sessions.extend((None, None, _session([track], 1, rng, 0.0)) for track in orphans)
    written = sum(t["role"] == "assistant" for _, _, turns in sessions for t in turns)
    if written < min_turns and len(tracks) > 1:
        seeds = orphans + [t for t in tracks if t.id in in_playlist]
        sessions.extend(_neighbourhood_sessions(tracks, seeds, min_turns - written, lo, hi, rng, refine_share))
    if not sessions:
        raise ValueError("no conversations could be made: the playlists name none of the given tracks "
                         "and there are no tracks outside playlists")
    width = max(6, len(str(len(sessions))))
    return [{"id": f"conv-{i:0{width}d}", "playlist": name, **({"neighbourhood": near} if near else {}),
             "turns": turns}
            for i, (name, near, turns) in enumerate(sessions)]


def _check_range(r: tuple[int, int]) -> tuple[int, int]:
    try:
        lo, hi = r
    except (TypeError, ValueError):
        raise ValueError(f"turns_per_session must be a (min, max) pair, got {r!r}") from None
    if not (isinstance(lo, int) and isinstance(hi, int)) or not 1 <= lo <= hi:
        raise ValueError(f"turns_per_session must be ints with 1 <= min <= max, got {r!r}")
    return lo, hi


# --------------------------------------------------------------------------- splits

def split_key(conversation: dict) -> str:
    """What a conversation is split on: its playlist, its neighbourhood's seed, or its first track
    for another session outside playlists."""
    if conversation.get("playlist"):
        return f"playlist:{conversation['playlist']}"
    if conversation.get("neighbourhood"):
        return f"track:{conversation['neighbourhood']}"
    first = next((t["tracks"][0] for t in conversation["turns"] if t.get("tracks")), conversation["id"])
    return f"track:{first}"


def split_by_playlist(conversations: list[dict], *, val: float = 0.1, test: float = 0.15,
                      seed: int = 0) -> dict[str, list[dict]]:
    """Split conversations into train/val/test so that no playlist is shared between splits.

    Whole playlists are assigned, shuffled with ``seed``, until each held-out split
    holds about its share of the conversations. With three or more playlists and a
    positive share, val and test each get at least one playlist. Conversations
    outside any playlist are grouped by their first track.

    Returns
    -------
    dict
        "train", "val", "test" -> conversations (copies with a "split" key added).
    """
    for name, share in (("val", val), ("test", test)):
        if not 0.0 <= share < 1.0:
            raise ValueError(f"{name} share must be in [0, 1), got {share}")
    if val + test >= 1.0:
        raise ValueError(f"val + test must leave something to train on, got {val} + {test}")
    groups: dict[str, list[dict]] = {}
    for conv in conversations:
        groups.setdefault(split_key(conv), []).append(conv)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    total = sum(len(g) for g in groups.values())
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    pos = 0
    for split, share in (("test", test), ("val", val)):
        if share <= 0:
            continue
        want = share * total
        while pos < len(keys) - 1:  # the last group always goes to train
            size = len(groups[keys[pos]])
            must_have_one = not out[split] and len(keys) >= 3
            # take a group while at least half of it fits in the split's share
            if not must_have_one and len(out[split]) + size / 2 > want:
                break
            out[split].extend(groups[keys[pos]])
            pos += 1
    for k in keys[pos:]:
        out["train"].extend(groups[k])
    return {s: [{**c, "split": s} for c in sorted(convs, key=lambda c: c["id"])] for s, convs in out.items()}


def reword_conversation(conversation: dict, tracks_by_id: dict[str, Track], wording: Wording,
                        seed: int = 0) -> dict:
    """The same session with every user turn written anew in ``wording``: the same targets, the
    same relations ("faster", "same artist") and the same assistant turns, other words."""
    rng = random.Random(f"{seed}:{conversation['id']}")
    turns = conversation["turns"]
    out: list[dict] = []
    played: list[Track] = []
    for i, turn in enumerate(turns):
        if turn["role"] != "user":
            out.append(dict(turn))
            played.extend(tracks_by_id[t] for t in turn.get("tracks", []) if t in tracks_by_id)
            continue
        answer = next((t for t in turns[i + 1:] if t["role"] == "assistant"), None)
        target = tracks_by_id.get(answer["tracks"][0]) if answer and answer.get("tracks") else None
        if target is None:
            out.append(dict(turn))
        elif turn.get("refinement") and played:
            text, asked = compose_refinement(turn["refinement"], played[-1], target, rng, wording)
            out.append({**turn, "content": text, "asked": asked})
        else:
            text, _, asked = compose_request(target, rng, first=not played, wording=wording)
            out.append({**turn, "content": text, "asked": asked})
    return {**conversation, "turns": out}


HELD_OUT_PHRASING = "test-phrasing"  # the test sessions in words training never uses


def write_splits(tracks: list[Track], playlists: dict[str, list[str]], out_dir: str | os.PathLike, *,
                 heldout_playlists: dict[str, dict] | None = None, seed: int = 0,
                 **synth_options) -> dict[str, Path]:
    """Synthesize conversations and write ``OUT/{train,val,test,test-phrasing}/conversations.jsonl``.

    With ``heldout_playlists`` (name -> ``{"split": "val"|"test", "tracks": [...]}``, as an index
    records the playlists it was not built from), training sessions walk ``playlists`` (the
    index's own) plus one single-turn session for each track in none of them (and, while these hold
    fewer than :data:`MIN_TRAINING_TURNS` assistant turns, sessions over neighbourhoods of alike
    tracks, so a library with few or no playlists still teaches more than its tracks' names), and
    val and test sessions walk the held-out playlists only: nothing a system learns from the index or the
    training conversations comes from a val or test playlist. Without them, all sessions are
    synthesized and split by playlist name (:func:`split_by_playlist`); their playlists are then
    inside the index, which flatters any system that uses playlist co-occurrence.

    ``test-phrasing`` holds the test sessions with every user turn rewritten in
    :data:`HELD_OUT_WORDING` (:func:`reword_conversation`). Extra keyword arguments go to
    :func:`synthesize_conversations`.

    Returns
    -------
    dict
        Set name -> path of its conversations.jsonl.
    """
    by_split: dict[str, dict[str, list[str]]] = {"val": {}, "test": {}}
    for name, held in (heldout_playlists or {}).items():
        by_split[held["split"]][name] = held["tracks"]
    train_options = {"min_turns": MIN_TRAINING_TURNS, **synth_options}
    if any(by_split.values()):
        splits = {"train": synthesize_conversations(tracks, playlists, seed=seed, **train_options)}
        options = {**synth_options, "single_turn_orphans": False, "min_turns": 0}
        for n, split in enumerate(("val", "test"), 1):
            splits[split] = synthesize_conversations(tracks, by_split[split], seed=seed + 1000 * n, **options) \
                if by_split[split] else []
        splits = {s: [{**c, "id": f"{s}-{c['id']}", "split": s} for c in convs] for s, convs in splits.items()}
    else:
        convs = synthesize_conversations(tracks, playlists, seed=seed, **train_options)
        splits = split_by_playlist(convs, seed=seed)
    by_id = {t.id: t for t in tracks}
    splits[HELD_OUT_PHRASING] = [{**reword_conversation(c, by_id, HELD_OUT_WORDING, seed), "phrasing": "held-out",
                                  "id": f"{c['id']}-phrasing"} for c in splits["test"]]
    out_dir = Path(out_dir)
    return {s: write_conversations(convs, out_dir / s / "conversations.jsonl") for s, convs in splits.items()}
