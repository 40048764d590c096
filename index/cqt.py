"""Short-time Fourier and constant-Q transforms, computed as librosa computes them, faster.

``stft_magnitude`` is ``np.abs(librosa.stft(y))`` with its Hann window, transformed in float64
a block of frames at a time.

``stft`` is ``librosa.stft`` with a rectangular window as one real FFT over a strided view of
the signal, without librosa's per-call checks and block loop, which cost more than the
transform itself on the CQT's small per-octave spectrograms.

``librosa.cqt`` builds, Fourier-transforms and sparsifies its wavelet filters on every call,
once per octave, although with equal temperament every octave's filters are the same ones in
frequencies relative to that octave's sample rate. On a 30 s excerpt that construction is most
of the CQT's cost. ``cqt_magnitude`` runs the same algorithm (early downsampling, one STFT and
one sparse product per octave, halving the rate between octaves, scaled by the square root of
each filter's length) with the one-octave filter bank cached per tuning, and returns what
``np.abs(librosa.cqt(...))`` returns with ``window="hann"``, ``filter_scale=1``, ``norm=1``,
``sparsity=0.01``, ``res_type="soxr_hq"`` and ``pad_mode="constant"`` (to float32 rounding).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.sparse

SPARSITY: float = 0.01  # share of each filter's energy dropped to keep the bank sparse (librosa's default)
RESAMPLER: str = "soxr_hq"


def _relative_bandwidth(bins_per_octave: int) -> float:
    """Bandwidth of a filter relative to its frequency, for equally spaced bins."""
    r = 2.0 ** (1.0 / bins_per_octave)
    return (r * r - 1.0) / (r * r + 1.0)


def stft(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """Complex STFT with a rectangular window: ``librosa.stft(y, n_fft=..., hop_length=...,
    window="ones", center=True, pad_mode="constant")``, computed in float32 (librosa promotes the
    frames to float64), which moves the constant-Q magnitudes by under 1e-6 of their peak.

    Returns
    -------
    np.ndarray
        (1 + n_fft // 2, 1 + len(y) // hop_length) complex64.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or n_fft < 1 or hop_length < 1:
        raise ValueError(f"need a 1-D signal, n_fft >= 1 and hop_length >= 1; got shape {y.shape}, "
                         f"n_fft {n_fft}, hop_length {hop_length}")
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(y, n_fft // 2), n_fft)[::hop_length]
    return scipy.fft.rfft(frames, axis=-1).T


def resample(y: np.ndarray, orig_sr: float, target_sr: float, *, scale: bool = False) -> np.ndarray:
    """``librosa.resample(y, orig_sr=..., target_sr=..., res_type="soxr_hq", scale=...)`` for a 1-D
    float32 signal, without librosa's checks of every sample on each call (the constant-Q
    transform halves the signal six times a track).

    Returns
    -------
    np.ndarray
        ``ceil(len(y) * target_sr / orig_sr)`` float32 samples (soxr's output, zero-padded or cut
        to that length, as librosa does).
    """
    import soxr

    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} and {target_sr}")
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    ratio = float(target_sr) / orig_sr
    out = soxr.resample(y, orig_sr, target_sr, quality=RESAMPLER)
    size = int(np.ceil(y.size * ratio))
    if out.size != size:
        out = np.pad(out, (0, size - out.size)) if out.size < size else out[:size]
    if scale:
        out /= np.float32(np.sqrt(ratio))
    return out


@lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    import scipy.signal

    return scipy.signal.get_window("hann", n_fft, fftbins=True)


def stft_magnitude(y: np.ndarray, n_fft: int, hop_length: int, *, frames_per_block: int = 128) -> np.ndarray:
    """STFT magnitude with a periodic Hann window: ``np.abs(librosa.stft(y, n_fft=..., hop_length=...))``
    (centred frames, zero padding), transformed in float64 as librosa does and returned in float32.

    The frames are transformed and their magnitudes taken a block at a time, so each block's
    spectra are still in cache when the absolute value reads them (librosa stores the complex
    spectrogram and takes the magnitude in a second pass). float64 matters: in a band a lossy
    encoder emptied, a float32 transform's rounding noise is larger than what is left there, and
    features that read the quietest bins (the spectral contrast's valleys) move by several dB.

    Returns
    -------
    np.ndarray
        (1 + n_fft // 2, 1 + len(y) // hop_length) float32, one frame per column (Fortran order,
        as librosa returns it, so each frame is contiguous).
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or n_fft < 2 or hop_length < 1 or frames_per_block < 1:
        raise ValueError(f"need a 1-D signal, n_fft >= 2, hop_length >= 1 and frames_per_block >= 1; got shape "
                         f"{y.shape}, n_fft {n_fft}, hop_length {hop_length}, frames_per_block {frames_per_block}")
    if y.size < n_fft // 2 + 1:
        raise ValueError(f"a signal of {y.size} samples is too short for n_fft={n_fft}")
    window = _hann(n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(y, n_fft // 2), n_fft)[::hop_length]
    out = np.empty((frames.shape[0], n_fft // 2 + 1), dtype=np.float32)
    for i in range(0, frames.shape[0], frames_per_block):
        np.abs(scipy.fft.rfft(frames[i:i + frames_per_block] * window, axis=-1), out=out[i:i + frames_per_block])
    return out.T


def _wavelets(freqs: np.ndarray, sr: float, bins_per_octave: int) -> tuple[np.ndarray, np.ndarray]:
    """``librosa.filters.wavelet(freqs=..., sr=..., window="hann", filter_scale=1, norm=1,
    gamma=0, pad_fft=True)``: Hann-windowed complex sinusoids, each scaled to unit L1 norm and
    centred in a power-of-two frame; the periodic Hann window is written out rather than asked
    of scipy once per filter."""
    import librosa

    alpha = np.full(freqs.size, _relative_bandwidth(bins_per_octave))
    lengths, _ = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr, window="hann", filter_scale=1, gamma=0,
                                                 alpha=alpha)
    n_fft = int(2.0 ** np.ceil(np.log2(lengths.max())))
    bank = np.zeros((freqs.size, n_fft), dtype=np.complex128)
    for row, (length, freq) in enumerate(zip(lengths, freqs)):
        t = np.arange(-length // 2, length // 2, dtype=float)
        n = t.size
        wave = np.exp(1j * (t * (2 * np.pi * freq / sr))) * (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n))
        left = (n_fft - n) // 2
        bank[row, left:left + n] = wave / np.abs(wave).sum()
    return bank.astype(np.complex64), lengths


def _sparsify_rows(x: np.ndarray, quantile: float) -> scipy.sparse.csr_matrix:
    """``librosa.util.sparsify_rows``: per row, drop the smallest entries that together hold
    less than ``quantile`` of the row's magnitude; all rows at once."""
    mags = np.abs(x)
    mag_sort = np.sort(mags, axis=1)
    cumulative = np.cumsum(mag_sort / mags.sum(axis=1, keepdims=True), axis=1)
    threshold = mag_sort[np.arange(x.shape[0]), np.argmin(cumulative < quantile, axis=1)]
    return scipy.sparse.csr_matrix(np.where(mags >= threshold[:, None], x, 0))


@lru_cache(maxsize=256)
def _octave_basis(sr: float, top_freqs: tuple[float, ...], bins_per_octave: int):
    """The top octave's filters in the frequency domain: (sparse (n_bins, n_fft/2+1), n_fft).

    Keyed by the exact frequencies, which for a fixed ``fmin`` and ``bins_per_octave`` vary only
    with the tuning; librosa's tuning estimate moves in steps of 0.01 bin, so a catalog needs
    at most a hundred of these.
    """
    basis, lengths = _wavelets(np.asarray(top_freqs), sr, bins_per_octave)
    n_fft = basis.shape[1]
    basis *= lengths[:, np.newaxis] / float(n_fft)
    fft_basis = np.fft.fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
    return _sparsify_rows(fft_basis, SPARSITY).astype(np.complex64), n_fft


def _early_downsamples(nyquist: float, filter_cutoff: float, hop_length: int, n_octaves: int) -> int:
    """How many times the signal can be halved before the first octave (librosa's rule)."""
    by_band = max(0, int(np.ceil(np.log2(nyquist / filter_cutoff)) - 1) - 1)
    twos = 0
    while hop_length > 0 and hop_length % (2 ** (twos + 1)) == 0:
        twos += 1
    by_hop = max(0, twos - n_octaves + 1)
    return min(by_band, by_hop)


def cqt_magnitude(y: np.ndarray, sr: int, *, hop_length: int, fmin: float, n_bins: int,
                  bins_per_octave: int, tuning: float = 0.0) -> np.ndarray:
    """Magnitude of the constant-Q transform of a mono signal.

    Parameters
    ----------
    y : np.ndarray
        1-D float samples.
    sr : int
        Sample rate of ``y``.
    hop_length : int
        Frame hop in samples; must be divisible by ``2 ** (octaves - 1)``.
    fmin : float
        Frequency of the lowest bin (Hz), before tuning.
    n_bins, bins_per_octave : int
        Number of bins, and how many of them make an octave.
    tuning : float
        Deviation from A440 in fractions of a bin.

    Returns
    -------
    np.ndarray
        (n_bins, frames) float32 magnitudes, frames as ``librosa.cqt`` counts them.
    """
    import librosa

    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    if sr <= 0 or hop_length <= 0 or fmin <= 0 or n_bins <= 0 or bins_per_octave <= 0:
        raise ValueError("sr, hop_length, fmin, n_bins and bins_per_octave must be positive")
    n_octaves = math.ceil(n_bins / bins_per_octave)
    if hop_length % (2 ** (n_octaves - 1)):
        raise ValueError(f"hop_length {hop_length} cannot be halved {n_octaves - 1} times")
    n_filters = min(bins_per_octave, n_bins)
    freqs = librosa.interval_frequencies(n_bins=n_bins, fmin=fmin * 2.0 ** (tuning / bins_per_octave),
                                         intervals="equal", bins_per_octave=bins_per_octave, sort=True)
    alpha = _relative_bandwidth(bins_per_octave)
    _, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr, window="hann", filter_scale=1, gamma=0,
                                                alpha=alpha)
    if cutoff > sr / 2:
        raise ValueError(f"the top bin's filter ({freqs[-1]:.0f} Hz) reaches past the Nyquist frequency")

    rate, hop = float(sr), hop_length
    halvings = _early_downsamples(sr / 2, cutoff, hop_length, n_octaves)
    if halvings:
        factor = 2 ** halvings
        y = resample(y, factor, 1, scale=True)
        rate, hop = rate / factor, hop // factor
    top_rate = rate  # librosa scales by the filters' lengths at this rate, after the early halvings
    lengths, _ = librosa.filters.wavelet_lengths(freqs=freqs, sr=top_rate, window="hann", filter_scale=1,
                                                 gamma=0, alpha=alpha)

    # The bank is built at the top octave's rate; each lower octave runs at half the rate of the
    # one above, so the same bank applies (its frequencies relative to the rate are unchanged).
    basis, n_fft = _octave_basis(rate, tuple(freqs[-n_filters:].tolist()), bins_per_octave)
    octaves = []
    for i in range(n_octaves):
        D = stft(y, n_fft, hop)
        octaves.append(np.abs(basis @ D) * np.float32(math.sqrt(top_rate / rate)))
        if i + 1 < n_octaves:
            hop //= 2
            rate /= 2.0
            y = resample(y, 2, 1, scale=True)

    frames = min(o.shape[1] for o in octaves)
    out = np.empty((n_bins, frames), dtype=np.float32)
    end = n_bins
    for o in octaves:  # top octave first, filling the rows from the top down
        take = min(end, o.shape[0])
        out[end - take:end] = o[-take:, :frames]
        end -= take
    out /= np.sqrt(lengths, dtype=np.float64)[:, None].astype(np.float32)
    return out


def tuning_from_stft(S: np.ndarray, sr: int, n_fft: int, *, bins_per_octave: int = 12, fmin: float = 150.0,
                     fmax: float = 4000.0, threshold: float = 0.1, resolution: float = 0.01) -> float:
    """Tuning deviation from A440, in fractions of a bin, from an STFT magnitude.

    ``librosa.estimate_tuning(S=S, ...)`` with its defaults: spectral peaks between ``fmin`` and
    ``fmax`` louder than ``threshold`` times their frame's maximum, refined by parabolic
    interpolation; the louder half of them vote in a histogram of deviations. librosa
    interpolates every bin of the spectrogram and then keeps the peaks; this interpolates the
    peaks only.

    Parameters
    ----------
    S : np.ndarray
        (1 + n_fft // 2, T) STFT magnitude.
    sr, n_fft : int
        Sample rate and FFT size of ``S``.

    Returns
    -------
    float
        In [-0.5, 0.5); 0.0 when no peak qualifies.
    """
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] != 1 + n_fft // 2:
        raise ValueError(f"S must have shape (1 + n_fft // 2, T) = ({1 + n_fft // 2}, T), got {S.shape}")
    freqs = np.arange(S.shape[0]) * (sr / n_fft)
    rows = np.flatnonzero((freqs >= max(fmin, 0.0)) & (freqs < min(fmax, sr / 2)))
    rows = rows[(rows > 0) & (rows < S.shape[0] - 1)]
    if rows.size == 0 or S.shape[1] == 0:
        return 0.0
    lo, hi = rows[0], rows[-1] + 1
    ref = S.max(axis=0) * S.dtype.type(threshold)
    gated = S[lo - 1:hi + 1] * (S[lo - 1:hi + 1] > ref)  # one row beyond the band each side: peak tests need neighbours
    mid, below, above = gated[1:-1], gated[:-2], gated[2:]
    r, t = np.nonzero((mid > below) & (mid >= above))
    k = r + lo
    x0, xm, xp = S[k, t], S[k - 1, t], S[k + 1, t]
    a = xp + xm - 2 * x0
    b = (xp - xm) / 2
    shift = np.zeros_like(x0)
    ok = np.abs(b) < np.abs(a)
    shift[ok] = -b[ok] / a[ok]
    pitch = (k + shift) * float(sr) / n_fft
    mag = x0 + 0.5 * b * shift  # np.gradient's centred difference is b
    keep = pitch > 0
    if not keep.any():
        return 0.0
    chosen = pitch[keep & (mag >= np.median(mag[keep]))]
    residual = np.mod(bins_per_octave * np.log2(chosen / (440.0 / 16)), 1.0)
    residual[residual >= 0.5] -= 1.0
    bins = np.linspace(-0.5, 0.5, int(np.ceil(1.0 / resolution)) + 1)
    counts, edges = np.histogram(residual, bins)
    return float(edges[np.argmax(counts)])
