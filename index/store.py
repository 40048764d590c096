"""The index directory: what a build writes and what everything else loads.

Layout (all names fixed by ``manifest.json``'s ``files`` table, each with a SHA-256)::

    manifest.json          format version, encoders, dims, codebook sizes, track count, checksums
    tracks.jsonl           the track table, one Track a line, in row order
    playlists.json         playlist name -> track ids (the training playlists: all the index learned from)
    heldout_playlists.json playlist name -> {"split": "val"|"test", "tracks": [...]}, kept out of everything else
    codes.npy              (N, 5) int64, columns in MODALITIES order
    emb_<modality>.npy     (N, d) L2-normalised rows (zero row = no data): float32, or float16 where the
                           FAISS index is IVF-PQ and these rows are its re-ranking store (manifest's
                           ``embedding_dtype``)
    codebook_<modality>.npy  (K, d) float32 centroids; code K is the reserved empty code
    faiss_<modality>.index
    audio_norm.npz         mean and std of the raw audio features (to embed uploads the same way)
    audio_features.npy     (N, D) float32 raw audio features (zero rows without audio), for rebuilds
    sources.json           audio path -> [size, mtime_ns], and the catalog size the codebooks were
                           fitted on: what a rebuild needs to keep what has not changed
    code_descriptions.json modality -> code -> words describing the cluster
    build_report.json
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .retrieval import fuse_scores
from .track import MODALITIES, Track

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_WEIGHTS: dict[str, float] = {"playlist": 1.0, "tags": 1.0, "metadata": 1.0, "lyrics": 0.5, "audio": 1.0}
TEXT_SEARCH_WEIGHTS: dict[str, float] = {"tags": 1.0, "metadata": 1.0, "lyrics": 0.3}


class IndexLoadError(RuntimeError):
    """The index directory is missing, incomplete, corrupt or of another format version."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_index_dir(out: Path, payload: Mapping[str, Any], manifest: dict[str, Any]) -> Path:
    """Write files to a temporary sibling directory, then rename it into place.

    ``payload`` maps file names to ``np.ndarray`` (.npy), ``faiss.Index`` (.index), dict/list
    (.json), list of dicts (.jsonl) or a dict of arrays (.npz). A failed write leaves any
    previous index at ``out`` untouched.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        files: dict[str, str] = {}
        for name, obj in payload.items():
            path = tmp / name
            if name.endswith(".npy"):
                np.save(path, obj)
            elif name.endswith(".npz"):
                np.savez(path, **obj)
            elif name.endswith(".index"):
                faiss.write_index(obj, str(path))
            elif name.endswith(".jsonl"):
                path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in obj), encoding="utf-8")
            elif name.endswith(".json"):
                path.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
            else:
                raise ValueError(f"don't know how to write {name}")
            files[name] = sha256_file(path)
        manifest = dict(manifest, format_version=FORMAT_VERSION, files=files)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_manifest(root: Path, verify: bool = True) -> dict[str, Any]:
    """Read and check ``manifest.json``; raise IndexLoadError naming what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise IndexLoadError(f"{root} is not an index directory (it does not exist). Build one with: python -m index build LIBRARY --out {root}")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise IndexLoadError(f"{root} has no {MANIFEST}: it is not an index, or its build did not finish. Rebuild it with: python -m index build LIBRARY --out {root}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IndexLoadError(f"{mpath} is not valid JSON ({e}); rebuild the index") from e
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexLoadError(f"{root} has index format version {version}, this program reads version {FORMAT_VERSION}; rebuild the index")
    for name, digest in manifest.get("files", {}).items():
        path = root / name
        if not path.is_file():
            raise IndexLoadError(f"{root} is missing {name}; rebuild the index")
        if verify and sha256_file(path) != digest:
            raise IndexLoadError(f"{root}/{name} does not match its checksum (corrupt or truncated); rebuild the index")
    return manifest


class MusicIndex:
    """A loaded index directory: tracks, embeddings, codes, codebooks and FAISS indexes."""

    def __init__(self, root: Path, manifest: dict[str, Any], tracks: list[Track], playlists: dict[str, list[str]],
                 embeddings: dict[str, np.ndarray], codes: np.ndarray, centroids: dict[str, np.ndarray],
                 faiss_indexes: dict[str, faiss.Index], audio_norm: tuple[np.ndarray, np.ndarray],
                 code_descriptions: dict[str, dict[int, str]],
                 heldout_playlists: dict[str, dict[str, Any]] | None = None):
        self.root = Path(root)
        self.manifest = manifest
        self.tracks = tracks
        self.playlists = playlists
        self.heldout_playlists = heldout_playlists or {}
        self.embeddings = embeddings
        self.codes = codes
        self.centroids = centroids
        self.faiss_indexes = faiss_indexes
        self.audio_mean, self.audio_std = audio_norm
        self._code_descriptions = code_descriptions
        self.by_id = {t.id: t for t in tracks}
        self.row_of = {t.id: i for i, t in enumerate(tracks)}
        self.library_root = Path(manifest.get("library_root", "."))

    # ---- loading -----------------------------------------------------------------------------

    @classmethod
    def load(cls, root: str | Path, verify: bool = True) -> "MusicIndex":
        root = Path(root)
        manifest = read_manifest(root, verify=verify)
        try:
            tracks = [Track.from_dict(json.loads(line)) for line in (root / "tracks.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
            playlists = json.loads((root / "playlists.json").read_text(encoding="utf-8"))
            heldout_file = root / "heldout_playlists.json"  # absent in indexes built before held-out playlists
            heldout = json.loads(heldout_file.read_text(encoding="utf-8")) if heldout_file.is_file() else {}
            codes = np.load(root / "codes.npy")
            embeddings = {m: np.load(root / f"emb_{m}.npy") for m in MODALITIES}
            centroids = {m: np.load(root / f"codebook_{m}.npy") for m in MODALITIES}
            indexes = {m: faiss.read_index(str(root / f"faiss_{m}.index")) for m in MODALITIES}
            norm = np.load(root / "audio_norm.npz")
            descriptions = {m: {int(c): w for c, w in d.items()} for m, d in json.loads((root / "code_descriptions.json").read_text(encoding="utf-8")).items()}
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise IndexLoadError(f"{root} could not be read ({e}); rebuild the index") from e
        if len(tracks) != manifest.get("track_count") or codes.shape != (len(tracks), len(MODALITIES)):
            raise IndexLoadError(f"{root}: the track table, codes and manifest disagree on the track count; rebuild the index")
        return cls(root, manifest, tracks, playlists, embeddings, codes, centroids, indexes,
                   (norm["mean"], norm["std"]), descriptions, heldout)

    def playlist_members(self, name: str) -> list[str]:
        """A playlist's track ids, whether the index learned from it or holds it out ([] if unknown).
        For audits and oracles: no ranking may look at held-out playlists."""
        if name in self.playlists:
            return list(self.playlists[name])
        return list(self.heldout_playlists.get(name, {}).get("tracks", []))

    # ---- codes -------------------------------------------------------------------------------

    @property
    def codebook_sizes(self) -> dict[str, int]:
        return {m: int(self.manifest["codebook_sizes"][m]) for m in MODALITIES}

    @property
    def empty_codes(self) -> dict[str, int]:
        return {m: int(self.manifest["empty_codes"][m]) for m in MODALITIES}

    def track_codes(self, track_id: str) -> dict[str, int]:
        row = self.codes[self.row_of[track_id]]
        return {m: int(c) for m, c in zip(MODALITIES, row)}

    def code_descriptions(self) -> dict[str, dict[int, str]]:
        return self._code_descriptions

    def code_vectors(self, codes: Mapping[str, int]) -> dict[str, np.ndarray]:
        """Centroid per modality for the given codes; the empty code and unknown codes are dropped."""
        out = {}
        for m, c in codes.items():
            if m in self.centroids and 0 <= int(c) < len(self.centroids[m]):
                out[m] = self.centroids[m][int(c)]
        return out

    # ---- retrieval ---------------------------------------------------------------------------

    def retrieve(self, codes: Mapping[str, int] | None = None, vectors: Mapping[str, np.ndarray] | None = None,
                 weights: Mapping[str, float] | None = None, k: int = 20, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """Ranked (track id, fused score) for codes and/or vectors, best first.

        Vectors given for a modality take precedence over its code. Tracks in ``exclude`` are
        never returned.
        """
        queries: dict[str, np.ndarray] = self.code_vectors(codes or {})
        for m, v in (vectors or {}).items():
            if m not in self.embeddings:
                raise ValueError(f"unknown modality {m!r}; expected one of {MODALITIES}")
            queries[m] = np.asarray(v, np.float32)
        w = dict(DEFAULT_WEIGHTS if weights is None else weights)
        rows = [self.row_of[t] for t in exclude if t in self.row_of]
        ranked = fuse_scores(queries, self.embeddings, self.faiss_indexes, w, k, rows)
        return [(self.tracks[r].id, s) for r, s in ranked]

    def rank_by_code_log_probs(self, log_probs: Mapping[str, np.ndarray], k: int = 20,
                               exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """Every track ranked by the summed log-probability of its codes, best first.

        Parameters
        ----------
        log_probs : mapping
            Modality to an array of log-probabilities, one per code of its codebook (for
            example a language model's distribution at each position of a music block).
            Modalities left out do not count.
        k : int
        exclude : iterable of str
            Track ids never returned.

        Returns
        -------
        list of (track id, score)
            Ties keep catalog order.
        """
        score = np.zeros(len(self.tracks))
        for modality, values in log_probs.items():
            if modality not in MODALITIES:
                raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
            values = np.asarray(values, dtype=np.float64)
            if values.shape != (self.codebook_sizes[modality],):
                raise ValueError(f"{modality} needs {self.codebook_sizes[modality]} log-probabilities, "
                                 f"got shape {values.shape}")
            score += values[self.codes[:, MODALITIES.index(modality)]]
        skip = set(exclude)
        order = np.argsort(-score, kind="stable")
        kept = ((self.tracks[r].id, float(score[r])) for r in order if self.tracks[r].id not in skip)
        return list(islice(kept, k))  # stop at k: a turn needs the top, not the whole catalog

    @cached_property
    def text_encoder(self):
        from .text import get_text_encoder

        return get_text_encoder()

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return self.text_encoder.encode(list(texts))

    def search_text(self, query: str, k: int = 20, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """The dense text baseline: a MiniLM query against the tags, metadata and lyrics embeddings."""
        q = self.encode_text([query])[0]
        if not np.any(q):
            return []
        return self.retrieve(vectors={m: q for m in TEXT_SEARCH_WEIGHTS}, weights=TEXT_SEARCH_WEIGHTS, k=k, exclude=exclude)

    @cached_property
    def lexical(self):
        """BM25 (bm25s) over each track's text (``index.lexical.LexicalIndex``), built on first use."""
        from .lexical import LexicalIndex

        return LexicalIndex(self.tracks)

    def search_lexical(self, query: str, k: int = 20, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """BM25 over titles, artists, albums, tags, descriptions and lyrics; only tracks that match a word."""
        return self.lexical.search(query, k=k, exclude=exclude)

    def search_near(self, track_ids: Iterable[str], k: int = 20, exclude: Iterable[str] = (),
                    modality: str | Mapping[str, float] = "playlist") -> list[tuple[str, float]]:
        """Tracks closest to the mean of the given tracks' embeddings in one modality, or in
        several with a weight each (``{"playlist": 1.0, "metadata": 1.0}``, scores fused as
        :meth:`retrieve` fuses them).

        With the playlist modality these are the tracks that share playlists with the given ones:
        what a listening session would go on with; with metadata, the same album or artist. Unknown
        ids are ignored; none known gives [].
        """
        weights = {modality: 1.0} if isinstance(modality, str) else dict(modality)
        unknown = set(weights) - set(self.embeddings)
        if unknown:
            raise ValueError(f"unknown modality {sorted(unknown)}; expected some of {MODALITIES}")
        rows = [self.row_of[t] for t in track_ids if t in self.row_of]
        if not rows:
            return []
        centres = {m: self.embeddings[m][rows].astype(np.float32).mean(axis=0) for m in weights}
        return self.retrieve(vectors=centres, weights=weights, k=k, exclude=exclude)

    # ---- audio -------------------------------------------------------------------------------

    def audio_path(self, track: Track | str) -> Path | None:
        t = self.by_id[track] if isinstance(track, str) else track
        return (self.library_root / t.file) if t.file else None

    def normalise_audio_vector(self, raw: np.ndarray) -> np.ndarray:
        from .embeddings import normalise_audio

        return normalise_audio(np.asarray(raw, np.float32).reshape(1, -1), self.audio_mean, self.audio_std)[0]

    def embed_audio_file(self, path: str | Path) -> dict[str, np.ndarray]:
        """The catalog's own audio embedding of any file (for uploads): {"audio": vector}."""
        from .audio import audio_features, load_excerpt

        features = audio_features(load_excerpt(path))
        return {"audio": self.normalise_audio_vector(features.vector)}

    def nearest_code(self, modality: str, vector: np.ndarray) -> int:
        """The codebook entry closest to a vector (the code an upload would get)."""
        return int(np.argmax(self.centroids[modality] @ np.asarray(vector, np.float32)))
