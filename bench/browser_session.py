"""A five-turn chat in a real browser, timed as a person sees it.

Starts the app (the demo's index and model unless told otherwise), opens it in headless
Chromium with Playwright, types each message and presses Enter, and for every turn records
when the cards changed and when the reply text stopped growing, both from the key press, plus
the reply text as it was seen while it streamed. Prints the transcript and the times, and saves
a screenshot of the page at the end.

    python bench/browser_session.py --screenshot /tmp/chat.png
    python bench/browser_session.py --index DIR --model DIR "calm piano" "faster" ...
    python bench/browser_session.py "calm piano music" "!play 2" "faster" "!not-for-me 1"

A step "!play N" plays the Nth card's audio (what the next "faster" is relative to); a step
"!not-for-me N" presses that card's "Not for me", and is timed like a message.

Needs Debian's chromium (`make browser-deps`) and the playwright package (installed by `make`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = "/usr/bin/chromium"
MESSAGES = ("Some calm piano music, please.", "Something faster.", "Now something darker.",
            "More like the first one.", "An instrumental one with strings.")
POLL_S = 0.05
PENDING = "Loading content"  # what Gradio's chat shows in a reply that has not started yet
SETTLED_S = 1.5  # a reply whose text has not changed for this long, with the box usable again, is done

CARD_TITLES = "() => Array.from(document.querySelectorAll('.track-card .card-title')).map(e => e.innerText.trim())"
CARD_REASONS = "() => Array.from(document.querySelectorAll('.track-card .card-reason')).map(e => e.innerText.trim())"
LAST_BOT = ("() => { const m = document.querySelectorAll('#chat .message.bot');"
            " return m.length ? m[m.length - 1].innerText.trim() : ''; }")
BOT_COUNT = "() => document.querySelectorAll('#chat .message.bot').length"
BOX_READY = "() => { const t = document.querySelector('#message-box textarea'); return !!t && !t.disabled; }"

# The page times itself: a MutationObserver notes, with the page's own clock, every change of the
# last reply's text or of the card titles, and a capturing listener notes the key press or click
# that starts the turn. Python then only looks in every WATCH_POLL_S, so the measuring does not take
# the CPU the server and the page need (polling the page every 50 ms took a share of the two cores).
WATCH = r"""() => {
  const state = () => {
    const m = document.querySelectorAll('#chat .message.bot');
    return {bots: m.length, text: m.length ? m[m.length - 1].textContent.trim() : '',
            cards: Array.from(document.querySelectorAll('.track-card .card-title'))
                     .map(e => e.textContent.trim()).join('\n')};
  };
  if (window.__turn) {
    window.__turn.observer.disconnect();
    for (const type of ['keydown', 'click']) document.removeEventListener(type, window.__turn.start_on, true);
  }
  const turn = window.__turn = {start: null, before: state(), log: []};
  const start = turn.start_on = e => {
    if (turn.start !== null) return;
    if ((e.type === 'keydown' && e.key === 'Enter' && e.target.closest('#message-box'))
        || (e.type === 'click' && e.target.closest('.track-card button'))) turn.start = performance.now();
  };
  document.addEventListener('keydown', start, true);
  document.addEventListener('click', start, true);
  let last = turn.before;
  turn.observer = new MutationObserver(() => {
    const now = state();
    if (now.text !== last.text || now.cards !== last.cards || now.bots !== last.bots) {
      turn.log.push({t: performance.now(), ...now});
      last = now;
    }
  });
  turn.observer.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
TURN_STATUS = """() => { const t = window.__turn, box = document.querySelector('#message-box textarea');
  const said = t.log.filter(e => e.bots > t.before.bots && e.text && e.text !== 'PENDING');
  return {now: performance.now(), said: said.length ? said[said.length - 1].t : null,
          cards: t.log.some(e => e.cards && e.cards !== t.before.cards), ready: !!box && !box.disabled}; }"""
TURN_STATUS = TURN_STATUS.replace("PENDING", PENDING)
TURN_LOG = "() => ({start: window.__turn.start, before: window.__turn.before, log: window.__turn.log})"
WATCH_POLL_S = 0.25


def run_turn(page, message: str, timeout_s: float) -> dict:
    """Send one message; return the times to new cards and to the finished text, and what streamed.

    Times come from the page's clock, from the key press (or click) to the change on screen."""
    page.evaluate(WATCH)
    feedback = message.startswith("!not-for-me")
    if feedback:  # a feedback reply comes whole, with new cards
        page.locator(".track-card").nth(int(message.split()[1]) - 1).locator("button.not-for-me").click()
    else:
        box = page.locator("#message-box textarea")
        box.fill(message)
        box.press("Enter")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        time.sleep(WATCH_POLL_S)
        status = page.evaluate(TURN_STATUS)
        settled = status["said"] is not None and status["now"] - status["said"] > SETTLED_S * 1000
        if settled and status["ready"] and (status["cards"] or not feedback):
            break
    return turn_times(page.evaluate(TURN_LOG)) | {
        "message": message, "cards": page.evaluate(CARD_TITLES), "reasons": page.evaluate(CARD_REASONS)}


def turn_times(turn: dict) -> dict:
    """Times to the first new cards and to the reply's last change, from a WATCH record."""
    start, before = turn["start"], turn["before"]
    tracks_s = end_s = None
    seen: list[str] = []
    for entry in turn["log"]:
        if tracks_s is None and entry["cards"] and entry["cards"] != before["cards"]:
            tracks_s = (entry["t"] - start) / 1000
        text = entry["text"] if entry["bots"] > before["bots"] else ""
        if text == PENDING:  # the page's placeholder until the first update of the reply arrives
            text = ""
        if text and (not seen or text != seen[-1]):
            seen.append(text)
            end_s = (entry["t"] - start) / 1000
    if start is None:
        tracks_s = end_s = None
    return {"tracks_s": tracks_s, "end_s": end_s, "streamed": seen, "reply": seen[-1] if seen else ""}


def run_turn_polled(page, message: str, timeout_s: float) -> dict:
    """``run_turn`` as this bench first measured it, reading the page every POLL_S from Python
    (``--poll``): kept to compare with, since that reading costs the machine CPU time."""
    cards_before, bots_before = page.evaluate(CARD_TITLES), page.evaluate(BOT_COUNT)
    box = page.locator("#message-box textarea")
    feedback = message.startswith("!not-for-me")
    if feedback:
        button = page.locator(".track-card").nth(int(message.split()[1]) - 1).locator("button.not-for-me")
        t0 = time.perf_counter()
        button.click()
    else:
        box.fill(message)
        t0 = time.perf_counter()
        box.press("Enter")
    tracks_s = end_s = None
    seen: list[str] = []
    last_change = t0
    while time.perf_counter() - t0 < timeout_s:
        now = time.perf_counter()
        cards = page.evaluate(CARD_TITLES)
        if tracks_s is None and cards and cards != cards_before:
            tracks_s = now - t0
        text = page.evaluate(LAST_BOT) if page.evaluate(BOT_COUNT) > bots_before else ""
        if text == PENDING:
            text = ""
        if text and (not seen or text != seen[-1]):
            seen.append(text)
            last_change = now
        if seen and page.evaluate(BOX_READY) and now - last_change > SETTLED_S and (tracks_s or not feedback):
            end_s = last_change - t0
            break
        time.sleep(POLL_S)
    return {"message": message, "tracks_s": tracks_s, "end_s": end_s, "streamed": seen,
            "reply": seen[-1] if seen else "", "cards": page.evaluate(CARD_TITLES),
            "reasons": page.evaluate(CARD_REASONS)}


def play_card(page, n: int) -> dict:
    """Start the Nth card's player (1-based) and give the play event time to reach the server."""
    title = page.evaluate(CARD_TITLES)[n - 1]
    page.locator(".track-card audio").nth(n - 1).evaluate("a => a.play()")
    time.sleep(1.5)
    return {"message": f"!play {n}", "played": title}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time a chat in headless Chromium: cards and finished reply per turn.")
    p.add_argument("messages", nargs="*", default=list(MESSAGES), help="the user turns (default: a five-turn session)")
    p.add_argument("--index", type=Path, help="index directory (default: the demo's)")
    p.add_argument("--model", type=Path, help="model directory (default: the demo's)")
    p.add_argument("--screenshot", type=Path, help="save a screenshot of the page at the end here")
    p.add_argument("--json", type=Path, help="write the transcript and times here")
    p.add_argument("--turn-timeout-s", type=float, default=60.0)
    p.add_argument("--poll", action="store_true",
                   help="time by reading the page from Python every 50 ms, as this bench first did "
                        "(that reading takes CPU from the server; default: the page times itself)")
    p.add_argument("--weights", choices=("auto", "float32", "bfloat16", "int8"), default="auto",
                   help="how the model keeps its weights; auto as the app chooses (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads each turn computes with (default: the app's)")
    args = p.parse_args(argv)
    if (args.index is None) != (args.model is None):
        p.error("give --index and --model together, or neither for the demo")
    if not Path(CHROMIUM).exists():
        p.error(f"chromium is not installed at {CHROMIUM} (`make browser-deps` installs it)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from playwright.sync_api import sync_playwright

    from app import DEFAULT_THREADS, build_app, launch, serving_weights, set_turn_threads
    from assistant.chat import MusicAssistant
    from bench.load import free_port

    if args.index is None:
        from assistant.pipeline import ensure_demo

        args.index, args.model = ensure_demo()
    set_turn_threads(args.threads or DEFAULT_THREADS)
    # the assistant as app.py serves it: its weights and its batched decoding
    assistant = MusicAssistant.load(args.index, args.model, weights=serving_weights(args.weights), batch_sessions=True)
    assistant.reply(assistant.new_session(), "a warm-up turn")  # first-call costs are not a person's wait
    demo = build_app(assistant)
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    turns = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}")
            page.locator("#message-box textarea").wait_for()
            for message in args.messages:
                if message.startswith("!play"):
                    print(f"\n(played card {message.split()[1]}: {play_card(page, int(message.split()[1]))['played']})")
                    continue
                turns.append((run_turn_polled if args.poll else run_turn)(page, message, args.turn_timeout_s))
                t = turns[-1]
                print(f"\nuser> {message}")
                print(f"  cards after {t['tracks_s'] or float('nan'):.2f} s:")
                for title, reason in zip(t["cards"], t["reasons"]):
                    print(f"    {title}  [{reason}]")
                print(f"  reply complete after {t['end_s'] or float('nan'):.2f} s, seen in {len(t['streamed'])} steps")
                for step in t["streamed"][:: max(1, len(t["streamed"]) // 4)][:4]:
                    print(f"    streaming: {step[:110]}")
                print(f"  assistant> {t['reply']}")
            if args.screenshot:
                args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.screenshot), full_page=True)
            browser.close()
    finally:
        demo.close()
    tracks = [t["tracks_s"] for t in turns if t["tracks_s"] is not None]
    ends = [t["end_s"] for t in turns if t["end_s"] is not None]
    print(f"\ncards: p50 {statistics.median(tracks):.2f} s over {len(tracks)} turns; "
          f"whole reply: p50 {statistics.median(ends):.2f} s over {len(ends)} turns")
    if args.json:
        args.json.write_text(json.dumps(turns, indent=2, ensure_ascii=False) + "\n")
    return 0 if len(tracks) == len(ends) == len(turns) else 1


if __name__ == "__main__":
    raise SystemExit(main())
