"""From an index to a trained model directory, and the demo set-up that `make demo` runs."""
from __future__ import annotations

from pathlib import Path

from .train import TrainConfig, TrainReport

CONVERSATIONS_DIR = "conversations"


def conversations_path(model_dir: str | Path, split: str) -> Path:
    return Path(model_dir) / CONVERSATIONS_DIR / split / "conversations.jsonl"


def train_on_index(index_dir: str | Path, out: str | Path, *, base: str | None = None,
                   config: TrainConfig | None = None, seed: int = 0, progress: bool = True) -> TrainReport:
    """Synthesize conversations from the catalog (split by playlist), write them into
    ``out/conversations/{train,val,test}/conversations.jsonl`` and fine-tune on train/val."""
    from index.store import MusicIndex
    from tokenizer.vocab import MusicVocab

    from .synth import read_jsonl, write_splits
    from .train import train

    index = MusicIndex.load(index_dir)
    out = Path(out)
    if not conversations_path(out, "train").is_file():
        write_splits(index.tracks, index.playlists, out / CONVERSATIONS_DIR, seed=seed)
    train_convs = read_jsonl(conversations_path(out, "train"))
    val_convs = read_jsonl(conversations_path(out, "val"))
    return train(base, train_convs, val_convs, index.track_codes, MusicVocab.from_manifest(index.manifest), out,
                 code_descriptions=index.code_descriptions(), config=config or TrainConfig(), progress=progress)


def ensure_demo(root: str | Path | None = None, *, with_model: bool = True, progress: bool = True,
                log=print) -> tuple[Path, Path]:
    """The demo index and model directories, building whichever is missing (with progress).

    With ``with_model=False`` only the index is built; the model directory may then not exist.
    """
    from index.paths import demo_dir
    from index.store import IndexLoadError, read_manifest

    root = Path(root) if root else demo_dir()
    index_dir, model_dir = root / "index", root / "model"
    try:
        read_manifest(index_dir, verify=False)
    except IndexLoadError:
        from index.build import build_index
        from index.demo import assemble_demo_library

        log(f"Building the demo catalog in {root} (first run only: downloads free music, renders scores, indexes them)")
        assemble_demo_library(root / "library", progress=progress)
        report = build_index(root / "library", index_dir, progress=progress, log=log)
        log(report.to_text())
    if with_model and not (model_dir / "train_report.json").is_file():
        log(f"Training the demo model into {model_dir} (first run only, about 15 minutes on 2 cores)")
        report = train_on_index(index_dir, model_dir, progress=progress)
        log(f"Trained {report.steps} steps (sequence length {report.seq_len}); validation loss {report.val_loss:.3f}")
    return index_dir, model_dir
