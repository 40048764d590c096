"""Where a turn's evidence becomes ranked tracks.

The model's music block (``writer.Generation``) ranks the catalog by its codes; BM25 and MiniLM
match the person's words; the tracks near what the session played carry its direction. A learned
re-ranker (``assistant.rerank``) or a weighted reciprocal-rank fusion puts these together, and the
request's checkable parts come last: tracks with the instruments and moods it names first, and
for "faster", "darker" or "more like the second one" the tracks that move that way from the track
the turn is relative to.

    retrieval = Retrieval(index, reranker=reranker)
    if retrieval.reads_block(history, session):
        generation = writer.block(history, session.decode)
    ranked, source, notes = retrieval.rank(history, session, refinement, k, generation, with_model=True)
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from index import vocabulary
from index.lexical import history_query
from index.store import MusicIndex
from index.track import Track

from .familiarity import FAMILIAR, RequestWords
from .grounding import norm
from .refine import Refinement, apply_refinement, satisfies
from .rerank import Reranker, candidate_features, turn_position
from .session import Session, reference_for
from .writer import Generation

log = logging.getLogger("tonearm.retrieval")

CANDIDATES = 100  # tracks each search gives a turn, before fusion
# Weights of the rankings fused in a turn (weighted reciprocal rank): the model's block, a BM25
# match of the person's words, a dense MiniLM match of them, and the neighbourhood of the tracks
# played in this session. Chosen on the demo catalog's validation conversations, where the
# words' BM25 match was the strongest single signal and the session's neighbourhood, once taken
# in tags and metadata too, weighed more than the words. The dense match weighs as much as BM25:
# synthesized requests reuse the catalog's own words, which BM25 matches, but people write
# "something for a haunted house party"; on hand-written validation conversations over a library
# of real recordings it took the engine from nDCG@10 0.61 to 0.68, for 0.461 to 0.454 on the
# demo's synthesized ones.
FUSION_WEIGHTS: dict[str, float] = {"block": 0.5, "lexical": 1.0, "dense": 1.0, "session": 2.0}
BLOCK_RANKINGS = ("codes", "likelihood")
SESSION_TRACKS = 3  # the session's neighbourhood is taken around its last few tracks
# The modalities that neighbourhood is taken in. Playlist co-occurrence alone knows nothing of a
# track in no playlist (it only borrows its neighbours'); the same album or artist (metadata) and
# the same tags carry a session there. Chosen on the demo's validation conversations.
SESSION_MODALITIES: dict[str, float] = {"playlist": 0.5, "tags": 1.0, "metadata": 1.0}
AWAY_SHARED_CODES = 3  # "not for me": candidates sharing this many of a rejected track's codes go last


class Retrieval:
    """A turn's ranking over one index.

    Parameters
    ----------
    index : MusicIndex
    text_fusion : bool
        Fuse the ranking from the generated block with searches over the user's turns and the
        session's neighbourhood (``fusion_weights``); False ranks by the block alone.
    fusion_weights : mapping, optional
        Weight per fused ranking: "block", "lexical", "dense", "session" (default
        ``FUSION_WEIGHTS``); a zero weight skips that search.
    block_ranking : {"codes", "likelihood"}
        How the block ranks the catalog: the tracks nearest the generated codes' clusters
        ("codes"), or every track by the model's probability of its five codes ("likelihood",
        which keeps the model's doubt between codes: better alone, but it fused worse with the
        other rankings on the validation conversations).
    reranker : Reranker, optional
        Fuse with this learned re-ranker instead of ``fusion_weights`` (``assistant.rerank``).
    later_reranker : Reranker, optional
        The re-ranker for the turns after a session has played something, where it differs from
        ``reranker``: the fit may find that the model's features help on first requests only
        (``rerank.choose_by_turn``). None: ``reranker`` ranks every turn.
    request_words : RequestWords, optional
        The words the model's training requests used (``assistant.familiarity``): a request with
        other words is ranked by the rank fusion without the block and without the re-ranker
        (``knows_words``). None takes every request as known.
    """

    def __init__(self, index: MusicIndex, *, text_fusion: bool = True, fusion_weights: dict[str, float] | None = None,
                 block_ranking: str = "codes", reranker: Reranker | None = None,
                 later_reranker: Reranker | None = None, request_words: RequestWords | None = None):
        if block_ranking not in BLOCK_RANKINGS:
            raise ValueError(f"block_ranking must be one of {BLOCK_RANKINGS}, got {block_ranking!r}")
        self.index = index
        self.text_fusion = text_fusion
        self.block_ranking = block_ranking
        self.reranker, self.later_reranker = reranker, later_reranker
        self.request_words = request_words
        self.session_modalities = dict(SESSION_MODALITIES)
        self.fusion_weights = dict(FUSION_WEIGHTS if fusion_weights is None else fusion_weights)
        unknown = set(self.fusion_weights) - set(FUSION_WEIGHTS)
        if unknown or any(w < 0 for w in self.fusion_weights.values()):
            raise ValueError(f"fusion_weights takes non-negative weights for {sorted(FUSION_WEIGHTS)}, "
                             f"got {self.fusion_weights}")

    # ---- whether the model is asked -----------------------------------------------------------

    def knows_words(self, history: Sequence[dict]) -> bool:
        """Whether the model's training requests used every content word of the last request
        (``assistant.familiarity``); True without a record of them."""
        if self.request_words is None:
            return True
        said = [t["content"] for t in history if t.get("role") == "user" and isinstance(t.get("content"), str)]
        return not said or self.request_words.familiarity(said[-1]) >= FAMILIAR

    def reranker_for(self, session: Session) -> Reranker | None:
        """The re-ranker for the session's next turn: ``later_reranker`` once it has played
        something (where one is set), else ``reranker``."""
        later = self.later_reranker is not None and turn_position(session.played) == "later"
        return self.later_reranker if later else self.reranker

    def reads_block(self, history: Sequence[dict], session: Session) -> bool:
        """Whether the turn that ``history`` ends with is ranked with a model's block, so that the
        model is asked for one: not where the request has words it never trained on
        (``knows_words``), nor where the turn's re-ranker leaves the model's features out (the
        fit's choice, ``rerank.choose_by_turn``) or the rank fusion weighs the block at zero. A
        block the ranking would not read costs the turn its decoding (a token a code) and adds
        nothing but candidates no other search found."""
        if not self.text_fusion:
            return True
        if not self.knows_words(history):
            return False
        reranker = self.reranker_for(session)
        if reranker is not None:
            return reranker.with_model
        return self.fusion_weights.get("block", 0.0) > 0

    # ---- the ranking ----------------------------------------------------------------------------

    def rank(self, history: list[dict], session: Session, refinement: Refinement, k: int,
             generation: Generation | None = None, *,
             with_model: bool = False) -> tuple[list[tuple[str, float]], str, list[str]]:
        """(the ranked (track id, score) pairs, where they came from, notes on the turn) for the
        turn that ``history`` ends with.

        ``generation`` is the model's block for it, None where the model was not asked
        (``reads_block``); ``with_model`` says whether a model answers this assistant at all. The
        source is "model", "engine" or "dense-fallback" (``session.Reply``).
        """
        exclude = set(session.played) | session.rejected
        notes: list[str] = []
        familiar = self.knows_words(history)
        asked = generation is not None
        if with_model and not familiar:
            notes.append("the request has words the model never trained on: the searches rank this "
                         "turn by rank fusion, without its block")
        if asked and generation.errors:
            notes.append("malformed music block: " + "; ".join(generation.errors))
        codes = generation.codes if asked else None
        if codes:
            if self.block_ranking == "likelihood" and generation.code_log_probs is not None:
                ranked = self.index.rank_by_code_log_probs(generation.code_log_probs, k=k, exclude=exclude)
            else:
                ranked = self.index.retrieve(codes=codes, k=k, exclude=exclude)
            if self.text_fusion:
                ranked = self.fuse(ranked, history, session, k, exclude, generation, familiar=familiar)
            source = "model"
        elif not asked and self.text_fusion and (ranked := self.fuse([], history, session, k, exclude,
                                                                     familiar=familiar)):
            source = "engine"
            if with_model and familiar:
                notes.append("this kind of turn is ranked without the model's block (the re-ranker's fit "
                             "or the fusion's weights): the model was not asked for one")
        else:
            query = history_query(history)
            why = ("the model produced no valid music block" if asked
                   else "no model loaded" if not self.text_fusion
                   else "nothing matched the words" if with_model
                   else "no model loaded and nothing matched the words")
            # without a model this is ordinary (words the catalog does not hold); with one, a fault
            (log.warning if asked else log.info)("dense fallback (%s) for query %r", why, query[:200])
            notes.append(f"dense fallback: {why}")
            ranked = self.index.search_text(query, k=k, exclude=exclude)
            source = "dense-fallback"
        if session.rejected:
            ranked = self._away_from(ranked, session.rejected)
        if refinement.content or refinement.feel:
            ranked = named_first(ranked, refinement, self.index.by_id)
        if refinement:
            ranked = self._refined(ranked, history, session, refinement, k, exclude, notes)
        return ranked, source, notes

    def _refined(self, ranked: list[tuple[str, float]], history: list[dict], session: Session,
                 refinement: Refinement, k: int, exclude: set[str], notes: list[str]) -> list[tuple[str, float]]:
        """``ranked`` with the tracks that meet ``refinement`` against the turn's reference first."""
        reference = reference_for(session, refinement, self.index.by_id)
        if refinement.is_relative and reference is not None and reference.id in self.index.by_id:
            # Stay near the reference track while moving in the asked direction.
            near = self.index.retrieve(codes=self.index.track_codes(reference.id), k=k, exclude=exclude)
            ranked = rrf([ranked, near])
        order = [t for t, _ in ranked]
        if refinement.reference is not None and reference is not None:
            order = self._closer_to(order, reference, session)
        order = apply_refinement(order, self.index.by_id, reference, refinement)  # stable: keeps the above
        if not any(satisfies(self.index.by_id[t], reference, refinement) for t in order[:1]):
            # No candidate moves the right way: the catalog's tracks that do, by relevance.
            fits = {t.id for t in self.index.tracks if t.id not in exclude and satisfies(t, reference, refinement)}
            if fits:
                relevant = self._relevance(history, reference, exclude)
                order = [t for t in relevant if t in fits] + [t for t in order if t not in fits]
                notes.append(f"{len(fits)} tracks in the catalog meet the refinement; none was a candidate")
        score = dict(ranked)
        return [(t, score.get(t, 0.0)) for t in order]

    def fuse(self, by_block: list[tuple[str, float]], history: list[dict], session: Session, k: int,
             exclude: set[str], generation: Generation | None = None, *,
             familiar: bool = True) -> list[tuple[str, float]]:
        """Fusion of the block's ranking with the other evidence of the turn: by the learned
        re-ranker when one is set (``assistant.rerank``), else by weighted reciprocal rank.

        The block is a guess at five clusters; the person's own words (matched by BM25 and, if
        weighted, by MiniLM) correct a guess that is off, and the tracks near what this session
        played carry its direction when a request is vague. The model and the re-ranker both
        learned from requests in the synthesized conversations' words; a request in other words
        (``familiar`` False, from ``knows_words``) is ranked by the rank fusion without the block.
        So is a turn without a block whose re-ranker reads the model's features (the model was
        loaded while the turn ran): those features would all be 0, which it was never fitted on.
        """
        reranker = self.reranker_for(session)
        if reranker is not None and familiar and (generation is not None or not reranker.with_model):
            rankings = self.rankings(by_block, history, session, k, exclude, generation)
            log_probs = generation.code_log_probs if generation is not None else None
            candidates, rows = candidate_features(rankings, log_probs, self.index.track_codes,
                                                  with_model=reranker.with_model, played=session.played,
                                                  track_of=self.index.by_id.get, features=reranker.features)
            return reranker.rank(candidates, rows)
        weight = dict(self.fusion_weights, block=self.fusion_weights.get("block", 0.0) if familiar else 0.0)
        wanted = {name for name, w in weight.items() if w > 0 and name != "block"}  # a zero weight spares the search
        rankings = self.rankings(by_block, history, session, k, exclude, only=wanted)
        return rrf(list(rankings.values()), weights=[weight.get(name, 0.0) for name in rankings])

    def rankings(self, by_block: list[tuple[str, float]], history: list[dict], session: Session, k: int,
                 exclude: set[str], generation: Generation | None = None,
                 only: set[str] | None = None) -> dict[str, list[tuple[str, float]]]:
        """The rankings of the turn by name (``rerank.RANKINGS``), the block's first; ``only``
        limits the searches run to those named (None: all that the turn allows)."""
        query = history_query(history)
        run = (lambda name: only is None or name in only)
        out = {"block": list(by_block)}
        if query and run("lexical"):
            out["lexical"] = self.index.search_lexical(query, k=k, exclude=exclude)
        if query and run("dense"):
            out["dense"] = self.index.search_text(query, k=k, exclude=exclude)
        if session.played and run("session"):
            out["session"] = self.index.search_near(session.played[-SESSION_TRACKS:], k=k, exclude=exclude,
                                                    modality=self.session_modalities)
        if generation is not None and generation.code_log_probs is not None and run("likelihood"):
            out["likelihood"] = self.index.rank_by_code_log_probs(generation.code_log_probs, k=k, exclude=exclude)
        return out

    def like_upload(self, session: Session, k: int) -> list[tuple[str, float]]:
        """The tracks nearest the session's uploaded song in the audio embedding ([] without one)."""
        up = session.upload
        exclude = set(session.played) | session.rejected
        if up is None or up.audio_vector is None:
            return []
        return self.index.retrieve(vectors={"audio": up.audio_vector}, weights={"audio": 1.0}, k=k, exclude=exclude)

    def like_track(self, track_id: str, session: Session, k: int) -> list[tuple[str, float]]:
        """"More like this": the tracks nearest ``track_id``'s five codes, none the session played,
        rejected, or the track itself."""
        exclude = set(session.played) | session.rejected | {track_id}
        return self.index.retrieve(codes=self.index.track_codes(track_id), k=k, exclude=exclude)

    # ---- the request's checkable parts ------------------------------------------------------------

    def _closer_to(self, order: list[str], reference: Track, session: Session) -> list[str]:
        """"More like the second one": the candidates more like ``reference`` than like the card
        the person would otherwise react to (the last reply's first) first, each group in order.
        The likeness is the synthesizer's (tags and measured descriptors)."""
        from .conversations import last_shown
        from .synth import more_like

        shown = last_shown(session.history)
        current = self.index.by_id.get(shown[0]) if shown else None
        if current is None or current.id == reference.id:
            return order
        closer = {t for t in order[:CANDIDATES] if more_like(self.index.by_id[t], reference, current)}
        return [t for t in order if t in closer] + [t for t in order if t not in closer]

    def _relevance(self, history: list[dict], reference: Track | None, exclude: set[str]) -> list[str]:
        """The whole catalog by relevance to the conversation: its words (MiniLM) fused with
        closeness to the reference track."""
        n = len(self.index.tracks)
        rankings = [self.index.search_text(history_query(history), k=n, exclude=exclude)]
        if reference is not None and reference.id in self.index.by_id:
            rankings.append(self.index.retrieve(codes=self.index.track_codes(reference.id), k=n, exclude=exclude))
        return [t for t, _ in rrf(rankings)]

    def _away_from(self, ranked: list[tuple[str, float]], rejected: set[str]) -> list[tuple[str, float]]:
        """``ranked`` with the tracks much like a rejected one (``AWAY_SHARED_CODES`` codes in
        common) moved after the rest, each group in its order."""
        codes = [self.index.track_codes(t) for t in rejected if t in self.index.by_id]

        def alike(tid: str) -> bool:
            mine = self.index.track_codes(tid)
            return any(sum(mine.get(m) == c.get(m) for m in c) >= AWAY_SHARED_CODES for c in codes)

        near = {t for t, _ in ranked if alike(t)}
        return [x for x in ranked if x[0] not in near] + [x for x in ranked if x[0] in near]


def named_first(ranked: list[tuple[str, float]], refinement: Refinement,
                by_id: dict[str, Track]) -> list[tuple[str, float]]:
    """``ranked`` with the tracks that carry the catalog tags the request names first, then
    those its plain words describe ("calm"): a named instrument outranks a mood word. The
    order within each group is kept."""
    def key(item: tuple[str, float]) -> tuple[int, int]:
        t = by_id[item[0]]
        labels = {x.lower() for x in t.tags} | {t.genre.lower()}
        text = norm(f"{t.title} {t.album}")
        content = sum(tag in labels or re.search(rf"(?<!\w){re.escape(tag)}(?!\w)", text) is not None
                      for tag in refinement.content)
        feel = sum(vocabulary.band_word(d, t.descriptors.get(d)) == word for d, word in refinement.feel.items())
        return (-content, -feel)
    return sorted(ranked, key=key)


def rrf(rankings: Sequence[Sequence[tuple[str, float]]], k: int = 60,
        weights: Sequence[float] | None = None) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion of several rankings, optionally weighted per ranking."""
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    score: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, (tid, _) in enumerate(ranking):
            score[tid] = score.get(tid, 0.0) + weight / (k + rank + 1)
    return sorted(score.items(), key=lambda x: (-x[1], x[0]))
