"""Music tokens: the vocabulary, writing and parsing blocks, adding tokens to an LLM, constrained generation."""
from tokenizer.blocks import ParsedReply, parse_reply
from tokenizer.vocab import MODALITIES, MusicVocab

__all__ = ["MODALITIES", "MusicVocab", "ParsedReply", "parse_reply"]
