"""LoRA fine-tuning that teaches the language model to answer with music tokens.

Each assistant turn of a training conversation becomes the turn's text followed by the
music block of its first track. The model learns this with peft LoRA on the attention and
MLP projections, plus full training of the music-token rows only (peft
``trainable_token_indices``), so the 49k rows of the base vocabulary stay frozen.

By default LoRA adapts only the top decoder layers (``TrainConfig.train_layers``): the frozen
layers below give the same output every epoch, so it is computed once per example, when the
example is first used, and replayed after that; a step of a later epoch pays for the top layers
alone. On two cores that turns 36 steps of the 135M model in a 13-minute budget into 111.

The output directory is both a checkpoint and a model (``assistant.model_dir`` tells its layout).

Training stops at ``max_steps``, or when validation has not improved for ``patience`` passes
(the weights kept are the best pass's), or, gracefully, when ``time_budget_s`` is about to run
out; after a few steps it measures its own speed and fits the learning-rate schedule into the
budget, and fits it again after every step (the median step so far), so a short budget still ends
with a decayed learning rate and a slow start does not shorten the run.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from assistant.examples import IGNORE, build_examples, collate
from assistant.llm import DEFAULT_BASE, ensure_pad_token, load_base, native_bf16
from assistant.familiarity import RequestWords
from assistant.model_dir import DEFAULT_SYSTEM_PROMPT, MODEL_RECORD, REPLY_FORMAT, FactsFor, SAVED_BASE_DIR, read_model_record, untie_output_rows
from tokenizer.hf import add_music_tokens, music_token_ids
from tokenizer.vocab import MusicVocab

STATE_FILE = "train_state.pt"
REPLAY_LOOKAHEAD = 12  # steps whose new examples go through the frozen layers together, sorted by length
LENGTH_BUCKET_STEPS = REPLAY_LOOKAHEAD  # steps whose examples are batched by length, against padding
REPORT_FILE = "train_report.json"
# Projection names LoRA adapts in Llama-family models (SmolLM2, Llama, Qwen, Mistral, ...).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    """Fine-tuning settings. The defaults fit about 12 minutes on two CPU cores with SmolLM2-135M.

    Attributes
    ----------
    max_steps : int
        Optimizer steps in total, counted across resumed runs.
    seq_len : int
        Longest example in tokens; older turns are dropped to fit.
    batch_size, grad_accum : int
        Examples per forward pass and passes per optimizer step.
    lr : float
        Peak learning rate of the LoRA weights.
    token_lr : float or None
        Peak learning rate of the music-token rows (None: same as ``lr``).
    lora_r, lora_alpha, lora_dropout
        LoRA rank, scale and dropout.
    warmup : int
        Linear warm-up steps; a cosine decay to 10 % follows.
    eval_every : int
        Steps between validation passes (each also writes a checkpoint).
    eval_examples : int
        Validation examples scored per pass (the first ones, so passes are comparable).
    seed : int
    time_budget_s : float or None
        Wall-clock seconds for one ``train`` call, loading included; None for no limit.
    num_threads : int or None
        torch CPU threads; None leaves torch's default.
    device : str
        "auto" (CUDA when available), "cpu" or "cuda".
    bf16 : bool or None
        Run forward passes under bfloat16 autocast (weights and optimizer stay float32).
        None: only where the hardware computes bfloat16 natively (CPUs with AMX or
        AVX512-BF16, recent GPUs), where it is about 1.5-2x faster.
    train_layers : int or None
        LoRA adapts only the top ``train_layers`` decoder layers. The layers below are then
        frozen, so their output for each example is computed once (when the example is first
        used: a budget shorter than an epoch pays for no more) and replayed after that,
        and a step runs forward and backward through the top layers only (about 3x faster
        with 8 of SmolLM2's 30). This freezes the music input rows at their text
        initialisation and gives the output layer music rows of its own, trained. The
        replayed states are kept in memory, about 220 KB per example at 192 tokens for
        SmolLM2. None, or at least the model's depth: every layer is adapted, nothing is
        replayed.
    code_loss_weight : float
        Weight of each music-code token in the loss, against 1 for every other target token (a
        reply has five codes and some thirty words; the codes are what retrieval reads).
    patience : int or None
        Validation passes in a row without a new best validation loss after which training
        stops (None: never stop early). Either way the weights saved at the end are those of
        the best pass, so a small catalog that the model starts to memorise keeps the model
        from before it did. Validation runs every ``eval_every`` steps, or every epoch of the
        training examples when that is sooner.
    """

    max_steps: int = 400
    seq_len: int = 256
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-3
    token_lr: float | None = 4e-3
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    warmup: int = 10
    eval_every: int = 50
    eval_examples: int = 64
    seed: int = 0
    time_budget_s: float | None = 720.0
    num_threads: int | None = 2
    device: str = "auto"
    bf16: bool | None = None
    train_layers: int | None = 8
    code_loss_weight: float = 4.0
    patience: int | None = 3

    def __post_init__(self) -> None:
        for name in ("max_steps", "seq_len", "batch_size", "grad_accum", "lora_r", "eval_every", "eval_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.train_layers is not None and self.train_layers < 1:
            raise ValueError(f"TrainConfig.train_layers must be at least 1 or None, got {self.train_layers}")
        if self.lr <= 0 or (self.token_lr is not None and self.token_lr <= 0):
            raise ValueError("learning rates must be positive")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"TrainConfig.patience must be at least 1 or None, got {self.patience}")
        if self.code_loss_weight <= 0:
            raise ValueError(f"TrainConfig.code_loss_weight must be positive, got {self.code_loss_weight}")
        if self.warmup < 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError("warmup must be >= 0 and lora_dropout in [0, 1)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")


@dataclass
class TrainReport:
    """What one ``train`` call did.

    ``steps`` is the total optimizer step count of the model (resumed runs included);
    ``train_loss`` the mean loss of this run's last steps (up to 20); ``val_loss`` the
    validation loss of the weights saved, the best pass's (NaN without validation data);
    ``best_step`` the step those weights are from; ``seconds`` this call's wall time;
    ``stopped_by`` "max_steps", "time_budget" or "validation" (``patience`` passes without a
    new best).
    """

    steps: int
    seq_len: int
    train_loss: float
    val_loss: float
    seconds: float
    examples: int
    first_train_loss: float = float("nan")
    steps_this_run: int = 0
    seconds_per_step: float = float("nan")
    stopped_by: str = "max_steps"
    bf16: bool = False
    val_history: list[tuple[int, float]] = field(default_factory=list)
    best_step: int = 0


# ---- batches ------------------------------------------------------------------------------


def _batch_for(step: int, micro: int, examples: list[dict], config: TrainConfig) -> list[dict]:
    """The examples of one micro-batch, a pure function of the step so resuming replays nothing."""
    n = len(examples)
    lengths = tuple(len(e["input_ids"]) for e in examples)
    first = (step * config.grad_accum + micro) * config.batch_size
    batch = []
    for position in range(first, first + config.batch_size):
        epoch, offset = divmod(position, n)
        order = epoch_order(lengths, config.seed * 100_003 + epoch, config.batch_size,
                            config.batch_size * config.grad_accum * LENGTH_BUCKET_STEPS)
        batch.append(examples[order[offset]])
    return batch


@lru_cache(maxsize=4)
def epoch_order(lengths: tuple[int, ...], seed: int, batch_size: int, window: int) -> tuple[int, ...]:
    """The order an epoch takes the examples of these ``lengths`` in: shuffled, then each
    ``window`` of it sorted by length into batches of ``batch_size``, whose order is shuffled.

    A batch is padded to its longest example; drawn at random the demo's batches were 17 %
    padding, drawn from a window of twelve steps' examples 2 %. The examples still meet each
    epoch in a new order and company.

    >>> sorted(epoch_order((5, 1, 4, 2, 3, 6), seed=0, batch_size=2, window=6))
    [0, 1, 2, 3, 4, 5]
    """
    if batch_size < 1 or window < 1:
        raise ValueError(f"batch_size and window must be positive, got {batch_size} and {window}")
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(len(lengths), generator=generator).tolist()
    order: list[int] = []
    for start in range(0, len(shuffled), window):
        by_length = sorted(shuffled[start:start + window], key=lambda i: lengths[i])
        batches = [by_length[i:i + batch_size] for i in range(0, len(by_length), batch_size)]
        for b in torch.randperm(len(batches), generator=generator).tolist():
            order += batches[b]
    return tuple(order)


# ---- model set-up ---------------------------------------------------------------------------


def _module_leaf_name(model, module) -> str:
    return next(name for name, m in model.named_modules() if m is module).rsplit(".", 1)[-1]


def _lora_config(model, token_ids: list[int], config: TrainConfig, frozen_layers: int = 0):
    from peft import LoraConfig

    linear_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = [name for name in LORA_TARGETS if name in linear_names] or "all-linear"
    embeddings = model.get_input_embeddings()
    output = model.get_output_embeddings()
    token_layers = {_module_leaf_name(model, embeddings): list(token_ids)}
    # A tied lm_head follows the embedding rows by itself; an untied one needs its own rows trained.
    if output is not None and output.weight.data_ptr() != embeddings.weight.data_ptr():
        token_layers[_module_leaf_name(model, output)] = list(token_ids)
    layers = None
    if frozen_layers:
        _, decoder_stack = decoder_layers(model)
        layers = list(range(frozen_layers, len(decoder_stack)))
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        layers_to_transform=layers,
        trainable_token_indices=token_layers,
        task_type="CAUSAL_LM",
    )


# ---- frozen bottom layers, computed once and replayed ----------------------------------------


def decoder_layers(model) -> tuple[torch.nn.Module | None, torch.nn.ModuleList | None]:
    """The decoder and its list of layers (``model.model.layers`` in Llama-family models).

    (None, None) for models laid out otherwise; those train every layer.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, "model", None)
    layers = getattr(decoder, "layers", None)
    return (decoder, layers) if isinstance(layers, torch.nn.ModuleList) else (None, None)


def frozen_layer_count(model, config: TrainConfig) -> int:
    """How many bottom decoder layers ``config`` freezes and replays (0: none)."""
    _, layers = decoder_layers(model)
    if config.train_layers is None or layers is None:
        return 0
    return max(0, len(layers) - config.train_layers)


class _Replay(torch.nn.Module):
    """Stands in for the frozen bottom layers: returns the output they gave, saved earlier."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, hidden_states, *args, **kwargs):
        return self.hidden


@contextmanager
def _layers_replaced(decoder: torch.nn.Module, layers: list[torch.nn.Module]):
    original = decoder.layers
    decoder.layers = torch.nn.ModuleList(layers)
    try:
        yield
    finally:
        decoder.layers = original


@torch.no_grad()
def add_replay_states(model, examples: list[dict], frozen_layers: int, pad_id: int, batch_size: int, device,
                      bf16: bool = False, progress: bool = False) -> None:
    """Store in each example the output of the bottom ``frozen_layers`` layers, as ``"replay"``.

    One row per token, float16 where the values fit (half the memory), float32 otherwise.
    Examples are run in order of length so batches carry little padding.
    """
    from tqdm.auto import tqdm

    decoder, layers = decoder_layers(model)
    if decoder is None or not 0 < frozen_layers < len(layers):
        raise ValueError(f"cannot replay {frozen_layers} layers of this model")
    captured: dict[str, torch.Tensor] = {}

    def keep_output(module, args, output):
        captured["hidden"] = output[0] if isinstance(output, tuple) else output

    hook = layers[frozen_layers - 1].register_forward_hook(keep_output)
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    try:
        with _layers_replaced(decoder, list(layers[:frozen_layers])):
            for first in tqdm(range(0, len(order), batch_size), desc="frozen layers, once", disable=not progress,
                              dynamic_ncols=True, leave=False):
                chunk = [examples[i] for i in order[first : first + batch_size]]
                batch = collate(chunk, pad_id)
                with _autocast(torch.device(device), bf16):
                    decoder(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
                for row, example in enumerate(chunk):
                    hidden = captured["hidden"][row, : len(example["input_ids"])].float().cpu()
                    half = hidden.half()
                    example["replay"] = half if torch.isfinite(half).all() else hidden
    finally:
        hook.remove()
        model.train(was_training)


def _optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    token_params, lora_params = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (token_params if "trainable_tokens" in name else lora_params).append(parameter)
    groups = [{"params": lora_params, "lr": config.lr, "peak_lr": config.lr}]
    if token_params:
        token_lr = config.token_lr or config.lr
        groups.append({"params": token_params, "lr": token_lr, "peak_lr": token_lr})
    return torch.optim.AdamW(groups, weight_decay=0.0)


def _lr_scale(step: int, planned: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 % at ``planned`` steps."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, planned - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def target_loss(model, batch: dict[str, torch.Tensor], frozen_layers: int = 0,
                weighted: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
    """Mean cross-entropy over the target tokens of ``batch`` (labels other than ``IGNORE``).

    ``weighted`` = (token ids, w) counts each target token among those ids w times.

    The model's own loss projects every position onto the whole vocabulary (49k rows for
    SmolLM2), though only assistant tokens carry loss; here the decoder runs once and only the
    target positions go through the output layer, sparing the projection of every prompt token.
    Models without a separate decoder and head, or with logit soft-capping, use their own loss.
    With ``frozen_layers`` and a ``"replay"`` in the batch, the bottom layers are not run: their
    saved output enters the first trained layer.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = getattr(base, "model", None), base.get_output_embeddings()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    if decoder is None or head is None or getattr(base.config, "final_logit_softcapping", None):
        if weighted is not None and weighted[1] != 1.0:
            raise ValueError("code_loss_weight needs a model with a separate decoder and output layer")
        return model(**inputs, labels=batch["labels"]).loss
    replay = batch.get("replay") if frozen_layers else None
    bottom_replayed = (nullcontext() if replay is None else
                       _layers_replaced(decoder, [_Replay(replay)] + list(decoder.layers[frozen_layers:])))
    with bottom_replayed:
        hidden = decoder(**inputs).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = head(hidden[:, :-1][keep])
    if weighted is None or weighted[1] == 1.0:
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep])
    losses = torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="none")
    weights = torch.where(torch.isin(targets[keep], weighted[0]), weighted[1], 1.0)
    return (losses * weights).sum() / weights.sum()


@torch.no_grad()
def evaluate_loss(model, examples: Sequence[dict], pad_id: int, batch_size: int, device,
                  bf16: bool = False, frozen_layers: int = 0) -> float:
    """Mean loss per target token over ``examples`` (NaN when there are none)."""
    if not examples:
        return float("nan")
    device = torch.device(device)
    _replay_missing(model, examples, frozen_layers, pad_id, batch_size, device, bf16)  # once; reused by later passes
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[i : i + batch_size], pad_id).items()}
        tokens = int((batch["labels"][:, 1:] != IGNORE).sum())
        if tokens:
            with _autocast(device, bf16):
                loss = target_loss(model, batch, frozen_layers)
            total += float(loss) * tokens
            count += tokens
    model.train(was_training)
    return total / count if count else float("nan")


# ---- training ------------------------------------------------------------------------------


def train(
    base: str | None,
    conversations_train: Sequence[dict],
    conversations_val: Sequence[dict],
    codes_for: Callable[[str], dict[str, int]],
    vocab: MusicVocab,
    out_dir: str | Path,
    *,
    facts_for: FactsFor | None = None,
    code_descriptions: dict[str, dict[int, str]] | None = None,
    config: TrainConfig = TrainConfig(),
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    progress: bool = True,
    model=None,
    tokenizer=None,
) -> TrainReport:
    """Fine-tune a base model on conversations and save it to ``out_dir``; resume if it holds a run.

    Parameters
    ----------
    base : str or None
        Base model name or directory for ``assistant.llm.load_base`` (None: SmolLM2-135M).
    conversations_train, conversations_val : sequence of dict
        Conversations in the design's format.
    codes_for : callable
        Track id to ``{modality: code}``.
    vocab : MusicVocab
    out_dir : path
        Model directory written (and resumed from).
    facts_for : callable, optional
        ``(track_id, previous_id, first_id) -> text``: the catalog's facts placed after each
        block (``assistant.synth.facts_lookup``); the chat gives the same. None leaves them out.
    code_descriptions : dict, optional
        Text per code for initialising the new token rows (``tokenizer.hf.add_music_tokens``).
    config : TrainConfig
    system_prompt : str
        Used in every example and recorded in the model directory for chatting.
    progress : bool
        Show a tqdm bar with the loss.
    model, tokenizer : optional
        An already loaded base model and tokenizer (for example ``tiny_model_like`` in tests);
        both are modified in place (music tokens, LoRA layers). With ``base=None`` the given
        model is first saved under ``out_dir/base`` so the directory loads on its own.

    Returns
    -------
    TrainReport
    """
    threads_before = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        return _train(base, conversations_train, conversations_val, codes_for, vocab, Path(out_dir),
                      code_descriptions, config, system_prompt, progress, model, tokenizer, facts_for)
    finally:
        torch.set_num_threads(threads_before)


@dataclass
class _TimeBudget:
    """The wall-clock budget of a run: whether one more step still fits, and how many steps do.

    A step's cost is the median of those measured, apart from the frozen layers' first pass over
    its examples (``replay``), which only the first epoch's steps pay; the run must always keep
    room for its last validation pass and checkpoint (estimated until one has been measured).
    """

    started: float
    budget_s: float | None
    val_examples: int
    examples_per_step: int
    first_epoch_steps: int = 0  # steps before this one meet examples the frozen layers have not run over
    step_seconds: list[float] = field(default_factory=list)  # training alone, the replay apart
    replay_seconds: float = 0.0  # the frozen layers' first passes so far ...
    replay_steps: int = 0  # ... and how many steps' examples they covered
    eval_seconds: float | None = None  # a validation pass plus checkpoint, once measured

    def typical_step(self) -> float:
        return sorted(self.step_seconds)[len(self.step_seconds) // 2] if self.step_seconds else 0.0

    def typical_replay(self) -> float:
        """Seconds of first passes per first-epoch step (they run for several steps at once)."""
        return self.replay_seconds / self.replay_steps if self.replay_steps else 0.0

    def finishing_cost(self) -> float:
        if self.eval_seconds is not None:
            return self.eval_seconds
        # Until measured: forward-only scoring costs about a third of a training step per example,
        # and a first pass also runs the frozen layers over the validation examples.
        per_batch = self.typical_step() / 3 + self.typical_replay()
        return per_batch * self.val_examples / self.examples_per_step + 1.0

    def seconds_left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def next_step_cost(self, step: int) -> float:
        return self.typical_step() + (self.typical_replay() if step < self.first_epoch_steps else 0.0)

    def room_for_a_step(self, step: int) -> bool:
        return self.budget_s is None or self.next_step_cost(step) + self.finishing_cost() <= self.seconds_left()

    def planned_steps(self, step: int, eval_every: int, max_steps: int) -> int:
        """The step the learning-rate schedule should end at, seen from ``step``: no later than
        ``max_steps`` and never before ``step`` (a run out of time ends at once)."""
        return max(step, min(max_steps, step + self.affordable_steps(step, eval_every)))

    def affordable_steps(self, step: int, eval_every: int) -> int:
        """Steps after ``step`` that fit in what is left, the first epoch's replays and validation
        passes every ``eval_every`` steps included."""
        per_step = self.typical_step() + self.finishing_cost() / eval_every
        left = self.seconds_left() - self.finishing_cost()
        replaying = max(0, self.first_epoch_steps - step)
        first_epoch_cost = replaying * (per_step + self.typical_replay())
        if left <= first_epoch_cost:
            return int(left / (per_step + self.typical_replay()))
        return replaying + int((left - first_epoch_cost) / per_step)


@dataclass
class _PreparedModel:
    model: Any
    tokenizer: Any
    token_ids: tuple[int, int]
    frozen: int  # bottom layers frozen and replayed
    untied: bool  # the output layer was given rows of its own
    base_record: str


def _prepare_model(base, model, tokenizer, out: Path, vocab: MusicVocab, code_descriptions, config: TrainConfig,
                   resuming: bool, device) -> _PreparedModel:
    """The base model with music tokens and LoRA (a fresh adapter, or the one in ``out`` to resume)."""
    from peft import PeftModel, get_peft_model

    if (model is None) != (tokenizer is None):
        raise ValueError("pass both model and tokenizer, or neither")
    # Recorded so the directory loads from anywhere: the default's name, else an absolute path.
    base_record = DEFAULT_BASE if base in (None, DEFAULT_BASE) else str(Path(base).expanduser().resolve())
    if model is None:
        model, tokenizer = load_base(base)
    else:
        ensure_pad_token(tokenizer)
        if base is None:
            base_record = SAVED_BASE_DIR
            if not (out / SAVED_BASE_DIR / "config.json").is_file():
                model.save_pretrained(out / SAVED_BASE_DIR)
                tokenizer.save_pretrained(out / SAVED_BASE_DIR)
    token_ids = add_music_tokens(tokenizer, model, vocab, code_descriptions)
    model.config.use_cache = False
    frozen = frozen_layer_count(model, config)
    if resuming:
        saved_frozen = read_model_record(out).get("frozen_layers", 0)
        if saved_frozen != frozen:
            raise ValueError(f"{out} was trained with {saved_frozen} frozen bottom layers, this configuration "
                             f"freezes {frozen}; resume with the same train_layers or use a new output directory")
    # Frozen bottom layers are replayed, which needs fixed input rows; the output rows train alone.
    untied = untie_output_rows(model) if frozen else False
    torch.manual_seed(config.seed)
    if resuming:
        model = PeftModel.from_pretrained(model, out, is_trainable=True)
    else:
        model = get_peft_model(model, _lora_config(model, token_ids, config, frozen))
    if frozen:
        input_rows = f".{_module_leaf_name(model, model.get_input_embeddings())}."
        for name, parameter in model.named_parameters():
            if "trainable_tokens" in name and input_rows in name:
                parameter.requires_grad_(False)
    model.to(device)
    model.train()
    return _PreparedModel(model, tokenizer, token_ids, frozen, untied, base_record)


def _save_checkpoint(out: Path, prepared: _PreparedModel, vocab: MusicVocab, system_prompt: str,
                     config: TrainConfig, optimizer, state: dict) -> None:
    """Write the model directory (adapter, tokenizer, vocabulary, record) and the resumable state."""
    prepared.model.save_pretrained(out, save_embedding_layers=False)
    prepared.tokenizer.save_pretrained(out)
    vocab.save(out)
    record = {
        "format_version": 1,
        "reply_format": REPLY_FORMAT,
        "base": prepared.base_record,
        "system_prompt": system_prompt,
        "music_token_ids": {"start": prepared.token_ids[0], "end": prepared.token_ids[1]},
        "lora": {"r": config.lora_r, "alpha": config.lora_alpha},
        "frozen_layers": prepared.frozen,
        "untied_output": prepared.untied,
    }
    (out / MODEL_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    payload = {**state, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
               "config": asdict(config)}
    torch.save(payload, out / (STATE_FILE + ".tmp"))
    os.replace(out / (STATE_FILE + ".tmp"), out / STATE_FILE)  # never a half-written state


def _restore_state(out: Path, optimizer, state: dict) -> None:
    """Resume: the optimizer, the random state and the step counts of the run saved in ``out``."""
    saved = torch.load(out / STATE_FILE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    state.update({k: saved[k] for k in ("step", "loss_history", "val_history")})
    state.update({k: saved[k] for k in ("best", "since_best", "stopped_early") if k in saved})  # older: none
    # planned_steps stays max_steps: the schedule is planned afresh over the steps left.


def _trainable_weights(model) -> dict[str, torch.Tensor]:
    """A copy of the weights training changes (LoRA and the music rows: a few MB)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def _load_trainable_weights(model, weights: dict[str, torch.Tensor]) -> None:
    for name, parameter in model.named_parameters():
        if name in weights:
            parameter.copy_(weights[name].to(parameter.device))


def validation_interval(config: TrainConfig, n_train_examples: int) -> int:
    """Steps between validation passes: ``eval_every``, or one epoch when that is shorter, so a
    small catalog is checked before it is learned by heart."""
    epoch = math.ceil(n_train_examples / (config.batch_size * config.grad_accum))
    return max(1, min(config.eval_every, epoch))


def _replay_missing(model, examples: Sequence[dict], frozen: int, pad_id: int, batch_size: int, device,
                    bf16: bool) -> float:
    """Run the frozen layers over the ``examples`` that have no replay yet; the seconds it took.

    Done when an example is first used rather than for all of them up front: a budget that
    covers less than an epoch pays only for the examples it reaches."""
    missing = [e for e in examples if "replay" not in e] if frozen else []
    if not missing:
        return 0.0
    tick = time.monotonic()
    add_replay_states(model, missing, frozen, pad_id, batch_size, device, bf16)
    return time.monotonic() - tick


def _optimizer_step(model, optimizer, train_examples, step: int, config: TrainConfig, pad_id: int, device,
                    bf16: bool, frozen: int, lr_scale: float, weighted=None, lookahead: int = 1) -> tuple[float, float]:
    """One optimizer step (``grad_accum`` micro-batches) at ``lr_scale`` times the peak rates;
    its loss, and the seconds spent on first passes of the frozen layers.

    When the step meets examples the frozen layers have not seen, those of the next
    ``lookahead`` steps go through them together, ordered by length, so their batches carry
    little padding."""
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * lr_scale
    loss_sum, replay_s = 0.0, 0.0
    if frozen and any("replay" not in e for m in range(config.grad_accum)
                      for e in _batch_for(step, m, train_examples, config)):
        ahead = [e for s in range(step, step + max(1, lookahead)) for m in range(config.grad_accum)
                 for e in _batch_for(s, m, train_examples, config)]
        replay_s += _replay_missing(model, list({id(e): e for e in ahead}.values()), frozen, pad_id,
                                    config.batch_size, device, bf16)
    for micro in range(config.grad_accum):
        examples = _batch_for(step, micro, train_examples, config)
        batch = {k: v.to(device) for k, v in collate(examples, pad_id).items()}
        with _autocast(device, bf16):
            loss = target_loss(model, batch, frozen, weighted) / config.grad_accum
        loss.backward()
        loss_sum += loss.item()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, replay_s


def _train(base, conversations_train, conversations_val, codes_for, vocab, out, code_descriptions, config,
           system_prompt, progress, model, tokenizer, facts_for=None) -> TrainReport:
    from tqdm.auto import tqdm

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    RequestWords.from_conversations(conversations_train).save(out)  # what the chat trusts the model's block on
    device = torch.device("cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    bf16 = native_bf16(device) if config.bf16 is None else config.bf16
    resuming = (out / STATE_FILE).is_file()
    if resuming:
        saved_vocab = MusicVocab.load(out)
        if saved_vocab != vocab:
            raise ValueError(f"{out} was trained with codebook sizes {saved_vocab.codebook_sizes}, not "
                             f"{vocab.codebook_sizes}; use a new output directory for a new index")

    # 1. The model: base, music tokens, LoRA.
    prepared = _prepare_model(base, model, tokenizer, out, vocab, code_descriptions, config, resuming, device)
    model, tokenizer, frozen = prepared.model, prepared.tokenizer, prepared.frozen

    # 2. The examples.
    pad_id = tokenizer.pad_token_id
    train_examples = build_examples(conversations_train, codes_for, tokenizer, vocab, system_prompt, config.seq_len,
                                    facts_for)
    val_examples = build_examples(conversations_val, codes_for, tokenizer, vocab, system_prompt,
                                  config.seq_len, facts_for)[: config.eval_examples]
    if not train_examples:
        raise ValueError("no training examples: the conversations have no assistant turns")
    # With frozen bottom layers, each example's pass through them is computed when it is first
    # used (``_replay_missing``) and replayed from then on.

    # 3. The optimizer and the run's state, resumed if ``out`` holds one.
    optimizer = _optimizer(model, config)
    # "best": the step, validation loss and weights of the best validation pass so far.
    state = {"step": 0, "planned_steps": config.max_steps, "loss_history": [], "val_history": [], "best": None,
             "since_best": 0, "stopped_early": False}
    if resuming:
        _restore_state(out, optimizer, state)

    def checkpoint() -> None:
        _save_checkpoint(out, prepared, vocab, system_prompt, config, optimizer, state)

    # 4. Steps until max_steps or the time budget, validating and checkpointing every eval_every.
    step = first_step = state["step"]
    run_losses: list[float] = []
    examples_per_step = config.batch_size * config.grad_accum
    # This process holds no replays yet, resumed or not: its first epoch's steps pay for them.
    budget = _TimeBudget(started, config.time_budget_s, len(val_examples), examples_per_step,
                         first_epoch_steps=step + math.ceil(len(train_examples) / examples_per_step) if frozen else 0)
    eval_every = validation_interval(config, len(train_examples))

    def validate() -> float:
        val = evaluate_loss(model, val_examples, pad_id, config.batch_size, device, bf16, frozen)
        state["val_history"].append((step, val))
        best = state["best"]
        if math.isnan(val):
            return val  # no validation data: nothing to keep or stop for
        if best is None or val < best["val"]:
            state["best"] = {"step": step, "val": val, "weights": _trainable_weights(model)}
            state["since_best"] = 0
        else:
            state["since_best"] += 1
        return val

    stopped_by = "max_steps"
    code_ids = torch.tensor(music_token_ids(tokenizer, vocab)["all"][2:], device=device)  # codes, not delimiters
    code_weighting = (code_ids, config.code_loss_weight)
    bar = tqdm(total=state["planned_steps"], initial=step, desc="fine-tuning", disable=not progress,
               dynamic_ncols=True)
    if state["stopped_early"]:
        stopped_by = "validation"  # a run that stopped for this is finished; resuming adds nothing
    while step < min(state["planned_steps"], config.max_steps) and not state["stopped_early"]:
        if not budget.room_for_a_step(step):
            stopped_by = "time_budget"
            break
        tick = time.monotonic()
        scale = _lr_scale(step, state["planned_steps"], config.warmup)
        lookahead = max(1, min(REPLAY_LOOKAHEAD, state["planned_steps"] - step, budget.first_epoch_steps - step))
        loss_sum, replay_s = _optimizer_step(model, optimizer, train_examples, step, config, pad_id, device, bf16,
                                             frozen, scale, code_weighting, lookahead=lookahead)
        if replay_s:
            budget.replay_seconds += replay_s
            budget.replay_steps += lookahead
        step += 1
        state["step"] = step
        state["loss_history"].append(loss_sum)
        run_losses.append(loss_sum)
        budget.step_seconds.append(time.monotonic() - tick - replay_s)

        if len(budget.step_seconds) >= 3 and config.time_budget_s is not None:
            # The speed is known: fit the learning-rate schedule into what is left of the budget,
            # again after every step, so a slow start (a machine busy with something else for the
            # first steps) does not cut the whole run short, nor a slow end overrun the schedule.
            state["planned_steps"] = budget.planned_steps(step, eval_every, config.max_steps)
            bar.total = state["planned_steps"]
        bar.update(1)
        bar.set_postfix(loss=f"{sum(run_losses[-10:]) / len(run_losses[-10:]):.3f}")

        if step % eval_every == 0 and step < state["planned_steps"]:
            tick = time.monotonic()
            val = validate()
            checkpoint()
            budget.eval_seconds = time.monotonic() - tick
            bar.write(f"step {step}: train loss {sum(run_losses[-10:]) / len(run_losses[-10:]):.3f}, "
                      f"val loss {val:.3f}")
            if config.patience is not None and state["since_best"] >= config.patience:
                stopped_by, state["stopped_early"] = "validation", True
                bar.write(f"stopping: no better validation loss in {config.patience} passes since step "
                          f"{state['best']['step']}")
                break
    bar.close()
    if step < config.max_steps and stopped_by == "max_steps":
        stopped_by = "time_budget"  # the schedule was fitted to the budget and ended before max_steps

    # 5. A last validation pass; the best pass's weights are the ones saved; the report.
    if not state["val_history"] or state["val_history"][-1][0] != step:
        validate()
    best = state["best"]
    if best is not None and best["step"] != step:
        _load_trainable_weights(model, best["weights"])
    val = best["val"] if best is not None else state["val_history"][-1][1]
    checkpoint()
    tail = run_losses[-20:]
    step_seconds = budget.step_seconds
    report = TrainReport(
        steps=step,
        seq_len=config.seq_len,
        train_loss=sum(tail) / len(tail) if tail else float("nan"),
        val_loss=val,
        seconds=time.monotonic() - started,
        examples=len(train_examples),
        first_train_loss=run_losses[0] if run_losses else float("nan"),
        steps_this_run=step - first_step,
        seconds_per_step=sum(step_seconds) / len(step_seconds) if step_seconds else float("nan"),
        stopped_by=stopped_by,
        bf16=bf16,
        val_history=[(int(s), float(v)) for s, v in state["val_history"]],
        best_step=best["step"] if best is not None else step,
    )
    (out / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
