"""Small audio files in every format the library reads, written from a synthesized signal.

libsndfile writes wav, aiff, flac and ogg/vorbis; FFmpeg, through PyAV, writes mp3, opus,
m4a (AAC and ALAC) and wma. Tests use these to check that each one decodes by its content.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

# name -> (container for PyAV, codec) or None where soundfile writes it (by the suffix).
FORMATS: dict[str, tuple[str, str] | None] = {
    "tone.wav": None,
    "tone.aiff": None,
    "tone.flac": None,
    "tone.ogg": None,
    "tone.mp3": ("mp3", "libmp3lame"),
    "tone.opus": ("ogg", "libopus"),
    "tone-aac.m4a": ("ipod", "aac"),
    "tone-alac.m4a": ("ipod", "alac"),
    "tone.wma": ("asf", "wmav2"),
    "aac-named.mp3": ("ipod", "aac"),  # an AAC stream whose name says mp3
}


def music_like(seconds: float = 6.0, sr: int = 22050, seed: int = 0) -> np.ndarray:
    """A chord over a steady click at 120 BPM: tonal and rhythmic enough for every feature."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(0.15 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    beat = (np.arange(t.size) % (sr // 2)) < 300
    return (y + beat * rng.normal(0.0, 0.3, t.size)).astype(np.float32)


def encode_with_pyav(y: np.ndarray, sr: int, path: Path, container: str, codec: str) -> Path:
    """Encode mono float samples into ``path`` with FFmpeg's ``codec`` in ``container``."""
    import av

    rate = 48000 if codec == "libopus" else sr
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        stream.bit_rate = 64000  # wmav2 refuses to open without one
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        frame_size = stream.codec_context.frame_size or 1024
        frame = av.AudioFrame.from_ndarray(y.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = sr
        fifo = av.AudioFifo()
        for converted in resampler.resample(frame) + resampler.resample(None):
            fifo.write(converted)
        while fifo.samples:
            chunk = fifo.read(min(frame_size, fifo.samples), partial=True)
            for packet in stream.encode(chunk):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def write_format(name: str, folder: Path, y: np.ndarray | None = None, sr: int = 22050) -> Path:
    """Write the file ``name`` of ``FORMATS`` into ``folder`` and return its path."""
    y = music_like(sr=sr) if y is None else y
    path = Path(folder) / name
    how = FORMATS[name]
    if how is None:
        sf.write(path, y, sr)
    else:
        encode_with_pyav(y, sr, path, *how)
    return path


def write_all_formats(folder: Path, sr: int = 22050) -> dict[str, Path]:
    """One file per entry of ``FORMATS``, each from its own noise seed (so no two are the same audio)."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_format(name, folder, music_like(sr=sr, seed=i), sr) for i, name in enumerate(FORMATS)}
