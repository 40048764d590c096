"""The feature extraction's faster computations agree with the librosa functions they replace:
the rectangular STFT, the constant-Q filter bank and transform, the peak-only tuning estimate, the tempogram, spectral shape,
flatness and contrast, the zero-crossing rate, the onset envelopes, the frame RMS, the percussive share, and the channel mix."""
from __future__ import annotations

import warnings

import librosa
import numpy as np
import pytest
import scipy.ndimage

from index.audio import (CHROMA_HOP, CQT_BINS_PER_OCTAVE, HOP_LENGTH, N_FFT, SAMPLE_RATE, _mono, frame_rms,
                         hpss_percussive_ratio, onset_envelopes, zero_crossing_rate, spectral_contrast, spectral_flatness, spectral_shape, tempogram)
from index.cqt import _octave_basis, cqt_magnitude, resample, stft, stft_magnitude, tuning_from_stft

SR = SAMPLE_RATE
CQT_ARGS = dict(hop_length=CHROMA_HOP, fmin=float(librosa.note_to_hz("C1")), n_bins=CQT_BINS_PER_OCTAVE * 7,
                bins_per_octave=CQT_BINS_PER_OCTAVE)


def detuned_chords(cents: float, seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    """Harmonic tones of random triads, every pitch ``cents`` off equal temperament, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.01 * rng.standard_normal(t.size)
    for start in np.arange(0.0, seconds, 1.0):
        root = int(rng.integers(48, 60))
        seg = (t >= start) & (t < start + 1.0)
        for m in (root, root + 4, root + 7, root - 12):
            f = 440.0 * 2 ** ((m - 69 + cents / 100) / 12)
            for h, a in ((1, 1.0), (2, 0.5), (3, 0.25)):
                y[seg] += 0.1 * a * np.sin(2 * np.pi * f * h * t[seg])
    return y.astype(np.float32)


@pytest.mark.parametrize("n_fft,hop", [(1024, 2048), (1024, 256), (512, 128)])
def test_rectangular_stft_matches_librosa(n_fft, hop):
    y = detuned_chords(0.0, seconds=2.0)
    ours = stft(y, n_fft, hop)
    theirs = librosa.stft(y, n_fft=n_fft, hop_length=hop, window="ones", pad_mode="constant")
    assert ours.shape == theirs.shape and ours.dtype == np.complex64
    assert np.max(np.abs(ours - theirs)) <= 1e-5 * np.abs(theirs).max()
    with pytest.raises(ValueError, match="1-D"):
        stft(np.stack([y, y]), n_fft, hop)


@pytest.mark.parametrize("tuning", [0.0, 0.23])
def test_octave_filter_bank_is_librosas(tuning):
    freqs = librosa.interval_frequencies(n_bins=CQT_BINS_PER_OCTAVE, intervals="equal", sort=True,
                                         fmin=1046.5 * 2.0 ** (tuning / CQT_BINS_PER_OCTAVE),
                                         bins_per_octave=CQT_BINS_PER_OCTAVE)
    ours, n_fft = _octave_basis(float(SR), tuple(freqs.tolist()), CQT_BINS_PER_OCTAVE)
    r = 2.0 ** (1.0 / CQT_BINS_PER_OCTAVE)
    alpha = np.full(freqs.size, (r * r - 1.0) / (r * r + 1.0))
    wavelets, lengths = librosa.filters.wavelet(freqs=freqs, sr=SR, filter_scale=1, norm=1, pad_fft=True,
                                                window="hann", gamma=0, alpha=alpha)
    wavelets *= lengths[:, None] / float(wavelets.shape[1])
    spectra = np.fft.fft(wavelets, n=wavelets.shape[1], axis=1)[:, : wavelets.shape[1] // 2 + 1]
    theirs = librosa.util.sparsify_rows(spectra, quantile=0.01, dtype=np.complex64)
    assert n_fft == wavelets.shape[1]
    assert np.array_equal(ours.toarray() != 0, theirs.toarray() != 0)
    assert np.max(np.abs(ours.toarray() - theirs.toarray())) <= 1e-6 * np.abs(theirs.toarray()).max()


@pytest.mark.parametrize("tuning", [0.0, -0.31, 0.17])
def test_cqt_magnitude_matches_librosa(tuning):
    y = detuned_chords(20.0)
    ours = cqt_magnitude(y, SR, tuning=tuning, **CQT_ARGS)
    theirs = np.abs(librosa.cqt(y, sr=SR, tuning=tuning, **CQT_ARGS))
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert np.max(np.abs(ours - theirs)) <= 1e-5 * theirs.max()


def test_cqt_magnitude_of_a_short_signal_and_few_bins():
    y = detuned_chords(0.0, seconds=1.0)
    args = dict(CQT_ARGS, n_bins=50, hop_length=512)  # one octave and a bit: two passes, the lower one partial
    ours = cqt_magnitude(y, SR, **args)
    theirs = np.abs(librosa.cqt(y, sr=SR, **args))
    assert ours.shape == theirs.shape
    assert np.max(np.abs(ours - theirs)) <= 1e-5 * theirs.max()


def test_cqt_magnitude_validates_its_input():
    y = detuned_chords(0.0, seconds=1.0)
    with pytest.raises(ValueError, match="1-D"):
        cqt_magnitude(np.stack([y, y]), SR, **CQT_ARGS)
    with pytest.raises(ValueError, match="halved"):
        cqt_magnitude(y, SR, **dict(CQT_ARGS, hop_length=100))
    with pytest.raises(ValueError, match="Nyquist"):
        cqt_magnitude(y, 8000, **CQT_ARGS)


@pytest.mark.parametrize("cents", [-40.0, -12.0, 0.0, 23.0])
def test_tuning_from_stft_equals_librosa(cents):
    y = detuned_chords(cents, seed=int(cents) % 7)
    S = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=512))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = float(librosa.estimate_tuning(S=S, sr=SR, n_fft=N_FFT, bins_per_octave=CQT_BINS_PER_OCTAVE))
    assert tuning_from_stft(S, SR, N_FFT, bins_per_octave=CQT_BINS_PER_OCTAVE) == expected
    # and it finds the detuning: cents / (100 / 3) of a 36-per-octave bin, folded into [-0.5, 0.5)
    bins = cents / (100 / 3)
    assert abs(((bins + 0.5) % 1.0 - 0.5) - expected) <= 0.1  # a tenth of a bin: 3 cents


def test_tuning_from_stft_without_peaks_and_bad_shape():
    assert tuning_from_stft(np.zeros((1 + N_FFT // 2, 20), np.float32), SR, N_FFT) == 0.0
    with pytest.raises(ValueError, match="shape"):
        tuning_from_stft(np.zeros((100, 20)), SR, N_FFT)


def test_mono_is_the_channel_average():
    rng = np.random.default_rng(1)
    for channels in (1, 2, 6):
        y = rng.standard_normal((1000, channels)).astype(np.float32)
        assert np.allclose(_mono(y), y.mean(axis=1), atol=1e-6)
        assert _mono(y).dtype == np.float32


@pytest.mark.parametrize("n_fft,hop,seconds", [(N_FFT, HOP_LENGTH, 3.0), (512, 128, 1.0), (N_FFT, HOP_LENGTH, 0.06)])
def test_hann_stft_magnitude_matches_librosa(n_fft, hop, seconds):
    y = detuned_chords(5.0, seconds=seconds)
    theirs = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    for block in (64, 5):
        ours = stft_magnitude(y, n_fft, hop, frames_per_block=block)
        assert ours.shape == theirs.shape and ours.dtype == np.float32
        assert ours.flags.f_contiguous  # one frame per contiguous column, as librosa's
        assert np.max(np.abs(ours - theirs)) < 1e-5 * theirs.max()
    with pytest.raises(ValueError, match="too short"):
        stft_magnitude(y[:10], 2048, 512)


def test_resample_is_librosas_soxr_hq():
    rng = np.random.default_rng(7)
    for n in (1000, 1001, 1003, 22051):
        y = rng.standard_normal(n).astype(np.float32)
        for orig, target, scale in ((2, 1, True), (4, 1, True), (44100, 22050, False), (48000, 22050, False),
                                    (8000, 22050, True)):
            theirs = librosa.resample(y, orig_sr=orig, target_sr=target, res_type="soxr_hq", scale=scale)
            ours = resample(y, orig, target, scale=scale)
            assert ours.shape == theirs.shape and ours.dtype == np.float32
            assert np.max(np.abs(ours - theirs)) < 1e-6
    with pytest.raises(ValueError, match="1-D"):
        resample(np.zeros((2, 100), np.float32), 2, 1)


def test_tempogram_matches_librosa():
    y = detuned_chords(0.0, seconds=12.0)
    env = librosa.onset.onset_strength(y=y, sr=SR, hop_length=HOP_LENGTH)
    for win in (384, 344):
        ours = tempogram(env, win)
        theirs = librosa.feature.tempogram(onset_envelope=env, sr=SR, hop_length=HOP_LENGTH, win_length=win)
        assert ours.shape == theirs.shape
        assert np.max(np.abs(ours - theirs)) < 1e-5
        # Every fourth window: the same columns, a quarter of the work.
        assert np.array_equal(tempogram(env, win, hop=4), ours[:, ::4])
    with pytest.raises(ValueError):
        tempogram(np.stack([env, env]), 384)
    with pytest.raises(ValueError, match="hop"):
        tempogram(env, 384, hop=0)


def test_zero_crossing_rate_is_librosas():
    y = detuned_chords(0.0, seconds=2.0) - 0.02
    y[100:400] = 0.0
    y[400:700:2], y[401:700:2] = 1e-11, -1e-11  # at most 1e-10 from zero counts as zero, either sign
    y[700:1000:2] = -0.0
    ours = zero_crossing_rate(y)
    assert np.array_equal(ours, librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP_LENGTH)[0])


def test_onset_envelopes_are_librosas_onset_strengths():
    y = detuned_chords(5.0, seconds=8.0)
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=96)
    log_mel = librosa.power_to_db(mel, ref=1.0, top_db=80.0)
    mean, median, bass = onset_envelopes(log_mel, bass_bands=24)
    kw = dict(S=log_mel, sr=SR, hop_length=HOP_LENGTH)
    assert np.array_equal(mean, librosa.onset.onset_strength(**kw))
    assert np.array_equal(median, librosa.onset.onset_strength(**kw, aggregate=np.median))
    assert np.array_equal(bass, librosa.onset.onset_strength(S=log_mel[:24], sr=SR, hop_length=HOP_LENGTH,
                                                             aggregate=np.median))
    short = onset_envelopes(log_mel[:, :2], bass_bands=24)  # fewer frames than the centring lead
    assert all(np.array_equal(e, np.zeros(2, np.float32)) for e in short)
    with pytest.raises(ValueError, match="bass_bands"):
        onset_envelopes(log_mel, bass_bands=0)


def test_frame_rms_is_librosas():
    y = detuned_chords(0.0, seconds=3.0)
    S = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH))
    ours = frame_rms((S * S).T, N_FFT)
    assert ours.dtype == np.float32
    assert np.allclose(ours, librosa.feature.rms(S=S, frame_length=N_FFT)[0], rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="shape"):
        frame_rms(S * S, N_FFT)  # bins as rows


def test_spectral_shape_and_flatness_match_librosa():
    y = detuned_chords(10.0)
    S = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH))
    S[:, :3] = 0.0  # silent frames too
    centroid, bandwidth, rolloff = spectral_shape(S, SR)
    loud = S.sum(axis=0) > 0
    assert np.allclose(centroid[loud], librosa.feature.spectral_centroid(S=S, sr=SR)[0][loud], rtol=1e-5)
    assert np.allclose(bandwidth[loud], librosa.feature.spectral_bandwidth(S=S, sr=SR)[0][loud], rtol=1e-4)
    assert np.allclose(rolloff[loud], librosa.feature.spectral_rolloff(S=S, sr=SR)[0][loud])
    assert np.allclose(spectral_flatness(S), librosa.feature.spectral_flatness(S=S)[0], rtol=1e-4, atol=1e-7)


def test_first_bin_reaching_is_the_running_sums_argmax():
    from index.audio import _first_bin_reaching

    rng = np.random.default_rng(6)
    for n_bins, n_frames in ((1025, 300), (70, 40), (20, 15), (1, 5)):
        # eighths: every sum is exact in float32, so the order of summation cannot matter
        S = (rng.integers(0, 16, size=(n_bins, n_frames)) * rng.integers(0, 2, size=(n_bins, n_frames)) / 8.0)
        S = S.astype(np.float32)
        S[:, :2] = 0.0  # silent frames: never reached, 0 as argmax gives
        total = S.sum(axis=0, dtype=np.float64)
        for share in (0.0, 0.3, 0.85, 1.0):
            threshold = share * total + 1e-12
            expected = np.argmax(np.cumsum(S, axis=0) >= threshold[None, :], axis=0)
            assert np.array_equal(_first_bin_reaching(S, threshold), expected)
            assert np.array_equal(_first_bin_reaching(np.asfortranarray(S), threshold, block=7), expected)


def test_spectral_contrast_matches_librosa():
    y = detuned_chords(-20.0, seconds=3.0)
    S = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH))
    S[:, :2] = 0.0
    for n_fft, spectrum in ((N_FFT, S), (512, np.abs(librosa.stft(y, n_fft=512, hop_length=HOP_LENGTH)))):
        for kwargs in ({}, {"fmin": 100.0, "n_bands": 4, "quantile": 0.1}):
            theirs = librosa.feature.spectral_contrast(S=spectrum, sr=SR, n_fft=n_fft, **kwargs)
            ours = spectral_contrast(spectrum, SR, **kwargs)
            assert ours.shape == theirs.shape
            assert np.allclose(ours, theirs, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="Nyquist"):
        spectral_contrast(S, SR, fmin=2000.0)
    with pytest.raises(ValueError, match="bins, frames"):
        spectral_contrast(S[0], SR)


def test_contrast_of_an_emptied_band_is_librosas():
    # Noise with nothing above 5 kHz, as a lossy encoder leaves a file: the top band's valley is
    # rounding noise, so it takes a float64 transform to read it as librosa does.
    rng = np.random.default_rng(8)
    spectrum = np.fft.rfft(rng.standard_normal(4 * SR))
    spectrum[np.fft.rfftfreq(4 * SR, 1 / SR) > 5000] = 0.0
    y = np.fft.irfft(spectrum)
    y = (0.1 * y / np.abs(y).max()).astype(np.float32)
    theirs = librosa.feature.spectral_contrast(S=np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH)), sr=SR)
    assert np.max(np.abs(spectral_contrast(stft_magnitude(y, N_FFT, HOP_LENGTH), SR) - theirs)) < 0.05


def test_percussive_share_is_librosas_soft_mask_split():
    rng = np.random.default_rng(5)
    mel = rng.gamma(0.5, size=(96, 400)).astype(np.float32)
    mel[:, ::25] *= 40.0  # clicks: percussive columns
    mel[10] *= 30.0  # a held note: a harmonic row
    mel[50:60, 100:140] = 0.0  # silence, where both filters are zero
    mel[70] *= 1e-22  # a band so quiet that its squares would underflow in float32
    harm = scipy.ndimage.median_filter(mel, size=(1, 31), mode="reflect")
    perc = scipy.ndimage.median_filter(mel, size=(9, 1), mode="reflect")
    h = mel * librosa.util.softmask(harm, perc, power=2.0, split_zeros=True)
    p = mel * librosa.util.softmask(perc, harm, power=2.0, split_zeros=True)
    expected = float(p.sum() / (h.sum() + p.sum()))
    assert hpss_percussive_ratio(mel) == pytest.approx(expected, rel=1e-5)
    assert 0.1 < expected < 0.9
    assert hpss_percussive_ratio(np.zeros((96, 50), np.float32)) == 0.0


def test_tempo_from_one_tempogram_is_librosas():
    from index.audio import TEMPO_PRIOR_BPM, TEMPO_PRIOR_OCTAVES, tempo_from_tempograms

    rng = np.random.default_rng(3)
    env = np.maximum(rng.standard_normal(1500), 0.0)
    env[::21] += 3.0  # a pulse at 123 BPM in noise
    tg = tempogram(env, 344)
    theirs = librosa.feature.tempo(tg=tg, sr=SR, hop_length=HOP_LENGTH, start_bpm=TEMPO_PRIOR_BPM,
                                   std_bpm=TEMPO_PRIOR_OCTAVES, aggregate=np.mean)[0]
    assert tempo_from_tempograms([tg]) == pytest.approx(theirs)
    assert tempo_from_tempograms([tg]) == pytest.approx(60.0 * SR / HOP_LENGTH / 21, rel=0.01)
    with pytest.raises(ValueError, match="same number of lags"):
        tempo_from_tempograms([tg, tg[:100]])


def test_fourier_tempo_magnitude_is_librosas_time_average():
    from index.audio import fourier_tempo_magnitude

    env = np.maximum(np.random.default_rng(4).standard_normal(900), 0.0)
    theirs = np.abs(librosa.feature.fourier_tempogram(onset_envelope=env, sr=SR, hop_length=HOP_LENGTH,
                                                      win_length=344)).mean(axis=1)
    ours = fourier_tempo_magnitude(env, 344, hop=1)
    assert ours.shape == theirs.shape
    assert np.allclose(ours, theirs, rtol=0, atol=1e-3 * theirs.max())
    # Every fourth window averages to nearly the same spectrum.
    assert np.allclose(fourier_tempo_magnitude(env, 344, hop=4), theirs, rtol=0, atol=0.05 * theirs.max())
    with pytest.raises(ValueError, match="1-D"):
        fourier_tempo_magnitude(env[None], 344)


def test_fourier_tempogram_keeps_a_jigs_beat():
    # A jig's long-short figure (quarter, eighth) at 215 dotted-quarter beats per minute: the
    # autocorrelation alone prefers every other beat, nearer the prior; the Fourier side does not.
    from index.audio import fourier_tempo_magnitude, tempo_from_tempograms

    eighth = 4  # frames
    env = np.zeros(1500)
    env[:: 3 * eighth] = 1.0
    env[2 * eighth :: 3 * eighth] = 1.0
    env = np.convolve(env, [0.3, 1.0, 0.5, 0.2], mode="same") + 0.01
    beat_bpm = 60.0 * SR / HOP_LENGTH / (3 * eighth)
    tg = tempogram(env, 344)
    assert tempo_from_tempograms([tg]) == pytest.approx(beat_bpm / 2, rel=0.02)
    assert tempo_from_tempograms([tg], fourier=[fourier_tempo_magnitude(env, 344)]) == pytest.approx(beat_bpm, rel=0.02)
    with pytest.raises(ValueError, match="bins"):
        tempo_from_tempograms([tg], fourier=[np.ones(10)])
