"""Rendering a score to audio: MIDI with chosen instruments and tempo, FluidSynth with a General
MIDI soundfont, and tagged Ogg files."""
from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from .common import (
    MIN_TRACK_SECONDS,
    SAMPLE_RATE,
    SEED,
    SOUNDFONTS,
    clean_title,
    is_root,
    run_command,
    say,
    title_from_filename,
    unique_tags,
    with_article,
    write_ogg,
    write_ogg_tags,
    year_from,
)
from .games import _apt_update_once
from .works import (
    _PART_PROGRAMS,
    _VOCAL_PROGRAMS,
    _VOICE_WORDS,
    CHOIR,
    DANCE_TEMPI,
    MONTEVERDI_BOOKS,
    QUARTETS,
    TEMPO_WORDS,
    VOICE,
    Collection,
    WorkRef,
)


@dataclass
class ScoreFacts:
    """What a score says about itself. Strings are empty when the score is silent."""

    title: str = ""
    movement: str = ""
    composer: str = ""
    parent_title: str = ""
    year: str = ""
    key: str = ""               # analysed key, "G major"
    mode: str = ""
    key_signature: str = ""     # "1 sharp"
    meter: str = ""             # "3/4"
    beat_ql: float = 1.0        # quarter notes per beat of the meter
    qpm: float | None = None    # quarter notes per minute from a metronome mark
    tempo_text: str = ""
    lyrics: str = ""
    part_names: list[str] = field(default_factory=list)
    quarter_length: float = 0.0


def score_key_label(k: Any) -> str:
    """A music21 Key as text: ``"Bb major"``, ``"F# minor"``."""
    return f"{k.tonic.name.replace('-', 'b')} {k.mode}"


def clean_score_lyrics(text: str) -> str:
    """Join hyphenated syllables, drop soft hyphens and a leading verse number, collapse spaces."""
    t = re.sub(r"\xad\s*", "", text).replace("\xa0", " ").replace("‿", " ")   # soft hyphens split syllables
    t = re.sub(r"(\w)-+\s+(?=\w)", r"\1", t)
    t = re.sub(r"ú\s+", "", t)             # the Monteverdi files mark a split syllable with "ú"
    t = re.sub(r"^\s*\d+\.\s*", "", t)
    return " ".join(t.split())


def lyrics_look_clean(text: str) -> bool:
    """False for lyrics mangled by optical recognition ("d'erbe noveile;_g dino-~- vei-l[gmozi")."""
    words = text.split()
    clean = sum(bool(re.fullmatch(r"[(\"'“‘]?[^\W\d_]+(['’-][^\W\d_]+)*[)\"'”’]?[,.;:!?]*", w)) for w in words)
    return bool(words) and clean >= 0.9 * len(words)


def incipit(lyrics: str, min_words: int = 3, max_words: int = 6) -> str:
    """The opening words of a text, as hymns are named: up to a punctuation mark after ``min_words``."""
    out: list[str] = []
    for word in lyrics.split()[:max_words]:
        out.append(word)
        if len(out) >= min_words and re.search(r"[,.;:!?]$", word):
            break
    return " ".join(out).rstrip(",.;:!?")


def score_facts(score: Any) -> ScoreFacts:
    """Title, composer, key, meter, tempo and lyrics of a music21 Score.

    The key is analysed from the notes (Krumhansl-Schmuckler via ``analyze('key')``);
    the key signature, meter and metronome mark are the first ones written; lyrics
    are the first verse of the first part that has any.
    """
    from music21 import expressions, key, meter, tempo, text

    facts = ScoreFacts()
    fields = dict(score.metadata.all()) if score.metadata is not None else {}
    facts.title = str(fields.get("title", "") or "")
    facts.movement = str(fields.get("movementName", "") or "")
    facts.composer = str(fields.get("composer", "") or "")
    facts.parent_title = str(fields.get("parentTitle", "") or "")
    facts.year = year_from(fields.get("dateCreated"))
    try:
        facts.key = score_key_label(score.analyze("key"))
        facts.mode = facts.key.split()[-1]
    except Exception:                       # atonal or empty scores have no key to find
        pass
    signature = score.recurse().getElementsByClass(key.KeySignature).first()
    if signature is not None:
        n = signature.sharps
        facts.key_signature = ("no sharps or flats" if n == 0 else
                               f"{abs(n)} {'sharp' if n > 0 else 'flat'}{'s' if abs(n) > 1 else ''}")
    ts = score.recurse().getElementsByClass(meter.TimeSignature).first()
    if ts is not None:
        facts.meter = ts.ratioString
        facts.beat_ql = float(ts.beatDuration.quarterLength) or 1.0
    for mark in score.recurse().getElementsByClass(tempo.TempoIndication):
        if isinstance(mark, tempo.MetronomeMark) and mark.number and facts.qpm is None:
            facts.qpm = float(mark.getQuarterBPM())
        label = getattr(mark, "text", None)
        if label and not facts.tempo_text:
            facts.tempo_text = str(label)
        if facts.qpm is not None and facts.tempo_text:
            break
    if not facts.tempo_text:             # many editions write "Allegro" as plain text
        for i, words in enumerate(score.recurse().getElementsByClass(expressions.TextExpression)):
            if tempo_marking_word(str(words.content)) or i >= 40:
                facts.tempo_text = str(words.content) if tempo_marking_word(str(words.content)) else ""
                break
    parts = list(score.parts) or [score]
    facts.part_names = [str(p.partName or "") for p in parts]
    for part in parts:
        words = clean_score_lyrics(text.assembleLyrics(part) or "")
        if len(words.split()) > 3:
            facts.lyrics = words if lyrics_look_clean(words) else ""
            break
    facts.quarter_length = float(score.highestTime)
    return facts


def part_programs(part_names: Sequence[str], collection: Collection, choice: tuple[int, str]) -> list[tuple[int, str]]:
    """A (General MIDI program, instrument tag) per part.

    Collections that go ``by_part`` read the part names (violin, viola, cello, piano,
    voices, ...); the others play every part on the work's chosen instrument.
    """
    if not collection.by_part:
        return [choice] * max(len(part_names), 1)
    names = [n.lower() for n in part_names] or [""]
    voices = [any(w in n for w in _VOICE_WORDS) and not any(w in n for w in ("contrabass", "clarinet"))
              for n in names]
    out = []
    for name, is_voice in zip(names, voices):
        found = next((prog for words, prog in _PART_PROGRAMS if any(w in name for w in words)), None)
        if found is None and is_voice:
            found = VOICE if sum(voices) == 1 else CHOIR
        out.append(found or choice)
    return out


def tempo_marking_word(text: str) -> str:
    """The tempo word that comes first in ``text`` ("Andante con moto quasi Allegretto" -> "andante")."""
    low = text.lower()
    found = [(m.start(), -len(w), w) for w in TEMPO_WORDS if (m := re.search(rf"\b{w}\b", low))]
    return min(found)[2] if found else ""


def beat_scale(meter: str, beat_ql: float) -> float:
    """How a tempo word's pulse maps to the meter's beat: slower beats for compound and alla-breve meters."""
    if meter == "3/8":                  # one beat to the bar
        return 0.6
    return {0.5: 1.5, 1.0: 1.0, 1.5: 0.75, 2.0: 0.6, 3.0: 0.5}.get(beat_ql, 1.0)


def choose_bpm(facts: ScoreFacts, collection: Collection, work: WorkRef, rng: random.Random) -> tuple[float, str]:
    """Tempo in beats of the meter per minute, and where it came from ("score", "tempo word", "genre").

    In order: the score's metronome mark; a tempo word in the score or the edition
    (scaled to the meter's beat); the dance type's usual range; the collection's range.
    """
    if facts.qpm:
        return facts.qpm / facts.beat_ql, "score"
    word = tempo_marking_word(facts.tempo_text) or tempo_marking_word(work.tempo)
    if word:
        return TEMPO_WORDS[word] * beat_scale(facts.meter, facts.beat_ql), "tempo word"
    if work.kind in DANCE_TEMPI:
        lo, hi, unit = DANCE_TEMPI[work.kind]
        value = rng.randint(lo, hi)
        return (value / facts.beat_ql if unit == "q" else float(value)), "genre"
    return rng.randint(*collection.bpm) * beat_scale(facts.meter, facts.beat_ql), "genre"


def work_description(work: WorkRef, collection: Collection, facts: ScoreFacts) -> dict[str, str]:
    """Title, artist, album, year and a blurb for one work, from what is known before and after parsing."""
    stem = Path(work.path).stem
    title, artist, album, year = work.title, work.artist or collection.artist, work.album or collection.album, work.year
    blurb = work.blurb or collection.blurb
    folder = str(PurePosixPath(work.path).parent)
    if collection.key == "bach-chorales":
        number = re.sub(r"^bwv", "", stem)
        opening = incipit(facts.lyrics)
        title = f"{opening} (BWV {number})" if len(opening) >= 4 else f"Chorale, BWV {number}"
    elif collection.key == "string-quartets" and folder in QUARTETS:
        artist, album, year, _ = QUARTETS[folder]
        movement = re.sub(r"\D", "", stem) or "1"
        title = f"{album}: movement {movement}"
    elif collection.key == "monteverdi-madrigals" and (m := re.fullmatch(r"madrigal\.(\d+)\.(\d+)", stem)):
        book, number = m.groups()
        numbered = [facts.composer] if re.match(r"^\d+\.\s", facts.composer) else []
        found = next((t for t in map(clean_title, [facts.title, facts.movement, *numbered]) if t), "")
        title = found or f"Madrigal, Book {book} No. {number}"
        album, year = f"Madrigals, Book {book}", MONTEVERDI_BOOKS.get(book, "")
    elif collection.key == "palestrina-masses":
        movement = title_from_filename(stem.split("_")[0])          # Kyrie, Gloria, Credo, ...
        part = clean_title(facts.title)
        part = part if part.lower().startswith(movement.lower()) else f"{movement} ({part})" if part else movement
        album = clean_title(facts.parent_title) or "Masses"
        title = f"{part}, from {album}"
    elif collection.key == "essen-folksongs":
        if work.place:
            blurb = with_article(f"{work.kind or 'folk song'} collected in {work.place}")
    elif collection.key in ("oneills", "ryans-mammoth") and work.kind:
        origin = "Irish" if collection.key == "oneills" else "traditional"
        blurb = with_article(f"{origin} {work.kind}") + (" from O'Neill's Music of Ireland (1903)" if collection.key == "oneills"
                                             else " from Ryan's Mammoth Collection (Boston, 1883)")
    if not title:
        title = next((t for t in map(clean_title, [facts.title, facts.movement]) if t), "") \
            or title_from_filename(re.sub(r"^PMFC_[\d_]+-(\w+-\d+\w?[-_])?", "", stem))
    if not artist:
        first = facts.composer.splitlines()[0].strip() if facts.composer else ""
        first = re.sub(r"\s*\(.*\)$", "", first)
        artist = "Anonymous" if not first or first.lower().startswith("anon") else first
    return {"title": clean_title(title) or title, "artist": artist, "album": album or collection.playlist,
            "year": year or facts.year, "blurb": blurb}


def work_tags(work: WorkRef, collection: Collection, facts: ScoreFacts, programs: Sequence[tuple[int, str]]) -> list[str]:
    """Genre words, instruments, "vocal" when voices sing it, and the key and meter."""
    tags = [*collection.tags, *work.tags]
    if work.kind:
        tags.append(work.kind)
        if work.kind in DANCE_TEMPI and work.kind not in ("air", "march"):
            tags += ["dance tune"] + (["jig"] if work.kind == "slip jig" else [])
        if work.kind == "air":
            tags.append("slow air")
    if work.place:
        tags.append(work.place.lower().removeprefix("the "))
    folder = str(PurePosixPath(work.path).parent)
    if folder in QUARTETS:
        tags.append(QUARTETS[folder][3])
    if collection.key == "bach-chorales":
        tags.append("classical")
    tags += [name for _, name in programs]
    if any(p in _VOCAL_PROGRAMS for p, _ in programs):
        tags.append("vocal")
    else:
        tags.append("instrumental")
    if facts.key and "atonal" not in tags:
        tags += [facts.key, facts.mode]
    if facts.meter:
        tags.append(f"{facts.meter} time")
    return unique_tags(tags)


@dataclass(frozen=True)
class RenderJob:
    """Everything a worker process needs to render one work into ``ogg``."""

    work: WorkRef
    collection: Collection
    ogg: str
    render_seconds: float
    soundfont: str
    seed: int = SEED


def render_work(job: RenderJob) -> dict[str, Any]:
    """Parse, describe and render one work; write ``<ogg>`` and ``<ogg>.json``.

    Returns the metadata (``ok`` True) or the reason it failed (``ok`` False). Both
    are written beside the audio so a later run reuses them without parsing again.
    """
    ogg = Path(job.ogg)
    ogg.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = {"ok": True, **_render(job, ogg)}
    except Exception as err:                # any bad score is skipped and replaced by the next one
        result = {"ok": False, "reason": f"{type(err).__name__}: {err}"[:300], "spec": job.work.spec}
    ogg.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    return result


def _render(job: RenderJob, ogg: Path) -> dict[str, Any]:
    warnings.filterwarnings("ignore")
    from music21 import corpus, stream

    work, collection = job.work, job.collection
    score = corpus.parse(work.path, number=work.number) if work.number is not None else corpus.parse(work.path)
    if isinstance(score, stream.Opus):
        score = score.scores[0]
    facts = score_facts(score)
    rng = random.Random(f"{job.seed}:{work.spec}")
    programs = part_programs(facts.part_names, collection, rng.choice(collection.programs))
    bpm, tempo_source = choose_bpm(facts, collection, work, rng)
    info = work_description(work, collection, facts)
    try:
        score = score.expandRepeats()
    except Exception:                       # badly nested repeats: play it once, as written
        strip_repeats(score)
    with tempfile.TemporaryDirectory(prefix="tonearm-render-") as tmp:
        midi = Path(tmp) / "score.mid"
        score_to_midi(score, midi, programs, None if tempo_source == "score" else bpm * facts.beat_ql)
        seconds = fit_midi(midi, midi, job.render_seconds, collection.loop_seconds)
        wav = Path(tmp) / "render.wav"
        render_midi(midi, wav, job.soundfont)
        import soundfile as sf

        audio, rate = sf.read(wav, always_2d=True, dtype="float32")
        audio = finish_audio(audio, rate, job.render_seconds)
        duration = len(audio) / rate
        if duration < MIN_TRACK_SECONDS:
            raise ValueError(f"only {duration:.1f} s long")
        partial = Path(tmp) / "render.ogg"
        write_ogg(partial, audio, rate)
        instruments = unique_tags(name for _, name in programs)
        tags = work_tags(work, collection, facts, programs)
        meta = {
            "title": info["title"], "artist": info["artist"], "album": info["album"], "year": info["year"],
            "tags": tags, "lyrics": facts.lyrics,
            "description": music21_description({**info, "tags": tags}, facts, instruments, bpm,
                                               truncated=seconds > job.render_seconds),
            "source": f"music21:{collection.key}", "work": work.spec, "duration_s": round(duration, 2),
            "tempo_bpm": round(bpm, 1), "tempo_from": tempo_source, "key": facts.key,
            "key_signature": facts.key_signature, "meter": facts.meter, "instruments": instruments,
        }
        write_ogg_tags(partial, {
            "title": meta["title"], "artist": meta["artist"], "composer": meta["artist"], "album": meta["album"],
            "date": meta["year"], "genre": [t for t in tags if t in collection.tags + work.tags] or list(collection.tags[:1]),
            "lyrics": facts.lyrics, "description": meta["description"], "bpm": str(round(bpm)),
            "initialkey": facts.key,
        })
        shutil.move(str(partial), ogg)
    return meta


def strip_repeats(score: Any) -> None:
    """Remove repeat barlines, brackets and marks (music21's MIDI writer would try to expand them)."""
    from music21 import bar, repeat, spanner, stream

    for measure in score.recurse().getElementsByClass(stream.Measure):
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = None
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = bar.Barline("regular")
    for mark in list(score.recurse().getElementsByClass((repeat.RepeatMark, spanner.RepeatBracket))):
        for site in list(mark.sites.get()):
            if isinstance(site, stream.Stream) and mark in site:
                site.remove(mark)
    for bracket in list(score.spannerBundle.getByClass(spanner.RepeatBracket)):
        score.spannerBundle.remove(bracket)


def music21_description(info: dict[str, str], facts: ScoreFacts, instruments: Sequence[str], bpm: float,
                        truncated: bool) -> str:
    """One sentence from the facts: what the work is, its key, meter, instruments and tempo."""
    where = []
    if facts.key and "atonal" not in info.get("tags", ()):
        where.append(facts.key)
    if facts.meter:
        where.append(f"{facts.meter} time")
    played = " and ".join(instruments) if instruments else "General MIDI instruments"
    year = f" ({info['year']})" if info["year"] else ""
    setting = f", in {' and '.join(where)}" if where else ""
    sentence = (f"{info['title']} by {info['artist']}{year}: {info['blurb']}{setting}, "
                f"rendered for {played} at about {round(bpm)} beats per minute")
    return sentence + (" (the opening only)." if truncated else ".")


def score_to_midi(score: Any, path: Path, programs: Sequence[tuple[int, str]], qpm: float | None) -> None:
    """Write ``score`` as MIDI with one General MIDI program per part and, if given, a tempo."""
    from music21 import instrument, tempo

    parts = list(score.parts) or [score]
    for part, (program, name) in zip(parts, list(programs) + [programs[-1]] * len(parts)):
        for sub in [part, *part.recurse(streamsOnly=True)]:
            sub.removeByClass(instrument.Instrument)
        new = instrument.Instrument()
        new.midiProgram = program
        new.instrumentName = name
        part.insert(0, new)
    if qpm is not None:
        for sub in [score, *score.recurse(streamsOnly=True)]:
            sub.removeByClass(tempo.TempoIndication)
        parts[0].insert(0, tempo.MetronomeMark(number=round(qpm, 2)))
    score.write("midi", fp=str(path))


def fit_midi(src: Path, dst: Path, seconds: float, loop_seconds: float = 0.0) -> float:
    """Repeat a short tune (at most three passes) up to ``loop_seconds``, then cut at ``seconds``.

    Returns the length in seconds before the cut.
    """
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(str(src))
    end = pm.get_end_time()
    if end <= 0 or not any(inst.notes for inst in pm.instruments):
        raise ValueError("the score has no notes")
    if loop_seconds and end < loop_seconds:
        passes = min(3, math.ceil(loop_seconds / end))
        for inst in pm.instruments:
            first = list(inst.notes)
            for k in range(1, passes):
                inst.notes.extend(pretty_midi.Note(n.velocity, n.pitch, n.start + k * end, n.end + k * end)
                                  for n in first)
        end *= passes
    last = 0.0
    for inst in pm.instruments:
        inst.notes = [n for n in inst.notes if n.start < seconds]
        for n in inst.notes:
            n.end = min(n.end, seconds)
        inst.control_changes = [c for c in inst.control_changes if c.time < seconds]
        inst.pitch_bends = [b for b in inst.pitch_bends if b.time < seconds]
        last = max([last, *(n.end for n in inst.notes)])
    # FluidSynth 2.3 can keep a sustained voice (organ, choir, recorder) alive forever and
    # never finish a render; "all notes off" and "all sound off" once the music is over end it.
    for inst in pm.instruments:
        inst.control_changes += [pretty_midi.ControlChange(123, 0, last + 1.5),
                                 pretty_midi.ControlChange(120, 0, last + 2.5)]
    pm.lyrics = [e for e in pm.lyrics if e.time < seconds]
    pm.text_events = [e for e in pm.text_events if e.time < seconds]
    pm.write(str(dst))
    return end


def find_soundfont() -> Path | None:
    """The General MIDI soundfont to render with: ``$TONEARM_SOUNDFONT`` or a Debian one."""
    for candidate in (os.environ.get("TONEARM_SOUNDFONT"), *SOUNDFONTS):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def fluidsynth_ready(install: bool = True) -> tuple[Path | None, str]:
    """The soundfont when FluidSynth can render here, else None and one line saying what to install.

    With ``install`` and root, missing pieces are installed with apt-get first.
    """
    if (shutil.which("fluidsynth") is None or find_soundfont() is None) and install and is_root() \
            and shutil.which("apt-get"):
        say("installing fluidsynth and fluid-soundfont-gm with apt-get ...")
        if run_command(["apt-get", "install", "-y", "-qq", "fluidsynth", "fluid-soundfont-gm"]).returncode != 0:
            _apt_update_once()
            run_command(["apt-get", "install", "-y", "-qq", "fluidsynth", "fluid-soundfont-gm"])
    if shutil.which("fluidsynth") is None:
        return None, ("FluidSynth is not installed, so the music21 scores cannot be rendered: "
                      "install it with `sudo apt-get install fluidsynth fluid-soundfont-gm`.")
    soundfont = find_soundfont()
    if soundfont is None:
        return None, ("No General MIDI soundfont found: install one with `sudo apt-get install fluid-soundfont-gm` "
                      "or point TONEARM_SOUNDFONT at an .sf2 file.")
    return soundfont, ""


def render_midi(midi: Path, wav: Path, soundfont: str | Path) -> None:
    """Render MIDI to a WAV file with the FluidSynth command line."""
    result = run_command(["fluidsynth", "-ni", "-q", "-F", str(wav), "-r", str(SAMPLE_RATE), str(soundfont), str(midi)],
                  timeout=120)
    if result.returncode != 0 or not wav.exists() or wav.stat().st_size < 1000:
        raise RuntimeError(f"fluidsynth failed: {(result.stderr or result.stdout).strip()[-200:]}")


def finish_audio(audio: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """Trim silence at both ends, cut at ``seconds`` with a two-second fade, and peak-normalise."""
    level = np.abs(audio).max(axis=1)
    peak = float(level.max()) if len(level) else 0.0
    if peak <= 0:
        raise ValueError("the render is silent")
    loud = np.flatnonzero(level > peak * 1e-3)
    out = audio[loud[0]: loud[-1] + 1 + int(0.5 * rate)].copy()
    limit = int(seconds * rate)
    if len(out) > limit:
        out = out[:limit]
        fade = min(len(out), int(2.0 * rate))
        out[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    return (out * (0.89 / peak)).astype(np.float32)


