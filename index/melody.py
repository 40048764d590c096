"""The melody of a song as notes (onset, offset, MIDI pitch), and those notes as a MIDI file.

Pitch tracking is YIN at 11025 Hz, 46 ms frames every 12 ms, vectorised over every frame (``yin``):
pYIN's hidden Markov model over fine pitch states costs about a second per 10 s here, too much
for a whole song, while YIN over four minutes takes a fraction of a second. Frames count as
voiced when periodic (YIN's aperiodicity) and not quiet. Notes are then cut from them:

1. a note runs while the tracked pitch stays on one semitone and the frames stay voiced;
2. it is also cut at a note onset (spectral flux), so a repeated note is two notes;
3. notes shorter than ``MIN_NOTE_SECONDS`` are dropped, and gaps shorter than
   ``MAX_GAP_SECONDS`` within one pitch are closed (a vibrato dip, one unvoiced frame).

In dense polyphony pYIN follows the strongest periodic voice, so the notes are those of the
predominant line; they are exact only for a melody on its own.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PITCH_SR: int = 11025
PITCH_FRAME: int = 512  # 46 ms: two periods of E2, and short enough for sixteenths at 200 BPM
PITCH_HOP: int = 128  # 12 ms
LOWEST_NOTE: str = "E2"  # the lowest common sung note
HIGHEST_NOTE: str = "C7"
OPENING_NOTES: int = 8  # notes named when a summary or an answer says how the tune starts
MIN_NOTE_SECONDS: float = 0.07
MAX_GAP_SECONDS: float = 0.05
YIN_THRESHOLD: float = 0.15  # first dip of the normalised difference under this is the period
MAX_APERIODICITY: float = 0.25  # frames less periodic than this are not part of a note
MIN_MELODY_SECONDS: float = 0.5  # less sounding melody than this and no range is given
YIN_BLOCK: int = 4096  # frames per block (48 s)
# A same-pitch run is cut only at onsets this many robust deviations above the onset envelope's
# median (chosen on random melodies rendered with six General MIDI instruments, not on the
# benchmark's works).
ONSET_STRENGTH: float = 15.0
SMOOTH_FRAMES: int = 5  # 58 ms of median smoothing of the semitone track
ONSET_BEFORE: float = 0.12  # a note's start moves back to an onset at most this much earlier
ONSET_AFTER: float = 0.03  # ... or this much later
QUIET_BELOW: float = 0.05  # frames under this share of the loudest frame's level are not notes


@dataclass(frozen=True)
class Note:
    """One melody note: times in seconds, pitch as a MIDI number (60 = C4)."""

    start: float
    end: float
    pitch: int

    @property
    def name(self) -> str:
        import librosa

        return librosa.midi_to_note(self.pitch, unicode=False)

    def to_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "pitch": self.pitch, "name": self.name}


def yin(y: np.ndarray, sr: int, *, fmin: float, fmax: float, frame_length: int = PITCH_FRAME,
        hop_length: int = PITCH_HOP, threshold: float = YIN_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """YIN (de Cheveigné & Kawahara 2002) over every frame at once: f0 and aperiodicity.

    The difference function of each centred frame comes from one FFT cross-correlation and a
    running energy sum, is normalised by its cumulative mean, and the first dip under
    ``threshold`` (else the deepest) gives the period, refined by parabolic interpolation.

    Returns
    -------
    f0, aperiodicity : np.ndarray
        Per frame: frequency in Hz, and the normalised difference at the chosen period
        (0 = perfectly periodic; above about 0.3 hardly pitched).
    """
    import librosa

    if not 0 < fmin < fmax or frame_length < 8:
        raise ValueError(f"need 0 < fmin < fmax and frame_length >= 8, got {fmin}, {fmax}, {frame_length}")
    window = frame_length // 2
    max_lag = min(int(np.ceil(sr / fmin)), frame_length - window - 1)
    min_lag = max(2, int(np.floor(sr / fmax)))
    if max_lag <= min_lag:
        raise ValueError(f"frame_length {frame_length} is too short for fmin {fmin} Hz at {sr} Hz")
    padded = np.pad(np.asarray(y, dtype=np.float32), frame_length // 2)
    all_frames = librosa.util.frame(padded, frame_length=frame_length, hop_length=hop_length).T  # (n, L) view
    f0, aperiodicity = [], []
    for start in range(0, all_frames.shape[0], YIN_BLOCK):  # blocks keep a long song's memory flat
        block_f0, block_ap = _yin_block(np.ascontiguousarray(all_frames[start:start + YIN_BLOCK]), sr,
                                        window, min_lag, max_lag, threshold)
        f0.append(block_f0)
        aperiodicity.append(block_ap)
    return np.concatenate(f0), np.concatenate(aperiodicity)


def _yin_block(frames: np.ndarray, sr: int, window: int, min_lag: int, max_lag: int,
               threshold: float) -> tuple[np.ndarray, np.ndarray]:
    import scipy.fft

    frame_length = frames.shape[1]
    n_fft = scipy.fft.next_fast_len(frame_length + window, real=True)
    spectrum = scipy.fft.rfft(frames, n=n_fft, axis=1)
    head = scipy.fft.rfft(frames[:, :window], n=n_fft, axis=1)
    corr = scipy.fft.irfft(np.conj(head) * spectrum, n=n_fft, axis=1)[:, : max_lag + 1]
    energy = np.concatenate([np.zeros((frames.shape[0], 1), np.float32), np.cumsum(frames * frames, axis=1)], axis=1)
    lags = np.arange(max_lag + 1)
    shifted = energy[:, lags + window] - energy[:, lags]  # energy of the window moved by each lag
    diff = np.maximum(shifted[:, :1] + shifted - 2.0 * corr, 0.0)
    cumulative = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * lags[1:] / np.maximum(cumulative, 1e-12)

    search = cmnd[:, min_lag:max_lag]
    dips = (search[:, 1:-1] < search[:, :-2]) & (search[:, 1:-1] <= search[:, 2:]) & (search[:, 1:-1] < threshold)
    first = np.argmax(dips, axis=1) + 1
    lag = np.where(dips.any(axis=1), first, np.argmin(search, axis=1))
    lag = np.clip(lag, 1, search.shape[1] - 2)
    rows = np.arange(search.shape[0])
    left, mid, right = search[rows, lag - 1], search[rows, lag], search[rows, lag + 1]
    curve = left + right - 2 * mid
    shift = np.where(np.abs(curve) > 1e-12, 0.5 * (left - right) / np.where(np.abs(curve) > 1e-12, curve, 1.0), 0.0)
    period = min_lag + lag + np.clip(shift, -1.0, 1.0)
    return (sr / period).astype(np.float64), mid.astype(np.float64)


def track_pitch(y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame-wise predominant pitch at ``PITCH_SR``.

    Returns
    -------
    times, midi, voiced : np.ndarray
        Frame centre times (s); the pitch as a fractional MIDI number (NaN where unvoiced);
        whether each frame is periodic and loud enough to be part of a note.
    """
    import librosa

    if y.ndim != 1 or sr <= 0:
        raise ValueError(f"need mono samples and a positive rate, got shape {y.shape}, sr={sr}")
    seg = librosa.resample(np.asarray(y, dtype=np.float32), orig_sr=sr, target_sr=PITCH_SR, res_type="soxr_hq")
    if seg.size < PITCH_FRAME:
        empty = np.zeros(0)
        return empty, empty, np.zeros(0, dtype=bool)
    f0, aperiodicity = yin(seg, PITCH_SR, fmin=librosa.note_to_hz(LOWEST_NOTE), fmax=librosa.note_to_hz(HIGHEST_NOTE))
    rms = librosa.feature.rms(y=seg, frame_length=PITCH_FRAME, hop_length=PITCH_HOP)[0][: f0.size]
    f0 = f0[: rms.size]
    loud = rms > QUIET_BELOW * (rms.max() + 1e-12)
    ok = (aperiodicity[: rms.size] < MAX_APERIODICITY) & loud & np.isfinite(f0) & (f0 > 0)
    midi = np.where(ok, librosa.hz_to_midi(np.where(ok, f0, 1.0)), np.nan)
    # YIN reads the half frame before each frame's centre and compares it with what follows: a
    # frame turns periodic once that half is inside the note, so it is dated at the half's start.
    times = librosa.frames_to_time(np.arange(f0.size), sr=PITCH_SR, hop_length=PITCH_HOP) - (PITCH_FRAME // 2) / PITCH_SR
    return times, midi, ok


def segment_notes(times: np.ndarray, midi: np.ndarray, voiced: np.ndarray, *, tuning: float = 0.0,
                  onsets: np.ndarray | None = None, min_seconds: float = MIN_NOTE_SECONDS,
                  max_gap: float = MAX_GAP_SECONDS) -> list[Note]:
    """Cut a frame-wise pitch track into notes (see the module docstring).

    Parameters
    ----------
    times, midi, voiced : np.ndarray
        As returned by ``track_pitch``; equal lengths, ``times`` increasing.
    tuning : float
        Semitones to remove before rounding to the nearest note.
    onsets : np.ndarray, optional
        Onset times (s); a note that spans one is split there.
    """
    times, midi, voiced = np.asarray(times, float), np.asarray(midi, float), np.asarray(voiced, bool)
    if not (times.shape == midi.shape == voiced.shape) or times.ndim != 1:
        raise ValueError("times, midi and voiced must be 1-D and of equal length")
    if times.size == 0:
        return []
    step = float(np.median(np.diff(times))) if times.size > 1 else 0.0
    pitch = np.where(voiced, np.round(np.nan_to_num(midi - tuning, nan=-1.0)), -1).astype(int)
    pitch = _steady(pitch, SMOOTH_FRAMES)
    cut = np.zeros(times.size, dtype=bool)
    if onsets is not None and len(onsets):
        at = np.searchsorted(times, np.asarray(onsets, float) - step / 2)
        cut[at[at < times.size]] = True

    notes: list[list[float]] = []  # [start, end, pitch]
    i = 0
    while i < times.size:
        if pitch[i] < 0:
            i += 1
            continue
        j = i + 1
        while j < times.size and pitch[j] == pitch[i] and not cut[j]:
            j += 1
        start, end = times[i] - step / 2, times[j - 1] + step / 2
        if notes and notes[-1][2] == pitch[i] and start - notes[-1][1] <= max_gap and not cut[i]:
            notes[-1][1] = end  # a short dropout inside one note
        else:
            notes.append([start, end, int(pitch[i])])
        i = j
    notes = _merge_octave_slips(notes)
    if onsets is not None and len(onsets):
        # A note is voiced some frames after it starts (the window must fill with it); an onset
        # found from spectral flux just before is where it began.
        marks = np.sort(np.asarray(onsets, float))
        for n, note in enumerate(notes):
            k = np.searchsorted(marks, note[0] + ONSET_AFTER)
            if k > 0 and note[0] - marks[k - 1] <= ONSET_BEFORE:
                note[0] = max(marks[k - 1], notes[n - 1][1] if n else 0.0)
    return [Note(max(0.0, float(s)), float(e), int(p)) for s, e, p in notes if e - s >= min_seconds]


def _merge_octave_slips(notes: list[list[float]], longest: float = 0.15, touching: float = 0.03) -> list[list[float]]:
    """A short note an octave (or a twelfth) away from the note it touches is that note's attack
    read at the wrong period, a known YIN error: it is given to the neighbour."""
    out: list[list[float]] = []
    for i, (s, e, p) in enumerate(notes):
        nxt = notes[i + 1] if i + 1 < len(notes) else None
        if (e - s < longest and nxt is not None and nxt[0] - e <= touching
                and abs(nxt[2] - p) in (12, 19, 24)):
            nxt[0] = s
        elif (e - s < longest and out and s - out[-1][1] <= touching and abs(out[-1][2] - p) in (12, 19, 24)):
            out[-1][1] = e
        else:
            out.append([s, e, p])
    return out


def _steady(pitch: np.ndarray, width: int) -> np.ndarray:
    """Median of each voiced frame's semitone over its voiced neighbours within ``width`` frames:
    vibrato and single-frame octave slips stop cutting a held note apart."""
    if width <= 1 or pitch.size == 0:
        return pitch
    import scipy.ndimage

    voiced = pitch >= 0
    # unvoiced frames take the nearest voiced value so that they do not pull the median down
    idx = np.where(voiced, np.arange(pitch.size), 0)
    np.maximum.accumulate(idx, out=idx)
    filled = pitch[idx].astype(float)
    smooth = scipy.ndimage.median_filter(filled, size=width, mode="nearest")
    return np.where(voiced, np.round(smooth), -1).astype(int)


def strong_onsets(onset_env: np.ndarray, sr: int, hop_length: int, spread: float = ONSET_STRENGTH) -> np.ndarray:
    """Times (s) of the onsets that stand ``spread`` robust deviations (1.4826 x the median absolute
    deviation) above the envelope's median.

    A breath or a bow change inside a held note makes weak onsets; a re-struck note a strong one.
    """
    import librosa

    env = np.asarray(onset_env, dtype=float)
    peaks = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=hop_length)
    if peaks.size == 0:
        return np.zeros(0)
    centre = float(np.median(env))
    deviation = 1.4826 * float(np.median(np.abs(env - centre)))
    strong = peaks[env[peaks] >= centre + spread * deviation]
    return librosa.frames_to_time(strong, sr=sr, hop_length=hop_length)


def notes_range(notes: list[Note]) -> str | None:
    """"F4-C6": the 5th to 95th percentile of the notes' pitches, weighted by duration."""
    import librosa

    if sum(n.end - n.start for n in notes) < MIN_MELODY_SECONDS:
        return None
    pitch = np.array([n.pitch for n in notes], dtype=float)
    weight = np.array([n.end - n.start for n in notes])
    order = np.argsort(pitch)
    cum = np.cumsum(weight[order]) / weight.sum()
    lo = pitch[order][np.searchsorted(cum, 0.05)]
    hi = pitch[order][min(np.searchsorted(cum, 0.95), pitch.size - 1)]
    return f"{librosa.midi_to_note(int(lo), unicode=False)}-{librosa.midi_to_note(int(hi), unicode=False)}"


def melody_notes(y: np.ndarray, sr: int, *, tuning: float = 0.0, onsets: np.ndarray | None = None) -> list[Note]:
    """The predominant melody of ``y`` as notes: ``track_pitch`` then ``segment_notes``."""
    times, midi, voiced = track_pitch(y, sr)
    return segment_notes(times, midi, voiced, tuning=tuning, onsets=onsets)


def notes_to_midi(notes: list[Note], path: str | Path, *, program: int = 0, velocity: int = 90,
                  tempo_bpm: float | None = None) -> Path:
    """Write notes as a one-track standard MIDI file (pretty_midi); returns the path.

    ``tempo_bpm`` only sets the file's tempo mark (so a score editor shows sensible bars);
    the notes keep their measured times either way.
    """
    import pretty_midi

    if not 0 <= program <= 127 or not 1 <= velocity <= 127:
        raise ValueError("program must be 0..127 and velocity 1..127")
    bpm = float(tempo_bpm) if tempo_bpm and tempo_bpm > 0 else 120.0
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    inst = pretty_midi.Instrument(program=program, name="melody")
    for n in notes:
        if n.end > n.start:
            inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=int(np.clip(n.pitch, 0, 127)),
                                               start=float(n.start), end=float(n.end)))
    pm.instruments.append(inst)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(out))
    return out
