"""generate(): seeds, n samples, min_tokens, stop_token_ids and the per-step records, on the embedded model."""

from __future__ import annotations

import pytest
import torch
from conftest import PROMPT

from smolkit import SamplingParams, generate, next_token_distribution

STORY = "Write one sentence about a cat."


def test_greedy_answer(lm):
    result = generate(lm, PROMPT, SamplingParams(temperature=0, max_new_tokens=20))
    assert "Paris" in result.text
    assert result.samples[0].finish_reason == "stop"
    assert result.token_ids[-1] == lm.eos_token_ids[0]
    assert result.backend == "transformers" and result.prompt_tokens == lm.encode(PROMPT).shape[1]


def test_same_seed_same_samples_other_seed_other_samples(lm):
    params = SamplingParams(temperature=1.2, max_new_tokens=12, seed=1234)
    first, again = generate(lm, STORY, params), generate(lm, STORY, params)
    assert first.token_ids == again.token_ids
    others = {generate(lm, STORY, params.replace(seed=s)).token_ids for s in (1, 2, 3)}
    assert len(others | {first.token_ids}) > 1


def test_seed_does_not_disturb_the_callers_random_stream(lm):
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    generate(lm, STORY, SamplingParams(max_new_tokens=3, seed=5))
    assert torch.equal(torch.rand(3), expected)


def test_n_samples_in_one_call(lm):
    result = generate(lm, STORY, SamplingParams(temperature=1.0, max_new_tokens=10, n=4, seed=7))
    assert len(result.samples) == 4 and len(result.texts) == 4
    assert len({s.token_ids for s in result.samples}) > 1
    assert all(len(s.steps) == len(s.token_ids) for s in result.samples)


def test_greedy_n_samples_are_identical(lm):
    result = generate(lm, STORY, SamplingParams(temperature=0, max_new_tokens=8, n=3))
    assert len({s.token_ids for s in result.samples}) == 1


def test_max_new_tokens_truncates(lm):
    result = generate(lm, STORY, SamplingParams(max_new_tokens=5, seed=0))
    assert len(result.token_ids) == 5 and result.samples[0].finish_reason == "length"


def test_min_tokens_forces_length_past_eos(lm):
    short = generate(lm, "Say only: yes", SamplingParams(temperature=0, max_new_tokens=30))
    assert short.samples[0].finish_reason == "stop"
    forced = generate(
        lm, "Say only: yes", SamplingParams(temperature=0, max_new_tokens=30, min_tokens=len(short.token_ids) + 5)
    )
    assert len(forced.token_ids) >= len(short.token_ids) + 5
    assert lm.eos_token_ids[0] not in forced.token_ids[: len(short.token_ids) + 5]


def test_stop_token_ids_stop_early_and_min_tokens_blocks_them(lm):
    # The model answers "1. 1\n2. 2\n...": "." is the stop token here.
    full = generate(lm, "Count from 1 to 20, separated by commas.", SamplingParams(temperature=0, max_new_tokens=30))
    stop = lm.tokenizer.convert_tokens_to_ids(".")
    assert stop in full.token_ids
    stopped = generate(
        lm,
        "Count from 1 to 20, separated by commas.",
        SamplingParams(temperature=0, max_new_tokens=30, stop_token_ids=[stop]),
    )
    assert stopped.token_ids[-1] == stop and stop not in stopped.token_ids[:-1]
    assert stopped.samples[0].finish_reason == "stop"
    assert stopped.token_ids == full.token_ids[: full.token_ids.index(stop) + 1]
    later = generate(
        lm,
        "Count from 1 to 20, separated by commas.",
        SamplingParams(temperature=0, max_new_tokens=30, stop_token_ids=[stop], min_tokens=len(stopped.token_ids) + 1),
    )
    assert len(later.token_ids) > len(stopped.token_ids)
    assert stop not in later.token_ids[: len(stopped.token_ids) + 1]


def test_step_records_match_the_distribution(lm):
    params = SamplingParams(temperature=0.8, top_p=0.9, presence_penalty=0.5, max_new_tokens=6, seed=3)
    result = generate(lm, STORY, params)
    for step in result.steps:
        dist = next_token_distribution(lm, STORY, params, generated=list(result.token_ids[: step.index]))
        assert step.token_id == result.token_ids[step.index]
        assert step.prob == pytest.approx(dist.prob_of(step.token_id), abs=2e-3)
        assert step.entropy == pytest.approx(dist.entropy, abs=5e-2)
        assert step.rank == int((dist.logits > dist.logits[step.token_id]).sum())
        assert step.top[0].id == dist.top(1)[0].id
        assert step.prob > 0 and step.token == lm.token_text(step.token_id)


def test_repetition_penalty_reduces_repeats(lm):
    prompt = "Write the word hello over and over."
    plain = generate(lm, prompt, SamplingParams(temperature=0, max_new_tokens=40))
    penalised = generate(lm, prompt, SamplingParams(temperature=0, max_new_tokens=40, repetition_penalty=1.8))

    def repeats(ids):
        return len(ids) - len(set(ids))

    assert repeats(penalised.token_ids) < repeats(plain.token_ids)


def test_long_prompt_is_refused_with_the_limit(lm):
    with pytest.raises(ValueError, match=r"reads at most 8192 tokens"):
        generate(lm, "word " * 9000, SamplingParams(max_new_tokens=4))


def test_max_new_tokens_beyond_the_context_is_shortened_with_a_warning(tiny_vlm):
    # The tiny test model reads 2048 tokens, so filling its context is quick.
    prompt = "word " * (tiny_vlm.context_length - 30)
    with pytest.warns(UserWarning, match="does not fit"):
        result = generate(tiny_vlm, prompt, SamplingParams(max_new_tokens=200, temperature=0))
    assert result.prompt_tokens + len(result.token_ids) <= tiny_vlm.context_length
    assert result.params.max_new_tokens == tiny_vlm.context_length - result.prompt_tokens


@pytest.mark.parametrize("fast", [False, True])
def test_progress_bar_counts_the_steps(lm, monkeypatch, fast):
    import smolkit.generation as generation

    counts = []

    class Recording(generation.tqdm):
        def close(self):
            counts.append((self.n, self.total, self.disable))
            super().close()

    monkeypatch.setattr(generation, "tqdm", Recording)
    generate(lm, STORY, SamplingParams(max_new_tokens=6, min_tokens=6, seed=0, n=2), fast=fast, progress=True)
    generate(lm, STORY, SamplingParams(max_new_tokens=3, seed=0), fast=fast)
    assert counts[0] == (6, 6, False)
    assert counts[1][2] is True  # off unless asked for
    with pytest.raises(TypeError, match="progress must be True or False"):
        generate(lm, STORY, SamplingParams(max_new_tokens=3), progress="yes")


def test_the_refusal_reads_the_free_memory_once(lm, monkeypatch):
    """On a GPU that other kernels fill, two readings differ: the lent H100 refused n=8 saying "has 0.1 GiB
    available ... lower n (at most 19 fit now)". The check and its advice now share one reading: here the first
    (1 GiB, room for 8 samples), so the call runs; the old code refused it on the second (1 MiB)."""
    from smolkit import generation

    readings = iter([2**30, 2**20])  # the GPU fills between two readings
    monkeypatch.setattr(generation, "available_bytes", lambda device: next(readings))
    result = generate(lm, "Hello", SamplingParams(n=8, max_new_tokens=2, seed=0))
    assert len(result.samples) == 8


def test_work_beyond_the_memory_is_refused_before_it_starts(lm, monkeypatch, model_work):
    """n=256 x 64 tokens was killed at an 8 GiB limit with no message (a dead kernel in Jupyter); n=10**6 failed
    inside the forward pass asking for 78 GB. Now: a ValueError naming n, the need and the memory, no model work."""
    from smolkit import generation

    monkeypatch.setattr(generation, "available_bytes", lambda device: 6 * 2**30)  # what an 8 GiB limit leaves
    with model_work(lm) as work:
        for n in (256, 10**6):
            with pytest.raises(ValueError, match=rf"n={n} x max_new_tokens=64 would need about .* GiB .* 6\.0 GiB"):
                generate(lm, "Hello", SamplingParams(n=n, max_new_tokens=64))
        assert work.calls == 0
    need = generation.planned_bytes(lm, SamplingParams(n=256, max_new_tokens=64), 30, fast=False)
    assert 6 * 2**30 < need < 8 * 2**30  # scores and logits of every step: 256 x 64 x 49,152 x 8 bytes
    assert (
        generation.planned_bytes(lm, SamplingParams(n=256, max_new_tokens=64), 30, fast=True) < need / 2
    )  # no per-step scores
    assert len(generate(lm, "Hello", SamplingParams(n=2, max_new_tokens=3, seed=0)).samples) == 2
