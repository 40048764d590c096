"""Float32 against bfloat16 and int8 weights for the chat's generation: speed, and how often they agree.

Loads one model directory once per weight format (``assistant.model_dir.WEIGHT_FORMATS``:
float32, bfloat16, and int8 by ``quantize_int8``) and answers every turn of some conversations
with each, statelessly (the history as written, each turn alone, as the evaluation does).
Printed per weight format: the seconds to the tracks (prompt, block and retrieval) and to the
whole reply, the seconds per word token, and nDCG@10 on the turns; and for each against float32
on the same turns: whole blocks identical, codes identical per modality, the first card
identical, the three cards overlapping, and the replies' words identical.

Choose on the validation conversations (the default), not on test ones:

    python bench/decode_weights.py                                   # the demo's model, 30 val conversations
    python bench/decode_weights.py --index DIR --model DIR --conversations FILE --limit 50
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.latency import (  # noqa: E402
    add_model_arguments,
    check_model_arguments,
    model_and_conversations,
    percentile,
)


def answer_turns(assistant, conversations: list[dict]) -> list[dict]:
    """Every assistant turn answered from the history before it: its block, cards, words and times."""
    from assistant.chat import N_SHOW
    from assistant.conversations import played_tracks
    from assistant.evaluate import replay_generations
    from assistant.metrics import ndcg_at_k
    from assistant.request import read_request
    from assistant.session import Session

    replay_generations(assistant)  # the block the turn decoded is read back below, not decoded again
    out = []
    for conversation in conversations:
        turns = conversation["turns"]
        for i, turn in enumerate(turns):
            if turn["role"] != "assistant":
                continue
            history = turns[:i]
            t0 = time.perf_counter()
            reply = assistant.answer_reply(history, with_text=False)
            tracks_s = time.perf_counter() - t0
            generation = assistant.writer.block(list(history))
            session = Session(history=[dict(t) for t in history[:-1]], played=played_tracks(history))
            refinement = read_request(history[-1]["content"], assistant.words)
            cards = [assistant._card(t, 0.0, session, refinement) for t in reply.ranked[:N_SHOW]]
            words, t1 = "", time.perf_counter()
            for words in assistant._words(assistant.writer, list(history), cards, session, refinement):
                pass
            words_s = time.perf_counter() - t1
            n_tokens = len(assistant.tokenizer(words, add_special_tokens=False)["input_ids"]) if words else 0
            out.append({"codes": generation.codes, "ranked": reply.ranked, "words": words, "tracks_s": tracks_s,
                        "end_s": tracks_s + words_s, "token_s": words_s / max(1, n_tokens),
                        "ndcg10": ndcg_at_k(reply.ranked, turn.get("tracks", []), 10)})
    return out


def summary(name: str, turns: list[dict]) -> dict:
    return {"weights": name, "turns": len(turns),
            "tracks_p50_s": percentile([t["tracks_s"] for t in turns], 50),
            "end_p50_s": percentile([t["end_s"] for t in turns], 50),
            "end_p95_s": percentile([t["end_s"] for t in turns], 95),
            "token_p50_ms": 1000 * percentile([t["token_s"] for t in turns], 50),
            "ndcg10": sum(t["ndcg10"] for t in turns) / max(1, len(turns))}


def agreement(reference: list[dict], other: list[dict]) -> dict:
    """How often ``other``'s turns match ``reference``'s, turn by turn."""
    n = len(reference)
    modalities = list(reference[0]["codes"]) if n else []
    return {
        "blocks_identical": sum(a["codes"] == b["codes"] for a, b in zip(reference, other)) / n,
        "codes_identical": {m: sum(a["codes"][m] == b["codes"][m] for a, b in zip(reference, other)) / n
                            for m in modalities},
        "first_card_identical": sum(a["ranked"][:1] == b["ranked"][:1] for a, b in zip(reference, other)) / n,
        "three_cards_overlap": sum(len(set(a["ranked"][:3]) & set(b["ranked"][:3])) / 3
                                   for a, b in zip(reference, other)) / n,
        "words_identical": sum(a["words"] == b["words"] for a, b in zip(reference, other)) / n,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Float32 against bfloat16 and int8 weights: generation speed and agreement.")
    add_model_arguments(p, "val", 30)
    return check_model_arguments(p, p.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from assistant.chat import MusicAssistant
    from assistant.model_dir import WEIGHT_FORMATS

    path, conversations = model_and_conversations(args, "val")
    results, rows = {}, []
    for weights in WEIGHT_FORMATS:
        assistant = MusicAssistant.load(args.index, args.model, weights=weights)
        assistant.reply(assistant.new_session(), "a warm-up turn")  # first-call costs are not a turn's
        results[weights] = answer_turns(assistant, conversations)
        rows.append(summary(weights, results[weights]))
        del assistant
    print(f"{len(conversations)} conversations from {path}, {rows[0]['turns']} turns, {args.threads} threads")
    print(f"{'weights':<10}{'tracks p50':>12}{'reply p50':>11}{'reply p95':>11}{'ms/token':>10}{'nDCG@10':>9}")
    for r in rows:
        print(f"{r['weights']:<10}{r['tracks_p50_s']:>11.2f}s{r['end_p50_s']:>10.2f}s{r['end_p95_s']:>10.2f}s"
              f"{r['token_p50_ms']:>10.1f}{r['ndcg10']:>9.3f}")
    agreements = {}
    for weights in WEIGHT_FORMATS[1:]:
        agree = agreements[f"{weights}_vs_float32"] = agreement(results["float32"], results[weights])
        codes = ", ".join(f"{m} {v:.3f}" for m, v in agree["codes_identical"].items())
        print(f"{weights} against float32: blocks identical {agree['blocks_identical']:.3f} (codes: {codes}); first "
              f"card identical {agree['first_card_identical']:.3f}; three cards overlap "
              f"{agree['three_cards_overlap']:.3f}; words identical {agree['words_identical']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, **agreements}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
