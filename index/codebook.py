"""Vector quantization of one modality's embeddings into a codebook (vector-quantize-pytorch).

Rows that carry no data for a modality (all-zero embeddings: no lyrics, no audio, ...) are not
quantized; they get a reserved code, the last one, so "no lyrics" is one defined token rather
than noise assigned to an arbitrary cluster.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Codebook:
    """A fitted codebook.

    Attributes
    ----------
    centroids : np.ndarray
        (K, d) float32, L2-normalised cluster centres; code K (== ``empty_code``) is reserved.
    codes : np.ndarray
        (N,) int64 code per input row.
    """

    centroids: np.ndarray
    codes: np.ndarray

    @property
    def size(self) -> int:
        """Number of codes including the reserved empty code."""
        return int(self.centroids.shape[0]) + 1

    @property
    def empty_code(self) -> int:
        return int(self.centroids.shape[0])

    def used_codes(self) -> int:
        return int(len(np.unique(self.codes[self.codes != self.empty_code])))

    def quantization_error(self, x: np.ndarray) -> float:
        """Mean squared distance of non-empty rows to their centroid (0 when there are none)."""
        mask = self.codes != self.empty_code
        if not mask.any():
            return 0.0
        diff = x[mask] - self.centroids[self.codes[mask]]
        return float((diff**2).sum(axis=1).mean())


def choose_codebook_size(n_items: int, minimum: int = 4, maximum: int = 4096) -> int:
    """About 2 * sqrt(N), rounded to a power of two, never more than the items to cluster."""
    if n_items < 1:
        raise ValueError("need at least one item to size a codebook")
    k = 2 ** round(math.log2(max(2 * math.sqrt(n_items), 1)))
    return int(max(1, min(max(k, minimum), maximum, n_items)))


# Above this many rows the k-means start is fitted once on a sample of this size (the EMA updates
# then see every row): four full restarts on 100k rows x 512 codes take minutes a modality.
KMEANS_FULL_ROWS = 20_000


def _kmeans_pp(data: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    if len(data) > KMEANS_FULL_ROWS:
        sample = np.random.default_rng(seed).choice(len(data), size=max(KMEANS_FULL_ROWS, 40 * k), replace=False)
        km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=50, random_state=seed).fit(data[sample])
    else:
        km = KMeans(n_clusters=k, init="k-means++", n_init=4, max_iter=100, random_state=seed).fit(data)
    c = km.cluster_centers_.astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True).clip(1e-8)


def is_empty_row(x: np.ndarray) -> np.ndarray:
    return ~np.any(x != 0, axis=1)


def fit_codebook(
    x: np.ndarray, size: int | None = None, *, iters: int = 20, seed: int = 0
) -> Codebook:
    """Fit a k-means-initialised, EMA-updated codebook with cosine similarity on the rows of ``x``.

    Parameters
    ----------
    x : np.ndarray
        (N, d) L2-normalised embeddings; all-zero rows mean "no data" and get the empty code.
    size : int, optional
        Number of real codes; chosen from the number of non-empty rows when omitted.
    """
    from vector_quantize_pytorch import VectorQuantize

    if x.ndim != 2:
        raise ValueError(f"expected a 2-d array, got shape {x.shape}")
    empty = is_empty_row(x)
    data = x[~empty].astype(np.float32)
    n, d = data.shape
    if n == 0:
        # Nothing to cluster: one dummy centroid so that the reserved code is well defined.
        return Codebook(centroids=np.zeros((1, d), np.float32), codes=np.full(len(x), 1, np.int64))
    k = size if size is not None else choose_codebook_size(n)
    k = max(1, min(k, n))
    torch.manual_seed(seed)
    vq = VectorQuantize(
        dim=d, codebook_size=k, kmeans_init=True, use_cosine_sim=True, decay=0.9,
        threshold_ema_dead_code=0,
    )
    # The library's own k-means start samples plain random centres and often merges clusters;
    # a k-means++ start with restarts (scikit-learn) is far more reliable, and the EMA updates
    # of the quantizer then refine it.
    init = _kmeans_pp(data, k, seed)
    # The start goes into the quantizer's own buffers (its public ``codebook`` setter leaves the EMA
    # averages at their random start); pyproject.toml bounds the package to the layout checked here.
    missing = [b for b in ("embed", "embed_avg", "cluster_size", "initted") if not hasattr(vq._codebook, b)]
    if missing:
        raise RuntimeError(f"this vector-quantize-pytorch has no codebook buffer(s) {missing}; "
                           "install the version pyproject.toml allows")
    with torch.no_grad():
        vq._codebook.embed.copy_(torch.from_numpy(init).unsqueeze(0))
        vq._codebook.embed_avg.copy_(torch.from_numpy(init).unsqueeze(0))
        vq._codebook.cluster_size.fill_(1.0)
        vq._codebook.initted.fill_(True)
    vq.train()
    batch = torch.from_numpy(data).unsqueeze(0)
    with torch.no_grad():
        for _ in range(iters):
            vq(batch)
    vq.eval()
    centroids = vq.codebook.detach().reshape(k, d).numpy().astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True).clip(1e-8)
    return Codebook(centroids=centroids, codes=assign_codes(x, centroids))


def assign_codes(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each row's nearest centroid by cosine (rows and centroids unit length); all-zero rows get the
    reserved empty code, ``len(centroids)``."""
    codes = np.full(len(x), len(centroids), dtype=np.int64)
    filled = ~is_empty_row(x)
    if filled.any():
        codes[filled] = np.argmax(x[filled].astype(np.float32) @ centroids.T, axis=1)
    return codes
