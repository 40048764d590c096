"""Shared fixtures.

The tokenizer used in tests is SmolLM2's real one, so tests see the same byte-level BPE,
chat template and special tokens as the product. Reading it out of the 98 MB GGUF takes
about 4 s, so it is saved once as ``tokenizer.json`` under pytest's cache directory
(``.pytest_cache``) and reloaded from there in about 0.2 s. The model in tests is a
randomly initialised two-layer Llama over that vocabulary (``tiny_model_like``).
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning; read when torch loads, so set before any import of it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Tests never read or write the person's own data (~/.cache/tonearm: feature caches, the demo):
# every run starts from an empty home, as a new machine does, and removes it at exit.
TEST_HOME = Path(tempfile.mkdtemp(prefix="tonearm-test-home-"))
os.environ["TONEARM_HOME"] = str(TEST_HOME)
atexit.register(shutil.rmtree, TEST_HOME, ignore_errors=True)
# Tests import the project packages from the repository root, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(request, tmp_path_factory) -> Path:
    """A directory holding SmolLM2's tokenizer (saved from the GGUF on first use)."""
    from assistant.llm import load_tokenizer, smollm2_gguf

    directory, name = smollm2_gguf()
    size = (directory / name).stat().st_size  # a new GGUF release gets a fresh cache entry
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir(f"smollm2-tokenizer-{size}") if cache is not None else tmp_path_factory.mktemp("tok")
    if not (root / "tokenizer.json").is_file():
        staging = tmp_path_factory.mktemp("tokenizer-staging")
        load_tokenizer().save_pretrained(staging)
        for path in staging.iterdir():
            shutil.copy2(path, root / path.name)
    return root


@pytest.fixture
def base_tokenizer(smollm2_tokenizer_dir):
    """A fresh SmolLM2 tokenizer without music tokens (tests may add tokens to it)."""
    from transformers import AutoTokenizer

    from assistant.llm import ensure_pad_token

    return ensure_pad_token(AutoTokenizer.from_pretrained(smollm2_tokenizer_dir))


@pytest.fixture
def tiny_model(base_tokenizer):
    """A random two-layer Llama (hidden 64, tied embeddings) over ``base_tokenizer``'s vocabulary."""
    from assistant.llm import tiny_model_like

    return tiny_model_like(base_tokenizer, seed=0)


@pytest.fixture
def music_vocab():
    """A small music vocabulary (about 40 tokens) with uneven codebook sizes."""
    from tokenizer.vocab import MusicVocab

    return MusicVocab({"playlist": 4, "tags": 12, "metadata": 6, "lyrics": 3, "audio": 10})


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread for the test: tiny models gain nothing from more, and on a busy
    two-core machine extra threads spin against other processes (ten times slower measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_assistant_dirs(tmp_path_factory):
    """(index_dir, model_dir) of a tiny catalog and a tiny trained model, built once per run."""
    from tiny_catalog import build_tiny_assistant

    return build_tiny_assistant(tmp_path_factory.mktemp("tiny-assistant"))
