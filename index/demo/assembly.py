"""Assembling the demo library folder: how many works to render, rendering them in parallel,
playlists, and writing the folder atomically (:func:`assemble_demo_library`)."""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from index.paths import downloads_dir

from .common import (
    DEMO_MARKER,
    MIN_TRACK_SECONDS,
    MIN_TRACKS,
    RENDER_VERSION,
    RENDER_WORKERS,
    SEED,
    DemoLibraryReport,
    LibraryTrack,
    say,
    slugify,
    title_case,
    write_m3u,
)
from .games import collect_game_tracks
from .render import RenderJob, fluidsynth_ready, render_work
from .works import COLLECTIONS, Collection, WorkRef, list_candidates


def allocate(total: int, weights: dict[str, float], capacity: dict[str, int]) -> dict[str, int]:
    """Split ``total`` across groups in proportion to ``weights``, never above ``capacity``.

    Largest-remainder rounding; what a full group cannot take goes to the others.
    The result sums to ``min(total, sum(capacity))``.
    """
    if total < 0 or any(w < 0 for w in weights.values()):
        raise ValueError("total and weights must not be negative")
    out = {k: 0 for k in weights}
    remaining = min(total, sum(capacity.get(k, 0) for k in weights))
    while remaining > 0:
        open_ = [k for k in weights if out[k] < capacity.get(k, 0) and weights[k] > 0] \
            or [k for k in weights if out[k] < capacity.get(k, 0)]
        norm = sum(weights[k] for k in open_) or float(len(open_))
        shares = {k: remaining * (weights[k] or 1.0) / norm for k in open_}
        floors = {k: int(math.floor(shares[k])) for k in open_}
        leftover = remaining - sum(floors.values())
        for k in sorted(open_, key=lambda k: (shares[k] - floors[k], weights[k]), reverse=True)[:leftover]:
            floors[k] += 1
        given = 0
        for k in open_:
            take = min(floors[k], capacity[k] - out[k])
            out[k] += take
            given += take
        remaining -= given
        if given == 0:
            break
    return out


def music21_target(game_tracks: int, max_music21: int) -> int:
    """How many corpus works to render so the catalog reaches :data:`MIN_TRACKS` (plus a margin for failures)."""
    if max_music21 < 0:
        raise ValueError("max_music21 must not be negative")
    if game_tracks >= MIN_TRACKS:
        return max_music21
    return max(max_music21, MIN_TRACKS - game_tracks + 10)


def _render_path(cache: Path, collection: Collection, work: WorkRef, render_seconds: float, soundfont: Path) -> Path:
    digest = hashlib.sha1(f"{work.spec}|{collection.key}|{render_seconds}|{soundfont.name}|{SEED}|"
                          f"{RENDER_VERSION}".encode()).hexdigest()[:10]
    return cache / "renders" / collection.key / f"{work.slug}-{digest}.ogg"


def collect_music21_tracks(cache: Path, count: int, render_seconds: float, report: DemoLibraryReport,
                           progress: bool, collections: Sequence[Collection] | None = None) -> list[LibraryTrack]:
    """Choose ``count`` corpus works across the collections, render those not cached, and return them.

    Works that fail (no notes, too short, unparsable) are replaced by the next
    candidate of the same collection; a collection that runs out hands its share to
    the one with most candidates left.
    """
    collections = list(collections if collections is not None else COLLECTIONS)
    if count <= 0 or not collections:
        return []
    soundfont, why = fluidsynth_ready()
    if soundfont is None:
        report.warnings.append(why)
        say(why)
        return []
    candidates = {c.key: list_candidates(c) for c in collections}
    need = allocate(count, {c.key: c.weight for c in collections}, {k: len(v) for k, v in candidates.items()})
    by_key = {c.key: c for c in collections}
    position = {c.key: 0 for c in collections}
    done: dict[str, list[tuple[int, Path, dict]]] = {c.key: [] for c in collections}
    failures: list[str] = []
    pool: ProcessPoolExecutor | None = None
    bar = tqdm(total=sum(need.values()), desc="rendering scores", unit="work", disable=not progress)
    try:
        while True:
            jobs: list[tuple[str, int, RenderJob]] = []
            for key in list(need):
                collection = by_key[key]
                while need[key] - len(done[key]) - sum(1 for k, _, _ in jobs if k == key) > 0:
                    if position[key] >= len(candidates[key]):
                        break
                    index = position[key]
                    position[key] += 1
                    work = candidates[key][index]
                    ogg = _render_path(cache, collection, work, render_seconds, soundfont)
                    sidecar = ogg.with_suffix(".json")
                    cached = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else None
                    if cached is not None and (not cached.get("ok") or ogg.exists()):
                        if cached.get("ok"):
                            done[key].append((index, ogg, cached))
                            report.reused["renders"] += 1
                            bar.update(1)
                        continue
                    jobs.append((key, index, RenderJob(work, collection, str(ogg), render_seconds, str(soundfont))))
            # a collection out of candidates hands what it still owes to the one with most left
            for key in need:
                owed = need[key] - len(done[key]) - sum(1 for k, _, _ in jobs if k == key)
                if owed > 0 and position[key] >= len(candidates[key]):
                    richest = max(need, key=lambda k: len(candidates[k]) - position[k])
                    if richest != key and len(candidates[richest]) > position[richest]:
                        need[key] -= owed
                        need[richest] += owed
            if not jobs:
                if all(need[k] <= len(done[k]) or position[k] >= len(candidates[k]) for k in need):
                    break
                continue
            if RENDER_WORKERS > 1 and len(jobs) > 1 and pool is None:
                # fork: workers need only music21 and FluidSynth, and callers need no __main__ guard
                method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
                pool = ProcessPoolExecutor(max_workers=RENDER_WORKERS, mp_context=multiprocessing.get_context(method))
            outcomes: Iterable[tuple[tuple[str, int, RenderJob], dict]]
            if pool is not None:
                futures = {pool.submit(render_work, job): (key, index, job) for key, index, job in jobs}
                outcomes = ((futures[f], f.result()) for f in as_completed(futures))
            else:
                outcomes = (((key, index, job), render_work(job)) for key, index, job in jobs)
            for (key, index, job), result in outcomes:
                if result.get("ok"):
                    done[key].append((index, Path(job.ogg), result))
                    report.rendered += 1
                    bar.update(1)
                else:
                    failures.append(f"{job.work.spec}: {result.get('reason')}")
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    if failures:
        report.warnings.append(f"{len(failures)} corpus works could not be rendered and were replaced "
                               f"(first: {failures[0]}).")
    tracks = []
    for key, items in done.items():
        collection = by_key[key]
        for index, ogg, meta in sorted(items, key=lambda item: item[0])[: need[key]]:
            slug = candidates[key][index].slug
            fields = {k: v for k, v in meta.items() if k != "ok"}
            tracks.append(LibraryTrack(ogg, f"music21/{key}/{slug}.ogg", {"id": f"m21-{slug}", **fields},
                                       [collection.playlist]))
    return tracks


# --------------------------------------------------------------------------- assembling the folder

MIX_TAGS = ("orchestral", "electronic", "ambient", "rock", "metal", "folk", "dance tune", "reel", "jig", "hornpipe",
            "chorale", "vocal", "piano", "strings", "baroque", "classical", "romantic", "renaissance", "medieval",
            "sacred", "sci-fi", "fantasy", "minor")
MIX_SIZE = 40


def build_playlists(tracks: Sequence[LibraryTrack], seed: int = SEED) -> dict[str, list[int]]:
    """Playlist name -> track indices.

    Each track's own playlists (its package, world or collection), every album of
    three or more tracks, and a mix for each genre tag in :data:`MIX_TAGS` that five
    or more tracks share (at most :data:`MIX_SIZE`, chosen and ordered with a seed so
    the mix crosses sources). A playlist with the same tracks as an earlier one is dropped.
    """
    named: dict[str, list[int]] = {}
    for i, track in enumerate(tracks):
        for name in track.playlists:
            named.setdefault(name, []).append(i)
    albums: dict[str, list[int]] = {}
    for i, track in enumerate(tracks):
        if track.meta.get("album"):
            albums.setdefault(track.meta["album"], []).append(i)
    for album, members in albums.items():
        if len(members) >= 3 and album not in named:
            named[album] = members
    for tag in MIX_TAGS:
        members = [i for i, t in enumerate(tracks) if tag in t.meta.get("tags", [])]
        if len(members) >= 5:
            rng = random.Random(f"{seed}:mix:{tag}")
            named[f"{title_case(tag)} mix"] = rng.sample(members, min(MIX_SIZE, len(members)))
    out: dict[str, list[int]] = {}
    seen: set[frozenset[int]] = set()
    for name, members in named.items():
        key = frozenset(members)
        if key not in seen:
            seen.add(key)
            out[name] = members
    return out


def playlist_filename(name: str) -> str:
    """A file name that reads as the playlist's name (readers take the name from the stem)."""
    safe = " ".join(re.sub(r'[\\/:*?"<>|\x00-\x1f]+', " - ", name).split()).strip(" .-")
    return (safe or slugify(name))[:120]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)                   # same disk as the cache: no copy at all
    except OSError:
        shutil.copy2(src, dst)


def write_library(root: Path, tracks: Sequence[LibraryTrack], playlists: dict[str, list[int]]) -> None:
    """Write the library folder: audio, ``metadata.jsonl``, ``playlists/*.m3u``.

    It is written to a hidden sibling folder and renamed into place; an earlier demo
    library at ``root`` is replaced. A non-empty folder that is not a demo library
    (no :data:`DEMO_MARKER` file) is never touched.
    """
    root = Path(root).absolute()
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not (root / DEMO_MARKER).exists())):
        raise FileExistsError(f"{root} exists and is not a demo library (no {DEMO_MARKER} file): "
                              "choose an empty or new folder, or remove it first.")
    files = [t.file for t in tracks]
    if len(set(files)) != len(files):
        raise ValueError("two tracks would be written to the same file")
    root.parent.mkdir(parents=True, exist_ok=True)
    for stale in root.parent.glob(f".{root.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = root.parent / f".{root.name}.partial-{os.getpid()}"
    partial.mkdir()
    try:
        (partial / DEMO_MARKER).write_text("Built by index.demo; safe to delete and rebuild.\n")
        ids: set[str] = set()
        with open(partial / "metadata.jsonl", "w", encoding="utf-8") as out:
            for track in tracks:
                _link_or_copy(track.source, partial / track.file)
                meta = dict(track.meta)
                base, n = meta["id"], 2
                while meta["id"] in ids:
                    meta["id"], n = f"{base}-{n}", n + 1
                ids.add(meta["id"])
                out.write(json.dumps({"file": track.file, **meta}, ensure_ascii=False) + "\n")
        used: set[str] = set()
        for name, members in playlists.items():
            stem, n = playlist_filename(name), 2
            while stem.lower() in used:
                stem, n = f"{playlist_filename(name)} ({n})", n + 1
            used.add(stem.lower())
            write_m3u(partial / "playlists" / f"{stem}.m3u", name, [
                (partial / tracks[i].file, f"{tracks[i].meta.get('artist', '')} - {tracks[i].meta.get('title', '')}",
                 tracks[i].meta.get("duration_s")) for i in members])
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    if root.exists():
        root.rename(old)
    partial.rename(root)
    shutil.rmtree(old, ignore_errors=True)


def assemble_demo_library(root: Path, *, progress: bool = True, max_music21: int = 150,
                          render_seconds: float = 60.0) -> DemoLibraryReport:
    """Build the demo library folder at ``root`` from Debian soundtracks and the music21 corpus.

    Parameters
    ----------
    root : Path
        Folder to (re)create. An earlier demo library there is replaced atomically;
        any other non-empty folder is refused.
    progress : bool
        Show tqdm bars for downloading, unpacking and rendering.
    max_music21 : int
        Corpus works to render. Raised when the Debian packages cannot be had, so the
        catalog still reaches :data:`MIN_TRACKS` tracks.
    render_seconds : float
        Longest rendered excerpt, at least :data:`MIN_TRACK_SECONDS`.

    Returns
    -------
    DemoLibraryReport
    """
    if render_seconds < MIN_TRACK_SECONDS:
        raise ValueError(f"render_seconds must be at least {MIN_TRACK_SECONDS:.0f} (got {render_seconds})")
    started = time.perf_counter()
    root = Path(root).expanduser()
    report = DemoLibraryReport(root=root.absolute())
    cache = downloads_dir()
    cache.mkdir(parents=True, exist_ok=True)
    game = collect_game_tracks(cache, report, progress)
    target = music21_target(len(game), max_music21)
    scores = collect_music21_tracks(cache / "music21", target, render_seconds, report, progress)
    tracks = game + scores
    if not tracks:
        raise RuntimeError("No tracks could be assembled: " + " ".join(report.warnings))
    if len(tracks) < MIN_TRACKS:
        report.warnings.append(f"only {len(tracks)} tracks (fewer than {MIN_TRACKS}).")
    playlists = build_playlists(tracks)
    write_library(root, tracks, playlists)
    report.tracks = len(tracks)
    report.by_source = dict(Counter(t.meta["source"] for t in tracks))
    report.playlists = len(playlists)
    report.top_tags = dict(Counter(tag for t in tracks for tag in t.meta.get("tags", [])).most_common(40))
    report.seconds = time.perf_counter() - started
    return report
