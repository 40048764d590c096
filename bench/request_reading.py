"""How well are requests read? The rules of ``assistant.request`` against a MiniLM clause classifier.

Three readers on three phrasing sets, exact match by kind:

* ``rules``: the product's reader (lexicon, clauses, negation scope, catalog words);
* ``minilm``: each clause labelled by its nearest neighbour among the synthesizer's own
  refinement phrasings (MiniLM cosine similarity above a threshold, a negator flipping it);
* ``hybrid``: the rules, then the classifier for clauses the lexicon found nothing in.

Sets: ``tests/data/requests.jsonl``, ``tests/data/requests_heldout.jsonl`` and the
synthesizer's held-out refinement wording (never used to train). The classifier's examples
are the synthesizer's training wording only, so its figures are blind to all three sets; the
rules' lexicon was written with the first two in view.

    python bench/request_reading.py                   # thresholds 0.5, 0.6, 0.7
    python bench/request_reading.py --thresholds 0.55
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from assistant.refine import Refinement  # noqa: E402
from assistant.synth import HELD_OUT_WORDING  # noqa: E402
from assistant.request import (RELATION_READINGS, CatalogWords, _compiled_lexicon, _NEGATION,  # noqa: E402
                               clauses, load_phrasings, normalise, read_request, reading_of,
                               relation_phrasings, score_reader)


class ClauseClassifier:
    """Nearest labelled example by MiniLM cosine similarity, one clause at a time.

    The examples are the conversation synthesizer's own refinement phrasings (never the
    phrasing sets it is measured on). A clause whose best similarity is below ``threshold``
    asks nothing. ``negation`` flips a clause's pole when a negator opens its scope.
    """

    def __init__(self, encoder, examples: Sequence[tuple[str, dict]], threshold: float = 0.6):
        import numpy as np

        if not examples:
            raise ValueError("ClauseClassifier needs labelled examples")
        self.encoder, self.threshold = encoder, float(threshold)
        self.labels = [dict(label) for _, label in examples]
        self.vectors = np.asarray(encoder.encode([normalise(t) for t, _ in examples]), dtype="float32")

    @classmethod
    def from_synthesizer(cls, encoder=None, threshold: float = 0.6) -> "ClauseClassifier":
        from assistant.synth import TRAINING_WORDING

        if encoder is None:
            from index.text import get_text_encoder

            encoder = get_text_encoder()
        examples = [(ask.replace("{artist}", "them"), RELATION_READINGS[name])
                    for name, asks in TRAINING_WORDING.refinements.items() for ask in asks]
        return cls(encoder, examples, threshold)

    def classify(self, clauses_: Sequence[str]) -> list[dict]:
        """The label of each clause (``{}`` below the threshold)."""
        import numpy as np

        if not clauses_:
            return []
        q = np.asarray(self.encoder.encode(list(clauses_)), dtype="float32")
        sims = q @ self.vectors.T
        out = []
        for clause, row in zip(clauses_, sims):
            best = int(row.argmax())
            label = dict(self.labels[best]) if row[best] >= self.threshold else {}
            if label and _NEGATION.search(clause):
                label = _negated(label)
            out.append(label)
        return out

    def read(self, message: str, words: CatalogWords | None = None) -> Refinement:
        """A reader of whole messages from this classifier alone (for comparison with the rules)."""
        r = Refinement()
        for label in self.classify(clauses(normalise(message))):
            _apply_label(r, label)
        return r


def hybrid_reader(classifier: ClauseClassifier):
    """The rules, then ``classifier`` for clauses the lexicon found nothing in."""
    def read(message: str, words: CatalogWords | None = None) -> Refinement:
        r = read_request(message, words)
        unread = [c for c in clauses(normalise(message)) if not _clause_has_reading(c, words or CatalogWords())]
        for label in classifier.classify(unread):
            _apply_label(r, label, only_new=True)
        return r
    return read


def _clause_has_reading(clause: str, words: CatalogWords) -> bool:
    return bool(reading_of(read_request(clause, words))) or any(
        p.search(clause) for p, *_ in _compiled_lexicon()) or len(clause.split()) < 2


def _negated(label: dict) -> dict:
    out = {}
    for k, v in label.items():
        if k in ("tempo", "energy", "brightness"):
            out[k] = -v
        elif k == "vocals":
            out[k] = not v
        elif k == "artist":
            out[k] = "other" if v == "same" else "same"
    return out


def _apply_label(r: Refinement, label: dict, only_new: bool = False) -> None:
    names = {"tempo": "tempo_bpm", "energy": "energy", "brightness": "brightness"}
    have = {d for d, _ in r.relative}
    for k, v in label.items():
        if k in names and names[k] not in have:
            r.relative.append((names[k], v))
        elif k == "vocals" and (r.vocals is None or not only_new):
            r.vocals = v
        elif k == "artist" and (r.same_artist is None or not only_new):
            r.same_artist = v == "same"
        elif k == "ref_session" and (r.reference is None or not only_new):
            r.reference, r.from_session = v, True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.6, 0.7],
                   help="similarity below which the classifier reads nothing (default: 0.5 0.6 0.7)")
    args = p.parse_args(argv)
    sets = {name: load_phrasings(ROOT / "tests" / "data" / f"{name}.jsonl")
            for name in ("requests", "requests_heldout")}
    sets["synth-held-out"] = (CatalogWords(artists=("Maxstack",)), relation_phrasings(HELD_OUT_WORDING))
    print(f"{'set':<18}{'reader':<16}{'exact':>7}   by kind")
    for name, (words, items) in sets.items():
        rows = [("rules", read_request)]
        for t in args.thresholds:
            classifier = ClauseClassifier.from_synthesizer(threshold=t)
            rows += [(f"minilm@{t:g}", classifier.read), (f"hybrid@{t:g}", hybrid_reader(classifier))]
        for reader_name, reader in rows:
            s = score_reader(items, words, reader)
            kinds = " ".join(f"{k}:{a}/{b}" for k, (a, b) in sorted(s.by_kind.items()))
            print(f"{name:<18}{reader_name:<16}{s.accuracy:>7.3f}   {kinds}")


if __name__ == "__main__":
    main()
