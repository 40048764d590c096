"""A learned re-ranker over the union of a turn's rankings, fitted on validation conversations.

Reciprocal-rank fusion weighs each ranking by one hand-set number. The re-ranker instead scores
every candidate that any ranking of the turn found with a logistic regression over features:
its reciprocal rank in each ranking (BM25 of the person's words, MiniLM, the session's
neighbourhood, the model's block, the catalog ranked by the block's likelihood), whether it has
the album or the artist that every track played so far has (a session that walks one album
or one artist's work), and, with a model, the log-probability the model gave each of the
candidate's five codes. It is fitted on the validation conversations (never on training ones,
whose blocks the model has memorised, nor on test ones), and the same fit without the model's
features is the no-model comparison. The fit also says on which turns the model's features are
worth using (``choose_by_turn``): first requests, later turns, both or neither.

    candidates, rows = candidate_features(rankings, log_probs, index.track_codes, with_model=True,
                                          played=session.played, track_of=index.by_id.get)
    reranker = fit_reranker(rows, labels, feature_names(True))
    order = reranker.rank(candidates, rows)
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.track import MODALITIES, Track

RANKINGS = ("lexical", "dense", "session", "block", "likelihood")
MODEL_RANKINGS = ("block", "likelihood")
SHARED = ("album", "artist")  # a candidate's same_<field>: every played track has its (non-empty) value
RANK_OFFSET = 10  # a candidate's reciprocal-rank feature is RANK_OFFSET / (RANK_OFFSET + rank)
LOG_PROB_FLOOR = -20.0
RERANKER_FILE = "reranker.json"
TURN_POSITIONS = ("first", "later")  # before the session has played anything, and after
TURN_NAMES = {"first": "first requests", "later": "later turns"}
CHOICE_FOLDS = 5  # cross-validation folds that choose the turns the model's features rank
# A logistic regression needs about ten true examples per feature (events per variable) before
# its weights mean anything: fitted on a small library's 10 validation turns, one ranked hand-
# written requests far below the rank fusion it replaced (nDCG@10 0.40 against 0.65).
TURNS_PER_FEATURE = 10


def feature_names(with_model: bool) -> tuple[str, ...]:
    """The features a re-ranker reads: reciprocal ranks, whether each ranking found the track,
    whether it shares the album and the artist of every played track, and with the model the
    log-probability of each of its codes and their sum."""
    rankings = RANKINGS if with_model else tuple(r for r in RANKINGS if r not in MODEL_RANKINGS)
    names = [f"rr_{r}" for r in rankings] + [f"in_{r}" for r in rankings] + [f"same_{f}" for f in SHARED]
    if with_model:
        names += [f"lp_{m}" for m in MODALITIES] + ["lp_sum"]
    return tuple(names)


def min_fit_turns() -> int:
    """The fewest validation turns (one true track each) a re-ranker is fitted on:
    ``TURNS_PER_FEATURE`` per feature of the fit with the model's features."""
    return TURNS_PER_FEATURE * len(feature_names(True))


def shared_by_all(candidates: Sequence[Track], played: Sequence[Track], field: str) -> np.ndarray:
    """1.0 for each candidate whose ``field`` (album, artist) is not empty and is that of every
    played track, else 0.0; all 0.0 when nothing was played.

    >>> from index.track import Track
    >>> a, b = Track(id="a", album="X"), Track(id="b", album="Y")
    >>> shared_by_all([a, b], [Track(id="p", album="X")], "album").tolist()
    [1.0, 0.0]
    """
    values = {getattr(t, field) for t in played}
    if len(values) != 1 or not next(iter(values)):
        return np.zeros(len(candidates))
    value = values.pop()
    return np.array([float(getattr(c, field) == value) for c in candidates])


def candidate_features(rankings: Mapping[str, Sequence[tuple[str, float]]],
                       log_probs: Mapping[str, np.ndarray] | None,
                       codes_of: Callable[[str], Mapping[str, int]], *,
                       with_model: bool, played: Sequence[str] = (),
                       track_of: Callable[[str], Track | None] | None = None,
                       features: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """The candidates of one turn (every track any ranking found, in first-seen order) and
    their feature rows, in ``features`` order (default ``feature_names(with_model)``; a
    re-ranker fitted before a feature existed passes its own list).

    ``played`` are the session's tracks so far and ``track_of`` finds a track by id; without
    them (or for a track it does not find) the ``same_*`` features are 0."""
    names = tuple(features) if features is not None else feature_names(with_model)
    unknown = set(names) - set(feature_names(True))
    if unknown:
        raise ValueError(f"unknown re-ranker features {sorted(unknown)}; fit the re-ranker again")
    candidates = list(dict.fromkeys(t for r in RANKINGS for t, _ in rankings.get(r, ())))
    column = {n: i for i, n in enumerate(names)}
    rows = np.zeros((len(candidates), len(names)))
    at = {t: i for i, t in enumerate(candidates)}
    for r in RANKINGS:
        if f"rr_{r}" not in column:
            continue
        for rank, (t, _) in enumerate(rankings.get(r, ())):
            rows[at[t], column[f"rr_{r}"]] = RANK_OFFSET / (RANK_OFFSET + rank)
            rows[at[t], column[f"in_{r}"]] = 1.0
    if track_of is not None and played:
        played_tracks = [t for t in map(track_of, played) if t is not None]
        known = [(i, t) for i, t in enumerate(map(track_of, candidates)) if t is not None]
        for f in SHARED:
            if f"same_{f}" in column and played_tracks and known:
                rows[[i for i, _ in known], column[f"same_{f}"]] = shared_by_all([t for _, t in known],
                                                                                played_tracks, f)
    if "lp_sum" in column and log_probs is not None:
        best = {m: float(np.max(v)) for m, v in log_probs.items()}
        for i, t in enumerate(candidates):
            codes = codes_of(t)
            values = [max(LOG_PROB_FLOOR, float(log_probs[m][codes[m]]) - best[m]) if m in log_probs else 0.0
                      for m in MODALITIES]
            for m, value in zip(MODALITIES, values):
                if f"lp_{m}" in column:
                    rows[i, column[f"lp_{m}"]] = value
            rows[i, column["lp_sum"]] = sum(values)
    return candidates, rows


@dataclass
class Reranker:
    """A linear score over ``features``, with the feature scaling it was fitted with."""

    features: tuple[str, ...]
    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @property
    def with_model(self) -> bool:
        return "lp_sum" in self.features

    def score(self, rows: np.ndarray) -> np.ndarray:
        return ((rows - self.mean) / self.scale) @ self.weights

    def rank(self, candidates: Sequence[str], rows: np.ndarray) -> list[tuple[str, float]]:
        """The candidates best first, with their scores (ties keep the given order)."""
        if not len(candidates):
            return []
        scores = self.score(rows)
        order = np.argsort(-scores, kind="stable")
        return [(candidates[i], float(scores[i])) for i in order]

    def to_dict(self) -> dict:
        return {"features": list(self.features), "weights": self.weights.tolist(), "mean": self.mean.tolist(),
                "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Reranker":
        arrays = [np.asarray(d[k], dtype=np.float64) for k in ("weights", "mean", "scale")]
        if not all(a.shape == (len(d["features"]),) for a in arrays):
            raise ValueError("a re-ranker needs one weight, mean and scale per feature")
        return cls(tuple(d["features"]), *arrays)


def fit_reranker(rows: np.ndarray, labels: np.ndarray, features: Sequence[str], *, c: float = 1.0) -> Reranker:
    """Logistic regression of "is the true track" on standardised features (sklearn)."""
    from sklearn.linear_model import LogisticRegression

    rows, labels = np.asarray(rows, dtype=np.float64), np.asarray(labels)
    if rows.ndim != 2 or rows.shape[1] != len(features) or len(rows) != len(labels):
        raise ValueError(f"rows must be (n, {len(features)}) with one label each, got {rows.shape} and {labels.shape}")
    if labels.min() == labels.max():
        raise ValueError("fitting a re-ranker needs both true and other candidates")
    mean, scale = rows.mean(axis=0), rows.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
    model.fit((rows - mean) / scale, labels)
    return Reranker(tuple(features), model.coef_[0].astype(np.float64), mean, scale)


def save_rerankers(model_dir: str | Path, rerankers: Mapping[str, Reranker], report: dict) -> Path:
    """Write ``reranker.json``: the re-rankers by name ("with_model", "without_model") and how they were chosen."""
    path = Path(model_dir) / RERANKER_FILE
    path.write_text(json.dumps({"rerankers": {k: r.to_dict() for k, r in rerankers.items()}, "report": report},
                               indent=2) + "\n")
    return path


def _read_reranker_file(model_dir: str | Path) -> tuple[dict[str, Reranker], dict]:
    """The re-rankers of ``RERANKER_FILE`` by name and the fit's report (both empty without one)."""
    path = Path(model_dir) / RERANKER_FILE
    if not path.is_file():
        return {}, {}
    data = json.loads(path.read_text())
    return {k: Reranker.from_dict(v) for k, v in data["rerankers"].items()}, data.get("report", {})


def load_rerankers(model_dir: str | Path) -> dict[str, Reranker]:
    """The re-rankers of a model directory ({} when it has none)."""
    return _read_reranker_file(model_dir)[0]


def rerankers_by_turn(model_dir: str | Path) -> dict[str, Reranker]:
    """The re-ranker a model directory ranks each ``TURN_POSITIONS`` turn with ({} when it has
    none): the one with the model's features where the fit found they help (``choose_by_turn``),
    the one without elsewhere. A fit from before that choice uses the model's features on every turn."""
    rerankers, report = _read_reranker_file(model_dir)
    if "with_model" not in rerankers:
        return {}
    on = report.get("by_turn", {}).get("model_features_on", TURN_POSITIONS)
    return {p: rerankers["with_model"] if p in on or "without_model" not in rerankers else rerankers["without_model"]
            for p in TURN_POSITIONS}


def generate_turns(assistant, sessions: Sequence[Sequence[list[dict]]], *, workers: int = 8,
                   progress: bool = True) -> list[list]:
    """The assistant's generation (``Generation``) for each history of each session, as the chat
    makes them: a session's turns in order on one key-value cache, so each prompt runs only past
    what the turn before left there. On an assistant made with ``batch_sessions=True``,
    ``workers`` sessions decode at once, their steps sharing one forward pass (on a CPU a step for
    eight costs little more than one); otherwise one session at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from .generation import DecodeState

    bar = tqdm(total=sum(map(len, sessions)), desc="re-ranker blocks", disable=not progress, unit="turn")

    def session_blocks(histories: Sequence[list[dict]]) -> list:
        state, out = DecodeState(), []
        for history in histories:
            out.append(assistant.writer.block(list(history), state))
            bar.update()
        return out

    batched = assistant.decoder.batcher is not None
    try:
        with ThreadPoolExecutor(max(1, workers) if batched else 1) as pool:
            return list(pool.map(session_blocks, sessions))
    finally:
        bar.close()


def turn_rows(assistant, conversations: Sequence[dict], *, progress: bool = True) -> list[dict]:
    """For every evaluation point of ``conversations``: the candidates, both feature sets and
    the labels, from ``assistant``'s own generations (``generate_turns``) and searches (as its
    turn would see them)."""
    from tqdm.auto import tqdm

    from .conversations import played_tracks
    from .metrics import eval_turns
    from .retrieval import CANDIDATES
    from .session import Session
    from .writer import Generation

    points = [(conv, history, relevant) for conv in conversations for history, relevant in eval_turns(conv)]
    if assistant.model is not None:
        by_session = generate_turns(assistant, [[h for h, _ in eval_turns(c)] for c in conversations],
                                    progress=progress)
        generations = [g for session in by_session for g in session]
    else:
        generations = [Generation("", None, [])] * len(points)
    out = []
    for (conv, history, relevant), generation in tqdm(list(zip(points, generations)), desc="re-ranker rows",
                                                      disable=not progress, unit="turn"):
        session = Session(history=[dict(t) for t in history[:-1]])
        session.played = played_tracks(history)
        exclude = set(session.played)
        by_block = (assistant.index.retrieve(codes=generation.codes, k=CANDIDATES, exclude=exclude)
                    if generation.codes else [])
        rankings = assistant.retrieval.rankings(by_block, list(history), session, CANDIDATES, exclude, generation)
        row = {"conversation": conv["id"], "relevant": set(relevant), "position": turn_position(session.played)}
        for with_model in (True, False):
            candidates, rows = candidate_features(rankings, generation.code_log_probs,
                                                  assistant.index.track_codes, with_model=with_model,
                                                  played=session.played, track_of=assistant.index.by_id.get)
            row[with_model] = (candidates, rows, np.array([t in row["relevant"] for t in candidates]))
        out.append(row)
    return out


def turn_position(played: Sequence[str]) -> str:
    """A turn's ``TURN_POSITIONS`` entry: "first" before the session has played anything, else "later"."""
    return "later" if played else "first"


def ranked_ndcg(reranker: Reranker, turns: Sequence[dict], with_model: bool) -> np.ndarray:
    """nDCG@10 of each turn's candidates as ``reranker`` orders them (before the request's checks)."""
    from .metrics import ndcg_at_k

    return np.array([ndcg_at_k([t for t, _ in reranker.rank(*turn[with_model][:2])], turn["relevant"], 10)
                     for turn in turns])


def choose_by_turn(turns: Sequence[dict], fold_of: Mapping[str, int], folds: int, c: float = 1.0) -> dict:
    """On which turns the model's features help the re-ranker: for first requests and for later
    turns apart, the nDCG@10 of the candidates as re-rankers with and without them order them,
    each fold's turns ordered by a fit on the other folds (``turns`` from ``turn_rows``).

    A session that has played tracks has the session's neighbourhood to go on, which the model's
    block mostly repeats; on a first request it has only the words. Fitted on the demo's
    validation conversations, the model's features raised first requests and lowered later turns.

    Returns
    -------
    dict
        ``{"model_features_on": [...], "first": {"with_model", "without_model", "turns"}, "later": ...}``;
        a position with no turns, or no folds to score, keeps the model's features.
    """
    scored = {p: {True: [], False: []} for p in TURN_POSITIONS}
    for fold in range(folds if folds > 1 else 0):
        train = [t for t in turns if fold_of[t["conversation"]] != fold]
        held = [t for t in turns if fold_of[t["conversation"]] == fold]
        if not held or not train or len({label for t in train for label in t[True][2]}) < 2:
            continue
        for with_model in (True, False):
            ndcg = ranked_ndcg(fit_from_rows(train, with_model, c), held, with_model)
            for t, value in zip(held, ndcg):
                scored[t["position"]][with_model].append(value)
    report: dict = {"model_features_on": []}
    for position, by in scored.items():
        if by[True]:
            report[position] = {"with_model": float(np.mean(by[True])), "without_model": float(np.mean(by[False])),
                                "turns": len(by[True])}
        if not by[True] or np.mean(by[True]) > np.mean(by[False]):
            report["model_features_on"].append(position)
    return report


def describe_by_turn(by_turn: Mapping) -> str:
    """One line on ``choose_by_turn``'s choice, for a person reading the fit's output."""
    parts = []
    for position in TURN_POSITIONS:
        if position in by_turn:
            m = by_turn[position]
            verdict = "with" if position in by_turn["model_features_on"] else "without"
            parts.append(f"{TURN_NAMES[position]} {verdict} them (nDCG@10 {m['with_model']:.3f} with, "
                         f"{m['without_model']:.3f} without, {m['turns']} turns)")
    return "the model's features: " + "; ".join(parts) + " (cross-validated)" if parts else ""


def fit_from_rows(turns: Sequence[dict], with_model: bool, c: float = 1.0) -> Reranker:
    """Fit on every candidate of ``turns`` (from ``turn_rows``)."""
    rows = np.concatenate([t[with_model][1] for t in turns])
    labels = np.concatenate([t[with_model][2] for t in turns])
    return fit_reranker(rows, labels, feature_names(with_model), c=c)


def assign_folds(conversations: Sequence[dict], folds: int) -> tuple[dict[str, int], str]:
    """Each conversation's fold (by id), dealing whole playlists (``synth.split_key``) into
    ``folds``, or the conversations themselves where all walk one playlist; and which it was.

    >>> convs = [{"id": "a", "playlist": "P"}, {"id": "b", "playlist": "Q"}, {"id": "c", "playlist": "P"}]
    >>> assign_folds(convs, 5)
    ({'a': 0, 'b': 1, 'c': 0}, 'playlist')
    >>> assign_folds(convs[::2], 5)
    ({'a': 0, 'c': 1}, 'conversation')
    """
    from .synth import split_key

    if folds < 1:
        raise ValueError(f"folds must be at least 1, got {folds}")
    groups = list(dict.fromkeys(split_key(c) for c in conversations))
    if len(groups) > 1:
        of_group = {g: i % folds for i, g in enumerate(groups)}
        return {c["id"]: of_group[split_key(c)] for c in conversations}, "playlist"
    return {c["id"]: i % folds for i, c in enumerate(conversations)}, "conversation"


def fit_on_validation(assistant, conversations: Sequence[dict], *, folds: int = 5, c: float = 1.0,
                      progress: bool = True) -> tuple[dict[str, Reranker], dict]:
    """Fit the re-rankers with and without the model's features on validation conversations.

    With ``folds`` above 1, figures come from cross-validation: each fold is scored by
    re-rankers fitted on the other folds, through the assistant's whole turn (refinement
    included), next to the reciprocal-rank fusion it replaces. Folds hold out whole playlists
    (``synth.split_key``), as the test set does: sessions over a playlist the fit has seen
    flatter a re-ranker that learns that playlist rather than the turn. Only where every
    conversation walks one playlist are the conversations themselves dealt into folds. The
    re-rankers returned are then fitted on every conversation. The turns the model's features
    rank (``choose_by_turn``) are chosen first, on every conversation, and the cross-validated
    assistant uses them as chosen.

    Returns
    -------
    (rerankers, report)
        ``{"with_model": ..., "without_model": ...}`` and the cross-validated nDCG@10 and hit@3.
    """
    from .chat import MusicAssistant
    from .evaluate import assistant_ranker, evaluate_system, replay_generations

    if assistant.model is None:
        raise ValueError("fitting the re-rankers needs the assistant's model")
    replay_generations(assistant)
    turns = turn_rows(assistant, conversations, progress=progress)
    ids = list(dict.fromkeys(c["id"] for c in conversations))
    fold_of, folds_by = assign_folds(conversations, max(folds, 1))
    # The choice of turns is always cross-validated: on the rows alone it takes seconds.
    by_turn = choose_by_turn(turns, assign_folds(conversations, CHOICE_FOLDS)[0], CHOICE_FOLDS, c)
    on = by_turn["model_features_on"]
    words = assistant.retrieval.request_words  # the assistant scored as it answers: new words go to rank fusion
    writer = assistant.writer  # the same blocks as the rows were built from
    systems = {"assistant (rank fusion)": lambda fitted: MusicAssistant(
                   assistant.index, writer=writer, request_words=words),
               "engine (rank fusion)": lambda fitted: MusicAssistant(assistant.index),
               "assistant (re-ranker)": lambda fitted: MusicAssistant(
                   assistant.index, writer=writer, request_words=words,
                   reranker=fitted["first" in on], later_reranker=fitted["later" in on]),
               "engine (re-ranker)": lambda fitted: MusicAssistant(assistant.index, reranker=fitted[False])}
    scores: dict[str, list[tuple[float, float, int]]] = {name: [] for name in systems}
    for fold in range(folds if folds > 1 else 0):
        train = [t for t in turns if fold_of[t["conversation"]] != fold]
        held = [c for c in conversations if fold_of[c["id"]] == fold]
        if not held or not train:
            continue
        fitted = {w: fit_from_rows(train, w, c) for w in (True, False)}
        for name, make in systems.items():
            system = make(fitted)
            result = evaluate_system(name, assistant_ranker(system), held, progress=False)
            scores[name].append((result.metrics["ndcg@10"], result.metrics["hit@3"], len(held)))
    report = {"conversations": len(ids), "turns": len(turns), "folds": folds, "c": c,
              "folds_by": folds_by, "by_turn": by_turn,
              "cross_validated": {name: {"ndcg@10": float(np.average([s[0] for s in v], weights=[s[2] for s in v])),
                                         "hit@3": float(np.average([s[1] for s in v], weights=[s[2] for s in v]))}
                                  for name, v in scores.items() if v}}
    rerankers = {"with_model": fit_from_rows(turns, True, c), "without_model": fit_from_rows(turns, False, c)}
    return rerankers, report
