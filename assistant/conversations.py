"""The ``conversations.jsonl`` format: read, write and validate it, where a model keeps its splits,
and which tracks count as already played.

One conversation a line::

    {"id": "c1", "turns": [
      {"role": "user", "content": "something calm with piano"},
      {"role": "assistant", "content": "Try this one.", "tracks": ["id-of-the-track"]}]}

Only assistant turns carry ``tracks``. The synthesizer, the trainer, the evaluation and the
benches all read and write it through this module.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

ROLES: tuple[str, ...] = ("system", "user", "assistant")
SPLITS: tuple[str, ...] = ("train", "val", "test")
CONVERSATIONS_DIR = "conversations"  # inside a model directory: CONVERSATIONS_DIR/SPLIT/conversations.jsonl


class ConversationFormatError(ValueError):
    """A conversation or a ``conversations.jsonl`` line does not follow the format."""


def conversations_path(model_dir: str | Path, split: str) -> Path:
    """Where a model directory keeps the conversations of one split (``SPLITS``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return Path(model_dir) / CONVERSATIONS_DIR / split / "conversations.jsonl"


def played_tracks(history: Sequence[dict]) -> list[str]:
    """The tracks the assistant turns of ``history`` recommended, in order, each once.

    They count as played: neither the chat nor any system in the evaluation offers them again.
    """
    return list(dict.fromkeys(t for turn in history if turn.get("role") == "assistant"
                              for t in turn.get("tracks", [])))


def last_shown(history: Sequence[dict]) -> list[str]:
    """The tracks of the last assistant turn that showed any: the reply the person is looking at."""
    for turn in reversed(history):
        if turn.get("role") == "assistant" and turn.get("tracks"):
            return list(turn["tracks"])
    return []


def validate_conversation(conv: object) -> None:
    """Raise ConversationFormatError unless ``conv`` follows the conversations.jsonl format."""
    if not isinstance(conv, dict):
        raise ConversationFormatError(f"a conversation must be a JSON object, got {type(conv).__name__}")
    if not isinstance(conv.get("id"), str) or not conv["id"]:
        raise ConversationFormatError('a conversation needs a non-empty string "id"')
    turns = conv.get("turns")
    if not isinstance(turns, list) or not turns:
        raise ConversationFormatError(f'conversation {conv["id"]!r}: "turns" must be a non-empty list')
    for i, turn in enumerate(turns):
        where = f'conversation {conv["id"]!r}, turn {i}'
        if not isinstance(turn, dict):
            raise ConversationFormatError(f"{where}: a turn must be an object")
        if turn.get("role") not in ROLES:
            raise ConversationFormatError(f"{where}: role must be one of {ROLES}, got {turn.get('role')!r}")
        if not isinstance(turn.get("content"), str):
            raise ConversationFormatError(f'{where}: "content" must be a string')
        if "tracks" in turn:
            if turn["role"] != "assistant":
                raise ConversationFormatError(f'{where}: only assistant turns carry "tracks"')
            tr = turn["tracks"]
            if not isinstance(tr, list) or not all(isinstance(x, str) and x for x in tr):
                raise ConversationFormatError(f'{where}: "tracks" must be a list of non-empty track id strings')


def write_conversations(conversations: Iterable[dict], path: str | os.PathLike) -> Path:
    """Validate and write conversations, one JSON object a line; the file appears whole or not at all."""
    path = Path(path)
    convs = list(conversations)
    seen: set[str] = set()
    for conv in convs:
        validate_conversation(conv)
        if conv["id"] in seen:
            raise ConversationFormatError(f"duplicate conversation id {conv['id']!r}")
        seen.add(conv["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for conv in convs:
            f.write(json.dumps(conv, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def from_music_crs_session(session: object) -> dict:
    """A Music-CRS / TalkPlayData-2 session as a conversation of this format.

    A session has ``session_id`` (and optionally ``user_id``) and ``conversations``: rows
    with ``role`` "user", "music" or "assistant", ``content`` (a track id for a music row)
    and ``turn_number``; within a turn the order is user, music, assistant. Each turn's music
    rows become the ``tracks`` of its assistant turn, which also keeps ``turn_number``.
    """
    if not isinstance(session, dict) or not isinstance(session.get("conversations"), list):
        raise ConversationFormatError('a Music-CRS session must be an object with a "conversations" list')
    sid = session.get("session_id")
    if not isinstance(sid, (str, int)) or isinstance(sid, bool) or str(sid) == "":
        raise ConversationFormatError('a Music-CRS session needs a "session_id"')
    turns: dict[int, dict] = {}
    for i, row in enumerate(session["conversations"]):
        where = f"session {sid!r}, row {i}"
        if not isinstance(row, dict) or row.get("role") not in ("user", "music", "assistant"):
            raise ConversationFormatError(f'{where}: "role" must be user, music or assistant')
        number = row.get("turn_number")
        if isinstance(number, bool) or not isinstance(number, int):
            raise ConversationFormatError(f'{where}: "turn_number" must be an integer')
        if not isinstance(row.get("content"), str):
            raise ConversationFormatError(f'{where}: "content" must be a string')
        turn = turns.setdefault(number, {"user": [], "music": [], "assistant": []})
        turn[row["role"]].append(row["content"])
    out = []
    for number in sorted(turns):
        turn = turns[number]
        if turn["user"]:
            out.append({"role": "user", "content": "\n".join(turn["user"])})
        if turn["music"] or turn["assistant"]:
            reply = {"role": "assistant", "content": "\n".join(turn["assistant"]), "turn_number": number}
            if turn["music"]:
                reply["tracks"] = list(dict.fromkeys(turn["music"]))
            out.append(reply)
    conversation = {"id": str(sid), "turns": out, "format": "music-crs"}
    if session.get("user_id") is not None:
        conversation["user_id"] = str(session["user_id"])
    validate_conversation(conversation)
    return conversation


def _parse_conversation(obj: object) -> dict:
    """A conversation of this format, or a Music-CRS session converted to one; validated."""
    if isinstance(obj, dict) and "conversations" in obj and "turns" not in obj:
        return from_music_crs_session(obj)
    validate_conversation(obj)
    return obj


def read_conversations(path: str | os.PathLike) -> list[dict]:
    """Read and validate a conversations file: ``conversations.jsonl``, or Music-CRS sessions.

    Music-CRS / TalkPlayData-2 sessions (see :func:`from_music_crs_session`) are read one a
    line, or as one JSON array of sessions, and converted.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ConversationFormatError
        On the first bad line or session, naming the file and the line number (or position).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no conversations file at {path}: write one with assistant.synth.write_splits "
                                f"or pass the path of an existing conversations.jsonl")
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):  # one JSON array (the Music-CRS data ships its sessions so)
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConversationFormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        numbered = [(f"item {i}", obj) for i, obj in enumerate(items)]
    else:
        numbered = []
        for n, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                numbered.append((str(n), json.loads(line)))
            except json.JSONDecodeError as e:
                raise ConversationFormatError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
    out: list[dict] = []
    seen: dict[str, str] = {}
    for where, obj in numbered:
        try:
            conv = _parse_conversation(obj)
        except ConversationFormatError as e:
            raise ConversationFormatError(f"{path}:{where}: {e}") from None
        if conv["id"] in seen:
            raise ConversationFormatError(
                f"{path}:{where}: conversation id {conv['id']!r} already used on line {seen[conv['id']]}")
        seen[conv["id"]] = where
        out.append(conv)
    return out
