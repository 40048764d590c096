"""Loading the LLM, building training examples, LoRA fine-tuning, resuming and reloading."""
from __future__ import annotations

import json
import time

import pytest
import torch
from transformers import AutoTokenizer, LogitsProcessorList

from assistant.llm import chat_prompt, load_base, tiny_model_like
from assistant.model_dir import FACTS_ROLE, assistant_messages, conversation_messages, load_finetuned, read_model_record, untie_output_rows
from assistant.examples import IGNORE, build_examples, collate
from assistant.train import (
    STATE_FILE,
    TrainConfig,
    _TimeBudget,
    _replay_missing,
    _lora_config,
    add_replay_states,
    frozen_layer_count,
    target_loss,
    train,
    validation_interval,
)
import assistant.train as train_module
from index.track import MODALITIES
from tokenizer.blocks import parse_reply
from tokenizer.constraint import MusicBlockLogitsProcessor
from tokenizer.hf import add_music_tokens, music_token_ids
from tokenizer.vocab import MusicVocab

SYSTEM = "You recommend music."
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def catalog_codes(music_vocab):
    return {
        "calm-piano": {"playlist": 1, "tags": 3, "metadata": 2, "lyrics": 0, "audio": 7},
        "fast-rock": {"playlist": 3, "tags": 11, "metadata": 5, "lyrics": 2, "audio": 1},
        "sad-folk": {"playlist": 0, "tags": 6, "metadata": 0, "lyrics": 1, "audio": 4},
    }


def conversation(cid: str, first: str, second: str, first_track: str, second_track: str) -> dict:
    return {"id": cid, "turns": [
        {"role": "user", "content": first},
        {"role": "assistant", "content": "Try this one.", "tracks": [first_track, "fast-rock"]},
        {"role": "user", "content": second},
        {"role": "assistant", "content": "Here is another.", "tracks": [second_track]},
    ]}


@pytest.fixture
def conversations():
    return [
        conversation("c1", "something calm with piano", "now sadder", "calm-piano", "sad-folk"),
        conversation("c2", "a loud rock song", "calmer please", "fast-rock", "calm-piano"),
        conversation("c3", "quiet folk", "faster", "sad-folk", "fast-rock"),
        conversation("c4", "piano for studying", "something with guitars", "calm-piano", "fast-rock"),
    ]


def fast_config(**overrides) -> TrainConfig:
    settings = dict(max_steps=12, seq_len=128, batch_size=2, lr=5e-3, token_lr=1e-2, warmup=2, eval_every=6,
                    time_budget_s=None, num_threads=1, lora_dropout=0.0)
    return TrainConfig(**{**settings, **overrides})


# ---- llm -------------------------------------------------------------------------------------


def test_chat_prompt_uses_template_or_chatml(base_tokenizer):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi", "tracks": []}]
    text = chat_prompt(base_tokenizer, messages)
    assert text == f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    base_tokenizer.chat_template = None
    assert chat_prompt(base_tokenizer, messages) == text  # the ChatML fallback matches SmolLM2's own
    assert not chat_prompt(base_tokenizer, messages, add_generation_prompt=False).endswith("assistant\n")
    with pytest.raises(ValueError, match="role"):
        chat_prompt(base_tokenizer, [{"content": "no role"}])


def test_load_base_reports_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="local Hugging Face model directory"):
        load_base(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_base(str(tmp_path))


def test_tiny_model_matches_tokenizer(base_tokenizer):
    model = tiny_model_like(base_tokenizer, seed=1)
    assert model.get_input_embeddings().num_embeddings == len(base_tokenizer)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    again = tiny_model_like(base_tokenizer, seed=1)
    torch.testing.assert_close(model.model.layers[0].mlp.up_proj.weight, again.model.layers[0].mlp.up_proj.weight)


# ---- examples ----------------------------------------------------------------------------------


def test_labels_cover_exactly_the_assistant_replies(base_tokenizer, tiny_model, music_vocab, catalog_codes,
                                                    conversations):
    add_music_tokens(base_tokenizer, tiny_model, music_vocab)
    examples = build_examples(conversations, catalog_codes.__getitem__, base_tokenizer, music_vocab, SYSTEM, 256)
    # One example per assistant turn, named by conversation and turn.
    expected = [(chat, i) for chat in conversations for i, t in enumerate(chat["turns"]) if t["role"] == "assistant"]
    assert [e["id"] for e in examples] == [f"{chat['id']}#{i}" for chat, i in expected]
    for example, (chat, end) in zip(examples, expected):
        ids, labels = example["input_ids"], example["labels"]
        assert len(ids) == len(labels) <= 256
        assert all(label in (IGNORE, token) for label, token in zip(labels, ids))
        # The supervised tokens, read back, are each reply, its first track's block, and the end of turn.
        spans, current = [], []
        for token, label in zip(ids, labels):
            if label != IGNORE:
                current.append(token)
            elif current:
                spans.append(current)
                current = []
        if current:
            spans.append(current)
        # Learned: every turn's block so far, and the words of the turn the example is for.
        replies = [t for t in chat["turns"][: end + 1] if t["role"] == "assistant"]
        wanted = [music_vocab.format_block(catalog_codes[r["tracks"][0]]) + "<|im_end|>\n" for r in replies]
        wanted.append(chat["turns"][end]["content"] + "<|im_end|>\n")
        assert [base_tokenizer.decode(span) for span in spans] == wanted
        # Everything else (system, user turns, role headers) carries no loss; earlier words are left out.
        unsupervised = base_tokenizer.decode([t for t, label in zip(ids, labels) if label == IGNORE])
        assert SYSTEM in unsupervised and chat["turns"][0]["content"] in unsupervised
        assert not any(r["content"] in base_tokenizer.decode(ids) for r in replies[:-1]
                       if r["content"] != replies[-1]["content"])


def test_long_conversations_drop_oldest_turns_but_keep_the_system_prompt(base_tokenizer, tiny_model, music_vocab,
                                                                        catalog_codes, conversations):
    add_music_tokens(base_tokenizer, tiny_model, music_vocab)
    # The example for the conversation's last turn, whole and one token too long.
    full = build_examples(conversations[:1], catalog_codes.__getitem__, base_tokenizer, music_vocab, SYSTEM, 512)[-1]
    short = build_examples(conversations[:1], catalog_codes.__getitem__, base_tokenizer, music_vocab, SYSTEM,
                           len(full["input_ids"]) - 1)[-1]
    text = base_tokenizer.decode(short["input_ids"])
    assert text.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>")
    assert "something calm with piano" not in text and "now sadder" in text
    system_len = len(base_tokenizer(chat_prompt(base_tokenizer, [{"role": "system", "content": SYSTEM}], False),
                                    add_special_tokens=False)["input_ids"])
    assert short["input_ids"][system_len:] == full["input_ids"][-(len(short["input_ids"]) - system_len):]
    tiny = build_examples(conversations[:1], catalog_codes.__getitem__, base_tokenizer, music_vocab, SYSTEM, 24)[-1]
    assert len(tiny["input_ids"]) == 24 and tiny["labels"][-1] != IGNORE


def test_assistant_messages_block_first_then_facts_then_words(base_tokenizer, music_vocab, catalog_codes):
    turn = {"role": "assistant", "content": " Enjoy. ", "tracks": ["sad-folk"]}
    block = music_vocab.format_block(catalog_codes["sad-folk"])
    assert assistant_messages(turn, catalog_codes.__getitem__, music_vocab, "Sad Folk: slow.") == [
        {"role": "assistant", "content": block}, {"role": FACTS_ROLE, "content": "Sad Folk: slow."},
        {"role": "assistant", "content": "Enjoy."}]
    assert assistant_messages(turn, catalog_codes.__getitem__, music_vocab) == [
        {"role": "assistant", "content": block}, {"role": "assistant", "content": "Enjoy."}]
    assert assistant_messages({"role": "assistant", "content": "No track."}, catalog_codes.__getitem__,
                              music_vocab) == [{"role": "assistant", "content": "No track."}]
    with pytest.raises(KeyError, match="not in the index"):
        assistant_messages({"content": "x", "tracks": ["missing"]}, catalog_codes.__getitem__, music_vocab)
    # Only the last turn, the one being answered, has facts: about its first track against the last
    # one played before it and the session's first, and the request it answers. Earlier turns are
    # their blocks: their words, written from facts no longer in view, are left out.
    seen = []
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "A.", "tracks": ["sad-folk"]},
             {"role": "user", "content": "b"}, {"role": "assistant", "content": "B.", "tracks": ["sad-folk", "x"]},
             {"role": "user", "content": "c"}, {"role": "assistant", "content": "C.", "tracks": ["sad-folk"]}]
    messages = conversation_messages(turns, catalog_codes.__getitem__, music_vocab,
                                     lambda *args: seen.append(args) or "|".join(map(str, args)))
    assert seen == [("sad-folk", "sad-folk", "sad-folk", "c")]  # against the first card of the reply before
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2 + ["user", "assistant", FACTS_ROLE, "assistant"]
    assert [m["content"] for m in messages if m["role"] == "assistant"][-1] == "C."
    assert not any(m["content"] in ("A.", "B.") for m in messages)
    trackless = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "Nothing fits."},
                 {"role": "user", "content": "b"}, {"role": "assistant", "content": "B.", "tracks": ["sad-folk"]}]
    kept = conversation_messages(trackless, catalog_codes.__getitem__, music_vocab)
    assert kept[1] == {"role": "assistant", "content": "Nothing fits.", "learn": False}  # words without tracks stay
    with pytest.raises(KeyError, match="add_music_tokens"):
        build_examples([], catalog_codes.__getitem__, base_tokenizer, music_vocab, SYSTEM, 64)


# ---- training ----------------------------------------------------------------------------------


def test_train_resume_reload_and_generate(tmp_path, base_tokenizer, tiny_model, music_vocab, catalog_codes,
                                          conversations):
    out = tmp_path / "model"
    report = train(None, conversations[:3], conversations[3:], catalog_codes.__getitem__, music_vocab, out,
                   config=fast_config(), system_prompt=SYSTEM, progress=False,
                   model=tiny_model, tokenizer=base_tokenizer)
    turns = sum(t["role"] == "assistant" for c in conversations[:3] for t in c["turns"])
    assert report.steps == report.steps_this_run == 12 and report.examples == turns  # one per assistant turn
    assert report.train_loss < report.first_train_loss - 0.5  # it learns
    # Six examples, two a batch: validation every epoch of 3 steps (before eval_every=6).
    assert [s for s, _ in report.val_history] == [3, 6, 9, 12]
    assert report.val_history[-1][1] < report.val_history[0][1]
    saved = json.loads((out / "train_report.json").read_text())
    assert saved["steps"] == 12 and saved["val_loss"] == pytest.approx(report.val_loss)
    record = read_model_record(out)
    assert record["base"] == "base" and record["system_prompt"] == SYSTEM
    assert MusicVocab.load(out) == music_vocab and (out / STATE_FILE).is_file()

    # Only LoRA weights and music-token rows were trained; the base rows are untouched.
    state = torch.load(out / STATE_FILE, weights_only=False)
    assert state["step"] == 12 and len(state["loss_history"]) == 12

    # Resuming continues the step count from the saved state.
    fresh_tokenizer = AutoTokenizer.from_pretrained(out / "base")
    resumed = train(None, conversations[:3], conversations[3:], catalog_codes.__getitem__, music_vocab, out,
                    config=fast_config(max_steps=30), system_prompt=SYSTEM, progress=False,
                    model=tiny_model_like(fresh_tokenizer), tokenizer=fresh_tokenizer)
    assert resumed.steps == 30 and resumed.steps_this_run == 18
    assert len(torch.load(out / STATE_FILE, weights_only=False)["loss_history"]) == 30
    assert resumed.train_loss < report.train_loss

    # The directory loads on its own; the tied output rows carry the trained music rows.
    model, tokenizer, vocab = load_finetuned(out)
    assert vocab == music_vocab and not model.training
    ids = music_token_ids(tokenizer, vocab)["all"]
    torch.testing.assert_close(model.get_output_embeddings().weight[ids], model.get_input_embeddings().weight[ids])
    initial = tiny_model_like(AutoTokenizer.from_pretrained(out / "base"))
    add_music_tokens(AutoTokenizer.from_pretrained(out / "base"), initial, vocab)
    assert not torch.allclose(model.get_input_embeddings().weight[ids], initial.get_input_embeddings().weight[ids])
    torch.testing.assert_close(model.get_input_embeddings().weight[:100], initial.get_input_embeddings().weight[:100])

    # Generation under the constraint gives a parseable block: the first reply's, learned.
    prompt = chat_prompt(tokenizer, [{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": "something calm with piano"}])
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out_ids = model.generate(**inputs, max_new_tokens=24, do_sample=False, logits_processor=LogitsProcessorList(
        [MusicBlockLogitsProcessor(tokenizer, vocab, max_new_tokens=24)]))
    parsed = parse_reply(tokenizer.decode(out_ids[0, inputs["input_ids"].shape[1]:]), vocab)
    assert parsed.errors == [] and len(parsed.blocks) >= 1
    assert list(parsed.blocks[0]) == list(MODALITIES)


def test_target_loss_matches_the_models_own_loss_before_and_after_a_step(base_tokenizer, tiny_model, music_vocab,
                                                                         catalog_codes, conversations):
    from peft import get_peft_model

    token_ids = add_music_tokens(base_tokenizer, tiny_model, music_vocab)
    examples = build_examples(conversations, catalog_codes.__getitem__, base_tokenizer, music_vocab, SYSTEM, 128)
    batch = collate(examples, base_tokenizer.pad_token_id)
    model = get_peft_model(tiny_model, _lora_config(tiny_model, token_ids, fast_config()))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):  # the second comparison sees trained LoRA weights and music rows
        torch.testing.assert_close(target_loss(model, batch), model(**batch).loss)
        target_loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad()


def test_replayed_bottom_layers_give_the_full_models_loss_and_gradients(base_tokenizer, music_vocab,
                                                                        catalog_codes, conversations):
    from peft import get_peft_model

    model = tiny_model_like(base_tokenizer, num_layers=3)
    token_ids = add_music_tokens(base_tokenizer, model, music_vocab)
    config = fast_config(train_layers=1)
    frozen = frozen_layer_count(model, config)
    assert frozen == 2 and frozen_layer_count(model, fast_config(train_layers=5)) == 0
    assert frozen_layer_count(model, fast_config(train_layers=None)) == 0
    assert untie_output_rows(model) and not untie_output_rows(model)  # the second call finds it untied
    model = get_peft_model(model, _lora_config(model, token_ids, config, frozen))
    adapted = {name.split(".layers.")[1].split(".")[0] for name, _ in model.named_parameters() if "lora_" in name}
    assert adapted == {"2"}  # LoRA on the top layer only
    model.train()
    examples = build_examples(conversations, catalog_codes.__getitem__, base_tokenizer, music_vocab, SYSTEM, 128)
    full = collate(examples, base_tokenizer.pad_token_id)
    add_replay_states(model, examples, frozen, base_tokenizer.pad_token_id, 3, "cpu")
    assert all(e["replay"].shape == (len(e["input_ids"]), 64) for e in examples)
    replayed = collate(examples, base_tokenizer.pad_token_id)
    assert replayed["replay"].shape == (*replayed["input_ids"].shape, 64)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):  # the second comparison sees trained LoRA weights and music rows
        loss_full = target_loss(model, full)
        loss_full.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.zero_grad()
        loss_replayed = target_loss(model, replayed, frozen)
        loss_replayed.backward()
        torch.testing.assert_close(loss_replayed, loss_full, atol=2e-3, rtol=1e-3)  # float16 storage
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                torch.testing.assert_close(parameter.grad, grads[name], atol=1e-3, rtol=5e-2)
        optimizer.step()
        optimizer.zero_grad()
    assert len(model.get_base_model().model.layers) == 3  # the bottom layers are back after each loss

    # Training replays lazily: only the examples a step uses, and each once.
    fresh = build_examples(conversations, catalog_codes.__getitem__, base_tokenizer, music_vocab, SYSTEM, 128)
    assert _replay_missing(model, fresh[:2], frozen, base_tokenizer.pad_token_id, 8, "cpu", False) > 0
    assert ["replay" in e for e in fresh] == [True, True] + [False] * (len(fresh) - 2)
    kept = fresh[0]["replay"]
    assert _replay_missing(model, fresh[:2], frozen, base_tokenizer.pad_token_id, 8, "cpu", False) == 0.0
    assert fresh[0]["replay"] is kept
    torch.testing.assert_close(fresh[0]["replay"], examples[0]["replay"])
    assert _replay_missing(model, fresh, 0, base_tokenizer.pad_token_id, 8, "cpu", False) == 0.0  # nothing frozen


def test_time_budget_pays_the_frozen_layers_first_pass_in_the_first_epoch_only():
    now = time.monotonic()
    budget = _TimeBudget(now, 1000.0, val_examples=0, examples_per_step=8, first_epoch_steps=10,
                         step_seconds=[2.0, 2.0, 2.0], replay_seconds=36.0, replay_steps=12, eval_seconds=0.0)
    assert budget.next_step_cost(3) == 5.0 and budget.next_step_cost(10) == 2.0
    # 7 more first-epoch steps at 5 s, then 2 s a step for the rest of about 965 s.
    assert abs(budget.affordable_steps(3, eval_every=50) - (7 + 965 / 2)) <= 1
    short = _TimeBudget(now, 20.0, val_examples=0, examples_per_step=8, first_epoch_steps=10,
                        step_seconds=[2.0], replay_seconds=3.0, replay_steps=1, eval_seconds=0.0)
    assert short.affordable_steps(1, eval_every=50) == 3  # under 20 s left, 5 s a step
    # Before a validation pass is measured, its estimate includes the frozen layers over the val examples.
    unmeasured = _TimeBudget(now, 100.0, val_examples=16, examples_per_step=8, step_seconds=[3.0],
                             replay_seconds=4.0, replay_steps=1)
    assert unmeasured.finishing_cost() == (1.0 + 4.0) * 2 + 1.0


def test_time_budget_plan_recovers_from_a_slow_start():
    # Three slow first steps (a busy machine) plan a short run; the steps after them, at the
    # machine's usual speed, plan it again from the median so far.
    now = time.monotonic()
    budget = _TimeBudget(now, 600.0, val_examples=0, examples_per_step=8, step_seconds=[6.0, 6.0, 6.0],
                         eval_seconds=0.0)
    slow_plan = budget.planned_steps(3, eval_every=50, max_steps=10_000)
    assert abs(slow_plan - (3 + 600 / 6)) <= 1
    budget.step_seconds += [2.0] * 4
    assert abs(budget.planned_steps(7, eval_every=50, max_steps=10_000) - (7 + 600 / 2)) <= 1
    assert budget.planned_steps(7, eval_every=50, max_steps=120) == 120
    spent = _TimeBudget(now - 700.0, 600.0, val_examples=0, examples_per_step=8, step_seconds=[2.0] * 3,
                        eval_seconds=0.0)
    assert spent.planned_steps(40, eval_every=50, max_steps=10_000) == 40  # out of time: the schedule ends now


def test_training_with_frozen_bottom_layers_reloads_untied(tmp_path, base_tokenizer, music_vocab, catalog_codes,
                                                           conversations):
    out = tmp_path / "model"
    model = tiny_model_like(base_tokenizer, num_layers=3)
    report = train(None, conversations[:3], conversations[3:], catalog_codes.__getitem__, music_vocab, out,
                   config=fast_config(train_layers=1), system_prompt=SYSTEM, progress=False,
                   model=model, tokenizer=base_tokenizer)
    assert report.train_loss < report.first_train_loss - 0.5  # it learns through the top layer alone
    record = read_model_record(out)
    assert record["frozen_layers"] == 2 and record["untied_output"] is True

    # The output rows trained; the input rows kept their text initialisation.
    loaded, tokenizer, vocab = load_finetuned(out)
    ids = music_token_ids(tokenizer, vocab)["all"]
    initial = tiny_model_like(AutoTokenizer.from_pretrained(out / "base"), num_layers=3)
    add_music_tokens(AutoTokenizer.from_pretrained(out / "base"), initial, vocab)
    torch.testing.assert_close(loaded.get_input_embeddings().weight[ids], initial.get_input_embeddings().weight[ids])
    assert not torch.allclose(loaded.get_output_embeddings().weight[ids], initial.get_output_embeddings().weight[ids])
    torch.testing.assert_close(loaded.get_output_embeddings().weight[:100], initial.get_output_embeddings().weight[:100])

    # The reloaded model scores the validation conversation as training left it.
    examples = build_examples(conversations[3:], catalog_codes.__getitem__, tokenizer, vocab, SYSTEM, 128)
    with torch.no_grad():
        assert float(target_loss(loaded, collate(examples, tokenizer.pad_token_id))) == pytest.approx(
            report.val_loss, rel=1e-3)

    # Resuming keeps the layout, and refuses another one.
    fresh_tokenizer = AutoTokenizer.from_pretrained(out / "base")
    resumed = train(None, conversations[:3], conversations[3:], catalog_codes.__getitem__, music_vocab, out,
                    config=fast_config(train_layers=1, max_steps=16), system_prompt=SYSTEM, progress=False,
                    model=tiny_model_like(fresh_tokenizer, num_layers=3), tokenizer=fresh_tokenizer)
    assert resumed.steps == 16
    with pytest.raises(ValueError, match="frozen bottom layers"):
        train(None, conversations[:3], [], catalog_codes.__getitem__, music_vocab, out,
              config=fast_config(train_layers=None, max_steps=20), progress=False,
              model=tiny_model_like(fresh_tokenizer, num_layers=3), tokenizer=fresh_tokenizer)


def test_train_stops_within_time_budget(tmp_path, base_tokenizer, tiny_model, music_vocab, catalog_codes,
                                        conversations):
    report = train(None, conversations, [], catalog_codes.__getitem__, music_vocab, tmp_path / "m",
                   config=fast_config(max_steps=10_000, time_budget_s=4.0), progress=False,
                   model=tiny_model, tokenizer=base_tokenizer)
    assert report.stopped_by == "time_budget"
    assert report.steps < 10_000
    assert report.val_loss != report.val_loss  # NaN: no validation conversations


def test_validation_every_epoch_when_an_epoch_is_shorter_than_eval_every():
    config = fast_config(eval_every=50, batch_size=8)
    assert validation_interval(config, 61) == 8  # a 61-track library: every epoch
    assert validation_interval(config, 1371) == 50  # the demo: every 50 steps
    assert validation_interval(fast_config(eval_every=50, batch_size=8, grad_accum=2), 20) == 2
    with pytest.raises(ValueError, match="patience"):
        fast_config(patience=0)


def test_training_stops_when_validation_stops_improving_and_keeps_the_best_weights(
        tmp_path, monkeypatch, base_tokenizer, tiny_model, music_vocab, catalog_codes, conversations):
    scripted = iter([5.0, 4.0, 4.5, 4.6, 4.7, 4.8, 4.9])
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def fake_validation(model, *args, **kwargs):  # passes at steps 3, 6, 9, ...: the best is the second
        seen[len(seen)] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return next(scripted)

    monkeypatch.setattr(train_module, "evaluate_loss", fake_validation)
    out = tmp_path / "m"
    report = train(None, conversations[:3], conversations[3:], catalog_codes.__getitem__, music_vocab, out,
                   config=fast_config(max_steps=40, patience=3), progress=False,
                   model=tiny_model, tokenizer=base_tokenizer)
    assert report.stopped_by == "validation"
    assert report.steps == 15 and report.best_step == 6 and report.val_loss == 4.0
    assert [v for _, v in report.val_history] == [5.0, 4.0, 4.5, 4.6, 4.7]
    # The weights left in the model, and saved, are those of step 6, not of step 15.
    now = {n: p for n, p in tiny_model.named_parameters()}
    best, last = seen[1], seen[4]
    assert any(not torch.equal(best[n], last[n]) for n in best)
    for name, weight in best.items():
        torch.testing.assert_close(now[name.removeprefix("base_model.model.")], weight)
    assert torch.load(out / STATE_FILE, weights_only=False)["best"]["step"] == 6

    # A run that stopped for validation is finished: running it again trains nothing more.
    fresh_tokenizer = AutoTokenizer.from_pretrained(out / "base")
    again = train(None, conversations[:3], conversations[3:], catalog_codes.__getitem__, music_vocab, out,
                  config=fast_config(max_steps=40, patience=3), progress=False,
                  model=tiny_model_like(fresh_tokenizer), tokenizer=fresh_tokenizer)
    assert again.steps_this_run == 0 and again.stopped_by == "validation" and again.best_step == 6


def test_resume_refuses_another_vocabulary(tmp_path, base_tokenizer, tiny_model, music_vocab, catalog_codes,
                                           conversations):
    out = tmp_path / "m"
    train(None, conversations[:2], [], catalog_codes.__getitem__, music_vocab, out,
          config=fast_config(max_steps=1), progress=False, model=tiny_model, tokenizer=base_tokenizer)
    other = MusicVocab({**music_vocab.codebook_sizes, "audio": 99})
    with pytest.raises(ValueError, match="new output directory"):
        train(None, conversations[:2], [], catalog_codes.__getitem__, other, out,
              config=fast_config(max_steps=2), progress=False, model=tiny_model, tokenizer=base_tokenizer)


@pytest.mark.slow
def test_real_smollm2_writes_a_music_block_under_the_constraint(music_vocab):
    model, tokenizer = load_base()
    assert tokenizer.pad_token is not None and tokenizer.chat_template
    add_music_tokens(tokenizer, model, music_vocab, {"tags": {3: "calm piano ballad"}})
    assert torch.isfinite(model.get_input_embeddings().weight).all()
    block = music_vocab.format_block({m: 1 for m in MODALITIES})
    assert len(tokenizer(block, add_special_tokens=False)["input_ids"]) == 7

    prompt = chat_prompt(tokenizer, [{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": "Recommend a calm piano song."}])
    # The untrained model rarely opens a block, so the reply is seeded with one: the constraint
    # must finish it with five valid codes, then the model goes back to text.
    prefix = prompt + "Try this: <music>"
    inputs = tokenizer(prefix, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False, logits_processor=LogitsProcessorList(
            [MusicBlockLogitsProcessor(tokenizer, music_vocab, max_new_tokens=16)]))
    reply = "Try this: <music>" + tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])
    parsed = parse_reply(reply, music_vocab)
    assert parsed.errors == [] and len(parsed.blocks) == 1
    assert list(parsed.blocks[0]) == list(MODALITIES)
    assert parsed.text.startswith("Try this:")


def test_an_epoch_takes_every_example_once_in_batches_of_like_length():
    import random

    from assistant.train import epoch_order

    rng = random.Random(0)
    lengths = tuple(rng.randint(20, 256) for _ in range(100))

    def padding(order: tuple[int, ...]) -> float:
        batches = [[lengths[i] for i in order[b:b + 8]] for b in range(0, len(order), 8)]
        return 1 - sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)

    bucketed = epoch_order(lengths, seed=1, batch_size=8, window=96)
    shuffled = epoch_order(lengths, seed=1, batch_size=8, window=1)  # a window of one: a plain shuffle
    assert sorted(bucketed) == sorted(shuffled) == list(range(100))
    assert bucketed == epoch_order(lengths, seed=1, batch_size=8, window=96)  # resuming draws the same
    assert bucketed != epoch_order(lengths, seed=2, batch_size=8, window=96)  # another epoch, another order
    assert padding(bucketed) < padding(shuffled) / 3
