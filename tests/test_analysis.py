"""Song analysis on synthesized pieces with known key, tempo, chords, metre, pitch and structure."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from index.analysis import (
    Analysis,
    analyze,
    analyze_signal,
    chord_templates,
    estimate_time_signature,
    recognise_chords,
)
from index.audio import AUDIO_FEATURE_DIM, SAMPLE_RATE, AudioError
from index.melody import Note, notes_range

SR = SAMPLE_RATE


def midi_hz(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def tone(freq: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def note(midis: list[int], seconds: float, decay: float = 4.0) -> np.ndarray:
    """A struck chord of harmonic tones with an exponential decay."""
    t = np.arange(int(seconds * SR)) / SR
    seg = np.zeros_like(t)
    for m in midis:
        for h, a in ((1, 1.0), (2, 0.4), (3, 0.2)):
            seg += a * np.sin(2 * np.pi * midi_hz(m) * h * t)
    return seg * np.exp(-t * decay)


def piece(chords: list[tuple[int, ...]], bpm: float = 120.0, beats_per_bar: int = 4, repeats: int = 2,
          waltz: bool = False) -> np.ndarray:
    """One chord per bar. Common time: chord + bass on every beat, the downbeat louder.
    Waltz: bass alone on the downbeat, chord without bass on beats 2 and 3 (oom-pah-pah)."""
    beat = 60.0 / bpm
    out = []
    for _ in range(repeats):
        for chord in chords:
            for b in range(beats_per_bar):
                if waltz:
                    out.append(note([chord[0] - 12], beat, 5.0) if b == 0 else 0.45 * note(list(chord), beat, 5.0))
                else:
                    out.append(note(list(chord) + [chord[0] - 12], beat) * (1.3 if b == 0 else 1.0))
    y = np.concatenate(out)
    return (y / np.abs(y).max() / 2.0).astype(np.float32)


C_MAJOR = [(60, 64, 67), (65, 69, 72), (67, 71, 74), (60, 64, 67)]  # C F G C
A_MINOR = [(57, 60, 64), (62, 65, 69), (64, 68, 71), (57, 60, 64)]  # Am Dm E Am


def write(tmp_path, name: str, y: np.ndarray) -> str:
    path = tmp_path / name
    sf.write(path, y, SR)
    return str(path)


@pytest.fixture(scope="module")
def aba(tmp_path_factory) -> Analysis:
    """C major (16 s), A minor (16 s), C major again (16 s) at 120 BPM."""
    y = np.concatenate([piece(C_MAJOR), piece(A_MINOR), piece(C_MAJOR)])
    return analyze(write(tmp_path_factory.mktemp("aba"), "aba.wav", y))


# ---------------------------------------------------------------------------------- answers


def test_tempo_beats_and_metre(aba):
    assert aba.tempo_bpm == pytest.approx(120, rel=0.04)
    assert np.median(np.diff(aba.beats)) == pytest.approx(0.5, abs=0.03)
    assert aba.time_signature == "4/4"
    assert 0 < aba.time_signature_confidence <= 1


def test_key_and_chords(aba):
    assert aba.key == "C major" and aba.mode == "major"
    first = [c for c in aba.chords if c["end"] <= 16.5 and c["label"] != "N"]
    assert [c["label"] for c in first] == ["C", "F", "G", "C", "F", "G", "C"]  # C F G C, twice
    assert first[1]["start"] == pytest.approx(2.0, abs=0.25)  # F enters on bar 2
    middle = [c["label"] for c in aba.chords if 17 <= c["start"] < 31]
    assert set(middle) >= {"Dm", "E", "Am"}
    for a, b in zip(aba.chords, aba.chords[1:]):
        assert a["label"] != b["label"] and a["end"] == pytest.approx(b["start"])


def test_structure_returns_to_the_first_section(aba):
    segs = aba.segments
    assert segs[0]["start"] == 0 and segs[-1]["end"] == pytest.approx(aba.duration_s, abs=0.1)
    label_at = lambda t: next(s["label"] for s in segs if s["start"] <= t < s["end"])  # noqa: E731
    assert label_at(8) == label_at(40)
    assert label_at(24) != label_at(8)


def test_loudness_and_levels(aba):
    assert aba.loudness_lufs is not None and -40 < aba.loudness_lufs < -5
    assert aba.peak_dbfs == pytest.approx(-6.0, abs=0.5)
    assert aba.dynamic_range_db >= 0
    for name in ("energy", "brightness", "percussiveness"):
        assert 0 <= getattr(aba, name) <= 1
    assert aba.vocals["present"] is False and "heuristic" in aba.vocals["method"]
    assert aba.vector is not None and aba.vector.shape == (AUDIO_FEATURE_DIM,)


def test_serialisation_and_text(aba):
    d = json.loads(aba.to_json())
    assert d["key"] == "C major" and "vector" not in d
    assert d["truncated"] is False and d["duration_s"] == pytest.approx(48, abs=0.1)
    facts = aba.summary_facts()
    assert any(f.startswith("Key: C major (confidence ") for f in facts)
    assert any(f.startswith("Tempo: 1") for f in facts)
    text = aba.to_text()
    assert "aba.wav" in text and "Main chords:" in text and "C major" in text


def test_a_minor(tmp_path):
    a = analyze(write(tmp_path, "am.wav", piece(A_MINOR)))
    assert a.key == "A minor"
    assert "minor key" in a.tags


def test_waltz_is_three_four(tmp_path):
    a = analyze(write(tmp_path, "waltz.wav", piece(C_MAJOR, bpm=150, beats_per_bar=3, repeats=4, waltz=True)))
    assert a.time_signature == "3/4"
    assert a.tempo_bpm == pytest.approx(150, rel=0.04)


def test_seventh_chords(tmp_path):
    sevenths = [(60, 64, 67, 71), (57, 60, 64, 67), (62, 65, 69, 72), (67, 71, 74, 77)]  # Cmaj7 Am7 Dm7 G7
    a = analyze(write(tmp_path, "sevenths.wav", piece(sevenths)))
    labels = [c["label"] for c in a.chords if c["label"] != "N"]
    assert labels[:4] == ["Cmaj7", "Am7", "Dm7", "G7"]


def test_a440_tone_melody_and_no_beat(tmp_path):
    a = analyze(write(tmp_path, "a440.wav", tone(440.0, 5.0)))
    assert a.melody_range is not None and "A4" in a.melody_range
    assert a.tempo_bpm == 0 and a.beats == [] and a.time_signature is None
    assert any("No steady beat" in w for w in a.warnings)


def test_long_file_is_truncated(tmp_path):
    path = write(tmp_path, "long.wav", piece(C_MAJOR, repeats=2)[: 12 * SR])
    a = analyze(path, max_seconds=6)
    assert a.truncated is True
    assert a.analysed_seconds == pytest.approx(6.0, abs=0.05)
    assert a.duration_s == pytest.approx(12.0, abs=0.05)
    assert any("first 0:06" in w for w in a.warnings)


# ------------------------------------------------------------------------------- bad input


def test_silence_is_refused(tmp_path):
    with pytest.raises(AudioError, match="silent"):
        analyze(write(tmp_path, "silence.wav", np.zeros(5 * SR, dtype=np.float32)))


def test_one_second_is_too_short(tmp_path):
    with pytest.raises(AudioError, match="too short to analyse"):
        analyze(write(tmp_path, "short.wav", tone(440.0, 1.0)))


def test_not_audio_is_refused(tmp_path):
    path = tmp_path / "song.wav"
    path.write_bytes(b"%PDF-1.4 definitely not sound" * 50)
    with pytest.raises(AudioError, match="not an audio file"):
        analyze(path)


def test_corrupt_audio_is_refused(tmp_path):
    good = write(tmp_path, "good.flac", tone(440.0, 3.0))
    bad = tmp_path / "bad.flac"
    data = open(good, "rb").read()
    bad.write_bytes(data[:60] + bytes(np.random.default_rng(2).integers(0, 256, 2000, dtype=np.uint8)))
    with pytest.raises(AudioError, match="corrupt or truncated"):
        analyze(bad)


def test_size_limit(tmp_path):
    path = write(tmp_path, "big.wav", tone(440.0, 3.0))
    with pytest.raises(AudioError, match=r"'big.wav' is 0\.126 MB, larger than the 0\.05 MB limit"):
        analyze(path, max_bytes=50 * 1024 * 1024 // 1000)


# ------------------------------------------------------------------------------ pure parts


def test_recognise_chords_smooths_blips():
    labels, templates = chord_templates()
    want = ["C", "Am7", "G7", "Fmaj7", "Em"]
    rng = np.random.default_rng(0)
    cols = []
    for lab in want:
        cols += [templates[labels.index(lab)] + rng.uniform(0, 0.15, 12) for _ in range(20)]
    chroma = np.array(cols).T
    chroma[:, 30] = templates[labels.index("F#")]  # one stray frame inside Am7
    times = np.arange(chroma.shape[1]) * 0.1
    segs = recognise_chords(chroma, times, end_time=10.0)
    assert [s["label"] for s in segs] == want
    assert [s["start"] for s in segs] == pytest.approx([0, 2, 4, 6, 8])


def test_recognise_chords_marks_silence_no_chord():
    labels, templates = chord_templates()
    chroma = np.tile(templates[labels.index("D")][:, None], (1, 40))
    active = np.ones(40, dtype=bool)
    active[20:] = False
    segs = recognise_chords(chroma, np.arange(40) * 0.1, 4.0, active=active)
    assert [s["label"] for s in segs] == ["D", "N"]


def test_time_signature_needs_beats():
    assert estimate_time_signature(np.ones(100), np.ones((12, 30)), np.arange(5) * 0.5) == (None, 0.0)


def test_melody_range_names_notes():
    assert notes_range([Note(0.0, 1.0, 69)]) == "A4-A4"
    assert notes_range([Note(0.0, 1.0, 60), Note(1.0, 2.0, 84)]) == "C4-C6"
    assert notes_range([Note(0.0, 1.0, 60), Note(1.0, 1.02, 96), Note(1.1, 2.0, 72)]) == "C4-C5"  # a blip is no range
    assert notes_range([Note(0.0, 0.2, 69)]) is None


def test_analyze_signal_in_memory_stereo_44k():
    sr = 44100
    t = np.arange(3 * sr) / sr
    mono = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    a = analyze_signal(np.stack([mono, mono]), sr, name="recording")
    assert a.file == "recording" and a.duration_s == pytest.approx(3.0, abs=0.01)
    assert a.melody_range is not None and "A4" in a.melody_range
    with pytest.raises(AudioError, match="too short to analyse"):
        analyze_signal(mono[: sr], sr)
    with pytest.raises(AudioError, match="silent"):
        analyze_signal(np.zeros(3 * sr, dtype=np.float32), sr)
