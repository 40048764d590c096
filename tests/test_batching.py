"""Batched decoding steps: several sessions' caches in one forward pass give each session what
its own step would have."""
from __future__ import annotations

import copy
import threading

import pytest
import torch

from assistant.batching import StepBatcher, batch_rows, detach_cache, stack_caches, unstack_cache


def prefilled(model, ids):
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
    return cache


def one_step(model, token, cache):
    with torch.no_grad():
        return model(input_ids=torch.tensor([[token]]), cache=cache, use_cache=True, logits_to_keep=1).logits[0, -1]


def test_a_stacked_step_gives_each_session_its_own_logits_and_cache(tiny_model, one_torch_thread):
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 1000, (n,), generator=g).tolist() for n in (7, 19, 12)]
    tokens = [11, 22, 33]
    caches = [prefilled(tiny_model, p) for p in prompts]
    alone = [copy.deepcopy(c) for c in caches]
    expected = [one_step(tiny_model, t, c) for t, c in zip(tokens, alone)]

    lengths = [c.get_seq_length() for c in caches]
    batch, mask, positions = stack_caches(caches, rows=4)  # a fourth row repeats the first
    assert mask.shape == (4, 20) and positions.squeeze(1).tolist() == [7, 19, 12, 7]
    assert mask.sum(dim=1).tolist() == [8, 20, 13, 8]  # each sequence's tokens and the new one
    with torch.no_grad():
        out = tiny_model(input_ids=torch.tensor([[t] for t in tokens + tokens[:1]]), attention_mask=mask,
                         position_ids=positions, cache=batch, use_cache=True, logits_to_keep=1)
    unstack_cache(batch, caches, lengths)
    assert torch.allclose(out.logits[3, -1], expected[0], atol=1e-4)
    for row in range(3):
        assert torch.allclose(out.logits[row, -1], expected[row], atol=1e-4)
        assert caches[row].get_seq_length() == alone[row].get_seq_length() == lengths[row] + 1
        for mine, theirs in zip(caches[row].layers, alone[row].layers):
            assert torch.allclose(mine.keys, theirs.keys, atol=1e-5)
            assert torch.allclose(mine.values, theirs.values, atol=1e-5)
    # the rows are views of the batch until detached; either way they decode on alone as if never stacked
    shared = caches[1].layers[0].keys
    assert shared.untyped_storage().nbytes() > shared.numel() * shared.element_size()
    detach_cache(caches[1])
    own = caches[1].layers[0].keys
    assert own.untyped_storage().nbytes() == own.numel() * own.element_size() and torch.equal(own, shared)
    assert torch.allclose(one_step(tiny_model, 44, caches[1]), one_step(tiny_model, 44, alone[1]), atol=1e-4)
    assert torch.allclose(one_step(tiny_model, 45, caches[2]), one_step(tiny_model, 45, alone[2]), atol=1e-4)


def test_batch_rows_round_two_or_more_sequences_up_to_fours():
    assert [batch_rows(n) for n in (1, 2, 3, 4, 5, 8, 9)] == [1, 4, 4, 4, 8, 8, 12]
    with pytest.raises(ValueError):
        batch_rows(0)


def greedy(run, model, prompt, n):
    from transformers import DynamicCache

    cache, ids, out = DynamicCache(), list(prompt), []
    logits = run(ids, cache)
    for _ in range(n):
        token = int(torch.argmax(logits))
        out.append(token)
        logits = run([token], cache)
    return out


def test_sessions_in_threads_share_steps_and_decode_what_they_would_alone(tiny_model, one_torch_thread):
    def alone(ids, cache):
        with torch.no_grad():
            return tiny_model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True,
                              logits_to_keep=1).logits[0, -1].float()

    prompts = [[5, 6, 7, 8], [9, 10], [300, 301, 302, 303, 304, 305]]
    expected = [greedy(alone, tiny_model, p, 12) for p in prompts]
    batcher = StepBatcher(tiny_model, gather_wait_s=0.05)
    got: list = [None] * len(prompts)
    start = threading.Barrier(len(prompts))

    def session(i):
        start.wait()
        got[i] = greedy(batcher.run, tiny_model, prompts[i], 12)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert got == expected
    assert batcher.batched_steps >= 6  # most of the twelve steps were shared
    # how many sessions meet in each pass depends on the threads' timing; most steps are shared
    # (a run on a busy machine paired them: 32 sequences in 16 passes)
    assert batcher.batched_sequences >= 24  # of the sessions' 36 steps


def test_a_batch_that_carries_on_is_not_stacked_again(tiny_model, one_torch_thread):
    from assistant.batching import _Step

    batcher = StepBatcher(tiny_model)
    caches = [prefilled(tiny_model, [5, 6, 7]), prefilled(tiny_model, [9, 10])]
    alone = [copy.deepcopy(c) for c in caches]
    for token in (11, 12, 13):  # the same sessions, step after step, nothing else touching their caches
        steps = [_Step([token], c) for c in caches]
        batcher._step_batch(steps)
        for s, c in zip(steps, alone):
            assert torch.allclose(s.logits[-1], one_step(tiny_model, token, c), atol=1e-4)
    assert batcher.batched_steps == 3 and batcher.stacked_steps == 1


def test_a_failing_step_reaches_its_session_and_the_batcher_keeps_serving(tiny_model):
    from transformers import DynamicCache

    batcher = StepBatcher(tiny_model)
    with pytest.raises(IndexError):
        batcher.run([10 ** 9], DynamicCache())  # a token id beyond the vocabulary
    assert batcher.run([5, 6], DynamicCache()).shape == (1, tiny_model.config.vocab_size)
    assert batcher.run([5, 6, 7], DynamicCache(), positions=3).shape == (3, tiny_model.config.vocab_size)
    with pytest.raises(ValueError, match="positions"):
        batcher.run([], DynamicCache())
    with pytest.raises(ValueError, match="max_batch"):
        StepBatcher(tiny_model, max_batch=0)


def test_a_closed_batcher_ends_its_thread_and_takes_no_more_steps(tiny_model):
    from transformers import DynamicCache

    batcher = StepBatcher(tiny_model)
    assert batcher.run([5, 6], DynamicCache()).shape == (1, tiny_model.config.vocab_size)
    batcher.close()
    assert not batcher._thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.run([5, 6], DynamicCache())
