"""What a rebuild can keep from the index it replaces.

``index build LIBRARY --out INDEX`` over an existing index reads it back first: a file whose
path, size and modification time are unchanged keeps its audio features, and a text that was
embedded before keeps its vector, so only new and changed files are decoded and only new text
is embedded. Tracks whose files are gone are dropped with everything else of theirs.

Codebooks are the part a trained model depends on: its music tokens are their codes. They are
kept until the catalog has grown by ``REFIT_GROWTH`` over the size they were fitted on; until
then new tracks get their nearest existing codes, the codebook sizes stay as they are and a
model trained on the earlier index keeps working (it only does not know the new tracks yet).
Past the threshold every codebook is refit, which changes the codes and calls for retraining;
the build report says which of the two happened.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .track import MODALITIES, Track

# Codebooks are refit once the catalog has this much more tracks than they were fitted on.
REFIT_GROWTH = 0.25
SOURCES_FILE = "sources.json"
RAW_AUDIO_FILE = "audio_features.npy"


@dataclass
class PreviousIndex:
    """The parts of an existing index that a rebuild may reuse."""

    root: Path
    tracks: list[Track]
    stamps: dict[str, list[int]]  # audio path relative to the library -> [size, mtime_ns]
    raw_audio: np.ndarray  # (N, D) unstandardised audio features, zero rows without audio
    embeddings: dict[str, np.ndarray]
    codes: np.ndarray  # (N, 5)
    centroids: dict[str, np.ndarray]
    audio_mean: np.ndarray
    audio_std: np.ndarray
    splits: dict[str, str]  # playlist name -> "train" | "val" | "test"
    fitted_tracks: int  # catalog size the codebooks were fitted on
    library_root: str
    row_of: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.row_of = {t.id: i for i, t in enumerate(self.tracks)}

    @property
    def refit_limit(self) -> int:
        return refit_limit(self.fitted_tracks)


def refit_limit(fitted_tracks: int) -> int:
    """The catalog size past which codebooks fitted on ``fitted_tracks`` tracks are refit."""
    return int(fitted_tracks * (1.0 + REFIT_GROWTH))


def file_stamp(path: Path) -> list[int]:
    """[size, mtime_ns]: what tells an unchanged file from a changed one without reading it."""
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def load_previous(out: Path, library: Path) -> tuple[PreviousIndex | None, str]:
    """The index at ``out`` if it can be reused for ``library``, else None; and a sentence why.

    An index of another library, of another format or feature version, or one written before
    incremental builds (no ``sources.json``) is not reused: the build starts afresh.
    """
    from .audio import AUDIO_FEATURE_DIM
    from .store import IndexLoadError, MusicIndex

    if not (out / "manifest.json").is_file():
        return None, "new index"
    try:
        idx = MusicIndex.load(out)
        sources = json.loads((out / SOURCES_FILE).read_text(encoding="utf-8"))
        raw = np.load(out / RAW_AUDIO_FILE)
    except (IndexLoadError, OSError, ValueError) as e:
        return None, f"the existing index could not be reused ({str(e).splitlines()[0][:160]}): full build"
    if Path(idx.manifest.get("library_root", "")) != library:
        return None, f"the existing index is of another library ({idx.manifest.get('library_root')}): full build"
    if raw.shape != (len(idx.tracks), AUDIO_FEATURE_DIM):
        return None, "the audio features changed since the existing index was built: full build"
    heldout = {name: h["split"] for name, h in idx.heldout_playlists.items()}
    splits = {name: "train" for name in idx.playlists} | heldout
    prev = PreviousIndex(
        root=out, tracks=idx.tracks, stamps={k: list(v) for k, v in sources["files"].items()}, raw_audio=raw,
        embeddings={m: np.asarray(idx.embeddings[m], np.float32) for m in MODALITIES}, codes=idx.codes,
        centroids=idx.centroids, audio_mean=idx.audio_mean, audio_std=idx.audio_std, splits=splits,
        fitted_tracks=int(sources["codebook_fit"]["tracks"]), library_root=str(library))
    return prev, f"updating the existing index of {len(idx.tracks)} tracks"


def text_vectors(prev: PreviousIndex) -> dict[str, dict[str, np.ndarray]]:
    """Modality -> text -> the vector it was embedded to, for the text modalities of ``prev``."""
    from .embeddings import lyrics_text, metadata_text, tags_text

    texts = {"tags": tags_text, "metadata": metadata_text, "lyrics": lyrics_text}
    out: dict[str, dict[str, np.ndarray]] = {}
    for m, text_of in texts.items():
        out[m] = {text_of(t): prev.embeddings[m][i] for i, t in enumerate(prev.tracks)}
    return out


def procrustes_rotation(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The orthogonal matrix R that best maps rows of ``current`` onto ``previous`` (min ||current R - previous||).

    A truncated SVD is defined up to the signs and rotations of its components; a rebuild's
    playlist embedding is rotated back onto the previous one over the tracks both hold, so the
    kept codebook still describes it.
    """
    if current.shape != previous.shape:
        raise ValueError(f"shapes differ: {current.shape} vs {previous.shape}")
    u, _, vt = np.linalg.svd(current.T.astype(np.float64) @ previous.astype(np.float64))
    return (u @ vt).astype(np.float32)
