"""The browser app on a tiny catalog: its safety rules, its API, and a real browser session.

The browser test drives headless Debian chromium with Playwright: ask for music, check a card's
audio really streams from the library, steer with "More like this", upload a song and ask its key.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import soundfile as sf

from app import ERROR_MESSAGE, ChatController, audio_url, build_app, card_html, check_upload, launch, safe_audio_path
from assistant.chat import MusicAssistant
from assistant.session import TrackCard

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY_PATTERN = re.compile(r"\b[A-G][#b]? (major|minor)\b")
WAIT_MS = 90_000  # generous: CI machines here are small and shared
UPLOAD_LIMIT_MB = 1.0


def write_chord_progression(path: Path, seconds: float = 4.0, sr: int = 22050) -> Path:
    """I-IV-V-I in C major (C, F, G, C), one chord a second, as a WAV file."""
    chords = [(48, 60, 64, 67), (53, 60, 65, 69), (55, 59, 62, 67), (48, 60, 64, 67)]
    n = int(seconds * sr / len(chords))
    t = np.arange(n) / sr
    parts = []
    for chord in chords:
        f = 440.0 * 2.0 ** ((np.array(chord)[:, None] - 69) / 12)
        tone = (np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t)).sum(axis=0)
        parts.append(tone * np.exp(-0.8 * t))
    y = np.concatenate(parts)
    sf.write(path, (0.8 * y / np.abs(y).max()).astype(np.float32), sr)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, b"", ""


@pytest.fixture(scope="module")
def dirs(tiny_assistant_dirs):
    return tiny_assistant_dirs


@pytest.fixture(scope="module")
def assistant(dirs):
    return MusicAssistant.load(*dirs)


@pytest.fixture(scope="module")
def dense_assistant(dirs):
    """The same catalog without the model: the app's own rules don't depend on it, and it is quicker."""
    return MusicAssistant.load(dirs[0])


@pytest.fixture(scope="module")
def server(assistant):
    """The app served on a free loopback port for this module; yields its base URL."""
    demo = build_app(assistant, max_upload_mb=UPLOAD_LIMIT_MB, concurrency=2)
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}"
    demo.close()


# ---- safety rules, no browser ------------------------------------------------------------------

def test_only_audio_inside_the_library_is_served_by_path(tmp_path):
    lib = tmp_path / "library"
    (lib / "album").mkdir(parents=True)
    inside = write_chord_progression(lib / "album" / "song.wav", seconds=0.5)
    outside = write_chord_progression(tmp_path / "elsewhere.wav", seconds=0.5)
    (lib / "notes.txt").write_text("not audio")
    (lib / "link.wav").symlink_to(outside)
    assert safe_audio_path(inside, lib) == inside.resolve()
    assert safe_audio_path(outside, lib) is None
    assert safe_audio_path(lib / "album" / ".." / ".." / "elsewhere.wav", lib) is None
    assert safe_audio_path(lib / "link.wav", lib) is None  # a symlink out of the library
    assert safe_audio_path(lib / "notes.txt", lib) is None
    assert safe_audio_path(lib / "missing.wav", lib) is None
    assert safe_audio_path(None, lib) is None
    card = TrackCard(id="x", title="<b>Elsewhere</b>", artist="A", album="B", year="", reason="r",
                     audio_path=str(outside), score=1.0)
    rendered = card_html(card, lib)
    assert "<audio" not in rendered and str(outside) not in rendered
    assert "&lt;b&gt;Elsewhere&lt;/b&gt;" in rendered  # metadata is escaped, never markup
    card.audio_path = str(inside)
    assert audio_url(inside.resolve()) in card_html(card, lib)


def test_upload_checks_give_plain_messages(tmp_path):
    song = write_chord_progression(tmp_path / "song.wav", seconds=1.0)
    assert check_upload(song, max_bytes=10 * 2**20) is None
    too_big = check_upload(song, max_bytes=1000)
    assert too_big and "limit" in too_big and "song.wav" in too_big
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    not_audio = check_upload(text, max_bytes=10 * 2**20)
    assert not_audio and "not an audio file" in not_audio


def test_refused_uploads_reach_the_chat_as_plain_messages(dense_assistant, tmp_path):
    controller = ChatController(dense_assistant, max_upload_mb=0.01)
    song = write_chord_progression(tmp_path / "long.wav", seconds=2.0)  # about 170 kB
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    for upload in (song, notes):
        session = dense_assistant.new_session()
        message = {"text": "what key is this in?", "files": [str(upload)]}
        *_, (chat, session, cards) = controller.respond(message, [], session)
        answer = chat[-1]
        assert answer["role"] == "assistant" and cards is None
        assert upload.name in answer["content"] and "Traceback" not in answer["content"]
        assert session.upload is None and session.history == []  # nothing reached the engine
    garbage = tmp_path / "broken.wav"
    garbage.write_bytes(b"RIFF not really a wave file")
    message = {"text": "what key?", "files": [str(garbage)]}
    *_, (chat, session, _) = ChatController(dense_assistant).respond(message, [], None)
    assert chat[-1]["role"] == "assistant" and "broken.wav" in chat[-1]["content"]
    assert chat[-1]["content"] != ERROR_MESSAGE and session.upload is None


def test_an_engine_failure_becomes_one_plain_sentence(dense_assistant, caplog, monkeypatch):
    controller = ChatController(dense_assistant)

    def broken(*args, **kwargs):
        raise RuntimeError("index went away")

    monkeypatch.setattr(dense_assistant, "stream", broken)
    with caplog.at_level("ERROR", logger="tonearm.app"):
        *_, (chat, _, _) = controller.respond({"text": "calm piano music", "files": []}, [], None)
    assert chat[-1] == {"role": "assistant", "content": ERROR_MESSAGE}
    assert "index went away" in caplog.text  # the traceback is in the server log


def test_two_sessions_do_not_share_played_tracks(dense_assistant):
    controller = ChatController(dense_assistant)
    shown: dict[str, list[str]] = {"a": [], "b": []}
    sessions = {"a": None, "b": None}
    for who, message in [("a", "calm piano music"), ("b", "fast electronic with a driving beat"),
                         ("a", "faster"), ("b", "something dark and orchestral")]:
        steps = list(controller.respond({"text": message, "files": []}, [], sessions[who]))
        sessions[who] = steps[-1][1]
        cards = next((c for _, _, c in steps if c), None)  # the cards come once, before the words
        assert cards, f"no tracks for {message!r}"
        shown[who] += [c.id for c in cards]
    a, b = sessions["a"], sessions["b"]
    assert a is not b and a.id != b.id
    assert a.played == shown["a"] and b.played == shown["b"]
    assert [t["content"] for t in a.history if t["role"] == "user"] == ["calm piano music", "faster"]


# ---- the running server, no browser ------------------------------------------------------------

def test_server_streams_library_audio_and_refuses_other_files(server, assistant, tmp_path):
    track = next(t for t in assistant.index.tracks if t.file)
    status, body, kind = http_get(server + audio_url(assistant.index.audio_path(track).resolve()))
    assert status == 200 and body[:4] == b"RIFF" and kind.startswith("audio/")
    outside = write_chord_progression(tmp_path / "outside.wav", seconds=0.5)
    for path in (outside, Path("/etc/passwd"), assistant.index.root / "manifest.json"):
        status, body, _ = http_get(server + "/gradio_api/file=" + quote(str(path)))
        assert status == 403 and not body


def test_server_refuses_uploads_over_the_limit(server, tmp_path):
    import httpx

    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * int((UPLOAD_LIMIT_MB + 0.5) * 2**20))
    with open(big, "rb") as f:
        r = httpx.post(server + "/gradio_api/upload", files={"files": ("big.wav", f, "audio/wav")}, timeout=60)
    assert r.status_code == 413


def test_api_clients_each_keep_their_own_session(server):
    from gradio_client import Client

    one, two = Client(server, verbose=False), Client(server, verbose=False)
    first = one.predict("calm piano music", api_name="/turn")
    other = two.predict("fast electronic with a driving beat", api_name="/turn")
    again = one.predict("faster", api_name="/turn")
    assert first["track_ids"] and first["played"] == first["track_ids"]
    assert other["played"] == other["track_ids"] and other["session"] != first["session"]
    assert again["session"] == first["session"] and again["played"] == first["track_ids"] + again["track_ids"]


# ---- a real browser ----------------------------------------------------------------------------

def card_titles(page) -> list[str]:
    return page.eval_on_selector_all(".track-card .card-title", "els => els.map(e => e.innerText.trim())")


def last_bot_message(page) -> str:
    texts = page.eval_on_selector_all("#chat .message.bot", "els => els.map(e => e.innerText.trim())")
    return texts[-1] if texts else ""


@pytest.mark.browser
def test_browser_chat_cards_feedback_and_upload(server, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"chromium is not installed at {CHROMIUM} (`make browser-deps` installs it)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    song = write_chord_progression(tmp_path / "progression.wav")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.goto(server)
            box = page.locator("#message-box textarea")
            box.wait_for()

            # 1. Ask for music (the empty chat's first example prompt): cards appear, and a card's
            #    player streams its file from the library.
            page.locator("#chat .example", has_text="calm piano music").click()
            page.locator(".track-card audio").first.wait_for()
            first_titles = card_titles(page)
            assert first_titles
            assert page.locator("#chat .message.user").first.inner_text().strip() == "calm piano music"
            src = page.locator(".track-card audio").first.get_attribute("src")
            assert src and src.startswith("/gradio_api/file=")
            response = page.request.get(server + src)
            assert response.status == 200 and response.headers["content-type"].startswith("audio/")
            assert response.body()[:4] == b"RIFF"
            page.wait_for_function("() => document.querySelector('.track-card audio').readyState > 0")
            # The played panel is a separate output: the browser may paint it after the cards.
            page.wait_for_function("n => document.querySelectorAll('#played-panel li').length >= n",
                                   arg=len(first_titles))
            played = page.locator("#played-panel li").all_inner_texts()
            assert [t.split(" — ")[0] for t in played] == first_titles

            # 2. "More like this" on a card with audio: new tracks replace the old ones.
            card = page.locator(".track-card", has=page.locator("audio")).first
            liked_title = card.locator(".card-title").inner_text().strip()
            card.locator("button.more-like-this").click()
            page.wait_for_function(
                "old => { const t = Array.from(document.querySelectorAll('.track-card .card-title'))"
                ".map(e => e.innerText.trim()); return t.length > 0 && t.every(x => !old.includes(x)); }",
                arg=first_titles)
            assert f'More like "{liked_title}"' in page.locator("#chat").inner_text()
            liked_titles = card_titles(page)
            assert not set(liked_titles) & set(first_titles)

            # 2b. Play the last card, then ask "faster": the change is against the card played.
            played_title = liked_titles[-1]
            page.locator(".track-card audio").last.evaluate("a => a.play()")
            page.wait_for_timeout(1500)  # the play event reaches the server
            box.fill("faster")
            box.press("Enter")
            page.wait_for_function(
                "old => { const t = Array.from(document.querySelectorAll('.track-card .card-title'))"
                ".map(e => e.innerText.trim()); return t.length > 0 && t.every(x => !old.includes(x)); }",
                arg=liked_titles)
            page.wait_for_function("() => !document.querySelector('#message-box textarea').disabled")
            reasons = page.locator(".track-card .card-reason").all_inner_texts()
            said = last_bot_message(page)
            assert any(played_title in r for r in reasons) or played_title in said, (reasons, said)
            liked_titles = card_titles(page)

            # 2c. "Not for me" on the first card: it goes, and the chat does not search its title.
            rejected = liked_titles[0]
            page.locator(".track-card").first.locator("button.not-for-me").click()
            page.wait_for_function(
                "old => { const t = Array.from(document.querySelectorAll('.track-card .card-title'))"
                ".map(e => e.innerText.trim()); return t.length > 0 && !t.includes(old); }", arg=rejected)
            assert f'Not for me: "{rejected}"' in page.locator("#chat").inner_text()
            liked_titles = card_titles(page)

            # 3. Upload a song in the message box and ask about it.
            page.set_input_files("#message-box input[type=file]", str(song))
            page.locator("#message-box .thumbnail-item").wait_for()
            box.fill("what key is this in?")
            box.press("Enter")
            # The text streams in: wait for the finished answer, not its first words.
            page.wait_for_function("() => { const m = document.querySelectorAll('#chat .message.bot');"
                                   " const t = m.length ? m[m.length - 1].innerText : '';"
                                   " return t.includes('progression.wav') && /\\b[A-G][#b]? (major|minor)\\b/.test(t);"
                                   " }")
            answer = last_bot_message(page)
            assert KEY_PATTERN.search(answer), answer
            assert card_titles(page) == liked_titles  # an answer without tracks leaves the cards playable

            # 4. A picture of the whole thing.
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("TONEARM_SCREENSHOT"):
                target = Path(os.environ["TONEARM_SCREENSHOT"])
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, target)
        finally:
            browser.close()


def test_the_model_trains_in_the_background_while_the_engine_answers(dirs, tmp_path):
    """What a first `make demo` does: chat at once without a model, switch when training ends."""
    from assistant.llm import tiny_model_like
    from assistant.pipeline import BackgroundTraining
    from transformers import AutoTokenizer

    base = tmp_path / "tiny-base"
    tokenizer = AutoTokenizer.from_pretrained(dirs[1])
    tiny_model_like(tokenizer, seed=0).save_pretrained(base)
    tokenizer.save_pretrained(base)
    assistant = MusicAssistant.load(dirs[0])
    session = assistant.new_session()
    training = BackgroundTraining(dirs[0], tmp_path / "model", on_ready=assistant.load_model, train_args=(
        "--base", str(base), "--steps", "2", "--seq-len", "128", "--batch-size", "4", "--minutes", "0",
        "--train-layers", "2")).start()
    assert "training in the background" in training.status()
    assert assistant.reply(session, "calm piano").source == "engine"  # answers while it trains
    assert training.wait(timeout=300) == "ready", training.log_path.read_text()[-2000:]
    assert assistant.model is not None and "ready" in training.status()
    assert assistant.reply(session, "something faster").source != "engine"


def test_the_page_shows_the_model_status(assistant):
    demo = build_app(assistant, status=lambda: "The language model is training in the background.")
    config = demo.get_config_file()
    texts = [c.get("props", {}).get("value") for c in config["components"]]
    assert "The language model is training in the background." in texts
    assert any(c.get("type") == "timer" for c in config["components"])


def test_served_weights_follow_the_cpu_unless_named():
    from app import parse_args, serving_weights
    from assistant.llm import native_bf16

    assert serving_weights("auto") == ("bfloat16" if native_bf16("cpu") else "float32")
    assert [serving_weights(w) for w in ("float32", "bfloat16", "int8")] == ["float32", "bfloat16", "int8"]
    assert parse_args([]).weights == "auto" and parse_args([]).concurrency == 8
    assert parse_args(["--no-batching"]).concurrency == 4
    assert parse_args(["--no-batching", "--concurrency", "2"]).concurrency == 2
