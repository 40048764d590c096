"""Melody notes: YIN pitch, note cutting, scored with mir_eval on synthesized melodies, and MIDI out."""
from __future__ import annotations

import json

import librosa
import mir_eval
import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from index.__main__ import main as index_main
from index.audio import SAMPLE_RATE
from index.melody import Note, melody_notes, notes_to_midi, segment_notes, strong_onsets, track_pitch, yin

SR = SAMPLE_RATE


def plucked(pitches: list[int], durations: list[float], start: float = 0.3, gap: float = 0.03) -> tuple[np.ndarray, list[Note]]:
    """Harmonic tones with a decaying envelope, one after another, and the notes they play."""
    total = start + sum(durations) + 0.5
    y = np.zeros(int(total * SR))
    notes, t = [], start
    for p, d in zip(pitches, durations):
        n = np.arange(int((d - gap) * SR))
        f = 440.0 * 2 ** ((p - 69) / 12)
        tone = sum(a * np.sin(2 * np.pi * f * h * n / SR) for h, a in ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.15)))
        env = np.exp(-n / SR * 2.5) * np.minimum(1.0, n / (0.005 * SR))
        i = int(t * SR)
        y[i:i + n.size] += 0.25 * tone * env
        notes.append(Note(t, t + d - gap, p))
        t += d
    return y.astype(np.float32), notes


def score(ref: list[Note], est: list[Note], offsets: bool) -> float:
    ri = np.array([[n.start, n.end] for n in ref])
    ei = np.array([[n.start, n.end] for n in est]).reshape(-1, 2)
    return mir_eval.transcription.precision_recall_f1_overlap(
        ri, librosa.midi_to_hz([n.pitch for n in ref]), ei, librosa.midi_to_hz([n.pitch for n in est]),
        onset_tolerance=0.05, pitch_tolerance=50.0, offset_ratio=0.2 if offsets else None)[2]


def test_yin_finds_the_pitch_of_tones_and_reports_noise_as_aperiodic():
    rng = np.random.default_rng(0)
    for hz in (98.0, 261.63, 440.0, 1318.5):
        t = np.arange(SR) / SR
        f0, ap = yin(np.sin(2 * np.pi * hz * t).astype(np.float32), SR, fmin=80.0, fmax=2100.0)
        mid = f0[5:-5]
        assert np.median(np.abs(1200 * np.log2(mid / hz))) < 5  # cents
        assert np.median(ap[5:-5]) < 0.05
    _, ap = yin(rng.standard_normal(SR).astype(np.float32), SR, fmin=80.0, fmax=2100.0)
    assert np.median(ap) > 0.3
    with pytest.raises(ValueError):
        yin(np.zeros(SR, np.float32), SR, fmin=500.0, fmax=100.0)


def test_a_synthesized_melody_is_transcribed_note_for_note():
    rng = np.random.default_rng(3)
    pitches = [int(p) for p in 64 + np.cumsum(rng.integers(-3, 4, size=40))]
    durations = [float(d) for d in rng.choice([0.2, 0.3, 0.45, 0.6], size=40)]
    y, ref = plucked(pitches, durations)
    est = melody_notes(y, SR)
    assert score(ref, est, offsets=False) >= 0.9
    assert score(ref, est, offsets=True) >= 0.7


def test_repeated_notes_are_cut_at_strong_onsets():
    y, ref = plucked([67, 67, 67, 69, 69], [0.5, 0.5, 0.5, 0.5, 0.5], gap=0.0)
    env = librosa.onset.onset_strength(y=y, sr=SR, hop_length=512)
    est = melody_notes(y, SR, onsets=strong_onsets(env, SR, 512))
    assert [n.pitch for n in est] == [67, 67, 67, 69, 69]
    merged = melody_notes(y, SR)  # without onsets one pitch held on is one note
    assert [n.pitch for n in merged] == [67, 69]


def test_segment_notes_rules():
    times = np.arange(100) * 0.02
    midi = np.full(100, 60.2)
    voiced = np.ones(100, dtype=bool)
    midi[40:70] = 64.9  # E4 slightly sharp rounds to F4
    voiced[20] = False  # one unvoiced frame inside the first note is closed
    midi[70:72] = 77.0  # a two-frame slip an octave above the next note goes to it
    midi[72:] = 65.0
    voiced[97:] = False
    notes = segment_notes(times, midi, voiced)
    assert [n.pitch for n in notes] == [60, 65]
    assert notes[0].start == pytest.approx(-0.01 + 0.01, abs=0.011) and notes[1].end == pytest.approx(1.93, abs=0.011)
    assert segment_notes(times, midi, np.zeros(100, dtype=bool)) == []
    assert [n.pitch for n in segment_notes(times, midi - 0.4, voiced, tuning=-0.4)] == [60, 65]
    with pytest.raises(ValueError):
        segment_notes(times, midi[:10], voiced)


def test_track_pitch_of_silence_and_a_very_short_signal():
    times, midi, voiced = track_pitch(np.zeros(SR, np.float32), SR)
    assert not voiced.any() and np.isnan(midi).all()
    times, _, voiced = track_pitch(np.zeros(100, np.float32), SR)
    assert times.size == 0 and voiced.size == 0


def test_notes_to_midi_round_trip(tmp_path):
    notes = [Note(0.5, 0.9, 60), Note(1.0, 1.75, 64), Note(2.0, 2.5, 67)]
    path = notes_to_midi(notes, tmp_path / "sub" / "tune.mid", tempo_bpm=90, program=73)
    pm = pretty_midi.PrettyMIDI(str(path))
    back = pm.instruments[0].notes
    assert [n.pitch for n in back] == [60, 64, 67] and pm.instruments[0].program == 73
    assert np.allclose([[n.start, n.end] for n in back], [[n.start, n.end] for n in notes], atol=0.01)
    assert pm.get_tempo_changes()[1][0] == pytest.approx(90, abs=0.01)  # MIDI stores microseconds a beat
    with pytest.raises(ValueError):
        notes_to_midi(notes, tmp_path / "bad.mid", program=200)


def test_analyze_cli_writes_the_melody_as_midi(tmp_path, capsys):
    y, ref = plucked([60, 62, 64, 65, 67, 65, 64, 62, 60], [0.4] * 9)
    song = tmp_path / "scale.wav"
    sf.write(song, y, SR)
    out = tmp_path / "scale.mid"
    assert index_main(["analyze", str(song), "--json", "--midi", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [n["name"] for n in printed["melody_notes"]] == ["C4", "D4", "E4", "F4", "G4", "F4", "E4", "D4", "C4"]
    assert [n.pitch for n in pretty_midi.PrettyMIDI(str(out)).instruments[0].notes] == [60, 62, 64, 65, 67, 65, 64, 62, 60]
    noise = tmp_path / "noise.wav"
    sf.write(noise, (0.2 * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32), SR)
    assert index_main(["analyze", str(noise), "--midi", str(tmp_path / "none.mid")]) == 1
    assert not (tmp_path / "none.mid").exists()
