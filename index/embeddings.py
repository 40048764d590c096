"""The five per-track embeddings: playlist co-occurrence, tags, metadata, lyrics and audio.

Every modality gives an (N, d) float32 matrix of L2-normalised rows; an all-zero row means the
track has no data for that modality (no lyrics, no audio) and is given the codebook's empty code.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import sparse
import scipy.sparse.linalg  # noqa: F401  (registers sparse.linalg)

from .text import TextEncoder, chunk_words
from .track import Track

PLAYLIST_DIM = 32
PLAYLIST_NEIGHBOURS = 5


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


# ---- text modalities -------------------------------------------------------------------------

def tags_text(track: Track) -> str:
    return ", ".join(track.tags)


def metadata_text(track: Track) -> str:
    parts = [
        ("title", track.title), ("artist", track.artist), ("album", track.album),
        ("year", track.year), ("genre", track.genre),
    ]
    return "; ".join(f"{name}: {value}" for name, value in parts if value)


def lyrics_text(track: Track) -> str:
    return track.lyrics or ""


def lyrics_embedding(tracks: Sequence[Track], encoder: TextEncoder) -> np.ndarray:
    """Chunk each track's lyrics, embed the chunks and mean-pool them per track."""
    chunks: list[str] = []
    owner: list[int] = []
    for i, t in enumerate(tracks):
        for c in chunk_words(t.lyrics or ""):
            chunks.append(c)
            owner.append(i)
    out = np.zeros((len(tracks), encoder.dim), np.float32)
    if chunks:
        vecs = encoder.encode(chunks)
        np.add.at(out, np.array(owner), vecs)
    return l2_normalise(out)


# ---- playlist co-occurrence ------------------------------------------------------------------

def playlist_embedding(
    n_tracks: int,
    playlists: Sequence[Sequence[int]],
    content: np.ndarray,
    dim: int = PLAYLIST_DIM,
) -> np.ndarray:
    """Embeddings from a truncated SVD of the positive PMI matrix of playlist co-occurrence.

    Rule for a track in no playlist: it takes the mean playlist embedding of its
    ``PLAYLIST_NEIGHBOURS`` nearest tracks (cosine on ``content``, the concatenated content
    embeddings) among the tracks that are in a playlist. With no playlists at all, every track
    is in that case and the content vectors, reduced to ``dim`` by SVD, are used instead.

    Parameters
    ----------
    n_tracks : int
    playlists : sequence of sequences of row indices
    content : np.ndarray
        (n_tracks, D) content embedding used for the fallback rule.
    """
    if content.shape[0] != n_tracks:
        raise ValueError("content must have one row per track")
    rows_i: list[int] = []
    cols_i: list[int] = []
    for members in playlists:
        members = sorted(set(members))
        if len(members) < 2:
            continue
        for a in members:
            for b in members:
                if a != b:
                    rows_i.append(a)
                    cols_i.append(b)
    # Sparse throughout: a real catalog can have far more tracks than fit in a dense N x N matrix.
    cooc = sparse.coo_matrix(
        (np.ones(len(rows_i)), (rows_i, cols_i)), shape=(n_tracks, n_tracks)
    ).tocsr()
    degree = np.asarray(cooc.sum(axis=1)).ravel()
    in_playlist = degree > 0
    if in_playlist.sum() < 2:
        return _svd_reduce(l2_normalise(content), dim)

    total = degree.sum()
    coo = cooc.tocoo()
    pmi = np.log(coo.data * total / (degree[coo.row] * degree[coo.col]))
    keep = pmi > 0
    ppmi = sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=cooc.shape)
    emb = _svd_reduce(ppmi, dim)

    orphans = np.where(~in_playlist)[0]
    if len(orphans):
        import faiss

        members = np.where(in_playlist)[0]
        c = l2_normalise(content)
        # Exact nearest members by cosine through a flat index: never an orphans x members matrix in memory.
        search = faiss.IndexFlatIP(c.shape[1])
        search.add(np.ascontiguousarray(c[members]))
        _, nearest = search.search(np.ascontiguousarray(c[orphans]), min(PLAYLIST_NEIGHBOURS, len(members)))
        emb[orphans] = emb[members][nearest].mean(axis=1)
    return l2_normalise(emb)


# Below this many rows the SVD is dense (LAPACK): ARPACK keeps state between calls, so on a small
# matrix with repeated singular values two builds of the same catalog got different bases of the
# same subspace (even with random_state or v0 fixed), and then different codes.
DENSE_SVD_MAX_ROWS = 1000


def _svd_reduce(m, dim: int) -> np.ndarray:
    """Rows of U * sqrt(S) of a rank-``dim`` SVD (dense or sparse input), zero-padded to ``dim``."""
    k = min(dim, min(m.shape) - 1)
    if sparse.issparse(m) and k >= 1 and min(m.shape) > DENSE_SVD_MAX_ROWS:
        u, s, _ = sparse.linalg.svds(m.astype(np.float64), k=k, random_state=0)
    else:
        dense = m.toarray() if sparse.issparse(m) else np.asarray(m, np.float64)
        u, s, _ = np.linalg.svd(dense, full_matrices=False)
        k = min(dim, len(s))
        u, s = u[:, :k], s[:k]
    k = len(s)
    emb = np.zeros((m.shape[0], dim), np.float64)
    emb[:, :k] = u[:, :k] * np.sqrt(s[:k])
    return l2_normalise(emb)


# ---- audio -----------------------------------------------------------------------------------

def fit_audio_normaliser(raw: np.ndarray, has_audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over the tracks that have audio (std floored to avoid blow-ups)."""
    if not has_audio.any():
        return np.zeros(raw.shape[1], np.float32), np.ones(raw.shape[1], np.float32)
    x = raw[has_audio]
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def normalise_audio(raw: np.ndarray, mean: np.ndarray, std: np.ndarray, has_audio: np.ndarray | None = None) -> np.ndarray:
    """Standardise raw audio features with the catalog's statistics, then L2-normalise."""
    z = (raw - mean) / std
    if has_audio is not None:
        z[~has_audio] = 0.0
    return l2_normalise(z)


def text_modalities(tracks: Sequence[Track], encoder: TextEncoder,
                    known: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """The tags, metadata and lyrics embeddings.

    ``known`` maps a modality to texts already embedded (its tags or metadata text, or a
    track's whole lyrics) and their vectors: those are reused and only the rest is encoded,
    each distinct text once.
    """
    known = known or {}
    lyrics = np.zeros((len(tracks), encoder.dim), np.float32)
    seen = known.get("lyrics", {})
    todo = []
    for i, t in enumerate(tracks):
        if lyrics_text(t) in seen:
            lyrics[i] = seen[lyrics_text(t)]
        else:
            todo.append(i)
    if todo:
        lyrics[todo] = lyrics_embedding([tracks[i] for i in todo], encoder)
    return {
        "tags": encode_distinct([tags_text(t) for t in tracks], encoder, known.get("tags", {})),
        "metadata": encode_distinct([metadata_text(t) for t in tracks], encoder, known.get("metadata", {})),
        "lyrics": lyrics,
    }


def encode_distinct(texts: Sequence[str], encoder: TextEncoder, known: Mapping[str, np.ndarray]) -> np.ndarray:
    """Embeddings of ``texts``: those in ``known`` as given, every other distinct text encoded once."""
    new = list(dict.fromkeys(t for t in texts if t not in known))
    vectors = dict(zip(new, encoder.encode(new))) if new else {}
    out = np.zeros((len(texts), encoder.dim), np.float32)
    for i, t in enumerate(texts):
        out[i] = known[t] if t in known else vectors[t]
    return out
