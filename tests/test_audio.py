"""Loading, key/tempo estimation, the feature vector and descriptor words, on synthesized audio."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from index.audio import (
    AUDIO_FEATURE_DIM,
    AUDIO_FEATURE_NAMES,
    EXCERPT_SECONDS,
    KEY_PROFILES,
    SAMPLE_RATE,
    AudioError,
    AudioFeatures,
    audio_duration,
    audio_features,
    descriptor_tags,
    estimate_key,
    estimate_tempo,
    key_name,
    load_audio,
    load_excerpt,
)

SR = SAMPLE_RATE


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def midi_hz(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def chord_piece(chords: list[tuple[int, ...]], bpm: float = 120.0, beats_per_chord: int = 4,
                repeats: int = 2, sr: int = SR) -> np.ndarray:
    """Block chords with a plucked bass note on every beat: harmonic tones with decaying envelopes."""
    beat = 60.0 / bpm
    n = int(len(chords) * beats_per_chord * repeats * beat * sr) + sr
    y = np.zeros(n, dtype=np.float64)
    t_note = np.arange(int(beat * sr)) / sr
    env = np.exp(-t_note * 4.0)
    start = 0.0
    for _ in range(repeats):
        for chord in chords:
            for b in range(beats_per_chord):
                i = int(start * sr)
                seg = np.zeros_like(t_note)
                for m in list(chord) + [chord[0] - 12]:
                    f = midi_hz(m)
                    for h, a in ((1, 1.0), (2, 0.4), (3, 0.2)):
                        seg += a * np.sin(2 * np.pi * f * h * t_note)
                y[i:i + seg.size] += seg * env * (1.3 if b == 0 else 1.0)
                start += beat
    y /= np.abs(y).max() * 2.0
    return y.astype(np.float32)


C_MAJOR_PROGRESSION = [(60, 64, 67), (65, 69, 72), (67, 71, 74), (60, 64, 67)]  # C F G C
A_MINOR_PROGRESSION = [(57, 60, 64), (62, 65, 69), (64, 68, 71), (57, 60, 64)]  # Am Dm E Am


@pytest.fixture(scope="module")
def c_major() -> np.ndarray:
    return chord_piece(C_MAJOR_PROGRESSION, bpm=120.0, repeats=3)


# ------------------------------------------------------------------------------------ loading


def test_load_audio_resamples_to_mono_float32(tmp_path):
    stereo = np.stack([tone(440, 2.0, sr=44100), tone(440, 2.0, sr=44100)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44100)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 2 * SR) <= 2
    assert audio_duration(path) == pytest.approx(2.0, abs=1e-3)


def test_load_audio_offset_and_duration(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, tone(220, 5.0), SR)
    y = load_audio(path, offset=1.0, duration=2.0)
    assert y.size == 2 * SR


def test_load_excerpt_takes_the_middle(tmp_path):
    # Silence-free marker: 3 s at 220 Hz, 4 s at 880 Hz, 3 s at 220 Hz; the middle 4 s are all 880 Hz.
    y = np.concatenate([tone(220, 3.0), tone(880, 4.0), tone(220, 3.0)])
    path = tmp_path / "m.wav"
    sf.write(path, y, SR)
    mid = load_excerpt(path, seconds=4.0)
    assert mid.size == 4 * SR
    spectrum = np.abs(np.fft.rfft(mid))
    peak_hz = np.argmax(spectrum) * SR / mid.size
    assert peak_hz == pytest.approx(880, abs=3)
    short = load_excerpt(path, seconds=EXCERPT_SECONDS)  # shorter file: the whole of it
    assert short.size == y.size


def test_load_excerpt_of_a_silent_middle_takes_the_opening(tmp_path):
    # A song, a long pause, a hidden track: the middle 4 s are silent, so the opening stands in.
    y = np.concatenate([tone(330, 4.0), np.zeros(6 * SR, np.float32), tone(660, 4.0)])
    path = tmp_path / "hidden.ogg"
    sf.write(path, y, SR)
    opening = load_excerpt(path, seconds=4.0)
    peak_hz = np.argmax(np.abs(np.fft.rfft(opening))) * SR / opening.size
    assert opening.size == pytest.approx(4 * SR, abs=SR // 100)
    assert peak_hz == pytest.approx(330, abs=3)


def test_load_excerpt_resamples_the_middle_as_load_audio_does(tmp_path):
    rate = 44100
    t = np.arange(12 * rate) / rate
    path = tmp_path / "cd.flac"
    sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 550 * t)], axis=1), rate)
    assert np.array_equal(load_excerpt(path, seconds=5.0), load_audio(path, offset=3.5, duration=5.0))


def test_silent_file_is_rejected(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(SR * 3, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="silent") as err:
        load_audio(path)
    assert "quiet.wav" in str(err.value)


def test_not_audio_file_is_rejected(tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_text("these are words, not sound\n" * 20)
    with pytest.raises(AudioError, match="not an audio file") as err:
        load_audio(path)
    assert "notes.mp3" in str(err.value)


def test_corrupt_file_is_rejected(tmp_path):
    good = tmp_path / "good.flac"
    sf.write(good, tone(440, 2.0), SR)
    bad = tmp_path / "bad.flac"
    data = good.read_bytes()
    bad.write_bytes(data[:40] + bytes(np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8)))
    with pytest.raises(AudioError, match="corrupt or truncated"):
        load_audio(bad)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)


# ------------------------------------------------------------------------------- key & tempo


@pytest.mark.parametrize("profile", sorted(KEY_PROFILES))
def test_every_profile_finds_keys_from_ideal_scale_chroma(profile):
    # Pitch-class histogram of a major scale with emphasised tonic triad, transposed to every key.
    major = np.array([3, 0, 1, 0, 2, 1, 0, 2, 0, 1, 0, 1], dtype=float)
    minor = np.array([3, 0, 1, 2, 0, 1, 0, 2, 1, 0, 0.5, 0.5], dtype=float)
    for tonic in range(12):
        assert estimate_key(np.roll(major, tonic), profile).label == key_name(tonic, "major")
        assert estimate_key(np.roll(minor, tonic), profile).label == key_name(tonic, "minor")


def test_key_of_c_major_and_a_minor_audio(c_major):
    import librosa

    chroma = librosa.feature.chroma_cqt(y=c_major, sr=SR)
    est = estimate_key(chroma)
    assert est.label == "C major"
    assert 0.5 < est.confidence <= 1.0
    a_minor = chord_piece(A_MINOR_PROGRESSION, repeats=2)
    assert estimate_key(librosa.feature.chroma_cqt(y=a_minor, sr=SR)).label == "A minor"


def test_tempo_of_a_click_track():
    bpm = 100.0
    y = np.zeros(SR * 20, dtype=np.float32)
    click = tone(1500, 0.03, amp=0.8) * np.hanning(int(0.03 * SR)).astype(np.float32)
    for t in np.arange(0, 19.5, 60.0 / bpm):
        i = int(t * SR)
        y[i:i + click.size] += click
    import librosa

    env = librosa.onset.onset_strength(y=y, sr=SR)
    tempo, beats = estimate_tempo(env, sr=SR)
    assert tempo == pytest.approx(bpm, rel=0.04)
    assert np.median(np.diff(beats)) == pytest.approx(0.6, abs=0.03)


# ------------------------------------------------------------------------------- features


def test_audio_features_shape_and_descriptors(c_major):
    f = audio_features(c_major)
    assert isinstance(f, AudioFeatures)
    assert f.vector.shape == (AUDIO_FEATURE_DIM,) == (len(AUDIO_FEATURE_NAMES),)
    assert f.vector.dtype == np.float32 and np.all(np.isfinite(f.vector))
    d = f.descriptors
    json.dumps(d)  # JSON-serialisable
    assert d["key"] == "C major" and d["mode"] == "major"
    assert d["tempo_bpm"] == pytest.approx(120, rel=0.04)
    for name in ("energy", "brightness", "percussiveness", "vocals", "key_confidence"):
        assert 0.0 <= d[name] <= 1.0, name
    assert d["loudness_db"] < 0


def test_features_separate_different_sounds(c_major):
    # A noise burst train and a chord piece should differ more than two halves of the chord piece.
    rng = np.random.default_rng(1)
    noise = np.zeros(SR * 12, dtype=np.float32)
    for i in range(0, noise.size - 2000, SR // 4):
        noise[i:i + 2000] = rng.normal(0, 0.3, 2000) * np.exp(-np.arange(2000) / 400)
    a = audio_features(c_major[: SR * 12]).vector
    b = audio_features(c_major[SR * 12: SR * 24]).vector
    c = audio_features(noise)
    scale = np.abs(np.stack([a, b, c.vector])).max(axis=0) + 1e-6
    assert np.linalg.norm((a - b) / scale) < np.linalg.norm((a - c.vector) / scale)
    assert c.descriptors["brightness"] > audio_features(c_major[: SR * 12]).descriptors["brightness"]
    assert c.descriptors["percussiveness"] > 0.5


def test_audio_features_validates_input():
    with pytest.raises(ValueError, match="mono"):
        audio_features(np.zeros((2, SR), dtype=np.float32))
    with pytest.raises(ValueError, match="0.5 s"):
        audio_features(np.ones(100, dtype=np.float32))
    with pytest.raises(ValueError, match="silent"):
        audio_features(np.zeros(SR, dtype=np.float32))


def test_descriptor_tags_words():
    tags = descriptor_tags({"tempo_bpm": 70, "key": "F minor", "key_confidence": 0.8, "mode": "minor",
                            "energy": 0.2, "brightness": 0.1, "percussiveness": 0.1, "vocals": 0.1})
    assert tags == ["slow", "minor key", "F minor", "calm", "dark", "instrumental"]
    tags = descriptor_tags({"tempo_bpm": 140, "key": "C# major", "key_confidence": 0.3,
                            "energy": 0.9, "brightness": 0.9, "percussiveness": 0.8, "vocals": 0.9})
    assert tags == ["fast", "energetic", "bright", "percussive", "vocals"]  # unsure key left out
    assert descriptor_tags({"tempo_bpm": 100, "brightness": 0.5}) == ["moderate tempo", "warm"]
    assert descriptor_tags({}) == []


def test_a_key_tag_replaces_the_estimate_which_is_kept_and_can_come_back():
    from index.audio import descriptor_tags, with_library_key

    measured = {"tempo_bpm": 120.0, "key": "G# major", "mode": "major", "key_confidence": 0.3}
    assert "G# major" not in descriptor_tags(measured)  # too unsure to be named
    stated = with_library_key(measured, ["romantic", "minor", "c# minor", "e major"])  # the first key counts
    assert stated["key"] == "C# minor" and stated["key_source"] == "library"
    assert (stated["measured_key"], stated["measured_key_confidence"]) == ("G# major", 0.3)
    assert {"minor key", "C# minor"} <= set(descriptor_tags(stated))  # the library is sure
    assert measured["key"] == "G# major"  # the input is left as it was
    assert with_library_key(stated, ["c# minor"]) == stated
    assert with_library_key(stated, []) == {**measured, "key_source": "audio"}
    assert with_library_key({}, ["a minor"]) == {"key": "A minor", "mode": "minor", "key_source": "library"}
    assert with_library_key({}, ["calm"]) == {}
    with pytest.raises(TypeError):
        with_library_key(None, [])
