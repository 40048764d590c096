"""Build an index directory from a library folder.

scan -> audio features -> five embeddings -> codebooks -> FAISS -> atomic write.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .audio import descriptor_tags
from .codebook import Codebook, fit_codebook
from .embeddings import (PLAYLIST_DIM, fit_audio_normaliser, l2_normalise, normalise_audio,
                         playlist_embedding, text_modalities)
from .library import LibraryScan, SkippedFile, scan_library
from .paths import data_home
from .retrieval import build_faiss_index, index_kind
from .store import write_index_dir
from .text import TEXT_DIM, TEXT_ENCODER_NAME, get_text_encoder
from .track import MODALITIES, Track


@dataclass
class ModalityReport:
    codebook_size: int
    used_codes: int
    empty_tracks: int
    quantization_error: float
    faiss: str


@dataclass
class BuildReport:
    index_dir: str
    library: str
    tracks: int
    text_only_tracks: int
    skipped: list[SkippedFile]
    duplicates: int
    playlists: int
    modalities: dict[str, ModalityReport]
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def tracks_per_second(self) -> float:
        return self.tracks / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tracks_per_second"] = self.tracks_per_second
        return d

    def to_text(self) -> str:
        lines = [
            f"Index written to {self.index_dir}",
            f"  library:   {self.library}",
            f"  tracks:    {self.tracks} ({self.text_only_tracks} text-only), {self.playlists} playlists, "
            f"{self.duplicates} duplicate files merged",
            f"  skipped:   {len(self.skipped)} file(s)",
        ]
        lines += [f"    - {s.path}: {s.reason}" for s in self.skipped]
        lines.append(f"  {'modality':<9} {'codes used':>12} {'empty':>6} {'mean q.err':>10}  faiss")
        for m, r in self.modalities.items():
            lines.append(f"  {m:<9} {r.used_codes:>5} / {r.codebook_size - 1:<5} {r.empty_tracks:>6} {r.quantization_error:>10.3f}  {r.faiss}")
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.stage_seconds.items())
        lines.append(f"  time:      {self.seconds:.1f}s ({self.tracks_per_second:.1f} tracks/s; {stages})")
        return "\n".join(lines)


# ---- audio features, cached and in parallel ----------------------------------------------------

def _feature_cache_path(path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|v1".encode()).hexdigest()
    return data_home() / "cache" / "audio_features" / f"{key}.npz"


def _features_for_file(path_str: str) -> tuple[str, np.ndarray | None, dict | None, float | None, str | None]:
    """Worker: (path, raw vector, descriptors, duration, error)."""
    import json

    from .audio import AudioError, audio_duration, audio_features, load_excerpt

    path = Path(path_str)
    try:
        cache = _feature_cache_path(path)
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                return path_str, z["vector"], json.loads(str(z["descriptors"])), float(z["duration"]), None
        duration = audio_duration(path)
        feats = audio_features(load_excerpt(path))
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, vector=feats.vector, descriptors=json.dumps(feats.descriptors), duration=duration)
        os.replace(tmp, cache)
        return path_str, feats.vector, feats.descriptors, duration, None
    except AudioError as e:
        return path_str, None, None, None, str(e)
    except Exception as e:  # one bad file never stops a build
        return path_str, None, None, None, f"{type(e).__name__}: {e}"


def extract_audio_features(paths: Sequence[Path], workers: int, progress: bool) -> list[tuple]:
    if workers <= 1 or len(paths) < 4:
        it = map(_features_for_file, [str(p) for p in paths])
        return list(tqdm(it, total=len(paths), desc="audio features", disable=not progress, unit="track"))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        it = pool.map(_features_for_file, [str(p) for p in paths], chunksize=2)
        return list(tqdm(it, total=len(paths), desc="audio features", disable=not progress, unit="track"))


# ---- code descriptions -----------------------------------------------------------------------

def describe_codes(tracks: Sequence[Track], codes: np.ndarray, playlists: dict[str, list[str]],
                   empty_codes: dict[str, int], top: int = 6) -> dict[str, dict[int, str]]:
    """Words that describe each cluster: the most common tags, genres, playlist names, lyric words."""
    in_playlists: dict[str, list[str]] = {}
    for name, ids in playlists.items():
        for tid in ids:
            in_playlists.setdefault(tid, []).append(name)
    out: dict[str, dict[int, str]] = {}
    for j, m in enumerate(MODALITIES):
        words: dict[int, Counter] = {}
        for t, c in zip(tracks, codes[:, j]):
            bag = words.setdefault(int(c), Counter())
            if m == "playlist":
                bag.update(in_playlists.get(t.id, []) or [t.album or t.artist])
            elif m == "tags":
                bag.update(t.tags)
            elif m == "metadata":
                bag.update(w for w in (t.genre, t.artist, t.album) if w)
            elif m == "lyrics":
                bag.update(w.lower() for w in t.lyrics.split() if len(w) > 4)
            else:
                bag.update(descriptor_tags(t.descriptors) if t.descriptors else [])
        out[m] = {c: " ".join(w for w, _ in bag.most_common(top)) for c, bag in words.items()}
        out[m][empty_codes[m]] = {"lyrics": "no lyrics instrumental", "audio": "no audio"}.get(m, f"no {m}")
    return out


# ---- the build -------------------------------------------------------------------------------

def build_index(library: str | Path, out: str | Path, *, progress: bool = True, workers: int | None = None,
                log: Callable[[str], None] = print, seed: int = 0) -> BuildReport:
    """Build the index of a library folder into ``out`` (atomically) and return its report."""
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    library = Path(library).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    scan: LibraryScan = scan_library(library, progress=progress, log=log)
    stages["scan"] = time.perf_counter() - t0

    # Audio: a file that cannot be decoded is skipped like one mutagen could not read.
    t = time.perf_counter()
    with_audio = [tr for tr in scan.tracks if tr.file]
    workers = workers or min(2, os.cpu_count() or 1)
    results = extract_audio_features([library / tr.file for tr in with_audio], workers, progress)
    by_path = {r[0]: r for r in results}
    tracks: list[Track] = []
    raw_vectors: list[np.ndarray | None] = []
    skipped = list(scan.skipped)
    for tr in scan.tracks:
        if not tr.file:
            tracks.append(tr)
            raw_vectors.append(None)
            continue
        _, vec, desc, duration, error = by_path[str(library / tr.file)]
        if error is not None:
            log(f"skipped {tr.file}: {error}")
            skipped.append(SkippedFile(path=tr.file, reason=error))
            continue
        tr.descriptors = dict(desc)
        tr.duration_s = tr.duration_s or duration
        tr.tags = list(dict.fromkeys(tr.tags + descriptor_tags(desc)))
        tracks.append(tr)
        raw_vectors.append(vec)
    if not tracks:
        from .library import LibraryError

        raise LibraryError(f"no track in {library} could be read; see the skipped files above")
    stages["audio"] = time.perf_counter() - t

    t = time.perf_counter()
    n = len(tracks)
    dim_audio = next((len(v) for v in raw_vectors if v is not None), 1)
    raw = np.zeros((n, dim_audio), np.float32)
    has_audio = np.zeros(n, bool)
    for i, v in enumerate(raw_vectors):
        if v is not None:
            raw[i], has_audio[i] = v, True
    mean, std = fit_audio_normaliser(raw, has_audio)
    encoder = get_text_encoder()
    emb = text_modalities(tracks, encoder)
    emb["audio"] = normalise_audio(raw, mean, std, has_audio)
    ids = {tr.id for tr in tracks}
    playlists = {name: [i for i in members if i in ids] for name, members in scan.playlists.items()}
    playlists = {name: members for name, members in playlists.items() if members}
    row_of = {tr.id: i for i, tr in enumerate(tracks)}
    content = np.hstack([emb["tags"], emb["metadata"], emb["audio"]])
    emb["playlist"] = playlist_embedding(n, [[row_of[i] for i in m] for m in playlists.values()], content)
    for tr in tracks:
        tr.playlists = [name for name, members in playlists.items() if tr.id in members]
    stages["embeddings"] = time.perf_counter() - t

    t = time.perf_counter()
    codebooks: dict[str, Codebook] = {}
    for m in tqdm(MODALITIES, desc="codebooks", disable=not progress, unit="modality"):
        codebooks[m] = fit_codebook(emb[m], seed=seed)
    codes = np.stack([codebooks[m].codes for m in MODALITIES], axis=1).astype(np.int64)
    empty_codes = {m: codebooks[m].empty_code for m in MODALITIES}
    stages["codebooks"] = time.perf_counter() - t

    t = time.perf_counter()
    indexes = {m: build_faiss_index(emb[m], seed=seed) for m in MODALITIES}
    stages["faiss"] = time.perf_counter() - t

    modality_reports = {
        m: ModalityReport(
            codebook_size=codebooks[m].size,
            used_codes=codebooks[m].used_codes(),
            empty_tracks=int((codebooks[m].codes == codebooks[m].empty_code).sum()),
            quantization_error=codebooks[m].quantization_error(emb[m]),
            faiss=index_kind(n),
        )
        for m in MODALITIES
    }
    report = BuildReport(
        index_dir=str(out), library=str(library), tracks=n, text_only_tracks=int((~has_audio).sum()),
        skipped=skipped, duplicates=len(scan.duplicates), playlists=len(playlists),
        modalities=modality_reports, seconds=0.0, stage_seconds=stages,
    )
    payload: dict[str, Any] = {
        "tracks.jsonl": [tr.to_dict() for tr in tracks],
        "playlists.json": playlists,
        "codes.npy": codes,
        "audio_norm.npz": {"mean": mean, "std": std},
        "code_descriptions.json": {m: {str(c): w for c, w in d.items()} for m, d in describe_codes(tracks, codes, playlists, empty_codes).items()},
    }
    for m in MODALITIES:
        payload[f"emb_{m}.npy"] = emb[m]
        payload[f"codebook_{m}.npy"] = codebooks[m].centroids
        payload[f"faiss_{m}.index"] = indexes[m]
    report.seconds = time.perf_counter() - t0
    payload["build_report.json"] = report.to_dict()
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "library_root": str(library),
        "track_count": n,
        "modalities": list(MODALITIES),
        "encoders": {
            "playlist": {"name": "ppmi-svd", "dim": PLAYLIST_DIM},
            "tags": {"name": TEXT_ENCODER_NAME, "dim": TEXT_DIM},
            "metadata": {"name": TEXT_ENCODER_NAME, "dim": TEXT_DIM},
            "lyrics": {"name": TEXT_ENCODER_NAME + " (chunk mean)", "dim": TEXT_DIM},
            "audio": {"name": "librosa-stats (standardised)", "dim": dim_audio},
        },
        "codebook_sizes": {m: codebooks[m].size for m in MODALITIES},
        "empty_codes": empty_codes,
        "faiss": {m: index_kind(n) for m in MODALITIES},
    }
    write_index_dir(out, payload, manifest)
    return report
