"""The music-token vocabulary: one token per (modality, code), plus the block delimiters.

A track is written as a block of five tokens, one per modality in ``MODALITIES`` order::

    <music><playlist-12><tag-301><meta-77><lyrics-0><audio-415></music>

Each code is a cluster id in that modality's codebook; codebook sizes are chosen per
catalog and recorded in the index manifest (``manifest["codebook_sizes"]``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from index.track import MODALITIES

# Short, stable token prefixes; the modality names themselves stay the dictionary keys.
TOKEN_PREFIX: dict[str, str] = {
    "playlist": "playlist",
    "tags": "tag",
    "metadata": "meta",
    "lyrics": "lyrics",
    "audio": "audio",
}
VOCAB_FILE = "music_vocab.json"
FORMAT_VERSION = 1


@dataclass
class MusicVocab:
    """Music tokens for one catalog.

    Attributes
    ----------
    codebook_sizes : dict of str to int
        Number of codes per modality; keys are exactly ``MODALITIES``, in that order.
    """

    codebook_sizes: dict[str, int]

    BLOCK_START: ClassVar[str] = "<music>"
    BLOCK_END: ClassVar[str] = "</music>"

    def __post_init__(self) -> None:
        sizes = dict(self.codebook_sizes)
        if set(sizes) != set(MODALITIES):
            missing = [m for m in MODALITIES if m not in sizes]
            extra = [m for m in sizes if m not in MODALITIES]
            raise ValueError(
                f"codebook_sizes must have exactly the modalities {list(MODALITIES)}; "
                f"missing {missing}, unexpected {extra}"
            )
        for modality, size in sizes.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"codebook size for {modality!r} must be a positive int, got {size!r}")
        # Keep the canonical order whatever order the caller used.
        self.codebook_sizes = {m: sizes[m] for m in MODALITIES}

    @property
    def modalities(self) -> tuple[str, ...]:
        return MODALITIES

    def __len__(self) -> int:
        return 2 + sum(self.codebook_sizes.values())

    def token(self, modality: str, code: int) -> str:
        """The token string for ``code`` of ``modality``, e.g. ``token("tags", 3) == "<tag-3>"``."""
        if modality not in self.codebook_sizes:
            raise KeyError(f"unknown modality {modality!r}; expected one of {list(MODALITIES)}")
        size = self.codebook_sizes[modality]
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code < size:
            raise ValueError(f"code {code!r} out of range for {modality!r} (codebook size {size})")
        return f"<{TOKEN_PREFIX[modality]}-{code}>"

    def all_tokens(self) -> list[str]:
        """Block start, block end, then every modality's codes in order."""
        tokens = [self.BLOCK_START, self.BLOCK_END]
        for modality, size in self.codebook_sizes.items():
            tokens.extend(self.token(modality, code) for code in range(size))
        return tokens

    def format_block(self, codes: dict[str, int]) -> str:
        """Write one track's codes as a block; ``codes`` must hold every modality."""
        missing = [m for m in MODALITIES if m not in codes]
        if missing:
            raise ValueError(f"codes lack modalities {missing}; got {sorted(codes)}")
        # Codes often arrive as numpy integers; int() keeps the range check honest.
        inner = "".join(self.token(m, _as_int(codes[m], m)) for m in MODALITIES)
        return f"{self.BLOCK_START}{inner}{self.BLOCK_END}"

    # ---- persistence -------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "codebook_sizes": dict(self.codebook_sizes)}

    def save(self, directory: str | Path) -> Path:
        """Write ``music_vocab.json`` into ``directory`` (created if needed); returns its path."""
        path = Path(directory) / VOCAB_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "MusicVocab":
        """Read ``music_vocab.json`` from ``directory``."""
        path = Path(directory) / VOCAB_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no {VOCAB_FILE} in {directory}: is this a model directory written by assistant training?"
            )
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}")
        return cls(codebook_sizes={k: int(v) for k, v in data["codebook_sizes"].items()})

    @classmethod
    def from_manifest(cls, manifest: dict) -> "MusicVocab":
        """Build the vocabulary from an index manifest's ``codebook_sizes``."""
        if "codebook_sizes" not in manifest:
            raise KeyError("index manifest has no 'codebook_sizes'; rebuild the index")
        return cls(codebook_sizes={k: int(v) for k, v in manifest["codebook_sizes"].items()})


def _as_int(value, modality: str) -> int:
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"code for {modality!r} must be an integer, got {value!r}") from None
    if as_int != value:
        raise ValueError(f"code for {modality!r} must be an integer, got {value!r}")
    return as_int
