"""Whether what the model says of the shown tracks is true.

The model writes its reply from the catalog's facts about the first card, but a small model
also writes what it was not given: a title that is not on screen, "a slow piece" of a card at
185 BPM, "faster than the last one" of a slower track, "closer to the first one" of a track more
like the last. ``ReplyCheck`` reads a reply as a person would: each sentence against the track it
is about, the track the turn is relative to, and the session's two ends. It drops a finished
sentence that does not hold (``ground``), and tells the guard (``grounding.ClaimGuard``) whether
a sentence still being written can hold (``holds_while_written``), so that a streamed reply
never shows what the check would drop.

    check = ReplyCheck(index.tracks, CatalogWords.from_tracks(index.tracks))
    kept, dropped = check.ground(generated, shown, reference, (first, last))
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from index.track import Track

from .facts import false_descriptions, false_start, unfounded_tags
from .facts import has_vocals as vocal_state
from .grounding import (COMPARING, KEY_CLAIM, NUMBER_CLAIM, TEMPO_CLAIM, album_said, names_album, names_of,
                        names_title, norm, numbers_of, sentences, tempo_numbers, well_formed, without_names)
from .refine import Refinement, satisfies
from .request import CatalogWords, artist_patterns, fold, read_request

Ends = tuple[Track | None, Track | None]  # the session's first track and the last reply's first card


class ReplyCheck:
    """The check of replies over one catalog: its titles and artists are what a sentence may not
    name unless they are on screen.

    Parameters
    ----------
    tracks : sequence of Track
        The catalog.
    words : CatalogWords
        Its tags and artists (``request.CatalogWords.from_tracks``).
    """

    def __init__(self, tracks: Sequence[Track], words: CatalogWords):
        self.words = words
        titles = {norm(t.title) for t in tracks if len(t.title) > 3}
        # Whole-word title matching, longest first, so "Reel" is not found inside "Reeling".
        self._title_re = re.compile(r"(?<!\w)(?:" + "|".join(
            re.escape(t) for t in sorted(titles, key=len, reverse=True)) + r")(?!\w)") if titles else None

    def holds_while_written(self, shown: list[Track], reference: Track | None,
                            first_and_last: Ends = (None, None)) -> Callable[[str], bool]:
        """The guard's test of a sentence still being written about ``shown``: whether it can
        still hold. The guard reads quotes, "by", numbers and keys itself; this reads comparisons
        and the catalog's other names ("from SuperTux Team" of a track by someone else)."""
        allowed = shown + ([reference] if reference is not None else [])

        def holds(sentence: str) -> bool:
            named = self.tracks_named(sentence, allowed)
            subject, about, allowed_here, claim = self.about(sentence, named, shown, reference)
            return not self.names_strangers(sentence, about, allowed_here, growing=True) and \
                not says_false(sentence, subject, reference, claim, first_and_last, growing=True) and \
                not self.misdescribes(without_names(norm(sentence), names_of(allowed_here)), about, growing=True)

        return holds

    def ground(self, generated: str, shown: list[Track], reference: Track | None = None,
               first_and_last: Ends = (None, None)) -> tuple[str, list[str]]:
        """(the sentences of ``generated`` that hold, joined; the sentences dropped).

        Each sentence is checked against the track it is about: the shown track it names, else
        the first card (the one whose facts the model was given), with ``reference`` (the track
        the turn is relative to) for comparisons, and ``first_and_last`` for which end of the
        session a card is more like. A sentence that opens with a pronoun after one
        dropped for naming a track that is not shown ("It's calm, about 92 BPM.") is about that
        track, and goes with it.
        """
        kept, dropped = [], []
        previous_why = None
        for sentence in sentences(generated):
            s = sentence.strip()
            if not norm(s):
                continue
            named = self.tracks_named(s, shown + ([reference] if reference is not None else []))
            why = self.why_false(s, named, shown, reference, first_and_last)
            if why is None and previous_why == "names" and not named and _DEPENDENT.match(s):
                why = "names"
            (kept if why is None else dropped).append(s)
            previous_why = why
        return " ".join(kept), dropped

    def tracks_named(self, sentence: str, tracks: list[Track]) -> list[Track]:
        """The tracks among ``tracks`` whose title the sentence names (whole words)."""
        low = norm(sentence)
        out: list[Track] = []
        for t in tracks:
            if names_title(low, t.title) and t not in out:
                out.append(t)
        return out

    def why_false(self, sentence: str, named: list[Track], shown: list[Track], reference: Track | None,
                  first_and_last: Ends = (None, None)) -> str | None:
        """None when the sentence holds; else "form", "names" (a title, artist or album not on
        screen or not its track's) or "facts" (a number, key or comparison that is not its track's,
        or a year given as a tempo)."""
        if not well_formed(sentence):
            return "form"
        low = norm(sentence)
        subject, about, allowed, claim = self.about(sentence, named, shown, reference)
        titles = {norm(t.title) for t in allowed}
        quoted = [norm(q) for q in re.findall(r'"([^"]+)"', sentence)]
        if sentence.count('"') % 2 or any(q not in titles for q in quoted):
            return "names"
        if self.names_strangers(sentence, about, allowed):
            return "names"
        album = album_said(sentence)
        if album is not None and not any(names_album(album, t.album) for t in about):
            return "names"  # "from" names an album that is not its track's
        # Numbers and keys inside the tracks' own names ("Sonata No. 16 in C major") are names,
        # not claims: they are checked with those names taken out of the sentence.
        claims = without_names(low, names_of(allowed))
        numbers = set().union(*(numbers_of(t) for t in about))
        if any(int(n) not in numbers for n in NUMBER_CLAIM.findall(claims)):
            return "facts"
        tempos = set().union(*(tempo_numbers(t.descriptors.get("tempo_bpm")) for t in about))
        if any(int(n) not in tempos for n in TEMPO_CLAIM.findall(claims)):
            return "facts"  # a year given as a tempo ("at about 1840")
        keys = {str(t.descriptors.get("key", "")).lower() for t in about}
        if any(k not in keys for k in KEY_CLAIM.findall(claims)):
            return "facts"  # not "a minor-key piece"
        if self.misdescribes(claims + " ", about):
            return "facts"  # "a slow piece" of a card at 185 BPM
        return "facts" if says_false(sentence, subject, reference, claim, first_and_last) else None

    def misdescribes(self, text: str, about: Sequence[Track], *, growing: bool = False) -> bool:
        """Whether ``text`` (names taken out) puts its track in a band ("slow", "dark") or gives it a
        catalog tag ("piano") that no track it is about has (the card, and the track before where
        the sentence compares with it). ``growing``: ``text`` is still being written, and a word it
        ends part-way through that can only become such a word counts too (``false_start``)."""
        if not about:
            return False
        tags = self.words.tags
        return bool(set.intersection(*(set(false_descriptions(text, t)) | set(unfounded_tags(text, t, tags))
                                       | ({false_start(text, t, tags)} - {None} if growing else set())
                                       for t in about)))

    def about(self, sentence: str, named: list[Track], shown: list[Track], reference: Track | None
              ) -> tuple[Track | None, list[Track], list[Track], Refinement]:
        """(the track a sentence is about, the tracks whose facts it may state, the tracks it may
        name, what it claims read as a request)."""
        allowed = shown + ([reference] if reference is not None else [])
        subject = next((t for t in named if t in shown), None) or (shown[0] if shown else None)
        claim = read_request(sentence, CatalogWords())
        # The track before lends its facts only to a sentence about it or set against it: "a piece
        # in C minor at about 112 BPM" said of a card in G# major at 185 is false, even when the
        # track before was in C minor at 112.
        compares = reference is not None and (reference in named or bool(claim.relative) or COMPARING.search(norm(sentence)))
        about = [t for t in [subject, reference if compares else None] if t is not None]
        return subject, about, allowed, claim

    def names_strangers(self, sentence: str, about: list[Track], allowed: list[Track], *,
                        growing: bool = False) -> bool:
        """Whether ``sentence`` names a catalog title that is not one of ``allowed``, a catalog
        artist who is not that of a track in ``about``, or says "by" someone who is not the artist
        of a track in ``allowed`` ("by Irving Berliner" for Irving Berlin's song).

        With ``growing`` the sentence is still being written: a name from which the rest of the
        sentence is still the start of one it may give ("Joseph" while "Joseph G. Toscano" is being
        written) is not counted yet.
        """
        titles = {norm(t.title) for t in allowed}
        artists = {norm(t.artist) for t in about if t.artist}

        def unfinished(match: re.Match, text: str, names: set[str]) -> bool:
            # the text from the name on is still the start of a name it may give ("airship, but"
            # of the title "Airship, but this time, it sounds good", not the title "Airship")
            return growing and any(n.startswith(text[match.start():]) for n in names)

        low = re.sub(r"\s+", " ", sentence.lower()).lstrip()
        if self._title_re is not None and any(m.group(0) not in titles and not unfinished(m, low, titles)
                                              for m in self._title_re.finditer(low)):
            return True  # a catalog title that is not on screen
        folded = re.sub(r"\s+", " ", fold(sentence)).lstrip()
        own = {fold(a) for a in artists} | {fold(t) for t in titles}
        if any(norm(name) not in artists and not unfinished(m, folded, own)
               for name, pattern in artist_patterns(self.words.artists) for m in pattern.finditer(folded)):
            return True
        # initials lose their stops first: "by Joseph G. Toscano" names Joseph G. Toscano, not "Joseph G";
        # and a name without its alias counts: "Joseph G. Toscano" for "Joseph G. Toscano (Zhaytee)"
        known = {_without_initials(v) for a in artists | {norm(t.artist) for t in allowed}
                 for v in (a, re.sub(r"\s*\(.*?\)", "", a))}
        plain = _without_initials(sentence)
        # while the sentence grows, a name at its end may go on (the guard reads it as it is written)
        return any(norm(m.group(1)) not in known for m in _BY_ARTIST.finditer(plain)
                   if not (growing and m.end() >= len(plain.rstrip())))


def says_false(sentence: str, subject: Track | None, reference: Track | None,
               claim: Refinement | None = None,
               first_and_last: Ends = (None, None), *,
               growing: bool = False) -> bool:
    """Whether what ``sentence`` says of ``subject`` against ``reference`` (calmer, faster, the same
    artist, another), of its singing, or of its likeness to the session's first track and the
    last reply's first card (``first_and_last``) is false. The numbers quoted with a comparison
    ("172 vs 66 BPM") are not read as a request for 66 BPM: they are checked as numbers.
    ``growing``: the sentence is still being written (``likeness_false``)."""
    claim = claim if claim is not None else read_request(sentence, CatalogWords())
    low = norm(sentence)
    if subject is not None and likeness_false(low, subject, first_and_last, growing=growing):
        return True
    if claim.relative and (reference is None or subject is None
                           or not satisfies(subject, reference, Refinement(relative=claim.relative))):
        return True
    if claim.same_artist is not None and (reference is None or subject is None or
                                          satisfies(subject, reference, Refinement(same_artist=claim.same_artist)) is False):
        return True
    if subject is not None and _VOCAL_WORDS.search(low) and claim.vocals is not None \
            and vocal_state(subject) is not claim.vocals:
        return True  # "a piece with vocals" over an instrumental card
    return subject is not None and "instrumental" in low and vocal_state(subject) is not False


def likeness_false(low: str, subject: Track, first_and_last: Ends, *,
                   growing: bool = False) -> bool:
    """Whether ``low`` (a sentence, lowercased) says ``subject`` is closer to one end of the
    session than to the other ("closer to the first one than to the last one", the reverse, or
    "closer to the first one", the other end implied) and it is not (``synth.more_like``). The ends
    are the session's first track and the last reply's first card (``first_and_last``); a track
    named otherwise ("the next one", "the 2010s") cannot be told, and the claim does not hold.
    ``growing``: the sentence is still being written, and a word begun after "the" must be the
    start of an end that makes the claim true ("la" of "last" where the track is more like the
    last one)."""
    from .synth import more_like

    said = _LIKENESS_CLAIM.search(low)
    if said is None:
        return False
    first, last = first_and_last
    ends = {"first": first, "last": last, "previous": last}
    other = {"first": "last", "last": "first", "previous": "first"}

    def true(this: str, that: str | None = None) -> bool:
        return this in ends and more_like(subject, ends[this], ends.get(that or other[this]))

    def false_start(part: str, claim: Callable[[str], bool]) -> bool | None:
        """Whether the word begun at the end of ``part`` cannot become a true end (None: none is begun)."""
        begun = _BEGUN_END.search(part) if growing else None
        if begun is None:
            return None
        word = begun.group(1)
        return not ("very".startswith(word) or any(w.startswith(word) and claim(w) for w in ends))

    near, than = said.group(1), said.group(2) or ""
    if (wrong := false_start(near, true)) is not None and not than:
        return wrong
    named = _NAMED_END.search(near)
    if named is None:
        # "more like a waltz than a march" is not about the session; "closer to its roots than to
        # the last one" is, and what it sets against the last one cannot be told
        return _NAMED_END.search(than) is not None
    this = named.group(1)
    if (wrong := false_start(than, lambda w: true(this, w))) is not None:
        return wrong
    far = _NAMED_END.search(than)  # none: the other end ("than before"), or not written yet
    return not true(this, far.group(1) if far else None)


def _without_initials(text: str) -> str:
    """``text`` with the stop after each initial dropped ("J. S. Bach" -> "J S Bach")."""
    return re.sub(r"\b([A-Za-z])\.(?=\s)", r"\1", text)


# "by <Name>" up to "from", punctuation or the end: the artist a sentence names ("byName" too).
_BY_ARTIST = re.compile(r"\bby ?([A-Z][^,.;:!?]*?)(?= from\b| with\b| in\b| at\b| fits\b| is\b| has\b|[,.;:!?]|$)")
# A sentence that leans on the one before it ("It's calm.", "This one ...").
_DEPENDENT = re.compile(r"^\W*(?:it|it's|its|this|that|these|they|they're|the track|the piece|the song|the tune|"
                        r"both|all three|also|and)\b", re.IGNORECASE)
# "It's closer to the first one than to the last one", and the reverse: which end of the session a
# track is more like (the synthesizer's "like first" replies say so); the two ends are the groups.
_LIKENESS_CLAIM = re.compile(r"\b(?:closer|nearer|more like|more similar|more alike)\b(.*?)(?:\bthan\b(.*))?$")
_NAMED_END = re.compile(r"\bthe (?:very )?(\S+)")  # "the first", "the very first", "the next", "the 2010s"
_BEGUN_END = re.compile(r"\bthe (?:very )?(\S*)$")  # the same, its word still being written
_VOCAL_WORDS = re.compile(r"\b(vocals?|vocally|vocalist|sung|sings?|singer|singing|voices?)\b")
