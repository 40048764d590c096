"""The heavy part of an index build on a Ray cluster: audio features and text embeddings.

``index build LIBRARY --out INDEX --ray ADDRESS`` sends every audio file that is not in the
feature cache to the cluster as one task, and the text to embed as batches, instead of using
the local process pool. Each task runs the same functions the local pool runs
(``index.build.compute_file_features``, ``index.text.TextEncoder``), so an index built either
way has the same codes (``tests/test_distributed.py`` checks it).

The files travel with the tasks (their bytes go through Ray's object store), so the workers
need no access to the library folder, only the same Python environment: this package and
its dependencies installed on every node, as Ray requires for any code it runs. Tasks are
retried on other workers when a worker dies (``MAX_RETRIES``); a file whose decoding fails in
every attempt is skipped with its reason, as in a local build.

``ADDRESS`` is what ``ray.init`` accepts: ``ray://head:10001``, ``head:6379``, or ``auto`` for
the cluster this machine belongs to (``RAY_ADDRESS`` or a running ``ray start``), falling back to
a Ray instance on this machine alone when there is none. A Ray session already started in this
process (``ray.init(num_cpus=2)``, say) is used as it is.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .text import TEXT_DIM, TEXT_ENCODER_NAME

# Attempts after the first when a worker process or node dies under a task.
MAX_RETRIES = 3
# Tasks kept in flight per cluster CPU: enough to keep every worker busy, few enough that the
# files in transit stay a small share of the object store.
IN_FLIGHT_PER_CPU = 2
TEXT_BATCH = 256


class ClusterError(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


def connect(address: str) -> dict[str, float]:
    """Join (or start) the Ray cluster named by ``address``; return its resources.

    Raises
    ------
    ClusterError
        Ray is not installed or ``address`` cannot be reached; the message says what to do.
    """
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs the ray package: pip install 'tonearm[ray]' (or pip install ray)") from None
    if not ray.is_initialized():
        # Workers import this package from the same environment; the offline settings travel along.
        env = {"env_vars": {k: os.environ.get(k, "1") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
               | {"TOKENIZERS_PARALLELISM": "false"}}
        try:
            if address == "auto":
                try:
                    ray.init(address="auto", runtime_env=env, logging_level="warning", log_to_driver=False)
                except ConnectionError:
                    ray.init(runtime_env=env, logging_level="warning", log_to_driver=False)
            else:
                _check_reachable(address)
                ray.init(address=address, runtime_env=env, logging_level="warning", log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise ClusterError(f"could not reach the Ray cluster at {address!r} ({e}); start it with `ray start "
                               "--head` or pass its address, e.g. --ray ray://HOST:10001") from None
    return dict(ray.cluster_resources())


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once on a HOST:PORT nobody listens on (``ray.init`` itself retries for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # not HOST:PORT: left to Ray to interpret
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {host}:{port}: {e}") from None


def _in_flight() -> int:
    import ray

    return max(2, IN_FLIGHT_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))


def _remote(fn):
    import ray

    return ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(fn)


def _features_of_bytes(name: str, data: bytes):
    """Worker side: write the file's bytes to a private temporary file and compute its features."""
    from .build import compute_file_features

    suffix = Path(name).suffix
    with tempfile.TemporaryDirectory(prefix="tonearm-") as tmp:
        path = Path(tmp) / f"audio{suffix}"
        path.write_bytes(data)
        return compute_file_features(str(path), name=name)


def audio_features(paths: Sequence[str], bar=None) -> list:
    """``index.build.FileFeatures`` of every path, computed as Ray tasks, in the order given.

    ``bar`` (a tqdm bar) is advanced as results arrive. A task that fails even after its retries
    (its worker killed each time) is reported as an error for its file, not raised.
    """
    import ray
    from ray.exceptions import RayError

    from .build import CRASH_REASON, FileFeatures

    task = _remote(_features_of_bytes)
    limit = _in_flight()
    pending: dict = {}
    done: dict[str, FileFeatures] = {}
    queue = iter(paths)
    while True:
        while len(pending) < limit and (p := next(queue, None)) is not None:
            try:
                data = Path(p).read_bytes()
            except OSError as e:
                done[p] = FileFeatures(p, error=f"could not be read ({e})")
                if bar is not None:
                    bar.update(1)
                continue
            pending[task.remote(p, data)] = p
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            p = pending.pop(ref)
            try:
                done[p] = ray.get(ref)
            except RayError as e:
                done[p] = FileFeatures(p, error=f"{CRASH_REASON} on every worker that tried it ({type(e).__name__})")
            if bar is not None:
                bar.update(1)
    return [done[p] for p in paths]


_WORKER_ENCODER = None


def _encode_batch(texts: list[str]) -> np.ndarray:
    """Worker side: one encoder per worker process, loaded on its first batch."""
    global _WORKER_ENCODER
    if _WORKER_ENCODER is None:
        from .text import TextEncoder

        _WORKER_ENCODER = TextEncoder()
    return _WORKER_ENCODER.encode(texts)


class RayTextEncoder:
    """The ``TextEncoder`` interface with the encoding done as Ray tasks, ``TEXT_BATCH`` texts each."""

    name = TEXT_ENCODER_NAME
    dim = TEXT_DIM

    def __init__(self, batch: int = TEXT_BATCH) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.batch = batch

    def encode(self, texts: list[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        import ray

        if not texts:
            return np.zeros((0, self.dim), np.float32)
        task = _remote(_encode_batch)
        refs = [task.remote(list(texts[i:i + self.batch])) for i in range(0, len(texts), self.batch)]
        return np.concatenate(ray.get(refs), axis=0).astype(np.float32)
