"""FAISS indexes per modality and the fused retrieval that turns codes or vectors into tracks.

A flat inner-product index is exact and fast enough for small catalogs; above
``IVF_THRESHOLD`` tracks an inverted-file index is used, and above ``IVFPQ_THRESHOLD`` an
IVF with product quantization, to keep memory and latency bounded. The PQ index only proposes
candidates: ``nearest_rows`` re-ranks ``RERANK_FACTOR`` times as many as asked for with exact
cosines from the stored embeddings (float16 at that size, ``storage_dtype``), so the index holds
no second copy of the vectors. ``bench/index_build.py`` prints the recall, latency and memory
this buys at 10k, 100k and 1M vectors.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import faiss
import numpy as np

IVF_THRESHOLD = 20_000
IVFPQ_THRESHOLD = 500_000
DEFAULT_NPROBE = 16
# PQ candidates re-ranked exactly per result asked for.
RERANK_FACTOR = 16
# Dimensions per PQ sub-quantizer: 4 keeps 384-d text vectors at 96 bytes a row.
PQ_DIMS_PER_CODE = 4


def index_kind(n_items: int) -> str:
    """'flat', 'ivf' or 'ivfpq', chosen from the number of items."""
    if n_items < IVF_THRESHOLD:
        return "flat"
    return "ivf" if n_items < IVFPQ_THRESHOLD else "ivfpq"


def storage_dtype(n_items: int) -> np.dtype:
    """dtype of the stored embedding rows: float16 where the PQ index needs them as its re-ranking store.

    Below that size float32 keeps scores bit-identical to those the codebooks were fitted on.
    """
    return np.dtype(np.float16) if index_kind(n_items) == "ivfpq" else np.dtype(np.float32)


def build_faiss_index(x: np.ndarray, kind: str | None = None, nprobe: int = DEFAULT_NPROBE, seed: int = 0) -> faiss.Index:
    """Inner-product index over L2-normalised rows (so scores are cosine similarities)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    kind = kind or index_kind(n)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(max(16, min(4 * math.sqrt(n), n // 39)))
        quantizer = faiss.IndexFlatIP(d)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        elif kind == "ivfpq":
            index = faiss.IndexIVFPQ(quantizer, d, nlist, _pq_subquantizers(d), 8, faiss.METRIC_INNER_PRODUCT)
        else:
            raise ValueError(f"unknown index kind {kind!r}; use flat, ivf or ivfpq")
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(n, size=min(n, max(nlist * 64, 65_536)), replace=False)]
        index.train(sample)
        index.nprobe = nprobe
    index.add(x)
    return index


def nearest_rows(index: faiss.Index, store: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``store`` with the highest inner product with ``q``, through ``index``.

    Flat and IVF indexes hold the vectors and answer directly; a PQ index (whose scores are
    estimates, recall@10 about 0.1 at 1M on its own) proposes ``RERANK_FACTOR * k`` candidates that
    are re-scored exactly from ``store``. Returns (rows, scores), best first, without -1 padding.
    """
    q = np.ascontiguousarray(np.asarray(q, np.float32).reshape(1, -1))
    if k < 1:
        raise ValueError("k must be at least 1")
    pq = _is_pq(index)
    scores, ids = index.search(q, min(index.ntotal, k * RERANK_FACTOR) if pq else min(index.ntotal, k))
    ids = ids[0][ids[0] >= 0]
    if not pq:
        return ids, scores[0][: len(ids)]
    exact = store[ids].astype(np.float32, copy=False) @ q[0]
    order = np.argsort(-exact, kind="stable")[:k]
    return ids[order], exact[order]


def _is_pq(index: faiss.Index) -> bool:
    return isinstance(faiss.downcast_index(index), faiss.IndexIVFPQ)


def _pq_subquantizers(d: int, max_dims: int = PQ_DIMS_PER_CODE) -> int:
    """The fewest sub-quantizers that divide ``d`` with at most ``max_dims`` dimensions each."""
    return next(m for m in range(max(1, math.ceil(d / max_dims)), d + 1) if d % m == 0)


def fuse_scores(
    queries: Mapping[str, np.ndarray],
    embeddings: Mapping[str, np.ndarray],
    indexes: Mapping[str, faiss.Index],
    weights: Mapping[str, float],
    k: int,
    exclude_rows: Iterable[int] = (),
) -> list[tuple[int, float]]:
    """Weighted sum of per-modality cosine similarities, best first.

    Candidates are the union of each modality's FAISS top hits; each candidate is then scored
    exactly on every queried modality from the stored embeddings, so a track that is strong in
    one modality and fair in the others is ranked fairly.

    Parameters
    ----------
    queries : modality -> (d,) query vector
    embeddings : modality -> (N, d) matrix
    indexes : modality -> FAISS index over that matrix
    weights : modality -> weight (missing or zero weights drop a modality)
    k : number of results
    exclude_rows : rows that must not be returned
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    active = {m: q for m, q in queries.items() if weights.get(m, 0.0) > 0 and np.any(q)}
    if not active:
        return []
    excluded = set(int(r) for r in exclude_rows)
    n = next(iter(embeddings.values())).shape[0]
    fetch = min(n, k + len(excluded) + 32)
    candidates: set[int] = set()
    for m, q in active.items():
        ids, _ = nearest_rows(indexes[m], embeddings[m], q, fetch)
        candidates.update(int(i) for i in ids)
    candidates -= excluded
    if not candidates:
        return []
    rows = np.fromiter(candidates, dtype=np.int64)
    total = sum(weights[m] for m in active)
    score = np.zeros(len(rows), np.float64)
    for m, q in active.items():
        score += weights[m] * (embeddings[m][rows].astype(np.float32, copy=False) @ np.asarray(q, np.float32))
    score /= total
    order = np.lexsort((rows, -score))[:k]  # ties broken by row for determinism
    return [(int(rows[i]), float(score[i])) for i in order]
