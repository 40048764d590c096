"""Key, tempo, chord and melody-note accuracy of the song analysis on rendered scores, with
essentia and plain baselines as references.

Test set
    A seeded choice of works from the music21 corpus, drawn round-robin from four groups
    (Bach chorales, other common-practice composers, folk tunes, Renaissance madrigals and
    motets), each cut to its first ~45 s, transposed by a seeded interval (-5..+6 semitones, so
    every tonic occurs), given a seeded metronome mark (40-220 beats per minute), played by one
    seeded General MIDI program for every part or one per part (pianos, mallets, guitars, harp
    and pizzicato as well as sustained organs, strings, winds and brass), in three pieces of ten
    by the top part alone, in three of ten with a drum kit keeping the beat, and rendered with
    FluidSynth (FluidR3_GM) at 44.1 kHz. Renders are cached under
    ``index.paths.downloads_dir() / "bench_renders"``.

Ground truth
    Tempo: the metronome mark written into the MIDI, counted in the time signature's beat unit
    (quarter in 4/4 and 3/4, half in 2/2, dotted quarter in 6/8 and 12/8).
    Key: the score's key signature fixes two candidates, its major key and the relative minor,
    and music21's ``analyze('key')`` (Krumhansl-Schmuckler on the notes of the excerpt) decides
    between them. A mode written in the file is not trusted on its own, because MusicXML
    exporters write ``<mode>major</mode>`` by default; when it differs from the choice, the piece
    is kept and counted. Pieces that declare a church mode (dorian, mixolydian, ...), change key
    signature inside the excerpt, or have no key signature are left out. Where
    ``analyze('key')``'s own best key lies outside the two candidates (the music sits in another
    key than its signature says), the piece keeps the signature's answer and is counted as a
    disagreement.

    Chords (pieces of three or more parts played together): the score's ``chordify()`` sampled
    at every beat, named by root and quality in mir_eval's syntax (maj, min, dim, aug, 7, maj7,
    min7, hdim7, dim7; dyads as the triad they imply; anything else "X", which mir_eval leaves
    out), timed by the rendering's tempo from its first note.
    Melody notes (pieces of one part, the folk tunes, and solos): the rendered MIDI's notes.

Scores
    Key: mir_eval weighted score (1 correct, 0.5 fifth, 0.3 relative, 0.2 parallel).
    Tempo: Accuracy1 (within 4 %) and Accuracy2 (also at x2, x1/2, x3, x1/3), overall, by tempo
    band and by instrument family.
    Chords: mir_eval.chord root, majmin, sevenths and segmentation, each piece weighted by its
    duration, for the analysis, essentia's ChordsDetection (HPCP, its defaults) and a plain
    baseline (CQT chroma matched frame by frame with the 24 major and minor triads).
    Notes: mir_eval.transcription F-measure, onsets within 50 ms and pitch within 50 cents,
    without and with offsets (20 % of the note or 50 ms).

Run ``python bench/analysis_accuracy.py --help``. essentia is optional (``.venv/bin/pip install essentia``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index.analysis import analyze, chord_templates  # noqa: E402
from index.audio import (  # noqa: E402
    KEY_PROFILES,
    PITCH_CLASSES,
    SAMPLE_RATE,
    audio_features,
    compute_frames,
    estimate_key,
    key_name,
    load_audio,
    load_excerpt,
)
from index.paths import downloads_dir  # noqa: E402

SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
RENDER_SR = 44100
MAX_RENDER_SECONDS = 45.0
MIN_RENDER_SECONDS = 12.0
TEMPO_RANGE = (40, 220)
TEMPO_BANDS = ((40, 70), (70, 100), (100, 130), (130, 160), (160, 221))
SOLO_SHARE = 0.3  # pieces played by their top part alone
DRUM_SHARE = 0.3  # pieces with a drum kit on the beat
CHORD_MIN_PARTS = 3
ESSENTIA_KEY_PROFILES = ("temperley", "krumhansl", "edma", "bgate", "shaath")

GROUPS: dict[str, tuple[str, ...]] = {
    "bach": ("bach",),
    "common-practice": ("beethoven", "mozart", "haydn", "schumann_robert", "schumann_clara", "chopin", "handel",
                        "corelli", "schubert", "weber", "joplin", "beach", "cpebach", "verdi"),
    "folk": ("essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs", "miscFolk"),
    "renaissance": ("monteverdi", "josquin"),
}
# General MIDI programs with a clear pitch: pianos, mallets, organs, guitars, strings (bowed, plucked,
# harp), choir, brass, reeds, flutes.
PROGRAMS: tuple[int, ...] = (0, 1, 4, 6, 11, 12, 13, 16, 19, 24, 25, 40, 41, 42, 45, 46, 48, 52, 56, 60, 65, 68,
                             71, 73)
FAMILIES: tuple[tuple[int, str], ...] = ((8, "piano"), (16, "mallets"), (24, "organ"), (32, "guitar"),
                                         (45, "bowed strings"), (47, "plucked strings"), (56, "ensemble and choir"),
                                         (64, "brass"), (72, "reeds"), (80, "flutes"))
MAX_FILE_BYTES = 700_000  # skip the largest scores (full symphonies): parsing them takes minutes


@dataclass
class Piece:
    """One rendered test item and its ground truth."""

    id: str
    source: str
    group: str
    wav: str
    seconds: float
    key: str  # ground truth after transposition, e.g. "F# minor"
    key_method: str  # how the ground truth was decided
    analysis_key: str  # music21 analyze('key') on the excerpt, after transposition
    bpm: float  # ground-truth beats per minute in the beat unit
    beat_unit: float  # quarter lengths per beat
    transpose: int
    programs: list[int]
    family: str = ""  # instrument family of the part heard most (see FAMILIES)
    solo: bool = False  # one part only
    drums: bool = False
    chords: list | None = None  # [[start, end, mir_eval label], ...] where scored
    notes: list | None = None  # [[start, end, midi pitch], ...] for one-part pieces


# ---------------------------------------------------------------------------------------------
# Choosing and rendering


def candidate_paths() -> dict[str, list[Path]]:
    from music21 import corpus

    by_group: dict[str, list[Path]] = {g: [] for g in GROUPS}
    for raw in corpus.getPaths():
        p = Path(str(raw))
        if p.suffix not in (".mxl", ".xml", ".musicxml", ".krn", ".abc") or p.stat().st_size > MAX_FILE_BYTES:
            continue
        parts = p.parts
        top = parts[parts.index("corpus") + 1] if "corpus" in parts else ""
        for group, names in GROUPS.items():
            if top in names:
                by_group[group].append(p)
    return {g: sorted(v) for g, v in by_group.items() if v}


def _transpose_name(label: str, shift: int) -> str:
    tonic, mode = label.split()
    pc = PITCH_CLASSES.index(_sharp(tonic))
    return key_name((pc + shift) % 12, mode)


def _sharp(tonic: str) -> str:
    """music21 tonic names ("E-", "b", "F#") to sharps ("D#", "B", "F#")."""
    t = tonic.replace("-", "b")
    t = t[0].upper() + t[1:]
    flats = {"Cb": "B", "Db": "C#", "Eb": "D#", "Fb": "E", "Gb": "F#", "Ab": "G#", "Bb": "A#", "E#": "F", "B#": "C"}
    return flats.get(t, t)


def _m21_label(k) -> str:
    return f"{_sharp(k.tonic.name)} {k.mode}"


def score_key(score) -> tuple[str | None, str, str]:
    """(ground-truth key or None to skip, how it was decided, analyze('key') label) for a score excerpt."""
    from music21 import key as m21key

    signatures = list(score.flatten().getElementsByClass(m21key.KeySignature))
    analysed = score.analyze("key")
    analysed_label = _m21_label(analysed)
    if not signatures:
        return None, "no key signature", analysed_label
    if len({s.sharps for s in signatures}) > 1:
        return None, "key signature changes", analysed_label
    first = signatures[0]
    mode = getattr(first, "mode", None)
    if isinstance(first, m21key.Key) and mode not in (None, "major", "minor"):
        return None, f"declared {mode} mode", analysed_label
    # The signature is trusted; a declared major/minor mode is not (MusicXML exporters write
    # <mode>major</mode> by default), so the notes decide between the two keys the signature allows.
    major, minor = first.asKey("major"), first.asKey("minor")
    corr = {_m21_label(k): k.correlationCoefficient for k in [analysed] + list(analysed.alternateInterpretations)}
    best = max((_m21_label(major), _m21_label(minor)), key=lambda lab: corr.get(lab, -1.0))
    declared = _m21_label(first) if isinstance(first, m21key.Key) else None
    method = "signature; mode from analyze('key')" + ("" if declared in (None, best) else " (overrode declared mode)")
    return best, method, analysed_label


def _excerpt(score, bpm: float, beat_ql: float):
    """The first measures of a score that fit in MAX_RENDER_SECONDS at ``bpm`` beats per minute."""
    seconds_per_ql = 60.0 / (bpm * beat_ql)
    part = score.parts[0] if score.parts else score
    measures = list(part.getElementsByClass("Measure"))
    if not measures:
        return score
    total, last = 0.0, measures[0].number
    for m in measures:
        total += m.duration.quarterLength * seconds_per_ql
        if total > MAX_RENDER_SECONDS:
            break
        last = m.number
    return score.measures(measures[0].number, max(last, measures[0].number))


def family_of(program: int) -> str:
    """The instrument family a General MIDI program belongs to (FAMILIES)."""
    return next(name for top, name in FAMILIES if program < top) if program < FAMILIES[-1][0] else "other"


def chord_label(pitches: list[int], root: int) -> str:
    """mir_eval label of a set of MIDI pitches with a known root pitch class ("X" when it names no chord)."""
    intervals = frozenset((p - root) % 12 for p in pitches)
    shorthand = CHORD_SHORTHANDS.get(intervals)
    return f"{PITCH_CLASSES[root % 12]}:{shorthand}" if shorthand else "X"


CHORD_SHORTHANDS: dict[frozenset, str] = {
    frozenset({0, 4, 7}): "maj", frozenset({0, 3, 7}): "min", frozenset({0, 3, 6}): "dim", frozenset({0, 4, 8}): "aug",
    frozenset({0, 4, 7, 10}): "7", frozenset({0, 4, 7, 11}): "maj7", frozenset({0, 3, 7, 10}): "min7",
    frozenset({0, 3, 6, 10}): "hdim7", frozenset({0, 3, 6, 9}): "dim7",
    # incomplete: the third names the triad; a seventh chord without its fifth is still that chord
    frozenset({0, 4}): "maj", frozenset({0, 3}): "min", frozenset({0, 4, 10}): "7", frozenset({0, 4, 11}): "maj7",
    frozenset({0, 3, 10}): "min7",
}


def score_chords(score, first_onset_s: float, seconds_per_ql: float, shift: int, beat_ql: float) -> list:
    """[[start, end, label]] per beat from ``chordify()``, transposed by ``shift``, equal neighbours merged."""
    chordified = score.chordify()
    events = [(float(c.offset), float(c.offset + c.quarterLength), c) for c in
              chordified.flatten().getElementsByClass("Chord")]
    if not events:
        return []
    origin = min(e[0] for e in events)
    end_ql = max(e[1] for e in events)
    out: list = []
    t = origin
    k = 0
    while t < end_ql - 1e-6:
        while k + 1 < len(events) and events[k + 1][0] <= t + 1e-6:
            k += 1
        start, stop, chord = events[k]
        label = "N"
        if start <= t + 1e-6 < stop and chord.pitches:
            root = chord.root()
            label = chord_label([p.midi + shift for p in chord.pitches], root.pitchClass + shift) if root else "X"
        a = first_onset_s + (t - origin) * seconds_per_ql
        b = first_onset_s + (min(t + beat_ql, end_ql) - origin) * seconds_per_ql
        if out and out[-1][2] == label:
            out[-1][1] = round(b, 4)
        else:
            out.append([round(a, 4), round(b, 4), label])
        t += beat_ql
    return out


def add_drums(pm, start: float, end: float, seconds_per_beat: float, beats_per_bar: int) -> None:
    """A plain kit on the beat: kick on the bar's first beat, snare on even beats, closed hi-hat on every beat."""
    import pretty_midi

    kit = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    t, beat = start, 0
    while t < end:
        hits = [42] + ([36] if beat % beats_per_bar == 0 else []) + ([38] if beats_per_bar % 2 == 0 and beat % 2 else [])
        kit.notes += [pretty_midi.Note(velocity=80, pitch=h, start=t, end=t + 0.1) for h in hits]
        t += seconds_per_beat
        beat += 1
    pm.instruments.append(kit)


def monophonic_notes(inst) -> list | None:
    """[[start, end, pitch]] of a part that plays one note at a time (10 ms overlaps allowed), else None."""
    notes = sorted(inst.notes, key=lambda n: n.start)
    if any(b.start < a.end - 0.01 for a, b in zip(notes, notes[1:])):
        return None
    return [[round(n.start, 4), round(n.end, 4), int(n.pitch)] for n in notes]


def render_piece(path: Path, group: str, rng: np.random.Generator, cache: Path) -> Piece | None:
    """Parse, cut, transpose, set tempo and programs, render; None when the piece does not qualify."""
    import pretty_midi
    from music21 import corpus, meter, stream, tempo

    bpm = float(rng.integers(TEMPO_RANGE[0], TEMPO_RANGE[1] + 1))
    shift = int(rng.integers(-5, 7))
    tune_pick = int(rng.integers(0, 1_000_000))
    program_seed = int(rng.integers(0, 1_000_000))
    solo, drums, one_program = bool(rng.random() < SOLO_SHARE), bool(rng.random() < DRUM_SHARE), bool(rng.random() < 0.5)
    rel = path.as_posix().split("/corpus/", 1)[-1]
    flags = ("s" if solo else "") + ("d" if drums else "") + ("1" if one_program else "")
    pid = f"{rel.replace('/', '_').rsplit('.', 1)[0]}_{tune_pick % 997}_{int(bpm)}_{shift:+d}_{flags}"
    meta_path, wav_path = cache / f"{pid}.json", cache / f"{pid}.wav"
    if meta_path.exists() and wav_path.exists():
        meta = json.loads(meta_path.read_text())
        return Piece(**meta) if meta.get("key") else None

    def skip(reason: str) -> None:
        meta_path.write_text(json.dumps({"id": pid, "skipped": reason}))
        return None

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = corpus.parse(str(path))
    except Exception as err:  # a few corpus files do not parse in every music21 version
        return skip(f"parse error: {err}")
    if isinstance(parsed, stream.Opus):
        scores = list(parsed.scores)
        if not scores:
            return skip("empty opus")
        parsed = scores[tune_pick % len(scores)]
    ts = parsed.flatten().getElementsByClass(meter.TimeSignature).first()
    beat_ql = float(ts.beatDuration.quarterLength) if ts is not None else 1.0
    beats_per_bar = int(ts.beatCount) if ts is not None else 4
    score = _excerpt(parsed, bpm, beat_ql)
    for t in list(score.recurse().getElementsByClass(tempo.TempoIndication)):
        t.activeSite.remove(t)  # the render plays at one known tempo
    try:
        gt, method, analysed = score_key(score)
    except Exception as err:
        return skip(f"key analysis failed: {err}")
    if gt is None:
        return skip(method)
    n_parts = len(score.parts) if score.parts else 1
    qpm = bpm * beat_ql

    with tempfile.TemporaryDirectory() as tmp:
        mid = Path(tmp) / "score.mid"
        try:
            score.write("midi", fp=str(mid))
        except Exception as err:
            return skip(f"midi export failed: {err}")
        pm = pretty_midi.PrettyMIDI(str(mid))
        pm.instruments = [inst for inst in pm.instruments if inst.notes]
        end = pm.get_end_time()
        if end <= 0 or not pm.instruments:
            return skip("no notes")
        # music21 writes 120 quarter notes per minute when no tempo is marked; rescale to the target.
        pm.adjust_times(np.array([0.0, end]), np.array([0.0, end * 120.0 / qpm]))
        if solo:
            pm.instruments = pm.instruments[:1]  # the top part, as music21 writes it first
        prng = np.random.default_rng(program_seed)
        shared = int(prng.choice(PROGRAMS))
        programs = []
        for inst in pm.instruments:
            inst.is_drum = False
            inst.program = shared if one_program else int(prng.choice(PROGRAMS))
            programs.append(inst.program)
            for n in inst.notes:
                n.pitch = int(np.clip(n.pitch + shift, 0, 127))
        first_onset = min(n.start for inst in pm.instruments for n in inst.notes)
        last = max(n.end for inst in pm.instruments for n in inst.notes)
        notes = monophonic_notes(pm.instruments[0]) if len(pm.instruments) == 1 else None
        chords = None
        if not solo and n_parts >= CHORD_MIN_PARTS:
            try:
                chords = score_chords(score, first_onset, 60.0 / qpm, shift, beat_ql)
            except Exception:  # chordify fails on a few odd scores: no chord truth for them
                chords = None
        if drums:
            add_drums(pm, first_onset, last, 60.0 / bpm, beats_per_bar)
        pm.write(str(mid))
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(RENDER_SR), "-F", str(wav_path),
                        SOUNDFONT, str(mid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import soundfile as sf

    seconds = sf.info(str(wav_path)).duration
    if seconds < MIN_RENDER_SECONDS:
        wav_path.unlink(missing_ok=True)
        return skip(f"too short ({seconds:.1f} s)")
    heard = max(set(programs), key=programs.count)
    piece = Piece(id=pid, source=rel, group=group, wav=str(wav_path), seconds=round(seconds, 2),
                  key=_transpose_name(gt, shift), key_method=method, analysis_key=_transpose_name(analysed, shift),
                  bpm=bpm, beat_unit=beat_ql, transpose=shift, programs=programs, family=family_of(heard),
                  solo=len(programs) == 1, drums=drums, chords=chords, notes=notes)
    meta_path.write_text(json.dumps(asdict(piece)))
    return piece


def build_set(n: int, seed: int, cache: Path) -> list[Piece]:
    """``n`` qualifying pieces, drawn round-robin over the groups with a seeded generator."""
    rng = np.random.default_rng(seed)
    paths = candidate_paths()
    order = {g: list(rng.permutation(len(v))) for g, v in paths.items()}
    groups = sorted(paths)
    pieces: list[Piece] = []
    bar = tqdm(total=n, desc="rendering", unit="piece")
    turn = 0
    while len(pieces) < n and any(order.values()):
        g = groups[turn % len(groups)]
        turn += 1
        if not order[g]:
            continue
        path = paths[g][order[g].pop(0)]
        piece = render_piece(path, g, np.random.default_rng([seed, zlib.crc32(path.as_posix().encode())]), cache)
        if piece is not None:
            pieces.append(piece)
            bar.update(1)
    bar.close()
    return pieces


# ---------------------------------------------------------------------------------------------
# Scoring


def key_score(reference: list[str], estimated: list[str]) -> dict[str, float]:
    """Mean mir_eval weighted key score and the share of each outcome."""
    import mir_eval

    outcomes = {"correct": 0, "fifth": 0, "relative": 0, "parallel": 0, "other": 0}
    weights = []
    for ref, est in zip(reference, estimated):
        w = mir_eval.key.weighted_score(ref, est) if est else 0.0
        weights.append(w)
        name = {1.0: "correct", 0.5: "fifth", 0.3: "relative", 0.2: "parallel"}.get(round(w, 2), "other")
        outcomes[name] += 1
    n = max(len(weights), 1)
    return {"weighted": float(np.mean(weights)) if weights else 0.0, **{k: v / n for k, v in outcomes.items()}}


def tempo_accuracy(reference: list[float], estimated: list[float], tol: float = 0.04) -> dict[str, float]:
    """Accuracy1: within ``tol``; Accuracy2: also at 2x, 1/2x, 3x, 1/3x the reference."""
    ref, est = np.asarray(reference, float), np.asarray(estimated, float)
    ok = lambda factor: np.abs(est - factor * ref) <= tol * factor * ref  # noqa: E731
    acc1 = ok(1.0)
    acc2 = acc1 | ok(2.0) | ok(0.5) | ok(3.0) | ok(1 / 3)
    return {"accuracy1": float(acc1.mean()) if ref.size else 0.0, "accuracy2": float(acc2.mean()) if ref.size else 0.0}


def chord_scores(references: list[list], estimates: list[list]) -> dict[str, float]:
    """mir_eval.chord root / majmin / sevenths / segmentation, each piece weighted by its duration."""
    import mir_eval

    totals: dict[str, float] = {"root": 0.0, "majmin": 0.0, "sevenths": 0.0, "seg": 0.0}
    weights = {k: 0.0 for k in totals}
    for ref, est in zip(references, estimates):
        if not ref:
            continue
        ref_int = np.array([[a, b] for a, b, _ in ref])
        est = est or [[0.0, ref_int[-1, 1], "N"]]
        est_int = np.array([[a, b] for a, b, _ in est])
        est_int, est_lab = mir_eval.util.adjust_intervals(est_int, [c[2] for c in est], ref_int.min(), ref_int.max(),
                                                          mir_eval.chord.NO_CHORD, mir_eval.chord.NO_CHORD)
        merged, ref_lab, est_lab = mir_eval.util.merge_labeled_intervals(ref_int, [c[2] for c in ref], est_int, est_lab)
        durations = mir_eval.util.intervals_to_durations(merged)
        for name, compare in (("root", mir_eval.chord.root), ("majmin", mir_eval.chord.majmin),
                              ("sevenths", mir_eval.chord.sevenths)):
            comparison = compare(ref_lab, est_lab)
            counted = comparison >= 0
            if counted.any():
                totals[name] += float(np.sum(durations[counted] * comparison[counted]))
                weights[name] += float(durations[counted].sum())
        seg = mir_eval.chord.seg(ref_int, est_int)
        span = float(ref_int[-1, 1] - ref_int[0, 0])
        totals["seg"] += seg * span
        weights["seg"] += span
    return {k: totals[k] / weights[k] if weights[k] else 0.0 for k in totals}


def note_scores(references: list[list], estimates: list[list]) -> dict[str, float]:
    """Mean mir_eval.transcription F-measure over pieces: onsets 50 ms, pitch 50 cents, without/with offsets."""
    import librosa
    import mir_eval

    without, with_offsets = [], []
    for ref, est in zip(references, estimates):
        if not ref:
            continue
        ri, rp = np.array([[a, b] for a, b, _ in ref]), librosa.midi_to_hz(np.array([p for _, _, p in ref], float))
        est = est or []
        ei = np.array([[a, b] for a, b, _ in est]).reshape(-1, 2)
        ep = librosa.midi_to_hz(np.array([p for _, _, p in est], float))
        without.append(mir_eval.transcription.precision_recall_f1_overlap(
            ri, rp, ei, ep, onset_tolerance=0.05, pitch_tolerance=50.0, offset_ratio=None)[2])
        with_offsets.append(mir_eval.transcription.precision_recall_f1_overlap(
            ri, rp, ei, ep, onset_tolerance=0.05, pitch_tolerance=50.0, offset_ratio=0.2)[2])
    return {"f_onset": float(np.mean(without)) if without else 0.0,
            "f_offset": float(np.mean(with_offsets)) if with_offsets else 0.0, "pieces": len(without)}


def tempo_band(bpm: float) -> str:
    lo, hi = next(((a, b) for a, b in TEMPO_BANDS if a <= bpm < b), TEMPO_BANDS[-1])
    return f"{lo}-{min(hi, 220)}"


# ---------------------------------------------------------------------------------------------
# Systems


def project_chord_label(label: str) -> str:
    """The analysis' chord names ("C#m7") in mir_eval's syntax ("C#:min7")."""
    if label == "N":
        return "N"
    root = label[:2] if len(label) > 1 and label[1] in "#b" else label[:1]
    return f"{root}:{PROJECT_QUALITIES[label[len(root):]]}"


PROJECT_QUALITIES = {"": "maj", "m": "min", "maj7": "maj7", "m7": "min7", "7": "7"}


def chroma_baseline_chords(wav: str) -> list:
    """[[start, end, label]]: CQT chroma frames matched one by one with the 24 major and minor triads."""
    import librosa

    y = load_audio(wav, sr=SAMPLE_RATE)
    chroma = librosa.feature.chroma_cqt(y=y, sr=SAMPLE_RATE, hop_length=2048)
    labels, templates = chord_templates()  # rows 0-23: the major and minor triads on 12 roots
    best = np.argmax(templates[:24] @ chroma, axis=0)
    return _segments([project_chord_label(labels[i]) for i in best], 2048 / SAMPLE_RATE)


def _segments(frame_labels: list[str], hop_s: float) -> list:
    out: list = []
    for i, label in enumerate(frame_labels):
        if out and out[-1][2] == label:
            out[-1][1] = (i + 1) * hop_s
        else:
            out.append([i * hop_s, (i + 1) * hop_s, label])
    return out


def run_project(piece: Piece) -> dict:
    """The song analysis (full file), the catalog descriptors (middle 30 s), and every key profile."""
    a = analyze(piece.wav)
    out = {"analysis_key": a.key, "analysis_tempo": a.tempo_bpm}
    if piece.chords:
        out["analysis_chords"] = [[c["start"], c["end"], project_chord_label(c["label"])] for c in a.chords]
        out["baseline_chords"] = chroma_baseline_chords(piece.wav)
    if piece.notes:
        out["analysis_notes"] = [[n["start"], n["end"], n["pitch"]] for n in a.melody_notes]
    d = audio_features(load_excerpt(piece.wav)).descriptors
    out["excerpt_key"], out["excerpt_tempo"] = d["key"], d["tempo_bpm"]
    frames = compute_frames(load_audio(piece.wav, sr=SAMPLE_RATE))
    for profile in KEY_PROFILES:
        out[f"profile_{profile}"] = estimate_key(frames.key_chroma, profile).label
    return out


def _essentia_label(k: str, scale: str) -> str:
    return f"{_sharp(k)} {scale}"


def run_essentia(piece: Piece, es) -> dict:
    audio = es.MonoLoader(filename=piece.wav, sampleRate=RENDER_SR)()
    out = {}
    for profile in ESSENTIA_KEY_PROFILES:
        k, scale, _ = es.KeyExtractor(profileType=profile, sampleRate=RENDER_SR)(audio)
        out[f"essentia_key_{profile}"] = _essentia_label(k, scale)
    out["essentia_tempo"] = float(es.RhythmExtractor2013(method="multifeature")(audio)[0])
    if piece.chords:
        out["essentia_chords"] = essentia_chords(audio, es)
    return out


def essentia_chords(audio: np.ndarray, es, frame: int = 4096, hop: int = 2048) -> list:
    """[[start, end, label]] from essentia's ChordsDetection over HPCP frames (its documented pipeline)."""
    window, spectrum = es.Windowing(type="blackmanharris62"), es.Spectrum()
    peaks = es.SpectralPeaks(orderBy="magnitude", magnitudeThreshold=1e-5, minFrequency=20, maxFrequency=3500,
                             maxPeaks=60, sampleRate=RENDER_SR)
    hpcp = es.HPCP(sampleRate=RENDER_SR)
    frames = [hpcp(*peaks(spectrum(window(f)))) for f in _frames(audio, frame, hop, es)]
    chords, _ = es.ChordsDetection(hopSize=hop, sampleRate=RENDER_SR)(np.array(frames, dtype=np.float32))
    labels = [f"{c[:-1]}:min" if c.endswith("m") else f"{c}:maj" for c in chords]
    return _segments(labels, hop / RENDER_SR)


def _frames(audio: np.ndarray, frame: int, hop: int, es):
    cutter = es.FrameCutter(frameSize=frame, hopSize=hop, startFromZero=True)
    while True:
        f = cutter(audio)
        if not len(f):
            return
        yield f


def time_four_minutes(pieces: list[Piece], workdir: Path) -> float:
    """Seconds to analyse a 4-minute file made by concatenating renders (looped if needed)."""
    import soundfile as sf

    chunks, total = [], 0
    target = 240 * RENDER_SR
    i = 0
    while total < target and pieces:
        y, sr = sf.read(pieces[i % len(pieces)].wav, dtype="float32", always_2d=True)
        chunks.append(y.mean(axis=1))
        total += chunks[-1].size
        i += 1
    song = np.concatenate(chunks)[:target]
    path = workdir / "four_minutes.wav"
    sf.write(path, song, RENDER_SR)
    analyze(path)  # warm-up: numba compilation and caches are not part of the figure
    start = time.perf_counter()
    analyze(path)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--n", type=int, default=200, help="number of rendered pieces (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed for choosing pieces, tempi, keys, programs")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--no-essentia", action="store_true", help="skip essentia even when it is installed")
    parser.add_argument("--cache", metavar="DIR", help="render cache (default: downloads_dir()/bench_renders)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if shutil.which("fluidsynth") is None or not Path(SOUNDFONT).exists():
        print("FluidSynth and the FluidR3 soundfont are needed: apt-get install -y fluidsynth fluid-soundfont-gm",
              file=sys.stderr)
        return 2

    es = None
    if not args.no_essentia:
        try:
            import essentia

            essentia.log.infoActive = False
            essentia.log.warningActive = False
            import essentia.standard as es
        except ImportError:
            print("essentia is not installed, so only this project is scored. To compare: .venv/bin/pip install essentia")

    cache = Path(args.cache) if args.cache else downloads_dir() / "bench_renders"
    cache.mkdir(parents=True, exist_ok=True)
    pieces = build_set(args.n, args.seed, cache)
    if len(pieces) < args.n:
        print(f"only {len(pieces)} pieces qualified", file=sys.stderr)

    rows = []
    for piece in tqdm(pieces, desc="analysing", unit="piece"):
        row = {"id": piece.id, "key": piece.key, "bpm": piece.bpm}
        row.update(run_project(piece))
        if es is not None:
            row.update(run_essentia(piece, es))
        rows.append(row)

    refs_key = [r["key"] for r in rows]
    refs_bpm = [r["bpm"] for r in rows]
    systems = [("tonearm analyze() (whole file)", "analysis_key", "analysis_tempo"),
               ("tonearm catalog descriptors (middle 30 s)", "excerpt_key", "excerpt_tempo")]
    systems += [(f"tonearm key profile '{p}'" + (" (default)" if p == _default_profile() else ""), f"profile_{p}", None)
                for p in KEY_PROFILES]
    if es is not None:
        systems += [(f"essentia KeyExtractor '{p}'", f"essentia_key_{p}", None) for p in ESSENTIA_KEY_PROFILES]
        systems += [("essentia RhythmExtractor2013 (multifeature)", None, "essentia_tempo")]

    table = []
    for name, key_col, tempo_col in systems:
        entry = {"system": name}
        if key_col:
            entry.update({f"key_{k}": v for k, v in key_score(refs_key, [r[key_col] for r in rows]).items()})
        if tempo_col:
            entry.update(tempo_accuracy(refs_bpm, [r[tempo_col] for r in rows]))
        table.append(entry)

    with tempfile.TemporaryDirectory() as tmp:
        four_min = time_four_minutes(pieces, Path(tmp))

    disagreements = sum(p.key != p.analysis_key for p in pieces)
    by_group = {g: sum(p.group == g for p in pieces) for g in GROUPS}
    methods = {m: sum(p.key_method == m for p in pieces) for m in sorted({p.key_method for p in pieces})}

    print(f"\n{len(pieces)} rendered pieces (seed {args.seed}): {by_group}")
    print(f"key ground truth: {methods}; music21 analyze('key') disagrees on {disagreements}")
    print(f"essentia: {'version ' + __import__('essentia').__version__ if es is not None else 'not used'}\n")
    header = f"{'system':48s} {'key weighted':>12s} {'key correct':>11s} {'tempo acc1':>10s} {'tempo acc2':>10s}"
    print(header)
    print("-" * len(header))
    for e in table:
        kw = f"{e['key_weighted']:.3f}" if "key_weighted" in e else "-"
        kc = f"{e['key_correct']:.3f}" if "key_correct" in e else "-"
        a1 = f"{e['accuracy1']:.3f}" if "accuracy1" in e else "-"
        a2 = f"{e['accuracy2']:.3f}" if "accuracy2" in e else "-"
        print(f"{e['system']:48s} {kw:>12s} {kc:>11s} {a1:>10s} {a2:>10s}")
    tempo_systems = [(name, col) for name, _, col in systems if col]
    breakdown = {}
    for title, group_of in (("tempo band (BPM)", lambda p: tempo_band(p.bpm)), ("instrument family", lambda p: p.family),
                            ("drums", lambda p: "with drums" if p.drums else "no drums"),
                            ("parts", lambda p: "solo" if p.solo else "ensemble")):
        groups = sorted({group_of(p) for p in pieces}, key=lambda g: (len(g) if title.startswith("tempo") else 0, g))
        print(f"\nTempo Accuracy1 / Accuracy2 by {title}")
        print(f"{'':24s} {'n':>4s} " + " ".join(f"{name[:30]:>30s}" for name, _ in tempo_systems))
        breakdown[title] = {}
        for g in groups:
            idx = [i for i, p in enumerate(pieces) if group_of(p) == g]
            cells, entry = [], {"n": len(idx)}
            for name, col in tempo_systems:
                acc = tempo_accuracy([rows[i]["bpm"] for i in idx], [rows[i][col] for i in idx])
                entry[name] = acc
                cells.append(f"{acc['accuracy1']:.3f} / {acc['accuracy2']:.3f}")
            breakdown[title][g] = entry
            print(f"{g:24s} {len(idx):4d} " + " ".join(f"{c:>30s}" for c in cells))

    chord_rows = [i for i, p in enumerate(pieces) if p.chords]
    chord_table = {}
    chord_systems = [("tonearm analyze()", "analysis_chords"), ("chroma-template baseline", "baseline_chords")]
    if es is not None:
        chord_systems.append(("essentia ChordsDetection", "essentia_chords"))
    print(f"\nChords on {len(chord_rows)} pieces of {CHORD_MIN_PARTS}+ parts (mir_eval, duration-weighted)")
    print(f"{'system':32s} {'root':>7s} {'majmin':>7s} {'sevenths':>8s} {'seg':>7s}")
    for name, col in chord_systems:
        sc = chord_scores([pieces[i].chords for i in chord_rows], [rows[i].get(col) for i in chord_rows])
        chord_table[name] = sc
        print(f"{name:32s} {sc['root']:7.3f} {sc['majmin']:7.3f} {sc['sevenths']:8.3f} {sc['seg']:7.3f}")

    note_rows = [i for i, p in enumerate(pieces) if p.notes]
    notes_table = note_scores([pieces[i].notes for i in note_rows], [rows[i].get("analysis_notes") for i in note_rows])
    print(f"\nMelody notes on {notes_table['pieces']} one-part pieces (mir_eval.transcription, onset 50 ms, pitch 50 cents): "
          f"F {notes_table['f_onset']:.3f} without offsets, {notes_table['f_offset']:.3f} with offsets")
    print(f"\nanalyze() on a 4-minute file: {four_min:.2f} s (after one warm-up run; {os.cpu_count()} CPU cores)")

    if args.json:
        Path(args.json).write_text(json.dumps({
            "n": len(pieces), "seed": args.seed, "groups": by_group, "key_ground_truth": methods,
            "music21_disagreements": disagreements, "table": table, "four_minute_seconds": four_min,
            "tempo_breakdown": breakdown, "chords": chord_table, "notes": notes_table,
            "essentia": es is not None, "pieces": [asdict(p) for p in pieces], "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


def _default_profile() -> str:
    from index.audio import DEFAULT_KEY_PROFILE

    return DEFAULT_KEY_PROFILE


if __name__ == "__main__":
    raise SystemExit(main())
