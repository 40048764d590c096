"""What a reply may state about the tracks it shows: sentences, the numbers and keys a track
lends a sentence, and a guard that keeps the model from writing a title, artist, album, number or
key that is not on screen.

The check after the fact (``reply_check.ReplyCheck.ground``) drops a finished sentence
that contradicts the cards. The guard works while the reply is written: before a token is
taken, the text it would make is read as the check reads it, and a token that starts or ends
a title, artist, number or key that is not the track's is passed over for the model's next
choice. A reply streamed to the page therefore never shows a quoted title, a tempo, a year or a
key that is not on the cards.

    guard = ClaimGuard.for_tracks(first_card, reference, shown)
    guard.allows('Here is "Reel", a piece in C major at about 11')   # False when C major is wrong
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from index.track import Track

# Words that set a sentence against the track played before (its facts may then be quoted).
COMPARING = re.compile(r"\b(?:than|vs|versus|compared|same|like the|before|previous|last one|earlier|first one)\b")
# A key as a claim ("c major"), not "a minor-key piece"; on lowercased text.
KEY_CLAIM = re.compile(r"\b[a-g][#b]? (?:major|minor)\b(?!-)")
# A number as a claim: two to four digits standing alone ("112 BPM", "1931").
NUMBER_CLAIM = re.compile(r"\b\d{2,4}\b")
# A small word glued to a capital ("fromString Quartet"): not a sentence, the start of junk.
GLUED_WORD = re.compile(r"\b(?:from|of|in|on|at|with|and|for|to|the|a)(?=[A-Z])")
AT_ABOUT = re.compile(r"\bat (?:about|around) ?$", re.IGNORECASE)  # what a tempo follows
# A number given as a tempo ("at about 112", "129 BPM against 112"): a tempo of the track or of
# the one it is set against, never a year ("at about 1840", "129 BPM against 2012").
TEMPO_CLAIM = re.compile(r"\b(?:at (?:about|around)|bpm (?:against|vs\.?|versus)) (\d+)")
# A word written twice in a row ("2012s 2012s", "ё ё"), or twice in one list ("an electronic,
# minor-key, electronic piece"), outside names: the start of a loop.
_REPEATED_WORD = re.compile(r"\b(\w+)\W+\1\b|\b([\w-]+),(?: [\w-]+,)* \2\b(?!-)")
# Three words or more written again at once ("than to the last one than to the last one").
_REPEATED_PHRASE = re.compile(r"\b((?:\w+\W+){2,}\w+)\W+\1\b")
# Four words said twice in one sentence, anywhere in it: an alternating loop ("than the last one:
# than the first one: than the last one ..."). No reply the synthesizer writes repeats even three.
LOOP_WORDS = 4
_ABBREVIATIONS = {"st", "mr", "mrs", "ms", "dr", "jr", "sr", "vs", "no", "op", "vol", "feat"}
# "from" and a capital, as a reply names an album ('by Maxstack from Endgame: Singularity ...').
_FROM_NAME = re.compile(r"\bfrom (?=[A-Z])")  # "fromString" is junk (GLUED_WORD), not an album


def norm(s: str) -> str:
    """Lowercased, whitespace collapsed: the form sentences and names are compared in."""
    return re.sub(r"\s+", " ", s.lower()).strip()


def sentences(text: str) -> list[str]:
    """Split at sentence ends outside double quotes (titles such as "Reel No. 2" stay whole),
    not before a digit or a small letter ("from Préludes, Op. 28 by ..."), and not after an
    initial or a common abbreviation ("by Joseph G. Toscano", "St. Louis Blues")."""
    out, start, quoted = [], 0, False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch in ".!?" and not quoted and (i + 1 == len(text) or text[i + 1].isspace()):
            after = text[i + 1:].lstrip()[:1]
            if after and (after.isdigit() or after.islower()):
                continue
            word = re.search(r"(\w+)$", text[start:i])
            if after and ch == "." and word and ((len(word.group(1)) == 1 and word.group(1).isupper())
                                                 or word.group(1).lower() in _ABBREVIATIONS):
                continue
            out.append(text[start : i + 1])
            start = i + 1
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def well_formed(sentence: str) -> bool:
    """A whole sentence: opens with a capital or a quote, ends with its stop, brackets balanced.

    A model that echoes the track cards writes fragments such as ``1, 1831): romantic, piano;
    about``, which no fact check catches but no one should read; and one that writes bytes
    which decode to no character leaves U+FFFD in the text ("closer to the \ufffd Sinner piece").
    """
    s = sentence.strip()
    opens = s[:1].isupper() or s[:1] in "\"'"
    ends = s.rstrip("\"'").endswith((".", "!", "?"))
    return opens and ends and s.count("(") == s.count(")") and s.count("[") == s.count("]") and "\ufffd" not in s


def numbers_of(t: Track | None) -> set[int]:
    """The numbers a sentence may give about ``t``: its tempo (give or take 2 BPM) and year."""
    if t is None:
        return set()
    numbers = tempo_numbers(t.descriptors.get("tempo_bpm"))
    if str(t.year).isdigit():
        numbers.add(int(t.year))
    return numbers


def tempo_numbers(bpm) -> set[int]:
    """The tempos a sentence may give for a track measured at ``bpm``: give or take 2 BPM."""
    if not bpm:
        return set()
    bpm = round(float(bpm))
    return set(range(bpm - 2, bpm + 3))


def key_of(t: Track | None) -> str | None:
    """The track's key (the library's, else measured) as a sentence would state it, lowercased ("a# minor"), or None."""
    key = norm(str(t.descriptors.get("key") or "")) if t is not None else ""
    return key or None


def names_of(tracks: Sequence[Track]) -> tuple[str, ...]:
    """The tracks' titles, albums and artists, lowercased, longest first: the words of a sentence
    that name, and claim nothing."""
    names = {norm(n) for t in tracks for n in (t.title, t.album, t.artist) if n and len(n.strip()) > 2}
    return tuple(sorted(names, key=len, reverse=True))


def names_title(low: str, title: str) -> bool:
    """Whether lowercased ``low`` names ``title`` as whole words (titles under three letters never).

    >>> names_title("try reel no. 12 tonight", "Reel No. 12"), names_title("reeling", "Reel")
    (True, False)
    """
    title = norm(title)
    return len(title) > 2 and re.search(rf"(?<!\w){re.escape(title)}(?!\w)", low) is not None


def album_said(sentence: str) -> str | None:
    """What ``sentence`` writes after its last "from" and a capital outside quotes, the album it
    names, whitespace collapsed and lowercased (a space it ends with kept: "from C " has left the
    word "Colobot"); None where it names none ("from the 1990s")."""
    start = _album_start(sentence)
    return None if start is None else re.sub(r"\s+", " ", sentence[start:].lower())


def _album_start(sentence: str) -> int | None:
    found = [m for m in _FROM_NAME.finditer(sentence) if sentence.count('"', 0, m.start()) % 2 == 0]
    return found[-1].end() if found else None


def names_album(said: str, album: str, *, growing: bool = False) -> bool:
    """Whether ``said`` (``album_said``) names ``album``: all of it, then anything but more of a
    word ("Endgame: Singularity Original Soundtrack, a piece ..."), or, with ``growing``, the start
    of it while it is being written.

    >>> names_album("openclonk, a piece", "OpenClonk"), names_album("open", "OpenClonk", growing=True)
    (True, True)
    """
    album = norm(album)
    if not album:
        return False
    return (said.startswith(album) and not said[len(album):len(album) + 1].isalnum()) or \
        (growing and album.startswith(said))


def without_names(text: str, names: Sequence[str]) -> str:
    """``text`` with each of ``names`` (``names_of``: lowercased, longest first) taken out, in
    any case, the rest as written: what is left are its claims ("sonata no. 16 in c major"
    names, it does not claim)."""
    for name in names:
        text = re.sub(re.escape(name), " ", text, flags=re.IGNORECASE)
    return text


@dataclass(frozen=True)
class CardFacts:
    """What a sentence about one card may state: its title (whitespace collapsed, case kept),
    artist (lowercased), numbers (digit strings: tempo and year) and keys (lowercased)."""

    title: str
    artist: str = ""
    numbers: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    artist_as_written: str = ""  # case kept, for completing a name the reply has begun
    tempo: int | None = None  # BPM, rounded, for completing "at about"
    tempos: frozenset[str] = frozenset()  # what "at about" may give (``tempo_numbers``)
    album: str = ""  # as written, whitespace collapsed: what "from" may name
    decade: str = ""  # "2010" for a track from 2012: what "the 2010s" may give

    @classmethod
    def of(cls, t: Track) -> "CardFacts":
        tempo = t.descriptors.get("tempo_bpm")
        return cls(title=re.sub(r"\s+", " ", t.title).strip(), artist=norm(t.artist),
                   numbers=frozenset(str(n) for n in numbers_of(t)), keys=frozenset(k for k in [key_of(t)] if k),
                   artist_as_written=re.sub(r"\s+", " ", t.artist).strip(),
                   tempo=round(float(tempo)) if tempo else None,
                   tempos=frozenset(str(n) for n in tempo_numbers(tempo)), album=re.sub(r"\s+", " ", t.album).strip(),
                   decade=str(int(t.year) // 10 * 10) if str(t.year).isdigit() else "")

    def named_in(self, low: str) -> bool:
        """Whether lowercased ``low`` names this card's title (``names_title``)."""
        return names_title(low, self.title)


def repeats_words(text: str, n: int = LOOP_WORDS) -> bool:
    """Whether ``text`` says the same ``n`` finished words twice (punctuation aside); a word still
    being written (no space or mark after it yet) does not count."""
    words = re.findall(r"\w+(?=\W)", text)
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) < len(grams)


def _said(sentence: str) -> str:
    """A sentence as it reads, for telling whether it was said before: lower case, no end stop."""
    return " ".join(sentence.lower().split()).rstrip(" .!?")


@dataclass(frozen=True)
class ClaimGuard:
    """The names, numbers and keys a reply may state about the cards, checked as it grows.

    Each sentence is about the first card whose title it names, else the first card (whose facts
    the model reads), as the check after the fact reads it.

    Attributes
    ----------
    cards : tuple of CardFacts
        The cards on screen, in order.
    reference : CardFacts, optional
        The track played before: its numbers, keys and artist count in a sentence that compares
        with it or names it.
    names : tuple of str
        Lowercased names (titles, albums, artists) whose numbers and keys are part of the name.
    holds : callable, optional
        ``holds(sentence)`` is False where the sentence so far says something else untrue.
    """

    cards: tuple[CardFacts, ...]
    reference: CardFacts | None = None
    names: tuple[str, ...] = ()
    holds: Callable[[str], bool] | None = None

    @classmethod
    def for_tracks(cls, subject: Track, reference: Track | None = None, shown: Sequence[Track] = (),
                   holds: Callable[[str], bool] | None = None) -> "ClaimGuard":
        """The guard for a reply about ``subject`` (the first card, whose facts the model reads),
        with ``reference`` the track the turn is relative to, ``shown`` every card, and
        ``holds`` whatever else a sentence must bear out (its comparisons, say), read on each
        sentence as it grows."""
        cards = [subject, *[t for t in shown if t is not subject]]
        return cls(cards=tuple(CardFacts.of(t) for t in cards),
                   reference=CardFacts.of(reference) if reference is not None else None,
                   names=names_of(cards + ([reference] if reference is not None else [])), holds=holds)

    @property
    def tracks(self) -> tuple[CardFacts, ...]:
        """The tracks whose names a reply may give: the cards, then the track played before."""
        return self.cards + ((self.reference,) if self.reference is not None else ())

    @property
    def titles(self) -> tuple[str, ...]:
        """The titles a sentence may quote: the cards' and the track played before."""
        return tuple(c.title for c in self.tracks if c.title)

    def allows(self, text: str) -> bool:
        """False when the last sentence of ``text`` states something the tracks do not bear out, or
        has begun to, with no true way to go on.

        - A quoted title must be one on screen, and is checked letter by letter as it is copied,
          in the title's own case and spacing.
        - "by <Name>" must name the artist of the card the sentence is about (or, in a
          comparison, of the track before), also as it is written.
        - A number must be that card's: while it is written, the start of one (outside a name
          being copied); once it ends, one of them.
        - A key is judged once its mode is written, and "in C" as soon as its pitch is.
        - "at about" (a tempo to come) only where the card has a tempo, and then that tempo.
        - An artist on screen begun after "by", past the name's first word, is written to its end.
        - "from" and a capital names an album: that card's (or, in a comparison, the track
          before's), as it is written.
        - A word is not written twice in a row, nor twice in one list, nor a phrase of three words
          or more twice at once, nor four words twice anywhere in the sentence, outside a name;
          nor a sentence the reply has said already, nor a title the sentence has quoted already.
        - A small word is not glued to a capital ("fromString"), outside a name.
        - Then ``holds``, if given.
        """
        parts = sentences(text)
        if not parts:
            return True
        if len(parts) > 1 and _said(parts[-1]) in {_said(p) for p in parts[:-1]}:
            return False  # "It has vocals. It has vocals.": a loop
        sentence = parts[-1] + (" " if text[-1:].isspace() else "")  # a trailing space ends a word
        low = sentence.lower()
        quotes = sentence.split('"')
        titles = self.titles
        quoted = [q.strip() for q in quotes[1:-1:2]]
        if any(q not in titles for q in quoted):
            return False  # a finished quote that is not a title on screen
        if len(set(quoted)) < len(quoted):
            return False  # a title quoted again is a loop ('"A","A",...')
        if self._name_cut_short(sentence):
            return False
        if len(quotes) % 2 == 0:  # inside a quote: it must be going on to a title, as it is written
            album = album_said(sentence[:sentence.rfind('"')])  # and an album before it, ended whole
            if album is not None and not any(names_album(album, c.album) for c in self.tracks):
                return False
            begun = text[text.rfind('"') + 1:]  # as written: a sentence is stripped of a trailing "\xa0"
            return any(title.startswith(begun) for title in titles if title not in quoted)
        about = next((c for c in self.cards if c.named_in(low)), self.cards[0] if self.cards else None)
        reference = self.reference
        comparing = reference is not None and (bool(COMPARING.search(low)) or reference.named_in(low))
        facts = [c for c in (about, reference if comparing else None) if c is not None]
        artist = re.search(r"\bby ?([A-Z][^,.;:!?()\"]*)$", sentence)  # "byMaxstack" too
        if artist is None:  # an artist written in lower case ("remaxim") is a name too, once begun
            artist = re.search(r"\bby ([a-z][^,.;:!?()\"]*)$", sentence)
            if artist and not any(c.artist_as_written[:1] == artist.group(1)[:1] for c in facts if c.artist):
                artist = None
        if artist and facts:
            said = artist.group(1).lower().rstrip()
            if not any((c.artist.startswith(said) or said.startswith(c.artist + " "))
                       and c.artist_as_written[:1] == artist.group(1)[:1] for c in facts if c.artist):
                return False  # another name, or this one in another case ("by R" for remaxim)
        album = album_said(sentence)
        if album is not None:
            if not any(names_album(album, c.album, growing=True) for c in facts):
                return False
            if any(norm(c.album).startswith(album) and album != norm(c.album) for c in facts):
                # still being written, and so far the album's own words: its numbers and keys
                # ("Op. 41", "in A minor") are the name's, not claims; what came before is checked
                sentence = sentence[:_album_start(sentence)]
                low = sentence.lower()
        if AT_ABOUT.search(sentence) and not any(c.tempo for c in facts):
            return False  # "at about" goes on to a tempo, and this track has none to give
        numbers = frozenset().union(*(c.numbers for c in facts))
        keys = frozenset().union(*(c.keys for c in facts))
        claims = without_names(low, self.names)
        tempos = frozenset().union(*(c.tempos for c in facts))
        for said in TEMPO_CLAIM.finditer(claims):  # still being written where it ends the text
            if not (any(n.startswith(said.group(1)) for n in tempos) if said.end() == len(claims)
                    else said.group(1) in tempos):
                return False
        start = self._name_start(low)
        before = low[:start] + re.match(r"\S*", low[start:]).group()  # and the name's first word
        unnamed = without_names(before, self.names)
        if _REPEATED_WORD.search(unnamed) or _REPEATED_PHRASE.search(unnamed) or repeats_words(unnamed):
            return False  # "a piece in the 2012s 2012s": a loop, not a sentence (a name's own may repeat)
        if GLUED_WORD.search(without_names(sentence, self.names)):
            return False
        pending = re.search(r"\d+$", claims)
        head = claims[: pending.start()] if pending else claims
        if any(n not in numbers for n in NUMBER_CLAIM.findall(head)):
            return False
        # a key is a claim once the character after it is known ("a minor-key piece" is not one)
        if any(m.group() not in keys for m in KEY_CLAIM.finditer(head) if m.end() < len(head)):
            return False
        decades = {c.decade for c in facts if c.decade}
        if pending and not any(n.startswith(pending.group()) for n in numbers | decades) and not self._copying_name(low):
            return False
        # after "the", a year is the start of a decade ("from the 2010s"), not "from the 2012" and then junk
        dated = re.search(r"\bthe (\d+)$", claims)
        if dated and not any(d.startswith(dated.group(1)) for d in decades):
            return False
        stated = re.search(r"(?<=\s)[A-G][#b]? (?:major|minor)$", sentence)  # not "A minor-key ..." opening it
        if stated and norm(stated.group()) not in keys:
            return False
        pitch = re.search(r"\bin ([A-G][#b]?)$", sentence)
        if pitch and not any(k.startswith(pitch.group(1).lower()) for k in keys):
            return False
        return self.holds is None or self.holds(sentence)

    def completion(self, text: str) -> str | None:
        """The rest of the title that ``text`` ends part-way through quoting, and its closing
        quote, the rest of the artist it ends part-way through after "by" or of the album after
        "from", or the tempo after "at about"; None when no title, artist, album or tempo on
        screen goes on from it (the cards' first, in order, then the track played before).

        The model may begin a name it then ranks too low to finish ('Here is "Ai'); the only
        true way on is the name itself.

        >>> ClaimGuard(cards=(CardFacts("Airship", artist_as_written="Ann Lee"),)).completion('Try "Ai')
        'rship"'
        """
        parts = sentences(text)
        if not parts:
            return None
        if AT_ABOUT.search(parts[-1] + text[len(text.rstrip()):]):  # the tempo it has begun to give
            space, low = ("" if text[-1:].isspace() else " "), parts[-1].lower()
            named_first = sorted(self.tracks, key=lambda c: not c.named_in(low))  # the track it names
            return next((f"{space}{c.tempo} BPM" for c in named_first
                         if c.tempo and self.allows(f"{text}{space}{c.tempo} BPM")), None)
        quotes = parts[-1].split('"')
        if len(quotes) % 2 == 0:  # inside a quote
            begun, names, close = text[text.rfind('"') + 1:], self.titles, '"'
        else:
            marks = [m for m in re.finditer(r"\b(by|from) ", parts[-1]) if parts[-1].count('"', 0, m.start()) % 2 == 0]
            begun, close = (parts[-1][marks[-1].end():] + text[len(text.rstrip()):] if marks else ""), ""
            if not begun.strip():
                return None
            names = tuple(c.artist_as_written if marks[-1].group(1) == "by" else c.album for c in self.tracks)
        rest = next((name[len(begun):] + close for name in names
                     if name and name.startswith(begun) and self.allows(text + name[len(begun):] + close)), None)
        return rest or None  # a name already whole needs nothing more

    @staticmethod
    def may_end(text: str) -> bool:
        """Whether a reply may stop after ``text``: nothing written yet, or its last sentence
        finished (``well_formed``) and no quote left open."""
        parts = sentences(text)
        return not parts or (parts[-1].count('"') % 2 == 0 and well_formed(parts[-1]))

    def _name_cut_short(self, sentence: str) -> bool:
        """Whether ``sentence`` began an artist on screen after "by" (and a capital, or the small
        letter the artist is written with) and left it before its end: past the name's first word
        ('by Joseph G."S' for Joseph G. Toscano (Zhaytee)), or inside a word of it ("by R (" or
        "by re:" for remaxim). Half a name is not the artist's, and what follows it reads as no
        claim at all."""
        written = {c.artist_as_written for c in self.tracks if c.artist}
        for by in re.finditer(r"\bby ?(?=[A-Za-z])", sentence):
            begun = sentence[by.end()]
            # a small letter begins a name only where an artist is written so ("by re:" for remaxim)
            artists = {a.lower() for a in written if begun.isupper() or a[:1] == begun}
            after = sentence[by.end():].lower()
            if any(a.startswith(after) or after.startswith(a) for a in artists):
                continue  # still being written, or written whole
            for a in artists:
                shared = len(os.path.commonprefix([a, after]))
                if shared > len(a.split(" ")[0]):
                    return True
                if 0 < shared < len(a) and a[shared - 1].isalnum() and a[shared].isalnum() \
                        and not after[shared].isalnum():
                    return True  # left inside a word of the name: "by R (" for remaxim
        return False

    def _name_start(self, low: str) -> int:
        """Where the name that ``low`` ends part-way through begins (the earliest such word), or
        ``len(low)`` when it ends in none. Only after its first word is a repeated word a name's
        own: "in C C" stays a loop, though each "C" could begin a name on screen."""
        starts = [0] + [m.end() for m in re.finditer(r"\s+", low)]
        return next((i for i in starts if low[i:] and any(name.startswith(low[i:]) for name in self.names)), len(low))

    def _copying_name(self, low: str) -> bool:
        """Whether ``low`` ends part-way through one of the names, from one of its words on."""
        return self._name_start(low) < len(low)
