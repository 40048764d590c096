"""The chat engine: one turn of a conversation, from the person's message to the cards and
the reply.

A turn with a model: the model writes its music block (``assistant.writer``) where the ranking
reads it, the block and the engine's searches choose the tracks (``assistant.retrieval``), the
catalog's facts about the first one are put in the model's context, and the model writes its
reply from them, streamed as it goes and checked against the cards (``assistant.reply_check``).
What the chat keeps between turns is the ``Session`` (``assistant.session``).

    assistant = MusicAssistant.load(index_dir, model_dir)
    session = assistant.new_session()
    reply = assistant.reply(session, "something calm with piano")
    reply.text, [card.title for card in reply.tracks]
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from index import vocabulary
from index.store import MusicIndex
from index.track import Track

from .conversations import played_tracks
from .facts import has_vocals as vocal_state
from .familiarity import RequestWords
from .grounding import ClaimGuard
from .refine import Refinement, satisfies
from .reply_check import Ends, ReplyCheck
from .request import CatalogWords, read_request
from .rerank import Reranker
from .retrieval import CANDIDATES, Retrieval
from .session import Reply, Session, TrackCard, TurnUpdate, UploadedSong, first_and_last, record, reference_for
from .upload import answer as answer_about_upload
from .upload import detect_intents
from .writer import MAX_CONTEXT_TOKENS, ModelWriter, check_index

log = logging.getLogger("tonearm.chat")

N_SHOW = 3
N_RANKED = 20
DEFAULT_WEIGHTS = "float32"  # how a loaded model keeps its weights (model_dir.WEIGHT_FORMATS)


class MusicAssistant:
    """Conversational recommender over one index, with an optional fine-tuned model.

    Parameters
    ----------
    index : MusicIndex
    model, tokenizer, vocab : optional
        A causal LM that knows the music tokens (``assistant.train.load_finetuned``). Without
        one, a turn ranks by the same fused retrieval with no block (the person's words, the
        session's neighbourhood and the request's checkable facts): ``Reply.source == "engine"``.
    writer : ModelWriter, optional
        The model as another assistant uses it (``assistant.writer``), instead of ``model``,
        ``tokenizer`` and ``vocab``: assistants that differ in their retrieval and share one
        writer answer from the same model (and, with ``writer.ReplayedBlocks``, the same blocks).
    system_prompt : str, optional
        The model's system prompt (default ``model_dir.DEFAULT_SYSTEM_PROMPT``).
    max_context_tokens, max_new_tokens : int
        The prompt's budget and the reply's length in tokens (``writer.ModelWriter``).
    batch_sessions : bool
        Let the sessions whose turns run at the same time (in other threads: a server's) share
        one forward pass per decoding step (``assistant.batching``).
    text_fusion, fusion_weights, block_ranking, reranker, later_reranker, request_words
        How a turn is ranked (``retrieval.Retrieval``); a model directory that holds re-rankers
        and the words of its training requests sets them when loaded.
    """

    def __init__(self, index: MusicIndex, model=None, tokenizer=None, vocab=None, *,
                 writer: ModelWriter | None = None, system_prompt: str | None = None,
                 max_context_tokens: int = MAX_CONTEXT_TOKENS, max_new_tokens: int = 60, name: str = "assistant",
                 text_fusion: bool = True, fusion_weights: dict[str, float] | None = None,
                 block_ranking: str = "codes", reranker: Reranker | None = None, batch_sessions: bool = False,
                 request_words: RequestWords | None = None, later_reranker: Reranker | None = None):
        self.index = index
        self.name = name
        self.retrieval = Retrieval(index, text_fusion=text_fusion, fusion_weights=fusion_weights,
                                   block_ranking=block_ranking, reranker=reranker, later_reranker=later_reranker,
                                   request_words=request_words)
        self.words = CatalogWords.from_tracks(index.tracks)
        self.check = ReplyCheck(index.tracks, self.words)
        self.batch_sessions = batch_sessions  # sessions decoding at once share each step (a server)
        self.max_context_tokens, self.max_new_tokens = max_context_tokens, max_new_tokens
        self.weights = DEFAULT_WEIGHTS  # how load_model keeps a model's weights
        self.catalog_note: str | None = None  # how the catalog changed since the loaded model was trained
        self.writer: ModelWriter | None = None
        if writer is not None:
            self.use_writer(writer)
        elif model is not None:
            self.use_model(model, tokenizer, vocab, system_prompt=system_prompt)

    @property
    def model(self):
        """The fine-tuned model answering (None: the engine alone)."""
        return self.writer.model if self.writer is not None else None

    @property
    def tokenizer(self):
        return self.writer.tokenizer if self.writer is not None else None

    @property
    def vocab(self):
        return self.writer.vocab if self.writer is not None else None

    @property
    def decoder(self):
        return self.writer.decoder if self.writer is not None else None

    def use_writer(self, writer: ModelWriter) -> None:
        """Answer with ``writer`` from the next turn on; a turn already running keeps its own."""
        check_index(writer.vocab, self.index)  # the writer may come from an assistant over another index
        self.writer = writer

    def use_model(self, model, tokenizer, vocab, *, system_prompt: str | None = None, phrasebook=None) -> None:
        """Answer with ``model`` from the next turn on (a model that finished training meanwhile, say).

        A turn already running keeps what it started with. ``phrasebook``
        (``generation.Phrasebook``, optional) lends its guesses to the decoding.
        """
        from .model_dir import DEFAULT_SYSTEM_PROMPT

        self.use_writer(ModelWriter(model, tokenizer, vocab, self.index,
                                    system_prompt=DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt,
                                    max_context_tokens=self.max_context_tokens, max_new_tokens=self.max_new_tokens,
                                    batched=self.batch_sessions, phrasebook=phrasebook))

    def load_model(self, model_dir: str | Path, *, weights: str | None = None,
                   system_prompt: str | None = None) -> None:
        """Load a fine-tuned model directory (``assistant.train``) and answer with it from now on.

        ``weights`` is how the model keeps its weights (``model_dir.WEIGHT_FORMATS``); None: the
        assistant's ``weights``, set by the last call that named them (at first ``DEFAULT_WEIGHTS``).
        ``system_prompt`` replaces the one the model was trained with.
        """
        from .model_dir import catalog_changes, check_reply_format, load_finetuned, read_model_record, reply_phrasebook
        from .rerank import rerankers_by_turn

        check_reply_format(model_dir)
        self.weights = weights or self.weights
        model, tokenizer, vocab = load_finetuned(model_dir, weights=self.weights)
        by_turn = rerankers_by_turn(model_dir)
        self.retrieval.request_words = RequestWords.load(model_dir)
        self.use_model(model, tokenizer, vocab,
                       system_prompt=system_prompt or read_model_record(model_dir).get("system_prompt"),
                       phrasebook=reply_phrasebook(model_dir, tokenizer))
        self.catalog_note = catalog_changes(model_dir, self.index)
        if by_turn:
            first, later = by_turn["first"], by_turn["later"]
            self.retrieval.reranker, self.retrieval.later_reranker = first, later if later is not first else None

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
            assistant.load_model(model_dir, system_prompt=kwargs.get("system_prompt"))
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
        writer = self.writer  # the model this turn started with, though another be loaded meanwhile
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
            ranked, source = self.retrieval.like_upload(session, k), "upload"
            session.reference = self._upload_as_track(session.upload)
        else:
            ranked, source, notes = self._rank(history, session, refinement, max(k, CANDIDATES), writer)
        ranked = ranked[:k]
        cards = [self._card(tid, s, session, refinement) for tid, s in ranked[:n_show]]
        yield TurnUpdate("", tracks=cards)
        generated = ""
        if writer is not None and cards and source != "upload":
            for generated in self._words(writer, history, cards, session, refinement):
                yield TurnUpdate(generated)
        reply = self._compose(generated, cards, refinement, source, session)
        reply.ranked, reply.notes = [t for t, _ in ranked], notes
        yield self._done(session, message, reply)

    def _done(self, session: Session, message: str, reply: Reply) -> TurnUpdate:
        record(session, message, reply)
        return TurnUpdate(reply.text, reply=reply)

    def feedback(self, session: Session, track_id: str, liked: bool, n_show: int = N_SHOW) -> Reply:
        """"More like this" (liked) or "not for me" on a shown track."""
        track = self.index.by_id.get(track_id)
        if track is None:
            return Reply(text="That track is not in this catalog.")
        if liked:
            session.reference = track
            message = f'More like "{track.title}", please.'
            ranked = self.retrieval.like_track(track_id, session, N_RANKED)
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
        record(session, message, reply)
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
        return reference_for(session, refinement, self.index.by_id)

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
        writer = self.writer
        session = Session(history=[dict(t) for t in history[:-1]])
        session.played = played_tracks(history)
        refinement = read_request(history[-1]["content"], self.words)
        ranked, source, notes = self._rank(list(history), session, refinement, max(k, CANDIDATES), writer)
        ids = [t for t, _ in ranked[:k]]
        if not with_text:
            return Reply(text="", ranked=ids, source=source, notes=notes)
        cards = [self._card(t, s, session, refinement) for t, s in ranked[:N_SHOW]]
        generated = ""
        if writer is not None and cards:
            for generated in self._words(writer, list(history), cards, session, refinement):
                pass
        reply = self._compose(generated, cards, refinement, source, session)
        reply.ranked, reply.notes = ids, notes
        return reply

    # ---- the model's part --------------------------------------------------------------------------

    def _rank(self, history: list[dict], session: Session, refinement: Refinement, k: int,
              writer: ModelWriter | None) -> tuple[list[tuple[str, float]], str, list[str]]:
        """The turn's ranking (``Retrieval.rank``), with ``writer``'s block where it reads one."""
        asked = writer is not None and self.retrieval.reads_block(history, session)
        generation = writer.block(history, session.decode) if asked else None
        return self.retrieval.rank(history, session, refinement, k, generation, with_model=writer is not None)

    def _words(self, writer: ModelWriter, history: list[dict], cards: list[TrackCard], session: Session,
               refinement: Refinement) -> Iterator[str]:
        """``writer``'s reply about the card shown first, as it grows.

        A ``grounding.ClaimGuard`` over the cards and the turn's reference track passes over
        tokens that would state something untrue (``ReplyCheck.holds_while_written``), and over a
        stop before a sentence is finished; a title or artist the model begins and then ranks too
        low to finish is written out whole.
        """
        shown = self._tracks(cards)
        reference = self.reference_for(session, refinement)
        holds = self.check.holds_while_written(shown, reference, first_and_last(session, self.index.by_id))
        guard = ClaimGuard.for_tracks(shown[0], reference, shown, holds=holds)
        yield from writer.words(history, shown[0].id, session.decode, allows=guard.allows, may_end=guard.may_end,
                                complete=guard.completion)

    # ---- the reply -------------------------------------------------------------------------------------

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
        kept, dropped = self.check.ground(generated, self._tracks(cards), reference,
                                          first_and_last(session, self.index.by_id))
        text = kept or ("Here's what I found in the catalog" + (", following your change." if refinement else "."))
        if refinement and not any(satisfies(self.index.by_id[c.id], reference, refinement) for c in cards):
            against = f' against "{reference.title}"' if reference is not None and refinement.is_relative else ""
            unmet = (f"Nothing left in this catalog meets that ({refinement.describe()}{against}); these are "
                     f"the closest, with their measured values.")
            text = unmet + (" " + kept if kept else "")
        return Reply(text=text, tracks=cards, source=source, generated=generated, own_words=bool(kept),
                     dropped=dropped)

    def grounded_sentences(self, generated: str, cards: list[TrackCard], reference: Track | None = None,
                           first_and_last: Ends = (None, None)) -> str:
        """The model's sentences whose titles, numbers, keys and comparisons (with ``reference``,
        the track played before, and with ``first_and_last``, the session's first track and the
        last reply's first card) agree with the shown tracks (``ReplyCheck.ground``)."""
        return self.check.ground(generated, self._tracks(cards), reference, first_and_last)[0]

    def _tracks(self, cards: Sequence[TrackCard]) -> list[Track]:
        return [self.index.by_id[c.id] for c in cards]

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


_AS_WORD = {"tempo_bpm": "fast", "energy": "energetic", "brightness": "bright"}


def _derived_tags(t: Track) -> list[str]:
    from index.audio import descriptor_tags

    return descriptor_tags(t.descriptors) if t.descriptors else []
