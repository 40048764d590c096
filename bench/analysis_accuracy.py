"""Key and tempo accuracy of the song analysis on rendered scores, with essentia as a reference.

Test set
    A seeded choice of works from the music21 corpus, drawn round-robin from four groups
    (Bach chorales, other common-practice composers, folk tunes, Renaissance madrigals and
    motets), each cut to its first ~45 s, transposed by a seeded interval (-5..+6 semitones, so
    every tonic occurs), given a seeded metronome mark (70-160 beats per minute) and seeded
    General MIDI programs per part, and rendered with FluidSynth (FluidR3_GM) at 44.1 kHz.
    Renders are cached under ``index.paths.downloads_dir() / "bench_renders"``.

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

Scores
    Key: mir_eval weighted score (1 correct, 0.5 fifth, 0.3 relative, 0.2 parallel).
    Tempo: Accuracy1 (within 4 %) and Accuracy2 (also at x2, x1/2, x3, x1/3).

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

from index.analysis import analyze  # noqa: E402
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
TEMPO_RANGE = (70, 160)
ESSENTIA_KEY_PROFILES = ("temperley", "krumhansl", "edma", "bgate", "shaath")

GROUPS: dict[str, tuple[str, ...]] = {
    "bach": ("bach",),
    "common-practice": ("beethoven", "mozart", "haydn", "schumann_robert", "schumann_clara", "chopin", "handel",
                        "corelli", "schubert", "weber", "joplin", "beach", "cpebach", "verdi"),
    "folk": ("essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs", "miscFolk"),
    "renaissance": ("monteverdi", "josquin"),
}
# General MIDI programs that sustain a clear pitch: pianos, organs, guitars, strings, winds, brass, mallets.
PROGRAMS: tuple[int, ...] = (0, 1, 4, 6, 11, 16, 19, 24, 25, 40, 41, 42, 46, 48, 52, 56, 60, 68, 71, 73)
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


def render_piece(path: Path, group: str, rng: np.random.Generator, cache: Path) -> Piece | None:
    """Parse, cut, transpose, set tempo and programs, render; None when the piece does not qualify."""
    import pretty_midi
    from music21 import corpus, meter, stream, tempo

    bpm = float(rng.integers(TEMPO_RANGE[0], TEMPO_RANGE[1] + 1))
    shift = int(rng.integers(-5, 7))
    tune_pick = int(rng.integers(0, 1_000_000))
    program_seed = int(rng.integers(0, 1_000_000))
    rel = path.as_posix().split("/corpus/", 1)[-1]
    pid = f"{rel.replace('/', '_').rsplit('.', 1)[0]}_{tune_pick % 997}_{int(bpm)}_{shift:+d}"
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
    score = _excerpt(parsed, bpm, beat_ql)
    for t in list(score.recurse().getElementsByClass(tempo.TempoIndication)):
        t.activeSite.remove(t)  # the render plays at one known tempo
    try:
        gt, method, analysed = score_key(score)
    except Exception as err:
        return skip(f"key analysis failed: {err}")
    if gt is None:
        return skip(method)

    with tempfile.TemporaryDirectory() as tmp:
        mid = Path(tmp) / "score.mid"
        try:
            score.write("midi", fp=str(mid))
        except Exception as err:
            return skip(f"midi export failed: {err}")
        pm = pretty_midi.PrettyMIDI(str(mid))
        end = pm.get_end_time()
        if end <= 0:
            return skip("no notes")
        # music21 writes 120 quarter notes per minute when no tempo is marked; rescale to the target.
        qpm = bpm * beat_ql
        pm.adjust_times(np.array([0.0, end]), np.array([0.0, end * 120.0 / qpm]))
        prng = np.random.default_rng(program_seed)
        programs = []
        for inst in pm.instruments:
            inst.is_drum = False
            inst.program = int(prng.choice(PROGRAMS))
            programs.append(inst.program)
            for n in inst.notes:
                n.pitch = int(np.clip(n.pitch + shift, 0, 127))
        pm.write(str(mid))
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(RENDER_SR), "-F", str(wav_path),
                        SOUNDFONT, str(mid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import soundfile as sf

    seconds = sf.info(str(wav_path)).duration
    if seconds < MIN_RENDER_SECONDS:
        wav_path.unlink(missing_ok=True)
        return skip(f"too short ({seconds:.1f} s)")
    piece = Piece(id=pid, source=rel, group=group, wav=str(wav_path), seconds=round(seconds, 2),
                  key=_transpose_name(gt, shift), key_method=method, analysis_key=_transpose_name(analysed, shift),
                  bpm=bpm, beat_unit=beat_ql, transpose=shift, programs=programs)
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


# ---------------------------------------------------------------------------------------------
# Systems


def run_project(piece: Piece) -> dict:
    """The song analysis (full file), the catalog descriptors (middle 30 s), and every key profile."""
    a = analyze(piece.wav)
    out = {"analysis_key": a.key, "analysis_tempo": a.tempo_bpm}
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
    return out


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
    parser.add_argument("--n", type=int, default=100, help="number of rendered pieces (default 100)")
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
    print(f"\nanalyze() on a 4-minute file: {four_min:.2f} s (after one warm-up run; {os.cpu_count()} CPU cores)")

    if args.json:
        Path(args.json).write_text(json.dumps({
            "n": len(pieces), "seed": args.seed, "groups": by_group, "key_ground_truth": methods,
            "music21_disagreements": disagreements, "table": table, "four_minute_seconds": four_min,
            "essentia": es is not None, "pieces": [asdict(p) for p in pieces], "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


def _default_profile() -> str:
    from index.audio import DEFAULT_KEY_PROFILE

    return DEFAULT_KEY_PROFILE


if __name__ == "__main__":
    raise SystemExit(main())
