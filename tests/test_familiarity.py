"""How familiar a request's words are to the model."""
from __future__ import annotations

import pytest

from assistant.familiarity import REQUEST_WORDS_FILE, RequestWords, content_words


def test_content_words_drop_stop_words_and_single_letters():
    assert content_words("Could you play something calm, in D major?") == ["play", "something", "calm", "major"]
    assert content_words("Rock & roll from the 1980s!") == ["rock", "roll", "1980s"]
    assert content_words("") == []
    with pytest.raises(ValueError, match="string"):
        content_words(None)


def test_familiarity_is_the_share_of_words_training_requests_used(tmp_path):
    conversations = [{"id": "c", "turns": [{"role": "user", "content": "Calm piano, please"},
                                           {"role": "assistant", "content": "Here is a lullaby."},
                                           {"role": "user", "content": "Something faster."}]}]
    words = RequestWords.from_conversations(conversations)
    assert words.words == {"calm", "piano", "please", "something", "faster"}  # not the assistant's "lullaby"
    assert words.familiarity("calm piano for sleeping") == pytest.approx(2 / 3)
    assert words.familiarity("a lullaby") == 0.0
    assert words.familiarity("and?") == 1.0  # nothing new said
    assert words.save(tmp_path).name == REQUEST_WORDS_FILE
    assert RequestWords.load(tmp_path) == words
    assert RequestWords.load(tmp_path / "elsewhere") is None
