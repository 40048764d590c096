"""From an index to a trained model directory, and the demo set-up that `make demo` runs."""
from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .conversations import CONVERSATIONS_DIR, conversations_path, read_conversations

if TYPE_CHECKING:  # the app imports this module; only training itself loads the trainer
    from .train import TrainConfig, TrainReport


def train_on_index(index_dir: str | Path, out: str | Path, *, base: str | None = None,
                   config: TrainConfig | None = None, seed: int = 0, progress: bool = True) -> TrainReport:
    """Synthesize conversations from the catalog, write them into
    ``out/conversations/{train,val,test,test-phrasing}/conversations.jsonl`` and fine-tune on
    train/val. Val and test walk the playlists the index holds out (``synth.write_splits``)."""
    from index.store import MusicIndex
    from tokenizer.vocab import MusicVocab

    from .model_dir import write_catalog_record
    from .synth import facts_lookup, write_splits
    from .train import TrainConfig, train

    index = MusicIndex.load(index_dir)
    out = Path(out)
    if not conversations_path(out, "train").is_file():
        write_splits(index.tracks, index.playlists, out / CONVERSATIONS_DIR,
                     heldout_playlists=index.heldout_playlists, seed=seed)
    train_convs = read_conversations(conversations_path(out, "train"))
    val_convs = read_conversations(conversations_path(out, "val"))
    report = train(base, train_convs, val_convs, index.track_codes, MusicVocab.from_manifest(index.manifest), out,
                   facts_for=facts_lookup(index.by_id), code_descriptions=index.code_descriptions(),
                   config=config or TrainConfig(), progress=progress)
    write_catalog_record(out, index)
    if val_convs:
        fitted = fit_reranker_for(out, index, val_convs, folds=0, progress=progress)
        if "skipped" in fitted and progress:
            print(fitted["skipped"])
        elif fitted.get("by_turn") and progress:
            from .rerank import describe_by_turn

            print(describe_by_turn(fitted["by_turn"]))
    return report


def fit_reranker_for(model_dir: str | Path, index, conversations: list[dict], *, folds: int = 5,
                     progress: bool = True, min_turns: int | None = None) -> dict:
    """Fit the learned re-rankers of ``model_dir`` on validation ``conversations`` and save them
    (``assistant.rerank``); ``folds`` > 1 also cross-validates them. Returns the report.

    With fewer than ``min_turns`` turns to score (default ``rerank.min_fit_turns()``) nothing is
    fitted: the model ranks by rank fusion, an earlier ``reranker.json`` is removed, and the
    report's ``skipped`` says why."""
    from .chat import MusicAssistant
    from .metrics import eval_turns
    from .rerank import RERANKER_FILE, fit_on_validation, min_fit_turns, save_rerankers

    needed = min_fit_turns() if min_turns is None else min_turns
    turns = sum(len(eval_turns(c)) for c in conversations)
    if turns < needed:
        (Path(model_dir) / RERANKER_FILE).unlink(missing_ok=True)
        return {"conversations": len(conversations), "turns": turns, "folds": folds,
                "skipped": f"{turns} validation turns are too few to fit a re-ranker on (it needs {needed}); "
                           f"the model ranks by rank fusion"}
    assistant = MusicAssistant(index, batch_sessions=True)  # the rows' blocks decode several sessions at once
    assistant.load_model(model_dir)
    # fitted from the rank fusion's searches, not an earlier fit
    assistant.retrieval.reranker = assistant.retrieval.later_reranker = None
    try:
        rerankers, report = fit_on_validation(assistant, conversations, folds=folds, progress=progress)
    finally:
        assistant.decoder.batcher.close()
    save_rerankers(model_dir, rerankers, report)
    return report


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
        from index.demo import build_demo_index

        log(f"Building the demo catalog in {root} (first run only: downloads free music, renders scores, indexes them)")
        build_demo_index(root, progress=progress, log=log)
    retire_outdated_model(model_dir, log=log)
    if with_model and not (model_dir / "train_report.json").is_file():
        log(f"Training the demo model into {model_dir} (first run only, about 15 minutes on 2 cores)")
        report = train_on_index(index_dir, model_dir, progress=progress)
        log(f"Trained {report.steps} steps (sequence length {report.seq_len}); validation loss {report.val_loss:.3f}")
    return index_dir, model_dir


def retire_outdated_model(model_dir: str | Path, log=print) -> bool:
    """Move a demo model trained in an older reply format aside (to ``MODEL.outdated``), so it
    is trained again rather than resumed. Returns whether one was moved."""
    import shutil

    from .model_dir import MODEL_RECORD, REPLY_FORMAT, read_model_record

    model_dir = Path(model_dir)
    if not (model_dir / MODEL_RECORD).is_file() or read_model_record(model_dir).get("reply_format") == REPLY_FORMAT:
        return False  # nothing there, or a model (finished or not) of this version
    aside = model_dir.with_name(model_dir.name + ".outdated")
    shutil.rmtree(aside, ignore_errors=True)
    model_dir.rename(aside)
    log(f"The demo model in {model_dir} was trained for an older version; moved it to {aside} to train anew")
    return True


class BackgroundTraining:
    """Fine-tunes a model for an index in a child process, so a chat can answer meanwhile.

    The child is ``python -m assistant train INDEX --out MODEL``, which resumes an interrupted
    run, so stopping the app mid-training loses at most the steps since the last checkpoint.
    Its output goes to ``MODEL.log`` (beside the model directory). When it succeeds,
    ``on_ready(model_dir)`` is called from a watcher thread.

    ``status()`` says, in a sentence a person can read, where training stands; ``wait()``
    blocks until the model is ready or training failed.
    """

    def __init__(self, index_dir: str | Path, model_dir: str | Path, on_ready=None, train_args: tuple[str, ...] = ()):
        self.index_dir, self.model_dir = Path(index_dir), Path(model_dir)
        self.train_args = tuple(train_args)  # more options for `assistant train` (--base, --steps, ...)
        self.log_path = self.model_dir.with_name(self.model_dir.name + ".log")
        self.on_ready = on_ready
        self.state = "not started"  # -> "training" -> "loading" -> "ready" | "failed"
        self.error = ""
        self._process = None
        self._started = 0.0

    def start(self) -> "BackgroundTraining":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "assistant", "train", str(self.index_dir), "--out", str(self.model_dir),
             *self.train_args],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=str(Path(__file__).resolve().parents[1]))
        log_file.close()
        self._started = time.monotonic()
        self.state = "training"
        atexit.register(self.stop)  # the run resumes from its checkpoint next time
        threading.Thread(target=self._watch, name="model-training", daemon=True).start()
        return self

    def _watch(self) -> None:
        code = self._process.wait()
        if code != 0 or not (self.model_dir / "train_report.json").is_file():
            self.state, self.error = "failed", f"training exited with status {code}; see {self.log_path}"
            return
        self.state = "loading"
        try:
            if self.on_ready is not None:
                self.on_ready(self.model_dir)
        except Exception as e:  # the chat goes on without the model
            self.state, self.error = "failed", f"the trained model could not be loaded ({type(e).__name__}: {e})"
            return
        self.state = "ready"

    def progress(self) -> str:
        """The trainer's own last progress line ("fine-tuning: 40%|... 48/121"), shortened; "" if none yet."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, 2) - 4096))
                tail = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        found = re.findall(r"(fine-tuning|frozen layers, once|synthesizing[^:]*):\s*(\d+)%", tail)
        return f"{found[-1][0]} {found[-1][1]}%" if found else ""

    def status(self) -> str:
        if self.state == "training":
            minutes = (time.monotonic() - self._started) / 60
            where = self.progress()
            return (f"The language model is training in the background ({where + ', ' if where else ''}"
                    f"{minutes:.0f} min so far, about 15 in all). Until it is ready, answers come from the "
                    "catalog's search: your words, the tracks you played, and the facts you ask for.")
        if self.state == "loading":
            return "The language model has finished training and is being loaded; it answers from the next turn."
        if self.state == "ready":
            return "The language model is ready: answers now use its music tokens."
        if self.state == "failed":
            return f"The language model could not be trained ({self.error}). Answers come from the catalog's search."
        return ""

    def wait(self, timeout: float | None = None) -> str:
        """Wait for the outcome ("ready" or "failed"; the current state on a timeout) and return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.state in ("training", "loading") and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
        return self.state

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except Exception:
                self._process.kill()
