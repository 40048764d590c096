"""Builds whose audio features and text embeddings run as Ray tasks give the index a local build gives."""
from __future__ import annotations

import numpy as np
import pytest

from index.build import build_index
from index.store import MusicIndex
from index.track import MODALITIES
from tiny_catalog import make_tiny_library

ray = pytest.importorskip("ray")


def test_unreachable_cluster_says_what_to_do(monkeypatch):
    from index.distributed import ClusterError, connect

    if ray.is_initialized():
        pytest.skip("a Ray session is already open in this process")
    with pytest.raises(ClusterError, match="ray start"):
        connect("127.0.0.1:1")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_build_matches_the_local_pool(tmp_path, monkeypatch, local_ray):
    lib = make_tiny_library(tmp_path / "lib")
    (lib / "folk_reels" / "broken.mp3").write_bytes(b"\xff\xfb" + b"\x00" * 4000)  # skipped, either way
    # Playlists of unequal overlap: four disjoint, equal ones leave the co-occurrence SVD's basis
    # undetermined, and then the last bit of any sum decides it.
    (lib / "playlists" / "mix.m3u").write_text("../calm_piano/calm_piano_1.wav\n../folk_reels/folk_reels_2.wav\n"
                                                "../fast_electronic/fast_electronic_3.wav\n")
    (lib / "playlists" / "pair.m3u").write_text("../dark_orchestral/dark_orchestral_1.wav\n../calm_piano/calm_piano_2.wav\n")
    monkeypatch.setenv("TONEARM_HOME", str(tmp_path / "home-local"))
    local = build_index(lib, tmp_path / "local", progress=False, log=lambda s: None, workers=2)
    monkeypatch.setenv("TONEARM_HOME", str(tmp_path / "home-ray"))  # an empty feature cache: all computed on Ray
    remote = build_index(lib, tmp_path / "ray", progress=False, log=lambda s: None, ray="auto")
    assert "Ray" in remote.cluster and "2 CPUs" in remote.cluster and "cluster:" in remote.to_text()
    assert [s.path for s in remote.skipped] == [s.path for s in local.skipped] == ["folk_reels/broken.mp3"]
    a, b = MusicIndex.load(tmp_path / "local"), MusicIndex.load(tmp_path / "ray")
    assert [t.id for t in a.tracks] == [t.id for t in b.tracks]
    for j, m in enumerate(MODALITIES):
        assert (a.codes[:, j] == b.codes[:, j]).all(), m
    assert [t.descriptors for t in a.tracks] == [t.descriptors for t in b.tracks]
    for m in MODALITIES:
        if m == "playlist":  # a truncated SVD's components are unique up to sign and rotation: compare similarities
            np.testing.assert_allclose(a.embeddings[m] @ a.embeddings[m].T, b.embeddings[m] @ b.embeddings[m].T, atol=1e-4)
        else:
            np.testing.assert_allclose(a.embeddings[m], b.embeddings[m], atol=1e-5)
