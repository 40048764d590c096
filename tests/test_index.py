"""Index build, load, retrieval and the errors people meet: on a tiny synthetic catalog."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from index.build import build_index
from index.codebook import choose_codebook_size, fit_codebook
from index.embeddings import playlist_embedding
from index.retrieval import build_faiss_index, index_kind, nearest_rows
from index.store import IndexLoadError, MusicIndex
from index.track import MODALITIES
from tiny_catalog import make_tiny_library

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("catalog")
    lib = make_tiny_library(d / "lib")
    report = build_index(lib, d / "index", progress=False)
    return lib, d / "index", report


def test_build_report_and_manifest(built):
    lib, index_dir, report = built
    assert report.tracks == 17 and report.text_only_tracks == 1 and report.playlists == 4
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["track_count"] == 17
    assert set(manifest["codebook_sizes"]) == set(MODALITIES)
    for m in MODALITIES:
        r = report.modalities[m]
        assert 1 <= r.used_codes <= r.codebook_size - 1
        assert manifest["empty_codes"][m] == manifest["codebook_sizes"][m] - 1
    # only the text-only track lacks audio; only it has lyrics
    assert report.modalities["audio"].empty_tracks == 1
    assert report.modalities["lyrics"].empty_tracks == 16
    assert "codes used" in report.to_text()


def test_loaded_index_is_consistent(built):
    _, index_dir, _ = built
    idx = MusicIndex.load(index_dir)
    assert len(idx.tracks) == 17 and idx.codes.shape == (17, 5)
    for m in MODALITIES:
        norms = np.linalg.norm(idx.embeddings[m], axis=1)
        assert np.all((np.abs(norms - 1) < 1e-4) | (norms == 0))
    poem = idx.by_id["poem-1"]
    assert idx.track_codes("poem-1")["audio"] == idx.empty_codes["audio"]
    assert poem.file is None and idx.audio_path(poem) is None
    # audio-derived words are added to the tags of tracks with audio
    piano = next(t for t in idx.tracks if t.title == "Calm Piano No. 1")
    assert {"calm", "piano"} <= set(piano.tags) and len(piano.tags) > 4
    assert "tempo_bpm" in piano.descriptors and "key" in piano.descriptors


def test_retrieve_by_codes_prefers_same_style_and_honours_exclude(built):
    _, index_dir, _ = built
    idx = MusicIndex.load(index_dir)
    seed = next(t for t in idx.tracks if t.title == "Fast Electronic No. 1")
    ranked = idx.retrieve(codes=idx.track_codes(seed.id), k=5, exclude=[seed.id])
    assert seed.id not in [tid for tid, _ in ranked]
    assert [idx.by_id[tid].album for tid, _ in ranked[:3]] == ["Fast Electronic"] * 3
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)


def test_text_search_finds_the_described_style(built):
    _, index_dir, _ = built
    idx = MusicIndex.load(index_dir)
    top = [idx.by_id[t].album for t, _ in idx.search_text("calm piano", k=3)]
    assert top == ["Calm Piano"] * 3
    top = [idx.by_id[t].album for t, _ in idx.search_text("folk fiddle reel", k=3)]
    assert top == ["Folk Reels"] * 3


def test_lexical_search_matches_words_and_honours_exclude(built):
    _, index_dir, _ = built
    idx = MusicIndex.load(index_dir)
    hits = idx.search_lexical("fiddle reel", k=10)
    assert hits and {idx.by_id[t].album for t, _ in hits[:3]} == {"Folk Reels"}
    assert all(s > 0 for _, s in hits)  # only tracks that share a word with the query
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    first = hits[0][0]
    assert first not in [t for t, _ in idx.search_lexical("fiddle reel", k=10, exclude=[first])]
    assert idx.search_lexical("zzzqx", k=10) == []


def test_search_near_played_tracks_stays_in_their_playlists(built):
    _, index_dir, _ = built
    idx = MusicIndex.load(index_dir)
    members, other = list(idx.playlists.values())[:2]  # playlists the index learned from
    played = members[:2]
    near = [t for t, _ in idx.search_near(played, k=len(idx.tracks), exclude=played)]
    assert not set(played) & set(near)
    assert max(near.index(t) for t in members[2:]) < min(near.index(t) for t in other)
    assert idx.search_near(["no-such-track"], k=3) == []


def test_search_near_in_several_modalities_fuses_their_neighbourhoods(built):
    _, index_dir, _ = built
    idx = MusicIndex.load(index_dir)
    played = [idx.tracks[0].id, idx.tracks[1].id]
    alone = {m: idx.search_near(played, k=len(idx.tracks), exclude=played, modality=m) for m in ("tags", "metadata")}
    both = idx.search_near(played, k=len(idx.tracks), exclude=played, modality={"tags": 1.0, "metadata": 1.0})
    only_tags = idx.search_near(played, k=len(idx.tracks), exclude=played, modality={"tags": 1.0, "metadata": 0.0})
    assert [t for t, _ in only_tags] == [t for t, _ in alone["tags"]]
    assert not set(played) & {t for t, _ in both} and len(both) == len(idx.tracks) - 2
    # Every fused score is the weighted mean of the two modalities' scores.
    score = {m: dict(r) for m, r in alone.items()}
    for track_id, fused in both[:5]:
        assert fused == pytest.approx((score["tags"][track_id] + score["metadata"][track_id]) / 2, abs=1e-4)
    with pytest.raises(ValueError, match="unknown modality"):
        idx.search_near(played, modality={"mood": 1.0})


def test_rank_by_code_log_probs_scores_every_track_by_its_codes(built):
    _, index_dir, _ = built
    idx = MusicIndex.load(index_dir)
    target = idx.tracks[4]
    codes = idx.track_codes(target.id)
    # Sure of every code: the track carrying them comes first, with log-probability 0.
    certain = {m: np.where(np.arange(n) == codes[m], 0.0, -20.0) for m, n in idx.codebook_sizes.items()}
    ranked = idx.rank_by_code_log_probs(certain, k=len(idx.tracks))
    assert ranked[0][1] == 0.0 and idx.track_codes(ranked[0][0]) == codes  # (tracks may share all five codes)
    assert len(ranked) == len(idx.tracks) and [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    # Each score is the sum of its codes' log-probabilities; left-out modalities count nothing.
    only_tags = {"tags": np.log(np.linspace(1, 2, idx.codebook_sizes["tags"]))}
    for track_id, score in idx.rank_by_code_log_probs(only_tags, k=5):
        assert score == pytest.approx(only_tags["tags"][idx.track_codes(track_id)["tags"]])
    assert target.id not in {t for t, _ in idx.rank_by_code_log_probs(certain, k=50, exclude=[target.id])}
    with pytest.raises(ValueError, match="needs"):
        idx.rank_by_code_log_probs({"tags": np.zeros(3)})
    with pytest.raises(ValueError, match="unknown modality"):
        idx.rank_by_code_log_probs({"mood": np.zeros(3)})


def test_upload_embedding_maps_to_catalog_space(built):
    lib, index_dir, _ = built
    idx = MusicIndex.load(index_dir)
    path = lib / "dark_orchestral" / "dark_orchestral_2.wav"
    vec = idx.embed_audio_file(path)["audio"]
    tid = next(t.id for t in idx.tracks if t.file == "dark_orchestral/dark_orchestral_2.wav")
    assert float(vec @ idx.embeddings["audio"][idx.row_of[tid]]) > 0.99
    ranked = idx.retrieve(vectors={"audio": vec}, weights={"audio": 1.0}, k=1)
    assert ranked[0][0] == tid


def test_corrupt_file_is_skipped_and_counted(tmp_path):
    lib = make_tiny_library(tmp_path / "lib", per_style=2)
    (lib / "calm_piano" / "broken.mp3").write_bytes(b"\x00\x01not audio at all" * 50)
    report = build_index(lib, tmp_path / "index", progress=False, log=lambda s: None)
    assert report.tracks == 9
    assert any("broken.mp3" in s.path for s in report.skipped)
    assert all(s.reason for s in report.skipped)


def test_empty_and_missing_folder_give_clear_errors(tmp_path):
    from index.library import LibraryError

    (tmp_path / "empty").mkdir()
    with pytest.raises(LibraryError, match="no audio"):
        build_index(tmp_path / "empty", tmp_path / "index", progress=False)
    with pytest.raises(LibraryError):
        build_index(tmp_path / "missing", tmp_path / "index", progress=False)
    assert not (tmp_path / "index").exists()


def test_truncated_or_missing_index_files_are_named(built, tmp_path):
    _, index_dir, _ = built
    broken = tmp_path / "index"
    shutil.copytree(index_dir, broken)
    path = broken / "emb_tags.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(IndexLoadError, match="emb_tags.npy.*checksum"):
        MusicIndex.load(broken)
    (broken / "codes.npy").unlink()
    with pytest.raises(IndexLoadError, match="missing codes.npy"):
        MusicIndex.load(broken)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    manifest["format_version"] = 99
    other = tmp_path / "other"
    shutil.copytree(index_dir, other)
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match="version 99"):
        MusicIndex.load(other)
    with pytest.raises(IndexLoadError, match="does not exist"):
        MusicIndex.load(tmp_path / "nowhere")


def test_failed_build_keeps_the_previous_index(built, tmp_path, monkeypatch):
    lib, index_dir, _ = built
    target = tmp_path / "index"
    shutil.copytree(index_dir, target)
    before = (target / "manifest.json").read_text()
    import index.store as store

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store.faiss, "write_index", boom)
    with pytest.raises(OSError):
        build_index(lib, target, progress=False)
    assert (target / "manifest.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".index.tmp")]


def test_codebook_reserves_empty_code_and_recovers_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 16))
    labels = np.repeat(np.arange(8), 25)
    x = (centres[labels] + 0.05 * rng.normal(size=(200, 16))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[:5] = 0
    cb = fit_codebook(x, size=8)
    assert cb.size == 9 and np.all(cb.codes[:5] == 8) and np.all(cb.codes[5:] < 8)
    # each true cluster maps to one code
    for c in range(8):
        members = cb.codes[5:][labels[5:] == c]
        assert np.mean(members == np.bincount(members).argmax()) > 0.95
    assert cb.quantization_error(x) < 0.05
    assert choose_codebook_size(250) == 32 and choose_codebook_size(3) == 3


def test_playlist_embedding_follows_cooccurrence_and_fills_orphans():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 8))
    content = np.vstack([centres[i // 10] + 0.1 * rng.normal(size=8) for i in range(30)])
    content[29] = centres[0]  # the orphan sounds like the first playlist
    emb = playlist_embedding(30, [list(range(0, 10)), list(range(10, 20)), list(range(20, 29))], content)
    assert emb[1] @ emb[2] > emb[1] @ emb[15]
    assert emb[29] @ emb[5] > emb[29] @ emb[25]


def test_faiss_kind_by_size_and_ivf_recall():
    assert index_kind(100) == "flat" and index_kind(50_000) == "ivf" and index_kind(2_000_000) == "ivfpq"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flat, ivf = build_faiss_index(x, "flat"), build_faiss_index(x, "ivf")
    _, a = flat.search(x[:50], 10)
    _, b = ivf.search(x[:50], 10)
    assert np.mean([len(set(p) & set(q)) / 10 for p, q in zip(a, b)]) > 0.5


def test_ivfpq_reranks_exactly_and_survives_a_round_trip(tmp_path):
    import faiss

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(32, 64)).astype(np.float32)
    x = centres[rng.integers(0, 32, size=20_000)] + 0.5 * rng.normal(size=(20_000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    faiss.write_index(build_faiss_index(x, "ivfpq"), str(tmp_path / "pq.index"))
    pq = faiss.read_index(str(tmp_path / "pq.index"))
    store = x.astype(np.float16)  # the re-ranking store the index directory keeps at this size
    found, scores = zip(*(nearest_rows(pq, store, q, 10) for q in x[:50]))
    found, scores = np.array(found), np.array(scores)
    _, truth = build_faiss_index(x, "flat").search(x[:50], 10)
    assert (found[:, 0] == np.arange(50)).all()  # each row finds itself first ...
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=2e-3)  # ... with its cosine from the store, not a PQ estimate
    assert (np.diff(scores, axis=1) <= 0).all()
    assert np.mean([len(set(p) & set(q)) / 10 for p, q in zip(found, truth)]) > 0.9


def test_cli_build_info_search(built, tmp_path):
    lib, _, _ = built
    run = lambda *a: subprocess.run([sys.executable, "-m", "index", *a], cwd=ROOT, capture_output=True, text=True, timeout=300)
    r = run("build", str(lib), "--out", str(tmp_path / "idx"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "tracks:" in r.stdout and "codes used" in r.stdout
    r = run("info", str(tmp_path / "idx"))
    assert r.returncode == 0 and "tracks:   17" in r.stdout
    assert "codebooks fitted on 17 tracks; a rebuild refits them past 21" in r.stdout
    r = run("search", str(tmp_path / "idx"), "fast electronic", "-k", "3")
    assert r.returncode == 0 and r.stdout.count("Fast Electronic") >= 3
    r = run("info", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "error:" in r.stderr


def test_held_out_playlists_reach_nothing_the_evaluation_uses(built, tmp_path):
    """Val and test conversations walk playlists that no part of the index was learned from."""
    from assistant.evaluate import playlists_in_index
    from assistant.synth import HELD_OUT_PHRASING, write_splits
    from assistant.conversations import read_conversations

    _, index_dir, report = built
    idx = MusicIndex.load(index_dir)
    held = idx.heldout_playlists
    assert report.held_out == {"val": 1, "test": 1} and {h["split"] for h in held.values()} == {"val", "test"}
    assert json.loads((index_dir / "manifest.json").read_text())["held_out_playlists"] == report.held_out
    assert not set(held) & set(idx.playlists) and len(idx.playlists) + len(held) == report.playlists == 4
    assert all(idx.playlist_members(n) == h["tracks"] for n, h in held.items())
    for name in held:
        assert all(name not in t.playlists for t in idx.tracks)
        assert all(name not in words for codes in idx.code_descriptions().values() for words in codes.values())
    # The conversations an evaluation scores walk held-out playlists only; training ones never do.
    read = {s: read_conversations(p) for s, p in write_splits(idx.tracks, idx.playlists, tmp_path,
                                                              heldout_playlists=held, progress=False).items()}
    for split in ("val", "test", HELD_OUT_PHRASING):
        wanted = "test" if split == HELD_OUT_PHRASING else split
        assert read[split] and all(held[c["playlist"]]["split"] == wanted for c in read[split])
        assert playlists_in_index(read[split], idx) == {}
    assert not {c["playlist"] for c in read["train"]} & set(held)
    assert playlists_in_index(read["train"], idx)["conversations"] > 0


def test_only_training_playlists_feed_the_embedding_and_code_descriptions(built, tmp_path, monkeypatch):
    import index.build as build_module

    lib, index_dir, _ = built
    seen = {}
    real_embedding, real_describe = build_module.playlist_embedding, build_module.describe_codes

    def embedding(n, playlists, content, *args, **kwargs):
        seen["embedding"] = [sorted(m) for m in playlists]
        return real_embedding(n, playlists, content, *args, **kwargs)

    def describe(tracks, codes, playlists, *args, **kwargs):
        seen["describe"] = dict(playlists)
        return real_describe(tracks, codes, playlists, *args, **kwargs)

    monkeypatch.setattr(build_module, "playlist_embedding", embedding)
    monkeypatch.setattr(build_module, "describe_codes", describe)
    build_index(lib, tmp_path / "index", progress=False, log=lambda s: None)  # audio features come from the cache
    idx = MusicIndex.load(tmp_path / "index")
    assert idx.heldout_playlists.keys() == MusicIndex.load(index_dir).heldout_playlists.keys()
    assert seen["describe"] == idx.playlists
    assert seen["embedding"] == [sorted(idx.row_of[i] for i in m) for m in idx.playlists.values()]


def test_playlist_embedding_is_the_same_every_time_despite_repeated_singular_values():
    # Four disjoint playlists of four give one singular value seven times over: any basis of its
    # subspace is an answer, and a build must still give the same one every time.
    from index.embeddings import playlist_embedding

    playlists = [[0, 1, 2, 3], [4, 5, 6, 7], [12, 13, 14, 15], [4, 1]]
    content = np.random.default_rng(0).standard_normal((17, 8))
    first = playlist_embedding(17, playlists, content)
    for _ in range(3):
        assert np.array_equal(playlist_embedding(17, playlists, content), first)
