"""A small synthetic library, built in seconds, for tests that need a real index.

Four styles, four tracks each: the audio really differs in tempo, pitch register, key and
percussiveness, and the tags and playlists say what a person would say about it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050
STYLES = {
    # name: (tags, tempo, root midi, minor?, percussive?, artist)
    "calm_piano": (["calm", "piano", "ambient", "soft"], 66, 60, False, False, "Lena Harrow"),
    "fast_electronic": (["electronic", "dance", "fast", "synth"], 140, 48, True, True, "Circuit Veil"),
    "folk_reels": (["folk", "reel", "fiddle", "dance tune"], 112, 62, False, True, "The Gorse Band"),
    "dark_orchestral": (["orchestral", "dark", "soundtrack", "strings"], 84, 45, True, False, "Aurelian Ensemble"),
}


def synth_track(tempo: float, root_midi: int, minor: bool, percussive: bool, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    scale = [0, 2, 3, 5, 7, 8, 10, 12] if minor else [0, 2, 4, 5, 7, 9, 11, 12]
    beat = 60.0 / tempo
    y = np.zeros_like(t)
    for i, start in enumerate(np.arange(0, seconds, beat)):
        note = root_midi + scale[(i * 2 + seed) % len(scale)]
        f = 440.0 * 2 ** ((note - 69) / 12)
        seg = (t >= start) & (t < start + beat)
        tt = t[seg] - start
        env = np.exp(-tt * (6 if percussive else 1.5))
        y[seg] += 0.3 * env * (np.sin(2 * np.pi * f * tt) + 0.3 * np.sin(2 * np.pi * 2 * f * tt))
        if percussive:
            n = min(len(tt), int(0.03 * SR))
            y[np.where(seg)[0][:n]] += 0.5 * rng.normal(size=n) * np.exp(-np.arange(n) / (0.005 * SR))
    return (y / max(1e-9, np.abs(y).max()) * 0.8).astype(np.float32)


def make_tiny_library(root: Path, seconds: float = 6.0, per_style: int = 4) -> Path:
    """Write audio, metadata.jsonl and one playlist per style under ``root``; return ``root``."""
    root = Path(root)
    (root / "playlists").mkdir(parents=True, exist_ok=True)
    meta = []
    for s, (name, (tags, tempo, root_midi, minor, perc, artist)) in enumerate(STYLES.items()):
        files = []
        for i in range(per_style):
            rel = f"{name}/{name}_{i + 1}.wav"
            (root / name).mkdir(exist_ok=True)
            y = synth_track(tempo * (1 + 0.08 * i), root_midi + i, minor, perc, seconds, seed=10 * s + i)
            sf.write(root / rel, y, SR)
            files.append(rel)
            title = f"{name.replace('_', ' ').title()} No. {i + 1}"
            meta.append({"file": rel, "title": title, "artist": artist, "album": name.replace("_", " ").title(),
                         "year": str(1990 + s * 5 + i), "tags": tags})
        (root / "playlists" / f"{name}.m3u").write_text("\n".join(f"../{f}" for f in files) + "\n")
    meta.append({"id": "poem-1", "title": "Night Words", "artist": "Lena Harrow", "tags": ["spoken word", "calm"],
                 "lyrics": "quiet rivers under moonlight, the night is soft and slow"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return root


def build_tiny_assistant(root: Path, steps: int = 4) -> tuple[Path, Path]:
    """A tiny catalog's index and a tiny randomly initialised model trained a few steps on it.

    The model has SmolLM2's tokenizer and architecture family but two small layers, so the whole
    pipeline (music tokens, LoRA training, constrained generation, retrieval) runs in seconds.
    """
    from assistant.llm import load_tokenizer, tiny_model_like
    from assistant.conversations import CONVERSATIONS_DIR, read_conversations
    from assistant.synth import facts_lookup, write_splits
    from assistant.train import TrainConfig, train
    from index.build import build_index
    from index.store import MusicIndex
    from tokenizer.vocab import MusicVocab

    root = Path(root)
    lib = make_tiny_library(root / "lib")
    index_dir, model_dir = root / "index", root / "model"
    build_index(lib, index_dir, progress=False, log=lambda s: None)
    index = MusicIndex.load(index_dir)
    tok = load_tokenizer()
    paths = write_splits(index.tracks, index.playlists, model_dir / CONVERSATIONS_DIR,
                         heldout_playlists=index.heldout_playlists, seed=0, progress=False)
    train(None, read_conversations(paths["train"]), read_conversations(paths["val"]), index.track_codes, MusicVocab.from_manifest(index.manifest), model_dir,
          facts_for=facts_lookup(index.by_id), code_descriptions=index.code_descriptions(), model=tiny_model_like(tok), tokenizer=tok, progress=False,
          config=TrainConfig(max_steps=steps, seq_len=128, batch_size=4, eval_every=2, time_budget_s=None))
    return index_dir, model_dir
