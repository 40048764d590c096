"""The chat engine: a session's history, generation with music tokens, retrieval, refinement,
answers about uploaded songs, and replies grounded in the catalog's facts.

A turn with a model: the model writes its music block (``assistant.generation``), the block
and the engine's searches choose the tracks, the catalog's facts about the first one are put
in the model's context, and the model writes its reply from them, streamed as it goes.

    assistant = MusicAssistant.load(index_dir, model_dir)
    session = assistant.new_session()
    reply = assistant.reply(session, "something calm with piano")
    reply.text, [card.title for card in reply.tracks]
"""
from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.lexical import history_query
from index.store import MusicIndex
from index.track import Track

from index import vocabulary

from .conversations import played_tracks
from .facts import false_descriptions, false_start, unfounded_tags
from .facts import has_vocals as vocal_state
from .generation import DecodeState
from .grounding import (COMPARING, KEY_CLAIM, NUMBER_CLAIM, TEMPO_CLAIM, ClaimGuard, album_said, names_album,
                        names_of, names_title, norm, numbers_of, sentences, tempo_numbers, well_formed, without_names)
from .familiarity import FAMILIAR, RequestWords
from .rerank import Reranker, candidate_features, turn_position
from .refine import Refinement, apply_refinement, reference_track, satisfies
from .request import CatalogWords, artist_patterns, fold, read_request
from .upload import answer as answer_about_upload
from .upload import detect_intents

log = logging.getLogger("tonearm.chat")

N_SHOW = 3
N_RANKED = 20
CANDIDATES = 100
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
DEFAULT_WEIGHTS = "float32"  # how a loaded model keeps its weights (model_dir.WEIGHT_FORMATS)


@dataclass
class TrackCard:
    """A recommended track as shown to a person."""

    id: str
    title: str
    artist: str
    album: str
    year: str
    reason: str
    audio_path: str | None
    score: float


@dataclass
class Generation:
    """What the model wrote for a turn.

    ``codes`` is its last music block (None without a valid one); ``code_log_probs`` the
    log-probabilities over each modality's codes that the block was drawn from.
    """

    text: str
    codes: dict[str, int] | None
    errors: list[str]
    code_log_probs: dict[str, np.ndarray] | None = None


@dataclass
class UploadedSong:
    name: str
    path: str
    analysis: dict[str, Any]
    audio_vector: np.ndarray | None


@dataclass
class Reply:
    """What the assistant says and plays for one user turn.

    ``text`` is what is said; the cards in ``tracks`` are for each front end to render.
    ``source`` tells where the tracks came from: "model" (the generated music block, fused
    with the engine's searches), "engine" (those searches alone: no model loaded, or a turn
    whose ranking does not read the block, which ``notes`` explain),
    "dense-fallback" (nothing else matched, or the model wrote no usable block: text search
    over the conversation), "upload" (nearest to an uploaded song), or "none" (no tracks).
    ``generated`` is what the model wrote, ``own_words`` whether ``text`` opens with it, and
    ``dropped`` the sentences of it that the grounding check removed.
    """

    text: str
    tracks: list[TrackCard] = field(default_factory=list)
    ranked: list[str] = field(default_factory=list)
    source: str = "none"
    generated: str = ""
    notes: list[str] = field(default_factory=list)
    own_words: bool = False
    dropped: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # files offered for download (a melody as MIDI)


@dataclass
class TurnUpdate:
    """One step of a streamed turn: the text so far, the cards once chosen, the reply at the end."""

    text: str
    tracks: list[TrackCard] | None = None
    reply: Reply | None = None


@dataclass
class Session:
    """One person's conversation: nothing in it is shared with another session."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    history: list[dict] = field(default_factory=list)
    played: list[str] = field(default_factory=list)
    rejected: set[str] = field(default_factory=set)
    upload: UploadedSong | None = None
    # What "faster" etc. is relative to until the next reply: a card the person played or
    # liked, or an uploaded song; None means the first card of the last reply.
    reference: Track | None = None
    decode: DecodeState = field(default_factory=DecodeState, repr=False)  # the model's cache for this session


class MusicAssistant:
    """Conversational recommender over one index, with an optional fine-tuned model.

    Parameters
    ----------
    index : MusicIndex
    model, tokenizer, vocab : optional
        A causal LM that knows the music tokens (``assistant.train.load_finetuned``). Without
        one, a turn ranks by the same fused retrieval with no block (the person's words, the
        session's neighbourhood and the request's checkable facts): ``Reply.source == "engine"``.
    system_prompt : str
    max_context_tokens : int
        Prompt budget; the oldest turns are dropped first beyond it.
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
        Fuse with this learned re-ranker instead of ``fusion_weights`` (``assistant.rerank``);
        a model directory that holds one sets it when loaded (``rerank.rerankers_by_turn``).
    later_reranker : Reranker, optional
        The re-ranker for the turns after a session has played something, where it differs from
        ``reranker``: the fit may find that the model's features help on first requests only
        (``rerank.choose_by_turn``). None: ``reranker`` ranks every turn.
    batch_sessions : bool
        Let the sessions whose turns run at the same time (in other threads: a server's) share
        one forward pass per decoding step (``assistant.batching``).
    request_words : RequestWords, optional
        The words the model's training requests used (``assistant.familiarity``): a request with
        other words is ranked by the rank fusion without the block and without the re-ranker
        (``knows_words``). None takes every request as known; a model directory that keeps them
        sets them when loaded.
    """

    def __init__(self, index: MusicIndex, model=None, tokenizer=None, vocab=None, *, system_prompt: str | None = None,
                 max_context_tokens: int = 768, max_new_tokens: int = 60, name: str = "assistant",
                 text_fusion: bool = True, fusion_weights: dict[str, float] | None = None,
                 block_ranking: str = "codes", reranker: Reranker | None = None, batch_sessions: bool = False,
                 request_words: RequestWords | None = None, later_reranker: Reranker | None = None):
        if block_ranking not in BLOCK_RANKINGS:
            raise ValueError(f"block_ranking must be one of {BLOCK_RANKINGS}, got {block_ranking!r}")
        self.block_ranking = block_ranking
        self.reranker, self.later_reranker = reranker, later_reranker
        self.request_words = request_words
        self.batch_sessions = batch_sessions  # sessions decoding at once share each step (a server)
        self.weights = DEFAULT_WEIGHTS  # how load_model keeps a model's weights
        self.index = index
        self.catalog_note: str | None = None  # how the catalog changed since the loaded model was trained
        self.text_fusion = text_fusion
        self.session_modalities = dict(SESSION_MODALITIES)
        self.fusion_weights = dict(FUSION_WEIGHTS if fusion_weights is None else fusion_weights)
        unknown = set(self.fusion_weights) - set(FUSION_WEIGHTS)
        if unknown or any(w < 0 for w in self.fusion_weights.values()):
            raise ValueError(f"fusion_weights takes non-negative weights for {sorted(FUSION_WEIGHTS)}, "
                             f"got {self.fusion_weights}")
        self.model = self.tokenizer = self.vocab = None
        self.max_context_tokens = max_context_tokens
        self.max_new_tokens = max_new_tokens
        self.name = name
        self._titles = {norm(t.title): t.id for t in index.tracks if len(t.title) > 3}
        # Whole-word title matching, longest first, so "Reel" is not found inside "Reeling".
        self._title_re = re.compile(r"(?<!\w)(?:" + "|".join(
            re.escape(t) for t in sorted(self._titles, key=len, reverse=True)) + r")(?!\w)") if self._titles else None
        self.words = CatalogWords.from_tracks(index.tracks)
        self.system_prompt = system_prompt
        if model is not None:
            self.use_model(model, tokenizer, vocab, system_prompt=system_prompt)
        elif system_prompt is None:
            from .model_dir import DEFAULT_SYSTEM_PROMPT

            self.system_prompt = DEFAULT_SYSTEM_PROMPT

    def use_model(self, model, tokenizer, vocab, *, system_prompt: str | None = None, phrasebook=None) -> None:
        """Answer with ``model`` from the next turn on (a model that finished training meanwhile, say).

        A turn already running keeps what it started with: the model itself is set last.
        ``phrasebook`` (``generation.Phrasebook``, optional) lends its guesses to the decoding.
        """
        from .generation import Decoder

        if vocab.codebook_sizes != self.index.codebook_sizes:
            raise ValueError(f"the model was trained for another index (codebook sizes {vocab.codebook_sizes} "
                             f"vs {self.index.codebook_sizes}); retrain it on {self.index.root}")
        if system_prompt is None:
            from .model_dir import DEFAULT_SYSTEM_PROMPT

            system_prompt = DEFAULT_SYSTEM_PROMPT
        self.tokenizer, self.vocab, self.system_prompt = tokenizer, vocab, system_prompt
        self.decoder = Decoder(model, tokenizer, vocab, max_words_tokens=self.max_new_tokens, batched=self.batch_sessions,
                               phrasebook=phrasebook)
        self.model = model

    def load_model(self, model_dir: str | Path, *, weights: str | None = None) -> None:
        """Load a fine-tuned model directory (``assistant.train``) and answer with it from now on.

        ``weights`` is how the model keeps its weights (``model_dir.WEIGHT_FORMATS``); None: the
        assistant's ``weights``, set by the last call that named them (at first ``DEFAULT_WEIGHTS``).
        """
        from .model_dir import catalog_changes, check_reply_format, load_finetuned, read_model_record, reply_phrasebook
        from .rerank import rerankers_by_turn

        check_reply_format(model_dir)
        self.weights = weights or self.weights
        model, tokenizer, vocab = load_finetuned(model_dir, weights=self.weights)
        by_turn = rerankers_by_turn(model_dir)
        self.request_words = RequestWords.load(model_dir)
        self.use_model(model, tokenizer, vocab, system_prompt=read_model_record(model_dir).get("system_prompt"),
                       phrasebook=reply_phrasebook(model_dir, tokenizer))
        self.catalog_note = catalog_changes(model_dir, self.index)
        if by_turn:
            first, later = by_turn["first"], by_turn["later"]
            self.reranker, self.later_reranker = first, later if later is not first else None

    @classmethod
    def load(cls, index_dir: str | Path, model_dir: str | Path | None = None, *, weights: str | None = None,
             **kwargs) -> "MusicAssistant":
        """An assistant over the index in ``index_dir``, answering with the model in ``model_dir`` if
        given; ``weights`` (``model_dir.WEIGHT_FORMATS``) is how it, and any model loaded later, keeps
        its weights."""
        from .model_dir import WEIGHT_FORMATS

        if weights is not None and weights not in WEIGHT_FORMATS:
            raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
        assistant = cls(MusicIndex.load(index_dir), **kwargs)
        assistant.weights = weights or assistant.weights
        if model_dir is not None:
            assistant.load_model(model_dir)
            if kwargs.get("system_prompt") is not None:
                assistant.system_prompt = kwargs["system_prompt"]
        return assistant

    def new_session(self) -> Session:
        return Session()

    def warm_up(self) -> None:
        """Build what the first turn would otherwise wait seconds for: the BM25 index over the
        catalog and the MiniLM encoder of the person's words (a server calls this at start).
        A failure is logged, not raised: the first turn then builds them, or says what is wrong."""
        try:
            self.index.lexical
            self.index.encode_text(["warm up"])
        except Exception as e:  # noqa: BLE001 - a server starts anyway
            log.warning("warming up the word searches failed (%s); the first turn will try again", e)

    # ---- the public turn -----------------------------------------------------------------------

    def reply(self, session: Session, message: str, *, upload: str | Path | None = None, n_show: int = N_SHOW,
              k: int = N_RANKED) -> Reply:
        """Answer one user message (and an optional uploaded file) and update the session."""
        for update in self.stream(session, message, upload=upload, n_show=n_show, k=k):
            if update.reply is not None:
                return update.reply
        raise RuntimeError("a turn ended without a reply")  # stream always ends with one

    def stream(self, session: Session, message: str, *, upload: str | Path | None = None, n_show: int = N_SHOW,
               k: int = N_RANKED) -> Iterator[TurnUpdate]:
        """Answer one user message step by step, updating the session at the end.

        Yields the cards as soon as the tracks are chosen (``TurnUpdate.tracks``), then the
        reply's text as the model writes it, and last the whole ``Reply`` (``TurnUpdate.reply``),
        whose text may be shorter: sentences that contradict the shown tracks are dropped.
        """
        message = (message or "").strip()
        if upload is not None:
            problem = self._take_upload(session, Path(upload))
            if problem:
                yield self._done(session, message or f"(uploaded {Path(upload).name})", Reply(text=problem))
                return
        intents = detect_intents(message) if session.upload else set()
        if session.upload and (upload is not None or intents - {"similar"}) and "similar" not in intents:
            text = answer_about_upload(session.upload.analysis, intents)
            files = [str(self._melody_midi(session.upload))] if "midi" in intents and \
                session.upload.analysis.get("melody_notes") else []
            yield self._done(session, message or f"(uploaded {session.upload.name})",
                             Reply(text=f"About {session.upload.name}: {text}", files=files))
            return
        if not message and upload is None:
            yield TurnUpdate("", reply=Reply(text="Tell me what you'd like to hear, or upload a song and ask about it."))
            return

        history = session.history + [{"role": "user", "content": message}]
        refinement = read_request(message, self.words)
        notes: list[str] = []
        if session.upload and "similar" in intents:
            ranked, source = self._like_upload(session, k), "upload"
            session.reference = self._upload_as_track(session.upload)
        else:
            ranked, source, notes = self._rank(history, session, refinement, max(k, CANDIDATES), session.decode)
        ranked = ranked[:k]
        cards = [self._card(tid, s, session, refinement) for tid, s in ranked[:n_show]]
        yield TurnUpdate("", tracks=cards)
        generated = ""
        if self.model is not None and cards and source != "upload":
            for generated in self._words(history, cards, session, refinement):
                yield TurnUpdate(generated)
        reply = self._compose(generated, cards, refinement, source, session)
        reply.ranked, reply.notes = [t for t, _ in ranked], notes
        yield self._done(session, message, reply)

    def _done(self, session: Session, message: str, reply: Reply) -> TurnUpdate:
        self._record(session, message, reply)
        return TurnUpdate(reply.text, reply=reply)

    def feedback(self, session: Session, track_id: str, liked: bool, n_show: int = N_SHOW) -> Reply:
        """"More like this" (liked) or "not for me" on a shown track."""
        track = self.index.by_id.get(track_id)
        if track is None:
            return Reply(text="That track is not in this catalog.")
        if liked:
            session.reference = track
            message = f'More like "{track.title}", please.'
            ranked = self.index.retrieve(codes=self.index.track_codes(track_id), k=N_RANKED,
                                         exclude=set(session.played) | session.rejected | {track_id})
            cards = [self._card(t, s, session, Refinement()) for t, s in ranked[:n_show]]
            if cards:
                text = f'More in the vein of "{track.title}".'
            else:
                text = f'You have heard everything in this catalog that is close to "{track.title}".'
            reply = Reply(text=text, tracks=cards, ranked=[t for t, _ in ranked], source="track-codes")
        else:
            # The last request answered again, without this track and away from what it is
            # (``AWAY_SHARED_CODES``); the person's words stay as they were, so its title is
            # never searched for. The reply replaces the one the track was in.
            session.rejected.add(track_id)
            last = session.history[-2:] if len(session.history) >= 2 else []
            if len(last) == 2 and last[0]["role"] == "user" and track_id in last[1].get("tracks", []):
                del session.history[-2:]
                return self.reply(session, last[0]["content"], n_show=n_show)
            message = "Something else, please."
            return self.reply(session, message, n_show=n_show)
        self._record(session, message, reply)
        return reply

    def focus(self, session: Session, track_id: str) -> None:
        """The person played or picked this card: the next "faster" is relative to it."""
        track = self.index.by_id.get(track_id)
        if track is None:
            raise KeyError(f"{track_id!r} is not in this catalog")
        session.reference = track

    def reference_for(self, session: Session, refinement: Refinement) -> Track | None:
        """The track a refinement in the next turn is relative to (``refine.reference_track``),
        or the card the person played, liked or uploaded since the last reply."""
        if refinement.reference is None and session.reference is not None:
            return session.reference
        ref_id = reference_track(session.history, refinement)
        return self.index.by_id.get(ref_id) if ref_id else session.reference

    def rank(self, history: Sequence[dict], k: int = N_RANKED) -> list[str]:
        """Stateless ranking for evaluation: ``history`` ends with the user turn to answer."""
        return self.answer(history, k, with_text=False)[0]

    def answer(self, history: Sequence[dict], k: int = N_RANKED, *, with_text: bool = True) -> tuple[list[str], str]:
        """Stateless turn for evaluation: the ``k`` ranked track ids and the reply a person would read.

        ``history`` ends with the user turn to answer; the tracks of its assistant turns count as
        played. The session is not kept.
        """
        reply = self.answer_reply(history, k, with_text=with_text)
        return reply.ranked, reply.text

    def answer_reply(self, history: Sequence[dict], k: int = N_RANKED, *, with_text: bool = True) -> Reply:
        """``answer`` as the whole ``Reply``: also whether the text is the model's own and what
        the grounding check dropped. Without ``with_text`` only ``ranked`` and ``source`` are set."""
        session = Session(history=[dict(t) for t in history[:-1]])
        session.played = played_tracks(history)
        refinement = read_request(history[-1]["content"], self.words)
        ranked, source, notes = self._rank(list(history), session, refinement, max(k, CANDIDATES), session.decode)
        ids = [t for t, _ in ranked[:k]]
        if not with_text:
            return Reply(text="", ranked=ids, source=source, notes=notes)
        cards = [self._card(t, s, session, refinement) for t, s in ranked[:N_SHOW]]
        generated = ""
        if self.model is not None and cards:
            for generated in self._words(list(history), cards, session, refinement):
                pass
        reply = self._compose(generated, cards, refinement, source, session)
        reply.ranked, reply.notes = ids, notes
        return reply

    # ---- retrieval -------------------------------------------------------------------------------

    def _rank(self, history: list[dict], session: Session, refinement: Refinement, k: int,
              state: DecodeState | None = None):
        exclude = set(session.played) | session.rejected
        notes: list[str] = []
        familiar = self.knows_words(history)
        asked = self.model is not None and self.reads_block(session, familiar)
        if self.model is not None and not familiar:
            notes.append("the request has words the model never trained on: the searches rank this "
                         "turn by rank fusion, without its block")
        generation = Generation("", None, [])
        if asked:
            generation = self._generate(history, state)
            if generation.errors:
                notes.append("malformed music block: " + "; ".join(generation.errors))
        codes = generation.codes
        if codes:
            if self.block_ranking == "likelihood" and generation.code_log_probs is not None:
                ranked = self.index.rank_by_code_log_probs(generation.code_log_probs, k=k, exclude=exclude)
            else:
                ranked = self.index.retrieve(codes=codes, k=k, exclude=exclude)
            if self.text_fusion:
                ranked = self._fuse(ranked, history, session, k, exclude, generation, familiar=familiar)
            source = "model"
        elif not asked and self.text_fusion and (ranked := self._fuse([], history, session, k, exclude,
                                                                      familiar=familiar)):
            source = "engine"
            if self.model is not None and familiar:
                notes.append("this kind of turn is ranked without the model's block (the re-ranker's fit "
                             "or the fusion's weights): the model was not asked for one")
        else:
            query = history_query(history)
            why = ("the model produced no valid music block" if asked
                   else "no model loaded" if not self.text_fusion
                   else "nothing matched the words" if self.model is not None
                   else "no model loaded and nothing matched the words")
            # without a model this is ordinary (words the catalog does not hold); with one, a fault
            (log.warning if asked else log.info)("dense fallback (%s) for query %r", why, query[:200])
            notes.append(f"dense fallback: {why}")
            ranked = self.index.search_text(query, k=k, exclude=exclude)
            source = "dense-fallback"
        if session.rejected:
            ranked = self._away_from(ranked, session.rejected)
        if refinement.content or refinement.feel:
            ranked = _named_first(ranked, refinement, self.index.by_id)
        if refinement:
            reference = self.reference_for(session, refinement)
            if refinement.is_relative and reference is not None and reference.id in self.index.by_id:
                # Stay near the reference track while moving in the asked direction.
                near = self.index.retrieve(codes=self.index.track_codes(reference.id), k=k, exclude=exclude)
                ranked = _rrf([ranked, near])
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
            ranked = [(t, score.get(t, 0.0)) for t in order]
        return ranked, source, notes

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
        return [t for t, _ in _rrf(rankings)]

    def _away_from(self, ranked: list[tuple[str, float]], rejected: set[str]) -> list[tuple[str, float]]:
        """``ranked`` with the tracks much like a rejected one (``AWAY_SHARED_CODES`` codes in
        common) moved after the rest, each group in its order."""
        codes = [self.index.track_codes(t) for t in rejected if t in self.index.by_id]

        def alike(tid: str) -> bool:
            mine = self.index.track_codes(tid)
            return any(sum(mine.get(m) == c.get(m) for m in c) >= AWAY_SHARED_CODES for c in codes)

        near = {t for t, _ in ranked if alike(t)}
        return [x for x in ranked if x[0] not in near] + [x for x in ranked if x[0] in near]

    def _fuse(self, by_block: list[tuple[str, float]], history: list[dict], session: Session, k: int,
              exclude: set[str], generation: Generation | None = None, *,
              familiar: bool = True) -> list[tuple[str, float]]:
        """Fusion of the block's ranking with the other evidence of the turn: by the learned
        re-ranker when one is set (``assistant.rerank``), else by weighted reciprocal rank.

        The block is a guess at five clusters; the person's own words (matched by BM25 and, if
        weighted, by MiniLM) correct a guess that is off, and the tracks near what this session
        played carry its direction when a request is vague. The model and the re-ranker both
        learned from requests in the synthesized conversations' words; a request in other words
        (``familiar`` False, from ``knows_words``) is ranked by the rank fusion without the block.
        """
        reranker = self.reranker_for(session)
        if reranker is not None and familiar:
            rankings = self.rankings(by_block, history, session, k, exclude, generation)
            log_probs = generation.code_log_probs if generation is not None else None
            candidates, rows = candidate_features(rankings, log_probs, self.index.track_codes,
                                                  with_model=reranker.with_model, played=session.played,
                                                  track_of=self.index.by_id.get, features=reranker.features)
            return reranker.rank(candidates, rows)
        weight = dict(self.fusion_weights, block=self.fusion_weights.get("block", 0.0) if familiar else 0.0)
        wanted = {name for name, w in weight.items() if w > 0 and name != "block"}  # a zero weight spares the search
        rankings = self.rankings(by_block, history, session, k, exclude, only=wanted)
        return _rrf(list(rankings.values()), weights=[weight.get(name, 0.0) for name in rankings])

    def reranker_for(self, session: Session) -> Reranker | None:
        """The re-ranker for the session's next turn: ``later_reranker`` once it has played
        something (where one is set), else ``reranker``."""
        later = self.later_reranker is not None and turn_position(session.played) == "later"
        return self.later_reranker if later else self.reranker

    def reads_block(self, session: Session, familiar: bool = True) -> bool:
        """Whether the session's next turn is ranked with the model's block, so that the model
        is asked for one: not where the request has words it never trained on (``familiar``
        False, ``knows_words``), nor where the turn's re-ranker leaves the model's features
        out (the fit's choice, ``rerank.choose_by_turn``) or the rank fusion weighs the block
        at zero. A block the ranking would not read costs the turn its decoding (a token a
        code) and adds nothing but candidates no other search found."""
        if self.model is None:
            return False
        if not self.text_fusion:
            return True
        if not familiar:
            return False
        reranker = self.reranker_for(session)
        if reranker is not None:
            return reranker.with_model
        return self.fusion_weights.get("block", 0.0) > 0

    def knows_words(self, history: Sequence[dict]) -> bool:
        """Whether the model's training requests used every content word of the last request
        (``assistant.familiarity``); True without a record of them."""
        if self.request_words is None:
            return True
        said = [t["content"] for t in history if t.get("role") == "user" and isinstance(t.get("content"), str)]
        return not said or self.request_words.familiarity(said[-1]) >= FAMILIAR

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

    def _like_upload(self, session: Session, k: int) -> list[tuple[str, float]]:
        up = session.upload
        exclude = set(session.played) | session.rejected
        if up is None or up.audio_vector is None:
            return []
        return self.index.retrieve(vectors={"audio": up.audio_vector}, weights={"audio": 1.0}, k=k, exclude=exclude)

    # ---- generation -------------------------------------------------------------------------------

    def _messages(self, history: list[dict]) -> list[dict]:
        """The conversation as the model reads it: every assistant turn as its first track's
        block, the catalog's facts about it, and its words (``model_dir.REPLY_FORMAT``)."""
        from .model_dir import conversation_messages
        from .synth import facts_lookup

        turns = [dict(t, tracks=[x for x in t.get("tracks", []) if x in self.index.by_id])
                 if t["role"] == "assistant" else t for t in history]
        return conversation_messages(turns, self.index.track_codes, self.vocab, facts_lookup(self.index.by_id))

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the system prompt and ``messages``, ready for the assistant to reply.

        Beyond ``max_context_tokens`` the oldest turns are dropped, whole, first; the system
        prompt and the last user turn always stay.
        """
        from .llm import chat_prompt

        system = {"role": "system", "content": self.system_prompt}
        while True:
            text = chat_prompt(self.tokenizer, [system] + messages)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            users = [i for i, m in enumerate(messages) if m["role"] == "user"]
            if len(ids) <= self.max_context_tokens or len(users) <= 1:
                return ids
            messages = messages[users[1]:]

    def _generate(self, history: list[dict], state: DecodeState | None = None) -> Generation:
        """The model's music block for the turn that ``history`` ends with."""
        block, _ = self.decoder.block(self._prompt_ids(self._messages(history)), state)
        return Generation(self.vocab.format_block(block.codes), dict(block.codes), [], block.log_probs)

    def _words(self, history: list[dict], cards: list[TrackCard], session: Session,
               refinement: Refinement) -> Iterator[str]:
        """The model's reply about the track shown first, as it grows.

        The context is the conversation, then this turn's block and facts for the first card (the
        track the person will hear, not the one the model guessed), laid out as in training. A
        ``grounding.ClaimGuard`` over the cards and the turn's reference track passes over
        tokens that would state something untrue, and over a stop before a sentence is finished;
        a title or artist the model begins and then ranks too low to finish is written out whole.
        """
        shown = [self.index.by_id[c.id] for c in cards]
        reference = self.reference_for(session, refinement)
        ends = self._first_and_last(session)

        def holds(sentence: str) -> bool:
            # the guard reads quotes, "by", numbers and keys itself; here, comparisons and the
            # catalog's other names ("from SuperTux Team" of a track by someone else)
            named = self._tracks_named(sentence, shown + ([reference] if reference is not None else []))
            subject, about, allowed, claim = self._about(sentence, named, shown, reference)
            return not self._names_strangers(sentence, about, allowed, growing=True) and \
                not _says_false(sentence, subject, reference, claim, ends, growing=True) and \
                not self._misdescribes(without_names(norm(sentence), names_of(allowed)), about, growing=True)

        guard = ClaimGuard.for_tracks(shown[0], reference, shown, holds=holds)
        turn = {"role": "assistant", "content": "", "tracks": [shown[0].id]}
        messages = self._messages(list(history) + [turn])
        yield from self.decoder.words(self._prompt_ids(messages), session.decode, allows=guard.allows,
                                      may_end=guard.may_end, complete=guard.completion)

    # ---- grounded text ---------------------------------------------------------------------------

    def _card(self, track_id: str, score: float, session: Session, refinement: Refinement) -> TrackCard:
        t = self.index.by_id[track_id]
        path = self.index.audio_path(t)
        return TrackCard(id=t.id, title=t.title or t.id, artist=t.artist, album=t.album, year=t.year,
                         reason=self._reason(t, session, refinement), audio_path=str(path) if path else None,
                         score=float(score))

    def _reason(self, t: Track, session: Session, refinement: Refinement) -> str:
        d = t.descriptors
        derived = {x.lower() for x in _derived_tags(t)}
        human = [x for x in t.tags if x.lower() not in derived and not vocabulary.parse_key(x)][:3]  # the key comes below
        facts = []
        if human:
            facts.append(", ".join(human))
        if d.get("tempo_bpm"):
            facts.append(f"about {float(d['tempo_bpm']):.0f} BPM")
        if d.get("key"):
            facts.append(str(d["key"]))
        sung = vocal_state(t)
        facts.append("with vocals" if sung else "instrumental" if sung is False else "vocals unclear")
        ref = self.reference_for(session, refinement) if refinement.relative else None
        for descriptor, direction in refinement.relative if ref is not None else ():
            a, b = d.get(descriptor), ref.descriptors.get(descriptor)
            if vocabulary.number(a) is None or vocabulary.number(b) is None:
                continue
            # Only a step a listener hears is called "faster" (index.vocabulary); less is "about as".
            moved = vocabulary.audible_change(descriptor, b, a)
            word = vocabulary.comparative(descriptor, direction)
            said = word if moved == direction else (
                vocabulary.comparative(descriptor, moved) if moved else f"about as {_AS_WORD[descriptor]} as")
            unit = f"{float(a):.0f} vs {float(b):.0f} BPM" if descriptor == "tempo_bpm" else f"{float(a):.2f} vs {float(b):.2f}"
            facts.append(f"{said} {'than ' if moved else ''}{ref.title} ({unit})")
        return "; ".join(facts)

    def _compose(self, generated: str, cards: list[TrackCard], refinement: Refinement, source: str,
                 session: Session) -> Reply:
        """The reply: the model's grounded words, or a plain sentence when it has none."""
        if not cards:
            return Reply(text="I couldn't find anything in this catalog for that. Try describing a mood, a genre "
                              "or an instrument.", source=source, generated=generated)
        reference = self.reference_for(session, refinement)
        kept, dropped = self._ground(generated, cards, reference, self._first_and_last(session))
        text = kept or ("Here's what I found in the catalog" + (", following your change." if refinement else "."))
        if refinement and not any(satisfies(self.index.by_id[c.id], reference, refinement) for c in cards):
            against = f' against "{reference.title}"' if reference is not None and refinement.is_relative else ""
            unmet = (f"Nothing left in this catalog meets that ({refinement.describe()}{against}); these are "
                     f"the closest, with their measured values.")
            text = unmet + (" " + kept if kept else "")
        return Reply(text=text, tracks=cards, source=source, generated=generated, own_words=bool(kept),
                     dropped=dropped)

    def grounded_sentences(self, generated: str, cards: list[TrackCard], reference: Track | None = None,
                           first_and_last: tuple[Track | None, Track | None] = (None, None)) -> str:
        """The model's sentences whose titles, numbers, keys and comparisons (with ``reference``,
        the track played before, and with ``first_and_last``, the session's first track and the
        last reply's first card) agree with the shown tracks."""
        return self._ground(generated, cards, reference, first_and_last)[0]

    def _first_and_last(self, session: Session) -> tuple[Track | None, Track | None]:
        """The session's first played track and the last reply's first card: what "the first one"
        and "the last one" of a reply's "closer to the first one than to the last one" are."""
        from .conversations import last_shown

        shown = last_shown(session.history)
        return (self.index.by_id.get(session.played[0]) if session.played else None,
                self.index.by_id.get(shown[0]) if shown else None)

    def _ground(self, generated: str, cards: list[TrackCard], reference: Track | None,
                first_and_last: tuple[Track | None, Track | None] = (None, None)) -> tuple[str, list[str]]:
        """(the grounded sentences joined, the sentences dropped).

        Each sentence is checked against the track it is about: the shown track it names, else
        the first card (the one whose facts the model was given), with ``reference`` (the track
        the turn is relative to) for comparisons. A sentence that opens with a pronoun after one
        dropped for naming a track that is not shown ("It's calm, about 92 BPM.") is about that
        track, and goes with it.
        """
        shown = [self.index.by_id[c.id] for c in cards]
        kept, dropped = [], []
        previous_why = None
        for sentence in sentences(generated):
            s = sentence.strip()
            if not norm(s):
                continue
            named = self._tracks_named(s, shown + ([reference] if reference is not None else []))
            why = self._why_false(s, named, shown, reference, first_and_last)
            if why is None and previous_why == "names" and not named and _DEPENDENT.match(s):
                why = "names"
            (kept if why is None else dropped).append(s)
            previous_why = why
        return " ".join(kept), dropped

    def _tracks_named(self, sentence: str, tracks: list[Track]) -> list[Track]:
        """The tracks among ``tracks`` whose title the sentence names (whole words)."""
        low = norm(sentence)
        out: list[Track] = []
        for t in tracks:
            if names_title(low, t.title) and t not in out:
                out.append(t)
        return out

    def _why_false(self, sentence: str, named: list[Track], shown: list[Track], reference: Track | None,
                   first_and_last: tuple[Track | None, Track | None] = (None, None)) -> str | None:
        """None when the sentence holds; else "form", "names" (a title, artist or album not on
        screen or not its track's) or "facts" (a number, key or comparison that is not its track's,
        or a year given as a tempo)."""
        if not well_formed(sentence):
            return "form"
        low = norm(sentence)
        subject, about, allowed, claim = self._about(sentence, named, shown, reference)
        titles = {norm(t.title) for t in allowed}
        quoted = [norm(q) for q in re.findall(r'"([^"]+)"', sentence)]
        if sentence.count('"') % 2 or any(q not in titles for q in quoted):
            return "names"
        if self._names_strangers(sentence, about, allowed):
            return "names"
        album = album_said(sentence)
        if album is not None and not any(names_album(album, t.album) for t in about):
            return "names"  # "from" names an album that is not its track's
        # Numbers and keys inside the tracks' own names ("Sonata No. 16 in C major") are names,
        # not claims: they are checked with those names taken out of the sentence.
        claims = without_names(low, names_of(allowed))
        numbers = set().union(*(numbers_of(t) for t in about))
        if any(int(n) not in numbers for n in NUMBER_CLAIM.findall(claims)):
            return "facts"
        tempos = set().union(*(tempo_numbers(t.descriptors.get("tempo_bpm")) for t in about))
        if any(int(n) not in tempos for n in TEMPO_CLAIM.findall(claims)):
            return "facts"  # a year given as a tempo ("at about 1840")
        keys = {str(t.descriptors.get("key", "")).lower() for t in about}
        if any(k not in keys for k in KEY_CLAIM.findall(claims)):
            return "facts"  # not "a minor-key piece"
        if self._misdescribes(claims + " ", about):
            return "facts"  # "a slow piece" of a card at 185 BPM
        return "facts" if _says_false(sentence, subject, reference, claim, first_and_last) else None

    def _misdescribes(self, text: str, about: Sequence[Track], *, growing: bool = False) -> bool:
        """Whether ``text`` (names taken out) puts its track in a band ("slow", "dark") or gives it a
        catalog tag ("piano") that no track it is about has (the card, and the track before where
        the sentence compares with it). ``growing``: ``text`` is still being written, and a word it
        ends part-way through that can only become such a word counts too (``false_start``)."""
        if not about:
            return False
        tags = self.words.tags
        return bool(set.intersection(*(set(false_descriptions(text, t)) | set(unfounded_tags(text, t, tags))
                                       | ({false_start(text, t, tags)} - {None} if growing else set())
                                       for t in about)))

    def _about(self, sentence: str, named: list[Track], shown: list[Track], reference: Track | None
               ) -> tuple[Track | None, list[Track], list[Track], Refinement]:
        """(the track a sentence is about, the tracks whose facts it may state, the tracks it may
        name, what it claims read as a request)."""
        allowed = shown + ([reference] if reference is not None else [])
        subject = next((t for t in named if t in shown), None) or (shown[0] if shown else None)
        claim = read_request(sentence, CatalogWords())
        # The track before lends its facts only to a sentence about it or set against it: "a piece
        # in C minor at about 112 BPM" said of a card in G# major at 185 is false, even when the
        # track before was in C minor at 112.
        compares = reference is not None and (reference in named or bool(claim.relative) or COMPARING.search(norm(sentence)))
        about = [t for t in [subject, reference if compares else None] if t is not None]
        return subject, about, allowed, claim

    def _names_strangers(self, sentence: str, about: list[Track], allowed: list[Track], *,
                         growing: bool = False) -> bool:
        """Whether ``sentence`` names a catalog title that is not one of ``allowed``, a catalog
        artist who is not that of a track in ``about``, or says "by" someone who is not the artist
        of a track in ``allowed`` ("by Irving Berliner" for Irving Berlin's song).

        With ``growing`` the sentence is still being written: a name from which the rest of the
        sentence is still the start of one it may give ("Joseph" while "Joseph G. Toscano" is being
        written) is not counted yet.
        """
        titles = {norm(t.title) for t in allowed}
        artists = {norm(t.artist) for t in about if t.artist}

        def unfinished(match: re.Match, text: str, names: set[str]) -> bool:
            # the text from the name on is still the start of a name it may give ("airship, but"
            # of the title "Airship, but this time, it sounds good", not the title "Airship")
            return growing and any(n.startswith(text[match.start():]) for n in names)

        low = re.sub(r"\s+", " ", sentence.lower()).lstrip()
        if self._title_re is not None and any(m.group(0) not in titles and not unfinished(m, low, titles)
                                              for m in self._title_re.finditer(low)):
            return True  # a catalog title that is not on screen
        folded = re.sub(r"\s+", " ", fold(sentence)).lstrip()
        own = {fold(a) for a in artists} | {fold(t) for t in titles}
        if any(norm(name) not in artists and not unfinished(m, folded, own)
               for name, pattern in artist_patterns(self.words.artists) for m in pattern.finditer(folded)):
            return True
        # initials lose their stops first: "by Joseph G. Toscano" names Joseph G. Toscano, not "Joseph G";
        # and a name without its alias counts: "Joseph G. Toscano" for "Joseph G. Toscano (Zhaytee)"
        known = {_without_initials(v) for a in artists | {norm(t.artist) for t in allowed}
                 for v in (a, re.sub(r"\s*\(.*?\)", "", a))}
        plain = _without_initials(sentence)
        # while the sentence grows, a name at its end may go on (the guard reads it as it is written)
        return any(norm(m.group(1)) not in known for m in _BY_ARTIST.finditer(plain)
                   if not (growing and m.end() >= len(plain.rstrip())))

    # ---- uploads -----------------------------------------------------------------------------------

    def _take_upload(self, session: Session, path: Path) -> str | None:
        """Analyse an upload into the session; return a message for the person when it can't be used."""
        from index.analysis import analyze
        from index.audio import AudioError

        try:
            analysis = analyze(path)
        except AudioError as e:
            return f"I couldn't use that file: {e}"
        except Exception as e:  # never lose the session on a bad upload
            log.exception("analysis of %s failed", path)
            return f"I couldn't analyse that file ({type(e).__name__}). Try another audio file (mp3, ogg, flac, wav)."
        data = analysis.to_dict()
        try:
            vector = self.index.embed_audio_file(path)["audio"]
        except Exception:
            log.exception("audio embedding of %s failed", path)
            vector = None
        session.upload = UploadedSong(name=path.name, path=str(path), analysis=data, audio_vector=vector)
        return None

    @staticmethod
    def _melody_midi(up: UploadedSong) -> Path:
        """The upload's measured melody as a MIDI file in a temporary folder, named after the song."""
        import hashlib
        import tempfile

        from index.analysis import melody_midi

        digest = hashlib.sha1(up.path.encode()).hexdigest()[:10]
        target = Path(tempfile.gettempdir()) / "tonearm-melodies" / digest / f"{Path(up.name).stem}-melody.mid"
        return melody_midi(up.analysis["melody_notes"], target, tempo_bpm=up.analysis.get("tempo_bpm"))

    @staticmethod
    def _upload_as_track(up: UploadedSong) -> Track:
        a = up.analysis
        key = a.get("key") or ""
        return Track(id=f"upload:{up.name}", title=up.name, descriptors={
            "tempo_bpm": a.get("tempo_bpm"), "key": key, "mode": key.split()[-1] if key else None,
            "energy": a.get("energy"), "brightness": a.get("brightness"),
            "vocals": (a.get("vocals") or {}).get("confidence") if (a.get("vocals") or {}).get("present") else 0.0})

    # ---- bookkeeping -------------------------------------------------------------------------------

    def _record(self, session: Session, message: str, reply: Reply) -> None:
        shown = [c.id for c in reply.tracks]
        session.history.append({"role": "user", "content": message})
        session.history.append({"role": "assistant", "content": reply.text, "tracks": shown})
        session.played.extend(t for t in shown if t not in session.played)
        if shown:
            session.reference = None


def _named_first(ranked: list[tuple[str, float]], refinement: Refinement,
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


_AS_WORD = {"tempo_bpm": "fast", "energy": "energetic", "brightness": "bright"}


def _derived_tags(t: Track) -> list[str]:
    from index.audio import descriptor_tags

    return descriptor_tags(t.descriptors) if t.descriptors else []


# "by <Name>" up to "from", punctuation or the end: the artist a sentence names ("byName" too).
_BY_ARTIST = re.compile(r"\bby ?([A-Z][^,.;:!?]*?)(?= from\b| with\b| in\b| at\b| fits\b| is\b| has\b|[,.;:!?]|$)")
def _says_false(sentence: str, subject: Track | None, reference: Track | None,
                claim: Refinement | None = None,
                first_and_last: tuple[Track | None, Track | None] = (None, None), *,
                growing: bool = False) -> bool:
    """Whether what ``sentence`` says of ``subject`` against ``reference`` (calmer, faster, the same
    artist, another), of its singing, or of its likeness to the session's first track and the
    last reply's first card (``first_and_last``) is false. The numbers quoted with a comparison
    ("172 vs 66 BPM") are not read as a request for 66 BPM: they are checked as numbers.
    ``growing``: the sentence is still being written (``_likeness_false``)."""
    claim = claim if claim is not None else read_request(sentence, CatalogWords())
    low = norm(sentence)
    if subject is not None and _likeness_false(low, subject, first_and_last, growing=growing):
        return True
    if claim.relative and (reference is None or subject is None
                           or not satisfies(subject, reference, Refinement(relative=claim.relative))):
        return True
    if claim.same_artist is not None and (reference is None or subject is None or
                                          satisfies(subject, reference, Refinement(same_artist=claim.same_artist)) is False):
        return True
    if subject is not None and _VOCAL_WORDS.search(low) and claim.vocals is not None \
            and vocal_state(subject) is not claim.vocals:
        return True  # "a piece with vocals" over an instrumental card
    return subject is not None and "instrumental" in low and vocal_state(subject) is not False


def _likeness_false(low: str, subject: Track, first_and_last: tuple[Track | None, Track | None], *,
                    growing: bool = False) -> bool:
    """Whether ``low`` (a sentence, lowercased) says ``subject`` is closer to one end of the
    session than to the other ("closer to the first one than to the last one", the reverse, or
    "closer to the first one", the other end implied) and it is not (``synth.more_like``). The ends
    are the session's first track and the last reply's first card (``first_and_last``); a track
    named otherwise ("the next one", "the 2010s") cannot be told, and the claim does not hold.
    ``growing``: the sentence is still being written, and a word begun after "the" must be the
    start of an end that makes the claim true ("la" of "last" where the track is more like the
    last one)."""
    from .synth import more_like

    said = _LIKENESS_CLAIM.search(low)
    if said is None:
        return False
    first, last = first_and_last
    ends = {"first": first, "last": last, "previous": last}
    other = {"first": "last", "last": "first", "previous": "first"}

    def true(this: str, that: str | None = None) -> bool:
        return this in ends and more_like(subject, ends[this], ends.get(that or other[this]))

    def false_start(part: str, claim: Callable[[str], bool]) -> bool | None:
        """Whether the word begun at the end of ``part`` cannot become a true end (None: none is begun)."""
        begun = _BEGUN_END.search(part) if growing else None
        if begun is None:
            return None
        word = begun.group(1)
        return not ("very".startswith(word) or any(w.startswith(word) and claim(w) for w in ends))

    near, than = said.group(1), said.group(2) or ""
    if (wrong := false_start(near, true)) is not None and not than:
        return wrong
    named = _NAMED_END.search(near)
    if named is None:
        # "more like a waltz than a march" is not about the session; "closer to its roots than to
        # the last one" is, and what it sets against the last one cannot be told
        return _NAMED_END.search(than) is not None
    this = named.group(1)
    if (wrong := false_start(than, lambda w: true(this, w))) is not None:
        return wrong
    far = _NAMED_END.search(than)  # none: the other end ("than before"), or not written yet
    return not true(this, far.group(1) if far else None)


def _without_initials(text: str) -> str:
    """``text`` with the stop after each initial dropped ("J. S. Bach" -> "J S Bach")."""
    return re.sub(r"\b([A-Za-z])\.(?=\s)", r"\1", text)


# A sentence that leans on the one before it ("It's calm.", "This one ...").
_DEPENDENT = re.compile(r"^\W*(?:it|it's|its|this|that|these|they|they're|the track|the piece|the song|the tune|"
                        r"both|all three|also|and)\b", re.IGNORECASE)
# "It's closer to the first one than to the last one", and the reverse: which end of the session a
# track is more like (the synthesizer's "like first" replies say so); the two ends are the groups.
_LIKENESS_CLAIM = re.compile(r"\b(?:closer|nearer|more like|more similar|more alike)\b(.*?)(?:\bthan\b(.*))?$")
_NAMED_END = re.compile(r"\bthe (?:very )?(\S+)")  # "the first", "the very first", "the next", "the 2010s"
_BEGUN_END = re.compile(r"\bthe (?:very )?(\S*)$")  # the same, its word still being written
_VOCAL_WORDS = re.compile(r"\b(vocals?|vocally|vocalist|sung|sings?|singer|singing|voices?)\b")


def _rrf(rankings: Sequence[Sequence[tuple[str, float]]], k: int = 60,
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
