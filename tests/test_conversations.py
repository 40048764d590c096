"""The conversations format, and reading the field's own: Music-CRS / TalkPlayData-2 sessions."""
from __future__ import annotations

import json

import pytest

from assistant.conversations import (ConversationFormatError, conversations_path, played_tracks,
                                     read_conversations)

SESSION = {
    "session_id": "s-1", "user_id": "u-9",
    "conversations": [
        {"role": "user", "content": "something for a rainy morning", "turn_number": 1},
        {"role": "music", "content": "track-a", "turn_number": 1},
        {"role": "assistant", "content": "Try this gentle piano piece.", "turn_number": 1},
        {"role": "user", "content": "more upbeat", "turn_number": 2},
        {"role": "music", "content": "track-b", "turn_number": 2},
        {"role": "assistant", "content": "This one moves faster.", "turn_number": 2},
    ],
}


def test_music_crs_sessions_read_as_conversations(tmp_path):
    as_array = tmp_path / "sessions.json"
    as_array.write_text(json.dumps([SESSION, {**SESSION, "session_id": "s-2"}]))
    as_lines = tmp_path / "sessions.jsonl"
    as_lines.write_text(json.dumps(SESSION) + "\n")
    for conversations in (read_conversations(as_array)[:1], read_conversations(as_lines)):
        (c,) = conversations
        assert c["id"] == "s-1" and c["user_id"] == "u-9"
        assert [t["role"] for t in c["turns"]] == ["user", "assistant", "user", "assistant"]
        assert c["turns"][1] == {"role": "assistant", "content": "Try this gentle piano piece.", "turn_number": 1,
                                 "tracks": ["track-a"]}
        assert played_tracks(c["turns"]) == ["track-a", "track-b"]


def test_a_bad_session_names_where(tmp_path):
    bad = {**SESSION, "conversations": [{"role": "dj", "content": "x", "turn_number": 1}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([SESSION, bad]))
    with pytest.raises(ConversationFormatError, match=r"bad.json:item 1: .*role"):
        read_conversations(path)


def test_split_paths_are_checked(tmp_path):
    assert conversations_path(tmp_path, "val") == tmp_path / "conversations" / "val" / "conversations.jsonl"
    with pytest.raises(ValueError, match="split"):
        conversations_path(tmp_path, "dev")
