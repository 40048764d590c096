"""Rebuilding an index over the one it replaces: only what changed is processed, codes stay put."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from index.build import build_index
from index.incremental import REFIT_GROWTH, procrustes_rotation
from index.store import MusicIndex
from index.track import MODALITIES
from tiny_catalog import SR, make_tiny_library, synth_track


@pytest.fixture()
def first_build(tmp_path):
    lib = make_tiny_library(tmp_path / "lib")
    report = build_index(lib, tmp_path / "index", progress=False, log=lambda s: None)
    return lib, tmp_path / "index", report


def _codes(index_dir):
    idx = MusicIndex.load(index_dir)
    return idx, {t.id: tuple(idx.codes[i]) for i, t in enumerate(idx.tracks)}


def test_rebuild_without_changes_processes_nothing_and_changes_nothing(first_build):
    lib, out, first = first_build
    before, codes_before = _codes(out)
    report = build_index(lib, out, progress=False, log=lambda s: None)
    after, codes_after = _codes(out)
    assert first.update == {}  # a new index has nothing to update
    u = report.update
    assert (u["unchanged"], u["added"], u["changed"], u["removed"]) == (17, 0, 0, 0)
    assert u["decoded"] == 0 and u["texts_embedded"] == 0
    assert u["codebooks"].startswith("kept") and u["codes_changed"] == 0
    assert codes_after == codes_before
    for m in MODALITIES:
        np.testing.assert_allclose(after.embeddings[m], before.embeddings[m], atol=1e-5)
    assert after.codebook_sizes == before.codebook_sizes


def test_added_and_removed_files_keep_the_codebooks(first_build):
    lib, out, _ = first_build
    _, codes_before = _codes(out)
    sizes_before = MusicIndex.load(out).codebook_sizes
    (lib / "calm_piano" / "calm_piano_4.wav").unlink()
    sf.write(lib / "calm_piano" / "new_piano.wav", synth_track(70, 61, False, False, 6.0, seed=99), SR)
    report = build_index(lib, out, progress=False, log=lambda s: None)
    u = report.update
    assert (u["added"], u["removed"], u["decoded"]) == (1, 1, 1)
    assert u["unchanged"] == 16 and u["codebooks"].startswith("kept")
    assert "kept" in report.to_text() and "1 added" in report.to_text()
    idx, codes_after = _codes(out)
    assert idx.codebook_sizes == sizes_before and len(idx.tracks) == 17
    kept = [t for t in codes_after if t in codes_before]
    assert sum(codes_after[t] == codes_before[t] for t in kept) >= len(kept) - u["codes_changed"]
    assert u["codes_changed"] <= 2
    new = next(t for t in idx.tracks if t.file and t.file.endswith("new_piano.wav"))
    assert new.descriptors and "tempo_bpm" in new.descriptors
    # the new quiet piano piece sits with the other calm piano tracks in audio
    piano_audio = {codes_after[t.id][MODALITIES.index("audio")] for t in idx.tracks if t.album == "Calm Piano"}
    assert codes_after[new.id][MODALITIES.index("audio")] in piano_audio or len(piano_audio) > 1


def test_growth_past_the_threshold_refits(first_build, tmp_path):
    lib, out, _ = first_build
    more = int(17 * REFIT_GROWTH) + 1
    for i in range(more):
        sf.write(lib / "folk_reels" / f"extra_{i}.wav", synth_track(100 + 5 * i, 60 + i, False, True, 6.0, seed=50 + i), SR)
    report = build_index(lib, out, progress=False, log=lambda s: None)
    assert report.update["added"] == more and report.update["codebooks"].startswith("refit")
    assert "retrain" in report.update["codebooks"]
    # the next rebuild measures growth from the refit size
    again = build_index(lib, out, progress=False, log=lambda s: None)
    assert again.update["codebooks"].startswith("kept")


def test_full_rebuild_and_another_library_start_afresh(first_build, tmp_path):
    lib, out, _ = first_build
    assert build_index(lib, out, progress=False, log=lambda s: None, incremental=False).update == {}
    other = tmp_path / "other"
    shutil.copytree(lib, other)
    lines = []
    assert build_index(other, out, progress=False, log=lines.append).update == {}
    assert any("another library" in line for line in lines)


def test_procrustes_undoes_a_rotation_and_sign_flips():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    rotated = x @ q.astype(np.float32) * np.array([1, -1] * 4, np.float32)
    r = procrustes_rotation(rotated, x)
    np.testing.assert_allclose(rotated @ r, x, atol=1e-4)
    with pytest.raises(ValueError):
        procrustes_rotation(x, x[:10])


def test_a_model_record_says_when_the_catalog_changed(first_build, tmp_path):
    from assistant.model_dir import catalog_changes, write_catalog_record

    lib, out, _ = first_build
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    write_catalog_record(model_dir, MusicIndex.load(out))
    assert catalog_changes(model_dir, MusicIndex.load(out)) is None
    assert catalog_changes(tmp_path, MusicIndex.load(out)) is None  # no record: nothing to say
    sf.write(lib / "folk_reels" / "one_more.wav", synth_track(118, 62, False, True, 6.0, seed=77), SR)
    report = build_index(lib, out, progress=False, log=lambda s: None)
    assert report.update["codebooks"].startswith("kept")  # the model still fits the index ...
    note = catalog_changes(model_dir, MusicIndex.load(out))
    assert note is not None and "1 added" in note and "Retrain" in note  # ... and is told what it does not know


def test_a_key_the_library_states_is_the_tracks_key_and_the_estimate_is_kept(first_build):
    import json

    from index.vocabulary import same_key

    lib, out, _ = first_build
    measured = next(t for t in MusicIndex.load(out).tracks if t.file == "folk_reels/folk_reels_1.wav").descriptors
    assert measured["key_source"] == "audio" and "measured_key" not in measured
    stated = "b minor" if not same_key(measured["key"], "b minor") else "f# minor"

    def rebuild_with_tags(extra: list[str]):
        lines = [json.loads(x) for x in (lib / "metadata.jsonl").read_text().splitlines()]
        for line in lines:
            if line.get("file") == "folk_reels/folk_reels_1.wav":
                line["tags"] = ["folk", "reel", "fiddle", "dance tune", *extra]
        (lib / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        report = build_index(lib, out, progress=False, log=lambda s: None)
        assert report.update["decoded"] == 0  # the audio's features are reused, not measured again
        return next(t for t in MusicIndex.load(out).tracks if t.file == "folk_reels/folk_reels_1.wav")

    track = rebuild_with_tags([stated])
    d = track.descriptors
    assert (d["key"], d["mode"], d["key_source"]) == (stated[0].upper() + stated[1:], "minor", "library")
    assert (d["measured_key"], d["measured_key_confidence"]) == (measured["key"], measured["key_confidence"])
    assert "minor key" in track.tags and measured["key"] not in track.tags
    assert [t for t in track.tags if t.lower() == stated] == [stated]  # said once, in the library's words
    # Rebuilt again with the key still stated, then without it: the estimate comes back.
    assert rebuild_with_tags([stated]).descriptors == d
    back = rebuild_with_tags([]).descriptors
    assert (back["key"], back["key_source"]) == (measured["key"], "audio") and "measured_key" not in back
