"""The browser chat: ask for music in your own words, hear it, steer it, ask about your own songs.

    python app.py                      # the demo catalog and model (built on first run)
    python app.py --index DIR --model DIR --port 7860

Thin by design: every answer comes from ``assistant.chat.MusicAssistant``; this file only turns
replies into chat messages and track cards, and keeps the server safe:

- audio is served only from inside the library folder (``allowed_paths`` is the library and
  nothing else, and every card path is resolved and checked before it is rendered);
- uploads are limited in size and to audio file types;
- each browser tab (and each API client) has its own ``Session`` in ``gr.State``;
- failures reach the person as one plain sentence, with the traceback in the server log;
- the queue bounds how many turns run at once.

The named endpoint ``/turn`` (``gradio_client``: ``client.predict(message, api_name="/turn")``)
runs one chat turn for that client's own session and returns the reply text, the track ids and
the session's played list.
"""
from __future__ import annotations

import argparse
import html
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr

from assistant.chat import N_SHOW, MusicAssistant
from assistant.session import Reply, Session, TrackCard
from index.audio import AUDIO_EXTENSIONS

log = logging.getLogger("tonearm.app")

ERROR_MESSAGE = "Something went wrong handling that message; details are in the server log."
EXAMPLE_PROMPTS = ("calm piano music", "fast electronic with a driving beat", "a folk reel in D major",
                   "something dark and orchestral")
FILE_ROUTE = "/gradio_api/file="  # Gradio's file route; it serves only allowed_paths and its own uploads
SESSION_TTL_S = 4 * 3600  # a session left alone this long is dropped (bounds server memory)
DEFAULT_MAX_UPLOAD_MB = 50
# Turns in flight at once: their decoding steps share forward passes (assistant.batching), and eight
# rows cost about what four do, so more turns at once wait less in the queue (bench/load.py).
DEFAULT_CONCURRENCY = 8
UNBATCHED_CONCURRENCY = 4  # with --no-batching, more turns at once only contend for the cores
DEFAULT_THREADS = 2
STREAM_INTERVAL_S = 0.25  # the streamed reply reaches the page in steps this far apart, at most
# The audio "play" event does not bubble, so it is caught on the way down and sent as a click.
PLAY_TRIGGER = "element.addEventListener('play', function () { trigger('click'); }, true);"
MAX_SESSION_LOCKS = 10_000
STATUS_POLL_S = 5.0  # how often an open page re-reads the model status

CSS = """
#tonearm-header h1 { margin-bottom: 0; }
#tonearm-header p { margin-top: 2px; opacity: 0.75; }
.track-card { border-radius: 12px !important; padding: 4px 6px !important; }
.track-card .card-title { font-size: 1.05rem; font-weight: 650; line-height: 1.3; }
.track-card .card-meta { font-size: 0.9rem; opacity: 0.8; margin-top: 2px; }
.track-card .card-reason { font-size: 0.85rem; margin: 6px 0 8px; opacity: 0.9; }
.track-card audio { width: 100%; height: 36px; }
.track-card .card-missing { font-size: 0.85rem; font-style: italic; opacity: 0.7; }
.track-card button { min-width: 0 !important; }
#played-panel ol { margin: 0; padding-left: 1.4em; font-size: 0.9rem; }
#played-panel .empty { font-size: 0.9rem; opacity: 0.7; }
"""


# ---- safety rules (pure functions) -------------------------------------------------------------

def safe_audio_path(path: str | Path | None, library_root: str | Path) -> Path | None:
    """``path`` resolved, if it is an existing audio file inside ``library_root``; else None.

    Symlinks and ``..`` are resolved first, so nothing outside the library can be reached
    through a path that merely starts with the library's name.
    """
    if not path:
        return None
    try:
        resolved = Path(path).resolve(strict=True)
        root = Path(library_root).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_file() or resolved.suffix.lower() not in AUDIO_EXTENSIONS:
        return None
    if not resolved.is_relative_to(root):
        log.warning("refused to serve %s: it is outside the library %s", resolved, root)
        return None
    return resolved


def check_upload(path: str | Path, max_bytes: int) -> str | None:
    """A plain message for the person if an uploaded file can't be used, else None."""
    p = Path(path)
    kinds = ", ".join(e.lstrip(".") for e in AUDIO_EXTENSIONS)
    if p.suffix.lower() not in AUDIO_EXTENSIONS:
        return f'"{p.name}" is not an audio file I can read. Upload one of: {kinds}.'
    try:
        size = p.stat().st_size
    except OSError:
        return f'The upload "{p.name}" did not arrive. Please try again.'
    if size > max_bytes:
        return (f'"{p.name}" is {size / 2**20:.2g} MB; the limit is {max_bytes / 2**20:.3g} MB. '
                "Upload a shorter clip or a compressed file (mp3, ogg).")
    return None


def audio_url(path: Path) -> str:
    """The URL at which Gradio's file route streams ``path`` (which must be an allowed path)."""
    return FILE_ROUTE + quote(str(path))


# ---- rendering ---------------------------------------------------------------------------------

def card_html(card: TrackCard, library_root: str | Path) -> str:
    """A track card: title, artist, album, the reason, and a player if the file is in the library."""
    e = html.escape
    album = card.album + (f" ({card.year})" if card.year else "") if card.album else card.year
    meta = " · ".join(x for x in (card.artist, album) if x)
    path = safe_audio_path(card.audio_path, library_root)
    if path is not None:
        player = f'<audio controls preload="metadata" src="{e(audio_url(path))}" data-track-id="{e(card.id)}"></audio>'
    else:
        player = '<div class="card-missing">No audio file for this track in the library.</div>'
    return (f'<div class="card-body" data-track-id="{e(card.id)}">'
            f'<div class="card-title">{e(card.title)}</div>'
            f'<div class="card-meta">{e(meta)}</div>'
            f'<div class="card-reason">{e(card.reason)}</div>{player}</div>')


def played_html(session: Session | None, assistant: MusicAssistant) -> str:
    """The tracks this session has been played, oldest first."""
    played = session.played if session else []
    if not played:
        return '<div class="empty">Nothing played yet.</div>'
    items = []
    for tid in played:
        t = assistant.index.by_id.get(tid)
        if t is not None:
            by = f" — {html.escape(t.artist)}" if t.artist else ""
            items.append(f"<li>{html.escape(t.title or t.id)}{by}</li>")
    return "<ol>" + "".join(items) + "</ol>"


# ---- the chat, without any UI: testable on its own ---------------------------------------------

class ChatController:
    """Runs chat turns for one assistant and keeps the display history next to each ``Session``.

    Every method takes the caller's own ``Session`` (``None`` starts a new one) and returns it,
    so nothing about a person is kept on the controller.
    """

    def __init__(self, assistant: MusicAssistant, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB):
        if max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb must be positive, got {max_upload_mb}")
        self.assistant = assistant
        self.library_root = Path(assistant.index.library_root)
        self.max_upload_bytes = int(max_upload_mb * 2**20)
        # One turn at a time per session: a click on a card while a reply is being worked out
        # must not interleave with it. Bounded: the least recently used locks are dropped.
        self._locks: OrderedDict[str, threading.Lock] = OrderedDict()
        self._locks_guard = threading.Lock()

    def session(self, session: Session | None) -> Session:
        return session if session is not None else self.assistant.new_session()

    def _turn_lock(self, session: Session) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.pop(session.id, None) or threading.Lock()
            self._locks[session.id] = lock
            while len(self._locks) > MAX_SESSION_LOCKS:
                self._locks.popitem(last=False)
            return lock

    def respond(self, message: dict | str | None, chat: list[dict] | None,
                session: Session | None) -> Iterator[tuple[list[dict], Session, list[TrackCard] | None]]:
        """Yield (chat messages, session, cards) as the reply grows.

        ``cards`` comes once, as soon as the tracks are chosen and before the words; it is None
        on every other step, and when the reply has no tracks (an answer about an upload, say),
        so the tracks on show remain playable.

        ``message`` is a MultimodalTextbox value ({"text": ..., "files": [...]}) or plain text.
        """
        session = self.session(session)
        chat = list(chat or [])
        text, files = _unpack(message)
        upload = files[0] if files else None
        if upload is not None:
            chat.append({"role": "user", "content": {"path": str(upload)}})
        if text:
            chat.append({"role": "user", "content": text})
        if not text and upload is None:
            yield chat, session, None
            return
        if upload is not None:
            problem = check_upload(upload, self.max_upload_bytes)
            if problem:
                yield chat + [{"role": "assistant", "content": problem}], session, None
                return
        try:
            final: Reply | None = None
            with self._turn_lock(session):  # released on close too, if the person goes away mid-reply
                last_sent = 0.0
                for update in self.assistant.stream(session, text, upload=upload):
                    if update.reply is not None:
                        final = update.reply
                        break
                    # Every page update costs the browser a round of rendering: the words go out at
                    # most every STREAM_INTERVAL_S, the cards at once.
                    if update.tracks or time.monotonic() - last_sent >= STREAM_INTERVAL_S:
                        last_sent = time.monotonic()
                        yield chat + [{"role": "assistant", "content": update.text or "…"}], session, update.tracks or None
        except Exception:
            log.exception("chat turn failed for message %r (upload %s)", text[:200], upload)
            yield chat + [{"role": "assistant", "content": ERROR_MESSAGE}], session, None
            return
        chat.append({"role": "assistant", "content": final.text if final else ""})
        for path in final.files if final else []:  # a download link under the answer
            # An explicit type keeps the page from offering a MIDI file in an audio player it cannot play.
            chat.append({"role": "assistant", "content": {"file": {
                "path": path, "orig_name": Path(path).name, "mime_type": "application/octet-stream"}}})
        yield chat, session, None

    def feedback(self, track_id: str | None, liked: bool, chat: list[dict] | None,
                 session: Session | None) -> tuple[list[dict], Session, list[TrackCard] | None]:
        """"More like this" / "Not for me" on a shown track: the reply is added to the chat."""
        session = self.session(session)
        chat = list(chat or [])
        if not track_id:
            return chat, session, None
        track = self.assistant.index.by_id.get(track_id)
        name = f'"{track.title}"' if track is not None else "that one"
        chat.append({"role": "user", "content": f"More like {name}" if liked else f"Not for me: {name}"})
        try:
            with self._turn_lock(session):
                reply = self.assistant.feedback(session, track_id, liked)
        except Exception:
            log.exception("feedback on %s (liked=%s) failed", track_id, liked)
            return chat + [{"role": "assistant", "content": ERROR_MESSAGE}], session, None
        chat.append({"role": "assistant", "content": reply.text})
        return chat, session, reply.tracks or None

    def focus(self, track_id: str | None, session: Session | None) -> Session:
        """The person played a shown card: the next relative request ("faster") is about it."""
        session = self.session(session)
        if track_id and track_id in self.assistant.index.by_id:
            with self._turn_lock(session):
                self.assistant.focus(session, track_id)
        return session

    def api_turn(self, message: str, session: Session | None) -> tuple[dict[str, Any], Session]:
        """One text turn for an API client: reply text, track ids and the session's played list."""
        session = self.session(session)
        try:
            with self._turn_lock(session):
                reply = self.assistant.reply(session, message or "")
        except Exception as e:
            log.exception("API chat turn failed for message %r", (message or "")[:200])
            raise gr.Error(ERROR_MESSAGE) from e
        return {
            "session": session.id,
            "text": reply.text,
            "track_ids": [c.id for c in reply.tracks],
            "tracks": [{"id": c.id, "title": c.title, "artist": c.artist} for c in reply.tracks],
            "played": list(session.played),
            "source": reply.source,
            "files": list(reply.files),
        }, session


def _unpack(message: dict | str | None) -> tuple[str, list[str]]:
    if message is None:
        return "", []
    if isinstance(message, str):
        return message.strip(), []
    files = [f if isinstance(f, str) else f.get("path") for f in (message.get("files") or [])]
    return (message.get("text") or "").strip(), [f for f in files if f]


# ---- the Gradio app ----------------------------------------------------------------------------

def build_app(assistant: MusicAssistant, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
              concurrency: int = DEFAULT_CONCURRENCY, title: str = "tonearm",
              status: Callable[[], str] | None = None) -> gr.Blocks:
    """The chat UI over ``assistant``, with its queue set up. Start it with ``launch``.

    Parameters
    ----------
    assistant : MusicAssistant
    max_upload_mb : float
        Uploads above this are refused (also enforced by the server in ``launch``).
    concurrency : int
        How many turns may run at once; the rest wait in the queue.
    status : callable, optional
        A sentence about the model (training in the background, ready, ...), shown above the
        chat and read again every few seconds; None shows no status line.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    controller = ChatController(assistant, max_upload_mb=max_upload_mb)
    library_root = controller.library_root
    examples = [{"text": p} for p in EXAMPLE_PROMPTS]

    # Uploaded files are deleted once they are as old as a session can be.
    with gr.Blocks(title=title, delete_cache=(3600, SESSION_TTL_S)) as demo:
        demo.tonearm_controller = controller  # so launch() can find the library and upload limit
        session_state = gr.State(None, time_to_live=SESSION_TTL_S)
        chat_state = gr.State([], time_to_live=SESSION_TTL_S)
        cards_state = gr.State([], time_to_live=SESSION_TTL_S)  # ids of the cards on show, in slot order

        gr.Markdown(f"# {title}\nAsk for music in your own words, refine it (\"faster\", \"no vocals\", "
                    "\"more like the first one\"), or attach a song and ask about it.", elem_id="tonearm-header")
        if status is not None:
            status_line = gr.Markdown(status(), elem_id="model-status")
            demo.load(status, None, status_line, api_visibility="private", show_progress="hidden")  # fresh on open
            gr.Timer(STATUS_POLL_S).tick(status, None, status_line, api_visibility="private", show_progress="hidden")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=380):
                chatbot = gr.Chatbot(
                    label="Chat", height=560, examples=examples, elem_id="chat", buttons=["copy"],
                    placeholder="**What would you like to hear?**\nPick an example or type your own.",
                    feedback_options=None, autoscroll=True)
                box = gr.MultimodalTextbox(
                    placeholder="Ask for music, or attach a song and ask \"what key is this in?\"",
                    file_types=list(AUDIO_EXTENSIONS), file_count="single", sources=["upload"],
                    show_label=False, autofocus=True, elem_id="message-box")
                clear = gr.Button("New conversation", variant="secondary", size="sm")
            with gr.Column(scale=2, min_width=300):
                gr.Markdown("### Recommended")
                slots, htmls, likes, nopes = [], [], [], []
                for i in range(N_SHOW):
                    with gr.Group(visible=False, elem_classes=["track-card"], elem_id=f"card-{i}") as group:
                        # Playing a card's audio tells the chat which track "faster" is about.
                        htmls.append(gr.HTML("", elem_classes=["card-html"], js_on_load=PLAY_TRIGGER))
                        with gr.Row():
                            likes.append(gr.Button("More like this", size="sm", variant="primary",
                                                   elem_classes=["more-like-this"]))
                            nopes.append(gr.Button("Not for me", size="sm", variant="secondary",
                                                   elem_classes=["not-for-me"]))
                    slots.append(group)
                with gr.Accordion("Played this session", open=True):
                    played = gr.HTML(played_html(None, assistant), elem_id="played-panel", js_on_load=None,
                                     max_height=320)

        # Hidden components carrying the /turn API for gradio_client.
        api_message = gr.Textbox(visible=False)
        api_result = gr.JSON(visible=False)
        api_button = gr.Button(visible=False)

        def view(chat, session, cards: list[TrackCard] | None, shown: list[str] | None = None, *,
                 streaming: bool = False):
            """Values for the outputs below; cards None leaves the ``shown`` cards as they are, and
            ``streaming`` the played list (it changes when a turn ends, not while it is written)."""
            if cards is None:
                # Visibility is restated, not skipped: Gradio re-shows a hidden group when a later
                # step of the same generator skips it.
                card_updates = [gr.skip()]
                card_updates += [gr.Group(visible=i < len(shown or [])) for i in range(N_SHOW)]
                card_updates += [gr.skip()] * N_SHOW
            else:
                card_updates = [[c.id for c in cards[:N_SHOW]]]
                for i in range(N_SHOW):
                    card_updates.append(gr.Group(visible=i < len(cards)))
                for i in range(N_SHOW):
                    card_updates.append(card_html(cards[i], library_root) if i < len(cards) else "")
            return [chat, chat, session, *card_updates, gr.skip() if streaming else played_html(session, assistant)]

        outputs = [chatbot, chat_state, session_state, cards_state, *slots, *htmls, played]

        def respond(message, chat, session, shown):
            try:
                for chat_now, session, cards in controller.respond(message, chat, session):
                    shown = [c.id for c in cards[:N_SHOW]] if cards else shown
                    yield [*view(chat_now, session, cards, shown, streaming=True),
                           gr.MultimodalTextbox(value=None, interactive=False)]
            except Exception:  # anything the controller did not catch: say so plainly, log the rest
                log.exception("chat turn failed")
                chat = list(chat or []) + [{"role": "assistant", "content": ERROR_MESSAGE}]
                yield [*view(chat, session, None, shown), gr.MultimodalTextbox(interactive=True)]
                return
            yield [*view(chat_now, session, None, shown), gr.MultimodalTextbox(value=None, interactive=True)]

        def from_example(evt: gr.SelectData, chat, session, shown):
            value = evt.value if isinstance(evt.value, dict) else {"text": str(evt.value)}
            yield from respond({"text": value.get("text", ""), "files": []}, chat, session, shown)

        def make_feedback(slot: int, liked: bool):
            def on_click(shown, chat, session):
                track_id = shown[slot] if slot < len(shown or []) else None
                chat, session, new_cards = controller.feedback(track_id, liked, chat, session)
                return view(chat, session, new_cards, shown)
            return on_click

        def make_focus(slot: int):
            def on_play(shown, session):
                return controller.focus(shown[slot] if slot < len(shown or []) else None, session)
            return on_play

        def reset():
            return view([], None, [])

        box.submit(respond, [box, chat_state, session_state, cards_state], outputs + [box], api_visibility="private")
        chatbot.example_select(from_example, [chat_state, session_state, cards_state], outputs + [box],
                               api_visibility="private")
        for i in range(N_SHOW):
            likes[i].click(make_feedback(i, True), [cards_state, chat_state, session_state], outputs,
                           api_visibility="private")
            nopes[i].click(make_feedback(i, False), [cards_state, chat_state, session_state], outputs,
                           api_visibility="private")
            htmls[i].click(make_focus(i), [cards_state, session_state], [session_state], api_visibility="private",
                           show_progress="hidden")
        clear.click(reset, None, outputs, api_visibility="private")
        chatbot.clear(reset, None, outputs, api_visibility="private")
        api_button.click(controller.api_turn, [api_message, session_state], [api_result, session_state],
                         api_name="turn", api_description="One chat turn in this client's own session: "
                         "returns {text, track_ids, tracks, played, session, source, files}.")

    demo.queue(default_concurrency_limit=concurrency, max_size=64 * concurrency)
    return demo


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = 7860,
           prevent_thread_lock: bool = False, quiet: bool = False):
    """Start ``demo`` (from ``build_app``) serving audio from its library folder only."""
    controller: ChatController = demo.tonearm_controller
    return demo.launch(
        server_name=host, server_port=port, prevent_thread_lock=prevent_thread_lock, quiet=quiet,
        allowed_paths=[str(controller.library_root.resolve())],
        max_file_size=controller.max_upload_bytes, show_error=False, footer_links=["api"],
        theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="slate"), css=CSS,
    )


# ---- command line ------------------------------------------------------------------------------

def set_turn_threads(threads: int) -> None:
    """CPU threads for each turn's model and searches (torch's pool is one per process)."""
    import torch

    torch.set_num_threads(threads)


def default_concurrency(batched: bool) -> int:
    """Turns in flight at once by default: more where they share decoding steps."""
    return DEFAULT_CONCURRENCY if batched else UNBATCHED_CONCURRENCY


def serving_weights(choice: str) -> str:
    """The weight format to serve with: ``choice``, or for "auto" bfloat16 where the CPU computes
    it natively and float32 elsewhere (emulated bfloat16 is slower than float32)."""
    from assistant.llm import native_bf16

    if choice != "auto":
        return choice
    return "bfloat16" if native_bf16("cpu") else "float32"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="app.py", description="Chat with the music assistant in your browser.",
        epilog="Without --index, the demo catalog and model are used (built on first run, which takes a while).")
    p.add_argument("--index", type=Path, help="index directory (from `python -m index build`)")
    p.add_argument("--model", type=Path, help="fine-tuned model directory for that index (needs --index)")
    p.add_argument("--no-model", action="store_true",
                   help="no language model: answer with the catalog's search (word match, session, request facts)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=None,
                   help=f"chat turns processed at once; others queue (default: {DEFAULT_CONCURRENCY}, or "
                        f"{UNBATCHED_CONCURRENCY} with --no-batching)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help="CPU threads each chat turn computes with (default: %(default)s); turns run side by side "
                        "up to --concurrency")
    p.add_argument("--weights", choices=("auto", "float32", "bfloat16", "int8"), default="auto",
                   help="how the model keeps its weights: auto takes bfloat16 where the CPU computes it natively "
                        "(half the bytes read per generated token) and float32 elsewhere (default: %(default)s)")
    p.add_argument("--no-batching", action="store_true",
                   help="decode each turn on its own instead of sharing the model's steps between the turns "
                        "running at once")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help="largest song a person may upload, in MB (default: %(default)s)")
    args = p.parse_args(argv)
    if args.model and not args.index:
        p.error("--model needs --index (the model is trained for one index)")
    if args.model and args.no_model:
        p.error("--model and --no-model contradict each other")
    if args.concurrency is None:
        args.concurrency = default_concurrency(batched=not args.no_batching)
    if args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    if args.max_upload_mb <= 0:
        p.error("--max-upload-mb must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    args = parse_args(argv)
    set_turn_threads(args.threads)
    train_later = None  # the demo model, when it is not trained yet
    if args.index is None:
        from assistant.pipeline import ensure_demo

        # The chat opens as soon as the catalog is indexed; the model trains meanwhile.
        index_dir, model_dir = ensure_demo(with_model=False, progress=True)
        if not args.no_model and not (model_dir / "train_report.json").is_file():
            train_later, model_dir = model_dir, None
    else:
        index_dir, model_dir = args.index, args.model
    if args.no_model:
        model_dir = None
    elif model_dir is None and train_later is None:
        print("No --model given: answering with the catalog's search (word match, session, request facts).")
    weights = serving_weights(args.weights)
    print(f"Loading {index_dir}" + (f" and {model_dir}" if model_dir else "") +
          f" (model weights in {weights}; up to {args.concurrency} turns at once, "
          + ("each decoded on its own)" if args.no_batching else "sharing each decoding step)"))
    try:
        assistant = MusicAssistant.load(index_dir, model_dir, weights=weights, batch_sessions=not args.no_batching)
    except Exception as e:  # a clear sentence, not a traceback, for the usual mistakes
        print(f"Could not load the assistant: {e}", file=sys.stderr)
        return 1
    print(f"{len(assistant.index.tracks)} tracks from {assistant.index.library_root}")
    status = None
    if train_later is not None:
        from assistant.pipeline import BackgroundTraining

        training = BackgroundTraining(index_dir, train_later, on_ready=assistant.load_model).start()
        print(f"Training the demo model in the background (first run only, about 15 minutes; log: {training.log_path}). "
              "The chat answers with the catalog's search until it is ready.")
        status = training.status
    elif assistant.catalog_note:
        print(assistant.catalog_note)
        status = lambda: assistant.catalog_note  # noqa: E731
    threading.Thread(target=assistant.warm_up, name="warm-up", daemon=True).start()
    demo = build_app(assistant, max_upload_mb=args.max_upload_mb, concurrency=args.concurrency, status=status)
    launch(demo, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
