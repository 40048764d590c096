"""The chat engine: a session's history, generation with music tokens, retrieval, refinement,
answers about uploaded songs, and replies grounded in the catalog's facts.

    assistant = MusicAssistant.load(index_dir, model_dir)
    session = assistant.new_session()
    reply = assistant.reply(session, "something calm with piano")
    reply.text, [card.title for card in reply.tracks]
"""
from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.lexical import history_query
from index.store import MusicIndex
from index.track import Track

from .conversations import played_tracks
from .refine import Refinement, apply_refinement, has_vocals, parse_refinement, reference_track, satisfies
from .upload import answer as answer_about_upload
from .upload import detect_intents

log = logging.getLogger("tonearm.chat")

N_SHOW = 3
N_RANKED = 20
CANDIDATES = 100
# Weights of the rankings fused in a turn (weighted reciprocal rank): the model's block, a BM25
# match of the person's words, a dense MiniLM match of them, and the neighbourhood of the tracks
# played in this session. Chosen on the demo catalog's validation conversations, where the
# words' BM25 match was the strongest single signal and the dense match added nothing to it.
FUSION_WEIGHTS: dict[str, float] = {"block": 0.5, "lexical": 1.0, "dense": 0.0, "session": 0.5}
BLOCK_RANKINGS = ("codes", "likelihood")
SESSION_TRACKS = 3  # the session's neighbourhood is taken around its last few tracks


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

    ``source`` tells where the tracks came from: "model" (the generated music block, fused
    with the engine's searches), "engine" (no model loaded: those searches alone),
    "dense-fallback" (nothing else matched, or the model wrote no usable block: text search
    over the conversation), "upload" (nearest to an uploaded song), or "none" (no tracks).
    """

    text: str
    tracks: list[TrackCard] = field(default_factory=list)
    ranked: list[str] = field(default_factory=list)
    source: str = "none"
    generated: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Session:
    """One person's conversation: nothing in it is shared with another session."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    history: list[dict] = field(default_factory=list)
    played: list[str] = field(default_factory=list)
    rejected: set[str] = field(default_factory=set)
    upload: UploadedSong | None = None
    reference: Track | None = None  # what "faster" etc. is relative to when it is not a played track


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.lower()).strip()


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
    """

    def __init__(self, index: MusicIndex, model=None, tokenizer=None, vocab=None, *, system_prompt: str | None = None,
                 max_context_tokens: int = 768, max_new_tokens: int = 48, name: str = "assistant",
                 text_fusion: bool = True, fusion_weights: dict[str, float] | None = None,
                 block_ranking: str = "codes"):
        if block_ranking not in BLOCK_RANKINGS:
            raise ValueError(f"block_ranking must be one of {BLOCK_RANKINGS}, got {block_ranking!r}")
        self.block_ranking = block_ranking
        self.index = index
        self.text_fusion = text_fusion
        self.fusion_weights = dict(FUSION_WEIGHTS if fusion_weights is None else fusion_weights)
        unknown = set(self.fusion_weights) - set(FUSION_WEIGHTS)
        if unknown or any(w < 0 for w in self.fusion_weights.values()):
            raise ValueError(f"fusion_weights takes non-negative weights for {sorted(FUSION_WEIGHTS)}, "
                             f"got {self.fusion_weights}")
        self.model = self.tokenizer = self.vocab = None
        self.max_context_tokens = max_context_tokens
        self.max_new_tokens = max_new_tokens
        self.name = name
        self._titles = {_norm(t.title): t.id for t in index.tracks if len(t.title) > 3}
        self.system_prompt = system_prompt
        if model is not None:
            self.use_model(model, tokenizer, vocab, system_prompt=system_prompt)
        elif system_prompt is None:
            from .model_dir import DEFAULT_SYSTEM_PROMPT

            self.system_prompt = DEFAULT_SYSTEM_PROMPT

    def use_model(self, model, tokenizer, vocab, *, system_prompt: str | None = None) -> None:
        """Answer with ``model`` from the next turn on (a model that finished training meanwhile, say).

        A turn already running keeps what it started with: the model itself is set last.
        """
        from tokenizer.constraint import MusicBlockLogitsProcessor
        from tokenizer.hf import music_token_ids

        if vocab.codebook_sizes != self.index.codebook_sizes:
            raise ValueError(f"the model was trained for another index (codebook sizes {vocab.codebook_sizes} "
                             f"vs {self.index.codebook_sizes}); retrain it on {self.index.root}")
        if system_prompt is None:
            from .model_dir import DEFAULT_SYSTEM_PROMPT

            system_prompt = DEFAULT_SYSTEM_PROMPT
        self.tokenizer, self.vocab, self.system_prompt = tokenizer, vocab, system_prompt
        # Told the token budget, it never opens a block it has no room to finish.
        self._processor = MusicBlockLogitsProcessor(tokenizer, vocab, max_new_tokens=self.max_new_tokens)
        self._end_id = tokenizer.convert_tokens_to_ids(vocab.BLOCK_END)
        self._start_id = tokenizer.convert_tokens_to_ids(vocab.BLOCK_START)
        self._code_ids = music_token_ids(tokenizer, vocab)["codes"]
        self.model = model

    def load_model(self, model_dir: str | Path) -> None:
        """Load a fine-tuned model directory (``assistant.train``) and answer with it from now on."""
        from .model_dir import load_finetuned, read_model_record

        model, tokenizer, vocab = load_finetuned(model_dir)
        self.use_model(model, tokenizer, vocab, system_prompt=read_model_record(model_dir).get("system_prompt"))

    @classmethod
    def load(cls, index_dir: str | Path, model_dir: str | Path | None = None, **kwargs) -> "MusicAssistant":
        assistant = cls(MusicIndex.load(index_dir), **kwargs)
        if model_dir is not None:
            assistant.load_model(model_dir)
            if kwargs.get("system_prompt") is not None:
                assistant.system_prompt = kwargs["system_prompt"]
        return assistant

    def new_session(self) -> Session:
        return Session()

    # ---- the public turn -----------------------------------------------------------------------

    def reply(self, session: Session, message: str, *, upload: str | Path | None = None, n_show: int = N_SHOW,
              k: int = N_RANKED) -> Reply:
        """Answer one user message (and an optional uploaded file) and update the session."""
        message = (message or "").strip()
        notes: list[str] = []
        if upload is not None:
            problem = self._take_upload(session, Path(upload))
            if problem:
                reply = Reply(text=problem)
                self._record(session, message or f"(uploaded {Path(upload).name})", reply)
                return reply
        intents = detect_intents(message) if session.upload else set()
        if session.upload and (upload is not None or intents - {"similar"}) and "similar" not in intents:
            text = answer_about_upload(session.upload.analysis, intents)
            reply = Reply(text=f"About {session.upload.name}: {text}")
            self._record(session, message or f"(uploaded {session.upload.name})", reply)
            return reply
        if not message and upload is None:
            return Reply(text="Tell me what you'd like to hear, or upload a song and ask about it.")

        history = session.history + [{"role": "user", "content": message}]
        refinement = parse_refinement(message)
        if session.upload and "similar" in intents:
            ranked, source, generated = self._like_upload(session, k), "upload", ""
            session.reference = self._upload_as_track(session.upload)
        else:
            ranked, source, generated, notes = self._rank(history, session, refinement, max(k, CANDIDATES))
        ranked = ranked[:k]
        cards = [self._card(tid, s, session, refinement) for tid, s in ranked[:n_show]]
        text = self._compose(generated, cards, refinement, source)
        reply = Reply(text=text, tracks=cards, ranked=[t for t, _ in ranked], source=source, generated=generated, notes=notes)
        self._record(session, message, reply)
        return reply

    def stream(self, session: Session, message: str, *, upload: str | Path | None = None, n_show: int = N_SHOW) -> Iterator[tuple[str, Reply | None]]:
        """Yield the reply text as it grows, then ("", final Reply)."""
        reply = self.reply(session, message, upload=upload, n_show=n_show)
        words = reply.text.split(" ")
        for i in range(1, len(words) + 1):
            yield " ".join(words[:i]), None
        yield reply.text, reply

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
                text = f'More in the vein of "{track.title}":\n' + "\n".join(self._card_line(c) for c in cards)
            else:
                text = f'You have heard everything in this catalog that is close to "{track.title}".'
            reply = Reply(text=text, tracks=cards, ranked=[t for t, _ in ranked], source="track-codes")
        else:
            session.rejected.add(track_id)
            message = f'Not "{track.title}", something else please.'
            last_user = next((t["content"] for t in reversed(session.history) if t["role"] == "user"), "")
            return self.reply(session, f"{last_user} (not {track.title})" if last_user else message, n_show=n_show)
        self._record(session, message, reply)
        return reply

    def rank(self, history: Sequence[dict], k: int = N_RANKED) -> list[str]:
        """Stateless ranking for evaluation: ``history`` ends with the user turn to answer."""
        return self.answer(history, k, with_text=False)[0]

    def answer(self, history: Sequence[dict], k: int = N_RANKED, *, with_text: bool = True) -> tuple[list[str], str]:
        """Stateless turn for evaluation: the ``k`` ranked track ids and the reply a person would read.

        ``history`` ends with the user turn to answer; the tracks of its assistant turns count as
        played. The session is not kept.
        """
        session = Session(history=[dict(t) for t in history[:-1]])
        session.played = played_tracks(history)
        refinement = parse_refinement(history[-1]["content"])
        ranked, source, generated, _ = self._rank(list(history), session, refinement, max(k, CANDIDATES))
        ids = [t for t, _ in ranked[:k]]
        if not with_text:
            return ids, ""
        cards = [self._card(t, s, session, refinement) for t, s in ranked[:N_SHOW]]
        return ids, self._compose(generated, cards, refinement, source)

    # ---- retrieval -------------------------------------------------------------------------------

    def _rank(self, history: list[dict], session: Session, refinement: Refinement, k: int):
        exclude = set(session.played) | session.rejected
        notes: list[str] = []
        generation = Generation("", None, [])
        if self.model is not None:
            generation = self._generate(history)
            if generation.errors:
                notes.append("malformed music block: " + "; ".join(generation.errors))
        generated, codes = generation.text, generation.codes
        if codes:
            if self.block_ranking == "likelihood" and generation.code_log_probs is not None:
                ranked = self.index.rank_by_code_log_probs(generation.code_log_probs, k=k, exclude=exclude)
            else:
                ranked = self.index.retrieve(codes=codes, k=k, exclude=exclude)
            if self.text_fusion:
                ranked = self._fuse(ranked, history, session, k, exclude)
            source = "model"
        elif self.model is None and self.text_fusion and (ranked := self._fuse([], history, session, k, exclude)):
            source = "engine"
        else:
            query = history_query(history)
            why = "no model loaded" if self.model is None else "the model produced no valid music block"
            log.warning("dense fallback (%s) for query %r", why, query[:200])
            notes.append(f"dense fallback: {why}")
            ranked = self.index.search_text(query, k=k, exclude=exclude)
            source = "dense-fallback"
        if refinement:
            ref_id = reference_track(session.played, refinement)
            reference = self.index.by_id.get(ref_id) if ref_id else session.reference
            if refinement.reference is None and session.reference is not None and ref_id is None:
                reference = session.reference
            if refinement.is_relative and reference is not None and reference.id in self.index.by_id:
                # Stay near the reference track while moving in the asked direction.
                near = self.index.retrieve(codes=self.index.track_codes(reference.id), k=k, exclude=exclude)
                ranked = _rrf([ranked, near])
            order = apply_refinement([t for t, _ in ranked], self.index.by_id, reference, refinement)
            if reference is not None and not any(satisfies(self.index.by_id[t], reference, refinement) for t in order[:1]):
                # No candidate moves the right way: search the whole catalog for ones that do.
                fits = [t.id for t in self.index.tracks if t.id not in exclude and satisfies(t, reference, refinement)]
                order = fits + [t for t in order if t not in set(fits)]
            score = dict(ranked)
            ranked = [(t, score.get(t, 0.0)) for t in order]
        return ranked, source, generated, notes

    def _fuse(self, by_block: list[tuple[str, float]], history: list[dict], session: Session, k: int,
              exclude: set[str]) -> list[tuple[str, float]]:
        """Weighted reciprocal-rank fusion of the block's ranking with the other evidence of the turn.

        The block is a guess at five clusters; the person's own words (matched by BM25 and, if
        weighted, by MiniLM) correct a guess that is off, and the tracks near what this session
        played carry its direction when a request is vague.
        """
        query = history_query(history)
        searches = {}
        if query:
            searches["lexical"] = lambda: self.index.search_lexical(query, k=k, exclude=exclude)
            searches["dense"] = lambda: self.index.search_text(query, k=k, exclude=exclude)
        if session.played:
            searches["session"] = lambda: self.index.search_near(session.played[-SESSION_TRACKS:], k=k, exclude=exclude)
        weight = self.fusion_weights
        rankings, weights = [by_block], [weight.get("block", 0.0)]
        for name, search in searches.items():
            if weight.get(name, 0.0) > 0:  # a zero weight spares the search
                rankings.append(search())
                weights.append(weight[name])
        return _rrf(rankings, weights=weights)

    def _like_upload(self, session: Session, k: int) -> list[tuple[str, float]]:
        up = session.upload
        exclude = set(session.played) | session.rejected
        if up is None or up.audio_vector is None:
            return []
        return self.index.retrieve(vectors={"audio": up.audio_vector}, weights={"audio": 1.0}, k=k, exclude=exclude)

    # ---- generation -------------------------------------------------------------------------------

    def _messages(self, history: list[dict]) -> list[dict]:
        from .model_dir import assistant_target

        messages = []
        for turn in history:
            if turn["role"] == "assistant":
                tracks = [t for t in turn.get("tracks", []) if t in self.index.by_id]
                content = assistant_target({"content": turn.get("content", ""), "tracks": tracks[:1]},
                                           self.index.track_codes, self.vocab)
                messages.append({"role": "assistant", "content": content})
            else:
                messages.append({"role": "user", "content": turn["content"]})
        return messages

    def _prompt_ids(self, history: list[dict]):
        from .llm import chat_prompt

        messages = self._messages(history)
        system = {"role": "system", "content": self.system_prompt}
        # Drop the oldest turns until the prompt fits, always keeping the system prompt and last turn.
        while True:
            text = chat_prompt(self.tokenizer, [system] + messages)
            ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            if ids.shape[1] <= self.max_context_tokens or len(messages) <= 1:
                return ids
            messages = messages[1:]

    def _generate(self, history: list[dict]) -> Generation:
        import torch
        from transformers import LogitsProcessorList

        from tokenizer.blocks import parse_reply

        ids = self._prompt_ids(history)
        eos = [i for i in (self.tokenizer.eos_token_id, self._end_id) if i is not None]
        greedy = dict(do_sample=False, pad_token_id=self.tokenizer.pad_token_id, return_dict_in_generate=True,
                      output_logits=True, logits_processor=LogitsProcessorList([self._processor]))
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                                      eos_token_id=eos, **greedy)
            new = out.sequences[0, ids.shape[1]:].tolist()
            step_logits = [logits[0] for logits in out.logits]  # the raw scores each new token was picked from
            if self._start_id not in new:
                # The model talked without recommending: have it complete a block after its words.
                forced = torch.tensor([out.sequences[0].tolist() + [self._start_id]])
                more = self.model.generate(forced, attention_mask=torch.ones_like(forced),
                                           max_new_tokens=len(self.vocab.codebook_sizes) + 1,
                                           eos_token_id=[self._end_id], **greedy)
                new += [self._start_id] + more.sequences[0, forced.shape[1]:].tolist()
                step_logits += [None] + [logits[0] for logits in more.logits]
        text = self.tokenizer.decode(new, skip_special_tokens=False)
        for special in (self.tokenizer.eos_token, self.tokenizer.pad_token):
            if special:
                text = text.replace(special, "")
        parsed = parse_reply(text, self.vocab)
        codes = parsed.blocks[-1] if parsed.blocks else None
        return Generation(parsed.text, codes, list(parsed.errors),
                          self._code_log_probs(new, step_logits) if codes else None)

    def _code_log_probs(self, new: list[int], step_logits: list) -> dict[str, np.ndarray] | None:
        """The model's log-probabilities over each modality's codes in its last block.

        Each modality's distribution is the one its code was drawn from, so later modalities are
        conditioned on the codes chosen before them.
        """
        import torch

        start = len(new) - 1 - new[::-1].index(self._start_id)
        out = {}
        for offset, (modality, token_ids) in enumerate(self._code_ids.items(), start=start + 1):
            if offset >= len(step_logits) or step_logits[offset] is None:
                return None
            scores = step_logits[offset][torch.tensor(token_ids)].float()
            out[modality] = torch.log_softmax(scores, dim=-1).numpy()
        return out

    # ---- grounded text ---------------------------------------------------------------------------

    def _card(self, track_id: str, score: float, session: Session, refinement: Refinement) -> TrackCard:
        t = self.index.by_id[track_id]
        path = self.index.audio_path(t)
        return TrackCard(id=t.id, title=t.title or t.id, artist=t.artist, album=t.album, year=t.year,
                         reason=self._reason(t, session, refinement), audio_path=str(path) if path else None,
                         score=float(score))

    def _reason(self, t: Track, session: Session, refinement: Refinement) -> str:
        d = t.descriptors
        human = [x for x in t.tags if x not in set(_derived_tags(t))][:3]
        facts = []
        if human:
            facts.append(", ".join(human))
        if d.get("tempo_bpm"):
            facts.append(f"about {float(d['tempo_bpm']):.0f} BPM")
        if d.get("key"):
            facts.append(str(d["key"]))
        facts.append("with vocals" if has_vocals(t) else "instrumental")
        ref_id = reference_track(session.played, refinement) if refinement else None
        ref = self.index.by_id.get(ref_id) if ref_id else session.reference
        if refinement and ref is not None:
            for descriptor, direction in refinement.relative:
                a, b = d.get(descriptor), ref.descriptors.get(descriptor)
                if a is not None and b is not None:
                    word = {"tempo_bpm": ("faster", "slower"), "brightness": ("brighter", "darker"),
                            "energy": ("more energetic", "calmer")}[descriptor][0 if direction > 0 else 1]
                    moved = (float(a) - float(b)) * direction > 0
                    unit = f"{float(a):.0f} vs {float(b):.0f} BPM" if descriptor == "tempo_bpm" else f"{float(a):.2f} vs {float(b):.2f}"
                    facts.append(f"{word if moved else 'not ' + word} than {ref.title} ({unit})")
        return "; ".join(facts)

    def _card_line(self, c: TrackCard) -> str:
        by = f" by {c.artist}" if c.artist else ""
        album = f" ({c.album}{', ' + c.year if c.year else ''})" if c.album else ""
        return f'- "{c.title}"{by}{album}: {c.reason}.'

    def _compose(self, generated: str, cards: list[TrackCard], refinement: Refinement, source: str) -> str:
        if not cards:
            return "I couldn't find anything in this catalog for that. Try describing a mood, a genre or an instrument."
        opener = self.grounded_sentences(generated, cards)
        if not opener:
            opener = "Here's what I found in the catalog" + (", following your change." if refinement else ".")
        return opener + "\n" + "\n".join(self._card_line(c) for c in cards)

    def grounded_sentences(self, generated: str, cards: list[TrackCard]) -> str:
        """Keep only the model's sentences whose titles, numbers and keys match the shown tracks,
        and that claim no comparison with an earlier track."""
        shown = [self.index.by_id[c.id] for c in cards]
        shown_titles = {_norm(t.title) for t in shown}
        allowed_numbers = set()
        keys = {str(t.descriptors.get("key", "")).lower() for t in shown}
        for t in shown:
            if t.descriptors.get("tempo_bpm"):
                bpm = round(float(t.descriptors["tempo_bpm"]))
                allowed_numbers.update(range(bpm - 2, bpm + 3))
            if t.year.isdigit():
                allowed_numbers.add(int(t.year))
        kept = []
        for sentence in _sentences(generated):
            low = _norm(sentence)
            if not low or not _well_formed(sentence):
                continue
            quoted = [_norm(q) for q in re.findall(r'"([^"]+)"', sentence)]
            if sentence.count('"') % 2 or any(q not in shown_titles for q in quoted):
                continue
            if any(title in low and title not in shown_titles for title in self._titles):
                continue
            if any(int(n) not in allowed_numbers for n in re.findall(r"\b\d{2,4}\b", sentence)):
                continue
            named_keys = re.findall(r"\b[a-g][#b]? (?:major|minor)\b", low)
            if any(k not in keys for k in named_keys):
                continue
            if parse_refinement(sentence).relative:
                continue  # "it's calmer": the cards state comparisons, measured against the right track
            if _VOCAL_WORDS.search(low) and not any(has_vocals(t) for t in shown):
                continue  # "a piece with vocals" over instrumental cards
            if "instrumental" in low and any(has_vocals(t) for t in shown):
                continue
            kept.append(sentence.strip())
        return " ".join(kept)

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


def _derived_tags(t: Track) -> list[str]:
    from index.audio import descriptor_tags

    return descriptor_tags(t.descriptors) if t.descriptors else []


_VOCAL_WORDS = re.compile(r"\b(vocals?|vocalist|sung|sings?|singer|singing|voices?)\b")


def _sentences(text: str) -> list[str]:
    """Split at sentence ends outside double quotes (titles such as "Reel No. 2" stay whole)."""
    out, start, quoted = [], 0, False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch in ".!?" and not quoted and (i + 1 == len(text) or text[i + 1].isspace()):
            out.append(text[start : i + 1])
            start = i + 1
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def _well_formed(sentence: str) -> bool:
    """A whole sentence: opens with a capital or a quote, ends with its stop, brackets balanced.

    A model that echoes the track cards writes fragments such as ``1, 1831): romantic, piano;
    about``, which no fact check catches but no one should read.
    """
    s = sentence.strip()
    opens = s[:1].isupper() or s[:1] in "\"'"
    ends = s.rstrip("\"'").endswith((".", "!", "?"))
    return opens and ends and s.count("(") == s.count(")") and s.count("[") == s.count("]")


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
