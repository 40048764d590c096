"""Works from the music21 corpus: which ones (collections and their candidates), and the facts a
score gives (title, composer, key, meter, tempo, lyrics), tags and descriptions."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from .common import SEED, clean_title, slugify, title_case, unique_tags

# --------------------------------------------------------------------------- the music21 corpus


@dataclass(frozen=True)
class WorkRef:
    """One score in the music21 corpus, with whatever is known before parsing it."""

    path: str                      # corpus-relative, e.g. "bach/bwv26.6.mxl"
    number: int | None = None      # tune number inside a multi-tune ABC file
    title: str = ""
    artist: str = ""
    album: str = ""
    year: str = ""
    kind: str = ""                 # dance-tune type ("reel") or folk-song function ("ballad")
    place: str = ""                # where a folk song was collected
    tags: tuple[str, ...] = ()
    blurb: str = ""                # what the work is, for the description sentence
    tempo: str = ""                # the edition's tempo word, for scores that do not print one

    @property
    def spec(self) -> str:
        return self.path + (f"#{self.number}" if self.number is not None else "")

    @property
    def slug(self) -> str:
        """Unique and readable: ``"mozart-k155-movement3"``, ``"oneills1850-0101-0200-118"``."""
        stem = slugify(PurePosixPath(self.path).with_suffix("").as_posix())
        return stem + (f"-{self.number}" if self.number is not None else "")


@dataclass(frozen=True)
class Collection:
    """A group of corpus works that becomes one playlist of the demo.

    ``programs`` are (General MIDI program, instrument tag) pairs; each work gets
    one, chosen with a seeded generator. ``bpm`` is the tempo range used when the
    score names no tempo, as a quarter-note-like pulse that :func:`beat_scale` maps
    to the beat of the work's meter. ``works`` lists the works of a
    hand-picked collection; otherwise they are found by :func:`list_candidates`.
    """

    key: str
    playlist: str
    weight: float
    tags: tuple[str, ...]
    programs: tuple[tuple[int, str], ...]
    bpm: tuple[int, int]
    blurb: str
    artist: str = ""
    album: str = ""
    by_part: bool = False          # instruments from part names (violin, piano, voice, ...)
    loop_seconds: float = 0.0      # play a short tune again, as players do, until about this long
    works: tuple[WorkRef, ...] = ()


CHOIR, VOICE, ORGAN, PIANO = (52, "choir"), (53, "voice"), (19, "organ"), (0, "piano")
_VOCAL_PROGRAMS = {52, 53, 54}

SONG_WORKS = (
    WorkRef("schubert/Lindenbaum.xml", title="Der Lindenbaum", artist="Franz Schubert", album="Winterreise",
            year="1827", tags=("lied", "art song", "romantic", "german"), blurb="a song from the cycle Winterreise"),
    WorkRef("schumann_robert/dichterliebe_no2.xml", title="Aus meinen Tränen sprießen", artist="Robert Schumann",
            album="Dichterliebe", year="1840", tags=("lied", "art song", "romantic", "german"),
            blurb="a song from the cycle Dichterliebe"),
    WorkRef("beach/prayer_of_a_tired_child.musicxml", title="Prayer of a Tired Child", artist="Amy Beach",
            year="1915", tags=("choral", "american", "romantic"),
            blurb="a part-song, Op. 75 No. 4, to words by Abbie Farwell Brown"),
    WorkRef("johnson_j_r/lift_every_voice.mxl", title="Lift Every Voice and Sing", artist="J. Rosamond Johnson",
            year="1900", tags=("hymn", "choral", "american"), blurb="a hymn to words by James Weldon Johnson"),
    WorkRef("liliuokalani/aloha_oe.mxl", title="Aloha ʻOe", artist="Liliʻuokalani", year="1878",
            tags=("hawaiian", "choral"), blurb="a Hawaiian farewell song"),
    WorkRef("verdi/laDonnaEMobile.mxl", title="La donna è mobile", artist="Giuseppe Verdi", album="Rigoletto",
            year="1851", tags=("opera", "aria", "romantic", "italian"), blurb="the Duke's aria from Rigoletto"),
    WorkRef("handel/rinaldo/Lascia_chio_pianga.mxl", title="Lascia ch'io pianga", artist="George Frideric Handel",
            album="Rinaldo", year="1711", tags=("opera", "aria", "baroque", "italian"),
            blurb="Almirena's aria from Rinaldo"),
    WorkRef("leadSheet/fosterBrownHair.mxl", title="Jeanie with the Light Brown Hair", artist="Stephen Foster",
            year="1854", tags=("parlour song", "american", "folk"), blurb="a parlour song"),
    WorkRef("webern/webern_dormi_jesu_op_16_no_2.mxl", title="Dormi Jesu", artist="Anton Webern",
            album="Five Canons, Op. 16", year="1924", tags=("modernist", "atonal", "canon", "sacred"),
            blurb="a canon for voice and clarinet, Op. 16 No. 2"),
)
CHAMBER_WORKS = (
    WorkRef("chopin/mazurka06-2.krn", title="Mazurka in C-sharp minor, Op. 6 No. 2", artist="Frédéric Chopin",
            year="1832", tags=("romantic", "mazurka", "polish"), blurb="a mazurka for piano"),
    *(WorkRef(f"schumann_clara/polonaise_op1n{n}.mxl", title=f"Polonaise, Op. 1 No. {n}", artist="Clara Schumann",
              album="Quatre Polonaises, Op. 1", year="1831", tags=("romantic", "polonaise"),
              blurb="a polonaise for piano") for n in range(1, 5)),
    WorkRef("schumann_clara/opus17/movement3.xml", title="Piano Trio in G minor, Op. 17: Andante",
            artist="Clara Schumann", year="1846", tags=("romantic", "piano trio"),
            blurb="the slow movement of a piano trio"),
    *(WorkRef(f"schoenberg/opus19/movement{n}.mxl", title=f"Six Little Piano Pieces, Op. 19 No. {n}",
              artist="Arnold Schoenberg", album="Six Little Piano Pieces, Op. 19", year="1911",
              tags=("modernist", "atonal"), blurb="a miniature for piano",
              tempo="Langsam" if n == 2 else "Sehr langsam") for n in (2, 6)),
    WorkRef("corelli/opus3no1/1grave.xml", title="Trio Sonata, Op. 3 No. 1: Grave", artist="Arcangelo Corelli",
            year="1689", tags=("baroque", "trio sonata"), blurb="the opening of a church trio sonata"),
    WorkRef("cpebach/h186.mxl", title="Sonata in A major, H. 186: Poco adagio", artist="Carl Philipp Emanuel Bach",
            tags=("galant", "keyboard sonata"), blurb="the slow movement of a keyboard sonata", tempo="Poco adagio"),
    WorkRef("weber/concertino_clarinet.mxl", title="Clarinet Concertino, Op. 26", artist="Carl Maria von Weber",
            year="1811", tags=("romantic", "concertino"), blurb="a concertino for clarinet, here with piano"),
    WorkRef("mozart/k545/movement1_exposition.mxl", title="Piano Sonata No. 16 in C major, K. 545: Allegro",
            artist="Wolfgang Amadeus Mozart", year="1788", tags=("classical", "piano sonata"),
            blurb="the exposition of a piano sonata's first movement"),
)
RAGTIME_WORKS = (
    WorkRef("joplin/maple_leaf_rag.mxl", title="Maple Leaf Rag", artist="Scott Joplin", year="1899",
            blurb="a piano rag"),
    WorkRef("leadSheet/berlinAlexandersRagtime.mxl", title="Alexander's Ragtime Band", artist="Irving Berlin",
            year="1911", blurb="a ragtime song, its melody on piano"),
)

COLLECTIONS: tuple[Collection, ...] = (
    Collection("bach-chorales", "Bach chorales", 0.17, ("chorale", "baroque", "sacred", "hymn", "german"),
               (CHOIR, CHOIR, ORGAN), (60, 76), "a four-part chorale harmonisation",
               artist="Johann Sebastian Bach", album="Bach chorales"),
    Collection("oneills", "Irish dance tunes", 0.13, ("folk", "irish", "traditional"),
               ((110, "fiddle"), (21, "accordion"), (73, "flute"), (78, "tin whistle")), (100, 120),
               "a traditional Irish tune from O'Neill's Music of Ireland (1903)",
               album="O'Neill's Music of Ireland", loop_seconds=45.0),
    Collection("ryans-mammoth", "Fiddle tunes from Ryan's Mammoth Collection", 0.11,
               ("folk", "fiddle tune", "traditional", "american"),
               ((110, "fiddle"), (110, "fiddle"), (21, "accordion"), (73, "flute")), (100, 120),
               "a dance tune from Ryan's Mammoth Collection (Boston, 1883)",
               album="Ryan's Mammoth Collection", loop_seconds=45.0),
    Collection("essen-folksongs", "Folk songs of Europe and China", 0.11, ("folk", "folk song", "traditional"),
               ((73, "flute"), (71, "clarinet"), (68, "oboe"), (74, "recorder")), (72, 108),
               "a folk song melody from the Essen Folksong Collection", artist="Traditional",
               album="Essen Folksong Collection", loop_seconds=30.0),
    Collection("string-quartets", "String quartets", 0.12, ("string quartet", "chamber music", "strings"),
               ((48, "strings"),), (80, 132), "a string quartet movement", by_part=True),
    Collection("monteverdi-madrigals", "Madrigals", 0.08, ("madrigal", "renaissance", "italian", "polyphony"),
               (CHOIR,), (96, 120), "a five-voice madrigal", artist="Claudio Monteverdi"),
    Collection("palestrina-masses", "Palestrina masses", 0.06, ("mass", "renaissance", "sacred", "polyphony", "latin"),
               (CHOIR,), (100, 120), "a movement of a polyphonic mass",
               artist="Giovanni Pierluigi da Palestrina"),
    Collection("trecento", "Trecento and early music", 0.06, ("medieval", "early music", "ars nova", "polyphony"),
               (CHOIR, (74, "recorder")), (80, 110), "a fourteenth-century piece"),
    Collection("songs", "Songs and arias", 0.06, ("song",), (VOICE,), (60, 90), "a song", by_part=True,
               works=SONG_WORKS),
    Collection("piano-chamber", "Piano and chamber music", 0.07, (), (PIANO,), (60, 100), "a piece",
               by_part=True, works=CHAMBER_WORKS),
    Collection("ragtime", "Ragtime", 0.02, ("ragtime", "american"), (PIANO,), (80, 100), "a rag",
               works=RAGTIME_WORKS),
)

QUARTETS = {  # folder -> (composer, work, year, era)
    "beethoven/opus18no1": ("Ludwig van Beethoven", "String Quartet No. 1 in F major, Op. 18 No. 1", "1800", "classical"),
    "beethoven/opus59no1": ("Ludwig van Beethoven", "String Quartet No. 7 in F major, Op. 59 No. 1 (Razumovsky)", "1806", "classical"),
    "beethoven/opus59no2": ("Ludwig van Beethoven", "String Quartet No. 8 in E minor, Op. 59 No. 2 (Razumovsky)", "1806", "classical"),
    "beethoven/opus59no3": ("Ludwig van Beethoven", "String Quartet No. 9 in C major, Op. 59 No. 3 (Razumovsky)", "1806", "classical"),
    "haydn/opus1no1": ("Joseph Haydn", "String Quartet in B-flat major, Op. 1 No. 1", "", "classical"),
    "haydn/opus74no1": ("Joseph Haydn", "String Quartet in C major, Op. 74 No. 1", "1793", "classical"),
    "mozart/k80": ("Wolfgang Amadeus Mozart", "String Quartet No. 1 in G major, K. 80", "1770", "classical"),
    "mozart/k155": ("Wolfgang Amadeus Mozart", "String Quartet No. 2 in D major, K. 155", "1772", "classical"),
    "mozart/k156": ("Wolfgang Amadeus Mozart", "String Quartet No. 3 in G major, K. 156", "1772", "classical"),
    "mozart/k458": ("Wolfgang Amadeus Mozart", "String Quartet No. 17 in B-flat major, K. 458 (The Hunt)", "1784", "classical"),
    "schumann_robert/opus41no1": ("Robert Schumann", "String Quartet No. 1 in A minor, Op. 41 No. 1", "1842", "romantic"),
}
MONTEVERDI_BOOKS = {"3": "1592", "4": "1603", "5": "1605"}

# Dance tunes: tempo in quarter notes ("q") or in beats of the meter ("beat") per minute.
DANCE_TEMPI = {
    "slip jig": (165, 185, "q"), "jig": (165, 185, "q"), "reel": (200, 230, "q"), "hornpipe": (150, 180, "q"),
    "strathspey": (110, 130, "q"), "clog": (150, 180, "q"), "highland fling": (140, 160, "q"),
    "fling": (140, 160, "q"), "polka": (200, 240, "q"), "slide": (180, 200, "q"), "set dance": (140, 170, "q"),
    "schottische": (140, 160, "q"), "march": (100, 120, "beat"), "waltz": (140, 170, "beat"),
    "mazurka": (130, 150, "beat"), "air": (60, 76, "beat"),
}
# Tempo words (Italian and German) -> quarter-note-like pulses per minute; scaled to the meter's beat.
TEMPO_WORDS = {
    "grave": 44, "largo": 48, "lento": 52, "larghetto": 60, "adagio": 60, "andante": 80, "andantino": 92,
    "con moto": 96, "moderato": 104, "moderate": 104, "allegretto": 112, "allegro": 132, "allegro molto": 150,
    "molto allegro": 150, "allegro assai": 150, "vivace": 152, "presto": 176, "prestissimo": 200,
    "menuetto": 120, "minuet": 120, "scherzo": 150, "marcia": 104, "tranquillo": 60, "animato": 120,
    "sehr langsam": 44, "langsam": 56, "ruhig": 60, "nicht schnell": 72, "massig": 84, "mässig": 84,
    "mäßig": 84, "bewegt": 100, "lebhaft": 132, "rasch": 144, "schnell": 160,
}
# Tempo markings of quartet movements whose corpus files print none (from the published scores).
QUARTET_TEMPI = {
    "beethoven/opus18no1/movement1.mxl": "Allegro con brio", "beethoven/opus18no1/movement2.mxl": "Adagio affettuoso",
    "beethoven/opus18no1/movement3.mxl": "Scherzo: Allegro molto", "beethoven/opus18no1/movement4.mxl": "Allegro",
    "haydn/opus74no1/movement1.mxl": "Allegro moderato", "haydn/opus74no1/movement2.mxl": "Andantino grazioso",
    "haydn/opus74no1/movement3.mxl": "Menuetto: Allegretto", "haydn/opus74no1/movement4.mxl": "Vivace",
    "mozart/k155/movement1.mxl": "Allegro", "mozart/k155/movement2.mxl": "Andante",
    "mozart/k155/movement3.mxl": "Molto allegro", "mozart/k458/movement2.mxl": "Menuetto: Moderato",
    "mozart/k458/movement3.mxl": "Adagio", "mozart/k458/movement4.mxl": "Allegro assai",
    "mozart/k80/movement1.mxl": "Adagio", "mozart/k80/movement2.mxl": "Allegro",
    "mozart/k80/movement3.mxl": "Menuetto", "mozart/k80/movement4.mxl": "Rondeau: Allegro",
}
ESSEN_FUNCTIONS = (
    ("kinder", "children's song"), ("wiegen", "lullaby"), ("liebe", "love song"), ("ballade", "ballad"),
    ("romanze", "romance"), ("tanz", "dance song"), ("reigen", "round dance"), ("soldaten", "soldier's song"),
    ("kriegs", "war song"), ("religi", "sacred song"), ("geistlich", "sacred song"), ("trink", "drinking song"),
    ("arbeit", "work song"), ("klage", "lament"), ("xiaodiao", "xiaodiao"), ("shange", "shan'ge"),
    ("haozi", "work song"), ("weihnacht", "christmas song"), ("jaeger", "hunting song"),
)
ESSEN_PLACES = {
    "deutschland": "Germany", "luxemburg": "Luxembourg", "lothringen": "Lorraine", "irland": "Ireland",
    "oesterreich": "Austria", "schweiz": "Switzerland", "niederlande": "the Netherlands", "ungarn": "Hungary",
    "jugoslawien": "Yugoslavia", "polen": "Poland", "frankreich": "France", "elsass": "Alsace",
    "boehmen": "Bohemia", "schlesien": "Silesia", "china": "China", "daenemark": "Denmark",
    "schweden": "Sweden", "russland": "Russia", "rumaenien": "Romania",
}
_PART_PROGRAMS = (  # part-name words -> (General MIDI program, instrument tag); first match wins
    (("violoncell", "cello"), (42, "cello")), (("viola",), (41, "viola")), (("violin", "violino"), (40, "violin")),
    (("violone", "contrabass", "kontrabass"), (43, "double bass")), (("clarinet", "klarinette"), (71, "clarinet")),
    (("organ", "organo"), (19, "organ")), (("harpsichord", "cembalo"), (6, "harpsichord")),
    (("flute", "flauto"), (73, "flute")), (("horn",), (60, "french horn")), (("piano", "klavier"), (0, "piano")),
)
_VOICE_WORDS = ("soprano", "alto", "tenor", "bass", "canto", "quinto", "cantus", "contratenor", "voice",
                "choir", "gesang", "triplum", "motetus", "superius", "solo")


def corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


@dataclass(frozen=True)
class AbcTune:
    number: int
    title: str
    rhythm: str = ""
    composer: str = ""
    origin: str = ""


def abc_tunes(text: str) -> list[AbcTune]:
    """The tunes of an ABC file (reference number, first title, R:, C: and O: fields), without parsing music."""
    tunes = []
    for block in re.split(r"(?m)^(?=X:)", text):
        number = re.match(r"X:\s*(\d+)", block)
        if not number:
            continue
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if m := re.match(r"([TRCO]):\s*(.*)", line):
                fields.setdefault(m.group(1), m.group(2).strip())
        tunes.append(AbcTune(int(number.group(1)), fields.get("T", ""), fields.get("R", ""),
                             fields.get("C", ""), fields.get("O", "")))
    return tunes


def dance_kind(text: str) -> str:
    """The dance-tune type named in a title or ABC ``R:`` field ("7th Regiment -- Reel" -> "reel")."""
    t = re.sub(r"[^a-z ]+", " ", text.lower().replace("slipjig", "slip jig"))
    return next((kind for kind in DANCE_TEMPI if re.search(rf"\b{kind}s?\b", t)), "")


def split_tune_title(title: str) -> tuple[str, str]:
    """``"Flowing Tide, The -- REEL."`` -> ``("The Flowing Tide", "reel")``."""
    name, _, rest = title.partition("--")
    kind = dance_kind(rest) or dance_kind(name)
    name = name.strip(" .")
    if m := re.match(r"(.+),\s*(The|A|An)$", name, re.I):
        name = f"{title_case(m.group(2))} {m.group(1)}"
    if name.isupper():
        name = title_case(name)
    return name, kind


def tune_composer(text: str) -> str:
    """An ABC ``C:`` field as a credit, or "Traditional" when it names nobody."""
    t = re.sub(r"\s*[%(].*$", "", text).strip(" .")
    if not re.search(r"[A-Za-z]{3}", t) or re.search(r"\b(trad|unknown|anon|jig|reel)\b", t, re.I):
        return "Traditional"
    return title_case(t) if t.isupper() else t


def essen_facts(origin: str, function: str, stem: str) -> tuple[str, list[str]]:
    """Where an Essen folk song comes from and its English function words ("ballad", "lullaby")."""
    place = "China" if stem.startswith("han") else ""
    for part in reversed(re.split(r"[,;/]", origin.lower())):
        words = re.sub(r"[^a-z]", "", part)
        if words in ESSEN_PLACES:
            place = ESSEN_PLACES[words]
            break
    squeezed = re.sub(r"[^a-z]", "", function.lower())
    kinds = unique_tags(tag for word, tag in ESSEN_FUNCTIONS if word in squeezed)
    return place, kinds


def _corpus_files(folder: str, pattern: str) -> list[str]:
    root = corpus_root()
    return sorted(p.relative_to(root).as_posix() for p in (root / folder).glob(pattern) if p.is_file())


def _interleave(groups: Sequence[list[WorkRef]], rng: random.Random) -> list[WorkRef]:
    """Shuffle each group and the groups' order, then take one from each in turn: variety first."""
    shuffled = [rng.sample(g, len(g)) for g in groups if g]
    rng.shuffle(shuffled)
    out = []
    for i in range(max((len(g) for g in shuffled), default=0)):
        out.extend(g[i] for g in shuffled if i < len(g))
    return out


def list_candidates(collection: Collection, seed: int = SEED) -> list[WorkRef]:
    """The collection's works in the seeded order they are tried in."""
    rng = random.Random(f"{seed}:{collection.key}")
    if collection.works:
        return rng.sample(list(collection.works), len(collection.works))
    key, root = collection.key, corpus_root()
    if key == "bach-chorales":
        paths = [p for p in _corpus_files("bach", "bwv*.mxl") if re.fullmatch(r"bach/bwv\d+(\.\d+)?\.mxl", p)]
        return rng.sample([WorkRef(p) for p in paths], len(paths))
    if key in ("oneills", "ryans-mammoth"):
        folder = "oneills1850" if key == "oneills" else "ryansMammoth"
        groups = []
        for path in _corpus_files(folder, "*.abc"):
            refs = []
            for tune in abc_tunes((root / path).read_text(encoding="utf-8", errors="replace")):
                name, kind = split_tune_title(tune.title)
                kind = dance_kind(tune.rhythm) or kind
                if name:
                    refs.append(WorkRef(path, tune.number, title=name, kind=kind, artist=tune_composer(tune.composer)))
            groups.append(refs)
        if key == "ryans-mammoth":      # one tune a file: interleave by dance type instead
            by_kind: dict[str, list[WorkRef]] = {}
            for ref in (r for g in groups for r in g):
                by_kind.setdefault(ref.kind, []).append(ref)
            groups = [by_kind[k] for k in sorted(by_kind)]
        return _interleave(groups, rng)
    if key == "essen-folksongs":
        groups = []
        for path in _corpus_files("essenFolksong", "*.abc"):
            stem = Path(path).stem
            if stem.startswith(("test", "variant")):
                continue
            refs = []
            for tune in abc_tunes((root / path).read_text(encoding="utf-8", errors="replace")):
                place, kinds = essen_facts(tune.origin, tune.rhythm, stem)
                if clean_title(tune.title):
                    refs.append(WorkRef(path, tune.number, title=tune.title, place=place,
                                        kind=kinds[0] if kinds else "", tags=tuple(kinds)))
            groups.append(refs)
        return _interleave(groups, rng)
    if key == "string-quartets":
        refs = [WorkRef(p, tempo=QUARTET_TEMPI.get(p, "")) for folder in QUARTETS
                for p in _corpus_files(folder, "movement*.mxl")]
        composers = ("beethoven", "haydn", "mozart", "schumann")
        return _interleave([[r for r in refs if r.path.startswith(c)] for c in composers], rng)
    if key == "monteverdi-madrigals":
        refs = [WorkRef(p) for p in _corpus_files("monteverdi", "madrigal.*.mxl")]
        refs.append(WorkRef("lusitano/allor_che_ignuda.mxl", title="Allor che ignuda d'herb et fior la terra",
                            artist="Vicente Lusitano", album="Madrigals", blurb="a three-voice madrigal"))
        return rng.sample(refs, len(refs))
    if key == "palestrina-masses":
        paths = _corpus_files("palestrina", "*.krn")
        by_movement: dict[str, list[WorkRef]] = {}
        for p in paths:
            by_movement.setdefault(Path(p).stem.split("_")[0], []).append(WorkRef(p))
        return _interleave(list(by_movement.values()), rng)
    if key == "trecento":
        refs = [WorkRef(p) for p in _corpus_files("trecento", "*.xml")]
        refs += [WorkRef("luca/gloria.xml", title="Gloria (Q15)", artist="D. Luca", blurb="a mass movement"),
                 WorkRef("ciconia/quod_jactatur.xml", title="Quod jactatur", artist="Johannes Ciconia",
                         blurb="a canon")]
        return rng.sample(refs, len(refs))
    raise ValueError(f"no works listed for collection {collection.key!r}")


