"""Build an index directory from a library folder.

scan -> audio features -> five embeddings -> codebooks -> FAISS -> atomic write.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .audio import AUDIO_FEATURE_DIM, descriptor_tags, with_library_key
from .codebook import Codebook, assign_codes, fit_codebook
from .holdout import cooccurrence_overlap, hold_out_playlists
from .embeddings import (PLAYLIST_DIM, fit_audio_normaliser, l2_normalise, normalise_audio,
                         playlist_embedding, text_modalities)
from .incremental import (RAW_AUDIO_FILE, REFIT_GROWTH, SOURCES_FILE, PreviousIndex, file_stamp, load_previous,
                          procrustes_rotation, text_vectors)
from .library import LibraryScan, SkippedFile, scan_library
from .paths import data_home
from .retrieval import build_faiss_index, index_kind, storage_dtype
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
    playlists: int  # read from the library, held-out ones included
    modalities: dict[str, ModalityReport]
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    playlist_source: str = "none"  # "playlist files", or the albums/folders standing in for them
    text_only: list[SkippedFile] = field(default_factory=list)  # audio files indexed from their text, and why
    held_out: dict[str, int] = field(default_factory=dict)  # "val"/"test" -> playlists kept out of the index
    held_out_overlap: dict[str, float] = field(default_factory=dict)  # their co-occurrence also in training
    update: dict[str, Any] = field(default_factory=dict)  # what a rebuild kept from the index it replaced
    cluster: str = ""  # the Ray cluster that computed features and embeddings, if any

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
            f"  tracks:    {self.tracks} ({self.text_only_tracks} text-only), {self.duplicates} duplicate files merged",
            f"  playlists: {self.playlists} (from {self.playlist_source})",
            f"  skipped:   {len(self.skipped)} file(s)",
        ]
        lines += [f"    - {s.path}: {s.reason}" for s in self.skipped]
        if self.held_out:
            counts = ", ".join(f"{n} {s}" for s, n in self.held_out.items())
            known = ", ".join(f"{s} {v:.0%}" for s, v in self.held_out_overlap.items())
            lines.append(f"  held out:  {counts} playlist(s) for honest evaluation: nothing in the index is learned "
                         f"from them (their track pairs also co-occurring in training playlists: {known or 'none'})")
        if self.text_only:
            lines.append(f"  text only: {len(self.text_only)} audio file(s) could not be decoded; their tracks are indexed from text")
            lines += [f"    - {s.path}: {s.reason}" for s in self.text_only]
        if self.update:
            u = self.update
            lines.append(f"  update:    {u['unchanged']} unchanged, {u['added']} added, {u['changed']} changed, "
                         f"{u['removed']} removed; {u['decoded']} file(s) decoded, {u['texts_embedded']} text(s) embedded")
            lines.append(f"  codebooks: {u['codebooks']}")
        if self.cluster:
            lines.append(f"  cluster:   {self.cluster}")
        lines.append(f"  {'modality':<9} {'codes used':>12} {'empty':>6} {'mean q.err':>10}  faiss")
        for m, r in self.modalities.items():
            lines.append(f"  {m:<9} {r.used_codes:>5} / {r.codebook_size - 1:<5} {r.empty_tracks:>6} {r.quantization_error:>10.3f}  {r.faiss}")
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.stage_seconds.items())
        lines.append(f"  time:      {self.seconds:.1f}s ({self.tracks_per_second:.1f} tracks/s; {stages})")
        return "\n".join(lines)


# ---- audio features, cached and in parallel ----------------------------------------------------

@dataclass
class FileFeatures:
    """The audio features of one file, or why there are none."""

    path: str
    vector: np.ndarray | None = None
    descriptors: dict | None = None
    duration: float | None = None
    error: str | None = None


def _feature_cache_path(path: Path) -> Path:
    from .audio import EXCERPT_SECONDS, FEATURES_VERSION, SAMPLE_RATE

    st = path.stat()
    version = f"features-v{FEATURES_VERSION}|{SAMPLE_RATE}|{EXCERPT_SECONDS}"
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{version}".encode()).hexdigest()
    return data_home() / "cache" / "audio_features" / f"{key}.npz"


def _cached_features(path: Path) -> FileFeatures | None:
    try:
        cache = _feature_cache_path(path)
        if not cache.is_file():
            return None
        with np.load(cache, allow_pickle=False) as z:
            return FileFeatures(str(path), z["vector"], json.loads(str(z["descriptors"])), float(z["duration"]))
    except (OSError, ValueError, KeyError):
        return None  # unreadable or stale entry: compute again


def compute_file_features(path_str: str, name: str | None = None) -> FileFeatures:
    """Decode one file and compute its features; never raises (the reason goes in ``error``).

    ``name`` is the path the result is reported under (default ``path_str``): a cluster worker
    reads a copy of the file under another name.
    """
    from .audio import AudioError, audio_duration, audio_features, load_excerpt

    path = Path(path_str)
    name = name or path_str
    try:
        duration = audio_duration(path)
        feats = audio_features(load_excerpt(path))
        return FileFeatures(name, feats.vector, feats.descriptors, duration)
    except AudioError as e:
        return FileFeatures(name, error=str(e).replace(f"'{path.name}'", f"'{Path(name).name}'"))
    except Exception as e:  # one bad file never stops a build
        return FileFeatures(name, error=f"{type(e).__name__}: {e}")


def store_cached_features(result: FileFeatures) -> None:
    """Put a computed result in the feature cache; never raises (errors are not cached: the file may be fixed)."""
    if result.error is not None:
        return
    try:
        cache = _feature_cache_path(Path(result.path))
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, vector=result.vector, descriptors=json.dumps(result.descriptors), duration=result.duration)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache costs only the next build's time


def _features_for_file(path_str: str) -> FileFeatures:
    """Features of one file, stored in the cache (run in a worker process); never raises."""
    result = compute_file_features(path_str)
    store_cached_features(result)
    return result


def _compile_audio_kernels() -> None:
    """Run the feature extraction once on a synthetic signal, which compiles every numba kernel it uses."""
    from .audio import SAMPLE_RATE, audio_features

    t = np.arange(8 * SAMPLE_RATE) / SAMPLE_RATE
    beat = (np.arange(t.size) % (SAMPLE_RATE // 2)) < 300
    y = 0.3 * np.sin(2 * np.pi * 220.0 * t) + beat * np.random.default_rng(0).normal(0.0, 0.3, t.size)
    audio_features(y.astype(np.float32))


def _compiles_in_a_fresh_process() -> bool:
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=1) as pool:
        try:
            pool.submit(_compile_audio_kernels).result()
            return True
        except BrokenProcessPool:
            return False


def librosa_jit_cache_files() -> list[Path]:
    """The numba cache files of librosa's kernels: beside its sources, or under ``NUMBA_CACHE_DIR``."""
    import librosa

    roots = [Path(librosa.__file__).parent]
    if os.environ.get("NUMBA_CACHE_DIR"):
        roots.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    return [f for root in roots if root.is_dir() for pattern in ("*.nbi", "*.nbc") for f in root.rglob(pattern)
            if "librosa" in str(f)]


def _kernel_listing() -> list[list]:
    """[path, size, mtime_ns] of every compiled-kernel cache file: what says the cache is unchanged."""
    out = []
    for f in sorted(librosa_jit_cache_files()):
        try:
            st = f.stat()
        except OSError:
            continue
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def prepare_audio_workers(log: Callable[[str], None] = print) -> None:
    """Compile librosa's kernels once, in one process of its own, before a pool of workers starts.

    librosa compiles its numba kernels on first use and caches them on disk (``cache=True``).
    Two workers that start with an empty cache compile the same kernels and write the same
    cache files at once, and the files they leave segfault every process that loads them
    later (reproduced on a fresh install: two workers over 11 short files crashed within
    25 s, and a single process then crashed on the cache they left; one process compiling
    first, then two workers, never did). After this the cache is complete and the workers
    only read it. If even this process crashes, the cache on disk is already damaged (by an
    earlier crash): it is removed and compiled afresh, once. A check that passed is recorded
    with the cache files' sizes and times, and skipped (about 3 s) while they are unchanged.
    """
    marker = data_home() / "cache" / "librosa-kernels-checked.json"
    listing = _kernel_listing()
    try:
        if listing and json.loads(marker.read_text()) == listing:
            return  # these very cache files passed the check before: a worker only reads them
    except (OSError, ValueError):
        pass
    if _compiles_in_a_fresh_process():
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps(_kernel_listing()))
        except OSError:
            pass
        return
    damaged = librosa_jit_cache_files()
    for f in damaged:
        f.unlink(missing_ok=True)
    log(f"librosa's compiled-kernel cache was damaged; removed {len(damaged)} cache files and compiled afresh")
    if not _compiles_in_a_fresh_process():
        raise RuntimeError("audio feature extraction crashes its process even with a fresh JIT cache; "
                           "run the build with --workers 1 to see the error")


CRASH_REASON = "decoding it crashed the process (a corrupt or unsupported file)"


def _one_thread_each() -> None:
    """Pool workers compute with one thread each: the pool already fills the cores, and workers
    whose BLAS and OpenMP pools each spread over every core only contend for them."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if "torch" in sys.modules:  # inherited from the parent; not worth importing otherwise
        sys.modules["torch"].set_num_threads(1)


def _pool_run(paths: Sequence[str], workers: int, done: dict[str, FileFeatures], bar) -> list[str]:
    """Compute ``paths`` in a pool of ``workers`` into ``done``; return those left when a worker died."""
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=workers, initializer=_one_thread_each) as pool:
        futures = {pool.submit(_features_for_file, p): p for p in paths}
        try:
            for future in as_completed(futures):
                result = future.result()
                done[result.path] = result
                bar.update(1)
        except BrokenProcessPool:
            for future, p in futures.items():  # results that finished before the break are kept
                if p not in done and future.done() and not future.cancelled() and future.exception() is None:
                    done[p] = future.result()
                    bar.update(1)
    return [p for p in paths if p not in done]


def extract_audio_features(paths: Sequence[Path], workers: int, progress: bool = True,
                           cluster: bool = False) -> list[FileFeatures]:
    """Features of every file, in order: from the cache, else computed, in ``workers`` processes.

    A decoder that crashes kills its process, not just the call. When that happens the files
    still to do are run one at a time in a fresh process, so the file that kills it is found,
    recorded with ``CRASH_REASON`` and skipped, and every other file is still computed.
    With ``cluster`` the files to compute run as tasks on the connected Ray cluster instead
    (``index.distributed``) and their results are cached here.
    """
    keys = [str(p) for p in paths]
    done: dict[str, FileFeatures] = {}
    for p in paths:
        cached = _cached_features(p)
        if cached is not None:
            done[str(p)] = cached
    todo = [k for k in keys if k not in done]
    with tqdm(total=len(keys), initial=len(done), desc="audio features", disable=not progress, unit="track") as bar:
        if todo and cluster:
            from . import distributed

            for result in distributed.audio_features(todo, bar):
                done[result.path] = result
                store_cached_features(result)
        elif todo and (workers <= 1 or len(todo) < 4):
            for k in todo:
                done[k] = _features_for_file(k)
                bar.update(1)
        elif todo:
            prepare_audio_workers(log=bar.write if progress else print)
            left = _pool_run(todo, workers, done, bar)
            while left:  # a worker died: one file at a time now, so the next death names its file
                left = _pool_run(left, 1, done, bar)
                if left:  # one worker runs files in order: the first not done is the one it died on
                    done[left[0]] = FileFeatures(left[0], error=CRASH_REASON)
                    bar.update(1)
                    left = left[1:]
    return [done[k] for k in keys]


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

class _LazyEncoder:
    """The text encoder, loaded on first use (a rebuild with no new text never loads it), counting what it embeds."""

    name, dim = TEXT_ENCODER_NAME, TEXT_DIM

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make, self._encoder, self.texts = make, None, 0

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        if self._encoder is None:
            self._encoder = self._make()
        self.texts += sum(1 for t in texts if t and t.strip())
        return self._encoder.encode(texts, **kwargs)


def _with_derived_tags(tags: Sequence[str], derived: Sequence[str]) -> list[str]:
    """The library's tags, then the words derived from the audio that they do not already hold
    in any case ("C# minor" beside the library's "c# minor" is said once)."""
    have = {t.lower() for t in tags}
    return list(tags) + [w for w in dict.fromkeys(derived) if w.lower() not in have]


def _reusable_features(prev: PreviousIndex | None, library: Path, with_audio: Sequence[Track],
                       stamps: dict[str, list[int]]) -> dict[str, FileFeatures]:
    """Audio features the previous index holds for files that have not changed since."""
    if prev is None:
        return {}
    row_of_file = {t.file: i for i, t in enumerate(prev.tracks) if t.file and t.descriptors}
    out = {}
    for tr in with_audio:
        i = row_of_file.get(tr.file)
        if i is not None and prev.stamps.get(tr.file) == stamps[tr.file]:
            old = prev.tracks[i]
            out[str(library / tr.file)] = FileFeatures(str(library / tr.file), prev.raw_audio[i].copy(),
                                                       dict(old.descriptors), old.duration_s)
    return out


def _changes(prev: PreviousIndex, tracks: Sequence[Track]) -> dict[str, int]:
    """Counts of unchanged, added, changed and removed tracks against the previous index."""
    def facts(t: Track) -> dict[str, Any]:
        return {k: v for k, v in t.to_dict().items() if k != "playlists"}

    ids = {t.id for t in tracks}
    both = [t for t in tracks if t.id in prev.row_of]
    changed = sum(1 for t in both if facts(t) != facts(prev.tracks[prev.row_of[t.id]]))
    return {"unchanged": len(both) - changed, "added": len(tracks) - len(both), "changed": changed,
            "removed": sum(1 for t in prev.tracks if t.id not in ids)}


def build_index(library: str | Path, out: str | Path, *, progress: bool = True, workers: int | None = None,
                log: Callable[[str], None] = print, seed: int = 0,
                hold_out: dict[str, float] | None = None, incremental: bool = True,
                ray: str | None = None) -> BuildReport:
    """Build the index of a library folder into ``out`` (atomically) and return its report.

    ``hold_out`` gives the shares of playlist entries set aside for validation and test
    (``index.holdout``; default 10 % and 15 %, ``{}`` for none). Held-out playlists are written to
    ``heldout_playlists.json`` and nothing else in the index is learned from them.

    When ``out`` already holds an index of this library and ``incremental`` is true, only new and
    changed files are decoded and only new text is embedded; the codebooks are kept unless the
    catalog has grown past ``index.incremental.REFIT_GROWTH`` (the report's ``update`` says what
    happened). Playlists keep the split they had; new playlists are split with ``hold_out``.

    ``ray`` (an address, or "auto") computes audio features and text embeddings as tasks on a Ray
    cluster (``index.distributed``) instead of in local processes.
    """
    t0 = time.perf_counter()
    library = Path(library).expanduser().resolve()
    scan: LibraryScan = scan_library(library, progress=progress, log=log)
    return index_scan(scan, out, progress=progress, workers=workers, log=log, seed=seed, hold_out=hold_out,
                      incremental=incremental, ray=ray, started=t0)


def index_scan(scan: LibraryScan, out: str | Path, *, progress: bool = True, workers: int | None = None,
               log: Callable[[str], None] = print, seed: int = 0, hold_out: dict[str, float] | None = None,
               incremental: bool = True, ray: str | None = None, started: float | None = None,
               features: Callable[[Sequence[Path]], list[FileFeatures]] | None = None,
               stamp: Callable[[Path], list[int]] = file_stamp) -> BuildReport:
    """Everything of ``build_index`` after the library scan: audio, embeddings, codebooks, FAISS, write.

    ``features`` computes the audio features of files (default: the feature cache, then the
    local pool or Ray) and ``stamp`` tells changed files from unchanged ones; a benchmark can
    stand in for both to index a synthetic catalog of any size without audio.
    """
    t0 = time.perf_counter() if started is None else started
    stages: dict[str, float] = {}
    library = scan.root
    out = Path(out).expanduser().resolve()
    prev, how = load_previous(out, library) if incremental else (None, "full build")
    if prev is None and how != "new index":
        log(how)
    cluster = ""
    if ray:
        from . import distributed

        resources = distributed.connect(ray)
        cluster = f"Ray ({ray}), {int(resources.get('CPU', 0))} CPUs"
        log(f"audio features and text embeddings run on {cluster}")
    stages["scan"] = time.perf_counter() - t0

    # Audio: a file that cannot be decoded is skipped like one mutagen could not read.
    t = time.perf_counter()
    with_audio = [tr for tr in scan.tracks if tr.file]
    stamps = {tr.file: stamp(library / tr.file) for tr in with_audio}
    by_path = _reusable_features(prev, library, with_audio, stamps)
    todo = [library / tr.file for tr in with_audio if str(library / tr.file) not in by_path]
    workers = workers or min(2, os.cpu_count() or 1)
    computed = features(todo) if features else extract_audio_features(todo, workers, progress, cluster=bool(ray))
    by_path |= {r.path: r for r in computed}
    tracks: list[Track] = []
    raw_vectors: list[np.ndarray | None] = []
    skipped = list(scan.skipped)
    text_only = list(scan.text_only)
    for tr in scan.tracks:
        if not tr.file:
            tr.descriptors = with_library_key({}, tr.tags)  # a key in its tags is all it has
            tr.tags = _with_derived_tags(tr.tags, descriptor_tags(tr.descriptors))
            tracks.append(tr)
            raw_vectors.append(None)
            continue
        r = by_path[str(library / tr.file)]
        if r.error is not None:
            if tr.id in scan.described:  # nothing that was described is lost: keep its text
                reason = f"audio not decodable: {r.error}; indexed from its text"
                log(f"text only {tr.file}: {reason}")
                text_only.append(SkippedFile(path=tr.file, reason=reason))
                tr.file = None
                tracks.append(tr)
                raw_vectors.append(None)
            else:
                log(f"skipped {tr.file}: {r.error}")
                skipped.append(SkippedFile(path=tr.file, reason=r.error))
            continue
        tr.descriptors = with_library_key(r.descriptors, tr.tags)
        tr.duration_s = tr.duration_s or r.duration
        tr.tags = _with_derived_tags(tr.tags, descriptor_tags(tr.descriptors))
        tracks.append(tr)
        raw_vectors.append(r.vector)
    if not tracks:
        from .library import LibraryError

        raise LibraryError(f"no track in {library} could be read; see the skipped files above")
    stages["audio"] = time.perf_counter() - t

    t = time.perf_counter()
    n = len(tracks)
    refit = prev is None or n > prev.refit_limit
    dim_audio = next((len(v) for v in raw_vectors if v is not None), AUDIO_FEATURE_DIM)
    raw = np.zeros((n, dim_audio), np.float32)
    has_audio = np.zeros(n, bool)
    for i, v in enumerate(raw_vectors):
        if v is not None:
            raw[i], has_audio[i] = v, True
    # A kept codebook describes vectors standardised as before: the normaliser is kept with it.
    mean, std = fit_audio_normaliser(raw, has_audio) if refit else (prev.audio_mean, prev.audio_std)
    if ray:
        from .distributed import RayTextEncoder

        encoder = _LazyEncoder(RayTextEncoder)
    else:
        encoder = _LazyEncoder(get_text_encoder)
    emb = text_modalities(tracks, encoder, text_vectors(prev) if prev else None)
    emb["audio"] = normalise_audio(raw, mean, std, has_audio)
    ids = {tr.id for tr in tracks}
    playlists = {name: [i for i in members if i in ids] for name, members in scan.playlists.items()}
    playlists = {name: members for name, members in playlists.items() if members}
    n_playlists = len(playlists)
    if prev is None:
        split_of = hold_out_playlists(playlists, hold_out, seed=seed)
    else:  # a playlist keeps its split, so nothing a model learned from becomes test data
        new = {name: members for name, members in playlists.items() if name not in prev.splits}
        split_of = {name: prev.splits[name] for name in playlists if name in prev.splits}
        split_of |= hold_out_playlists(new, hold_out, seed=seed) if new else {}
    held_out = {name: {"split": split_of[name], "tracks": members}
                for name, members in playlists.items() if split_of[name] != "train"}
    overlap = cooccurrence_overlap(playlists, split_of)
    # From here on the index knows only the training playlists.
    playlists = {name: members for name, members in playlists.items() if split_of[name] == "train"}
    row_of = {tr.id: i for i, tr in enumerate(tracks)}
    content = np.hstack([emb["tags"], emb["metadata"], emb["audio"]])
    emb["playlist"] = playlist_embedding(n, [[row_of[i] for i in m] for m in playlists.values()], content)
    if not refit:
        shared = [(i, prev.row_of[tr.id]) for i, tr in enumerate(tracks) if tr.id in prev.row_of]
        if shared:
            now, before = (np.array(s) for s in zip(*shared))
            rotation = procrustes_rotation(emb["playlist"][now], prev.embeddings["playlist"][before])
            emb["playlist"] = l2_normalise(emb["playlist"] @ rotation)
    for tr in tracks:
        tr.playlists = [name for name, members in playlists.items() if tr.id in members]
    stages["embeddings"] = time.perf_counter() - t

    t = time.perf_counter()
    codebooks: dict[str, Codebook] = {}
    for m in tqdm(MODALITIES, desc="codebooks", disable=not progress, unit="modality"):
        if refit:
            codebooks[m] = fit_codebook(emb[m], seed=seed)
        else:
            codebooks[m] = Codebook(centroids=prev.centroids[m], codes=assign_codes(emb[m], prev.centroids[m]))
    codes = np.stack([codebooks[m].codes for m in MODALITIES], axis=1).astype(np.int64)
    empty_codes = {m: codebooks[m].empty_code for m in MODALITIES}
    stages["codebooks"] = time.perf_counter() - t

    t = time.perf_counter()
    indexes = {m: build_faiss_index(emb[m], seed=seed) for m in MODALITIES}
    stages["faiss"] = time.perf_counter() - t

    update: dict[str, Any] = {}
    fitted_on = n if refit else prev.fitted_tracks
    if prev is not None:
        update = _changes(prev, tracks) | {"decoded": len(todo), "texts_embedded": encoder.texts}
        if refit:
            update["codebooks"] = (f"refit: the catalog grew from {prev.fitted_tracks} tracks (when they were fitted) "
                                   f"to {n}, past {prev.refit_limit} (+{REFIT_GROWTH:.0%}); the codes changed, so "
                                   "retrain the model")
        else:
            old_codes = {tr.id: tuple(prev.codes[prev.row_of[tr.id]]) for tr in tracks if tr.id in prev.row_of}
            moved = sum(1 for i, tr in enumerate(tracks) if tr.id in old_codes and tuple(codes[i]) != old_codes[tr.id])
            update["codes_changed"] = moved
            update["codebooks"] = (f"kept (fitted on {prev.fitted_tracks} tracks; refit past {prev.refit_limit}); new "
                                   f"tracks got their nearest codes, {moved} earlier track(s) changed codes; a model "
                                   "trained on the earlier index keeps working: retrain it to let it learn the new tracks")
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
        skipped=skipped, duplicates=len(scan.duplicates), playlists=n_playlists,
        modalities=modality_reports, seconds=0.0, stage_seconds=stages,
        playlist_source=scan.playlist_source if n_playlists else "none", text_only=text_only,
        held_out=dict(Counter(h["split"] for h in held_out.values())), held_out_overlap=overlap,
        update=update, cluster=cluster,
    )
    payload: dict[str, Any] = {
        "tracks.jsonl": [tr.to_dict() for tr in tracks],
        "playlists.json": playlists,
        "heldout_playlists.json": held_out,
        "codes.npy": codes,
        "audio_norm.npz": {"mean": mean, "std": std},
        RAW_AUDIO_FILE: raw,
        SOURCES_FILE: {"files": {tr.file: stamps[tr.file] for tr in tracks if tr.file},
                       "codebook_fit": {"tracks": fitted_on}},
        "code_descriptions.json": {m: {str(c): w for c, w in d.items()} for m, d in describe_codes(tracks, codes, playlists, empty_codes).items()},
    }
    for m in MODALITIES:
        payload[f"emb_{m}.npy"] = emb[m].astype(storage_dtype(n))
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
        "codebook_fit_tracks": fitted_on,
        "empty_codes": empty_codes,
        "faiss": {m: index_kind(n) for m in MODALITIES},
        "embedding_dtype": storage_dtype(n).name,
        "held_out_playlists": report.held_out,
    }
    write_index_dir(out, payload, manifest)
    return report
