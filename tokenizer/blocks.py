"""Reading generated replies back into text and music codes.

The parser is tolerant: generation can be cut off or, without the logits processor,
produce blocks in the wrong order, with unknown codes, or never closed. Every such
problem is reported in ``ParsedReply.errors`` and the parser never raises; a block
keeps the codes that are valid and is returned when it has at least one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from index.track import MODALITIES
from tokenizer.vocab import TOKEN_PREFIX, MusicVocab

_MODALITY_OF_PREFIX = {prefix: modality for modality, prefix in TOKEN_PREFIX.items()}
# <music>, </music>, or <prefix-N>; anything else (other tags, loose text) is plain text.
_TOKEN_RE = re.compile(
    r"<(?P<close>/?)music>|<(?P<prefix>" + "|".join(map(re.escape, _MODALITY_OF_PREFIX)) + r")-(?P<code>-?\d+)>"
)


@dataclass
class ParsedReply:
    """A reply split into its prose and its music blocks.

    Attributes
    ----------
    text : str
        The reply with every block (and stray music token) removed, whitespace tidied.
    blocks : list of dict of str to int
        One ``{modality: code}`` per block, in reply order; a block may lack modalities
        (see ``errors``) but has at least one valid code.
    errors : list of str
        Human-readable problems found; empty for a well-formed reply.
    """

    text: str
    blocks: list[dict[str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class _OpenBlock:
    """Codes gathered for the block being read."""

    def __init__(self, number: int):
        self.number = number
        self.codes: dict[str, int] = {}
        self.last_position = -1  # index in MODALITIES of the last code accepted


def parse_reply(text: str, vocab: MusicVocab) -> ParsedReply:
    """Split ``text`` into prose and music blocks, recording every malformation.

    Parameters
    ----------
    text : str
        Decoded model output, music tokens included (decode with ``skip_special_tokens=False``).
    vocab : MusicVocab
        The vocabulary that gives each modality's codebook size.

    Returns
    -------
    ParsedReply
    """
    if not isinstance(text, str):
        return ParsedReply(text="", errors=[f"reply is not a string: {type(text).__name__}"])

    prose: list[str] = []
    blocks: list[dict[str, int]] = []
    errors: list[str] = []
    block: _OpenBlock | None = None
    blocks_opened = 0

    def close(current: _OpenBlock, closed: bool) -> None:
        where = f"block {current.number}"
        if not closed:
            errors.append(f"{where}: not closed with {vocab.BLOCK_END}")
        missing = [m for m in MODALITIES if m not in current.codes]
        if missing:
            errors.append(f"{where}: missing {', '.join(missing)}")
        if current.codes:
            blocks.append(dict(current.codes))
        else:
            errors.append(f"{where}: no valid codes, dropped")

    position = 0
    for match in _TOKEN_RE.finditer(text):
        between = text[position : match.start()]
        position = match.end()
        if block is None:
            prose.append(between)
        elif between.strip():
            errors.append(f"block {block.number}: unexpected text {between.strip()[:40]!r}")

        if match.group("prefix") is None:  # <music> or </music>
            if match.group("close"):
                if block is None:
                    errors.append(f"{vocab.BLOCK_END} without a matching {vocab.BLOCK_START}")
                else:
                    close(block, closed=True)
                    block = None
            else:
                if block is not None:
                    close(block, closed=False)
                blocks_opened += 1
                block = _OpenBlock(blocks_opened)
                prose.append(" ")  # a removed block separates the words around it
            continue

        modality = _MODALITY_OF_PREFIX[match.group("prefix")]
        code = int(match.group("code"))
        if block is None:
            errors.append(f"music token {match.group(0)} outside a block, ignored")
            continue
        where = f"block {block.number}"
        size = vocab.codebook_sizes[modality]
        if not 0 <= code < size:
            errors.append(f"{where}: {match.group(0)} out of range (codebook size {size}), ignored")
            continue
        if modality in block.codes:
            errors.append(f"{where}: second {modality} code {match.group(0)}, ignored")
            continue
        order = MODALITIES.index(modality)
        if order < block.last_position:
            errors.append(f"{where}: {modality} code {match.group(0)} out of order")
        block.last_position = max(block.last_position, order)
        block.codes[modality] = code

    tail = text[position:]
    if block is not None:
        close(block, closed=False)
        # Text after an unclosed block is the model going back to prose.
    prose.append(tail)
    return ParsedReply(text=_tidy("".join(prose)), blocks=blocks, errors=errors)


def _tidy(text: str) -> str:
    """Collapse runs of spaces, trim every line, allow at most one blank line."""
    text = re.sub(r"[ \t]+", " ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()
