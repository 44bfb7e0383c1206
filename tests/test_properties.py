"""Property-based tests (hypothesis) of the distribution stages, over every valid SamplingParams.

Each example applies the stages generate would apply (``Distribution.from_logits`` on the embedded model's
processors) to logits that are either the model's own for a few prompts or random ones (with exact ties at the top
when asked, and a context that holds the top token so that the penalties act on it). Whatever the parameters:

- every stage is a probability vector: finite, non-negative, summing to 1;
- the most likely token after the penalties survives every filter (temperature, top_k, top_p, min_p, greedy) and
  is still the most likely at the end;
- temperature 0 gives a one-hot distribution, and top_k=1 one too when the top is not tied;
- the number of surviving tokens grows with top_k and top_p and shrinks as min_p grows.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smolkit import Distribution, SamplingParams, next_token_distribution
from smolkit.distribution import is_probability_vector

VOCAB = 49152  # the embedded model's logits (checked below)
FILTERS = ("temperature", "top_k", "top_p", "min_p", "greedy", "final")
"""Stages that only reshape or cut; every stage before the first of them is a penalty (or min_tokens' block)."""

SUM_TOLERANCE = 1e-3
"""torch's float32 softmax over 49,152 tokens is itself this far off when one token dominates and the rest tie:
logits [15, 0, 0, ...] give probabilities summing to 0.99984 (the float64 softmax sums to 1). generate samples from
the same float32 softmax, so the kit shows what is sampled; the tolerance is the arithmetic's, not the kit's."""

MODEL_PROMPTS = ("What is the capital of France?", "Once upon a time", "Write a haiku about tea.")


def examples(n: int) -> settings:
    """Moderate example counts: the whole file runs in well under a minute on 2 cores."""
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)


@pytest.fixture(scope="module")
def model_logits(lm):
    assert lm.vocab_size == VOCAB
    return [next_token_distribution(lm, p, SamplingParams()).logits for p in MODEL_PROMPTS]


@st.composite
def contexts(draw, model_logits):
    """(logits, input_ids, prompt_length): the model's logits or random ones, and a context to penalise."""
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    if draw(st.booleans()):
        logits = model_logits[draw(st.integers(0, len(model_logits) - 1))].clone()
    else:
        logits = torch.randn(VOCAB, generator=gen) * draw(st.floats(0, 30))
        if draw(st.booleans()):
            logits = logits.round()  # exact ties everywhere, the top included
        logits[draw(st.integers(0, VOCAB - 1))] += draw(st.floats(0, 40))
    length = draw(st.integers(1, 24))
    ids = torch.randint(0, VOCAB, (1, length), generator=gen)
    if draw(st.booleans()):  # the top token already occurred: the penalties act on it
        ids[0, draw(st.integers(0, length - 1))] = int(logits.argmax())
    prompt_length = draw(st.integers(1, length))
    return logits, ids, prompt_length


any_params = st.builds(
    SamplingParams,
    do_sample=st.booleans(),
    temperature=st.one_of(st.just(0.0), st.floats(1e-5, 1e-3), st.floats(1e-5, 100)),
    top_p=st.floats(0, 1, exclude_min=True),
    top_k=st.integers(-1, VOCAB + 10),
    min_p=st.floats(0, 1),
    repetition_penalty=st.floats(0.01, 100),
    presence_penalty=st.floats(-2, 2),
    frequency_penalty=st.floats(-2, 2),
    min_tokens=st.integers(0, 30),
    stop_token_ids=st.lists(st.integers(0, VOCAB - 1), max_size=3),
)


def penalised_stage(dist: Distribution) -> str:
    """The last stage before the filters: the scores the filters then cut (the model's, penalised)."""
    names = list(dist.stages)
    first_filter = next(i for i, name in enumerate(names) if name in FILTERS)
    return names[first_filter - 1]


def top_tokens(probs: torch.Tensor) -> torch.Tensor:
    """Mask of the tokens tied for the highest probability."""
    return probs == probs.max()


@examples(150)
@given(data=st.data(), params=any_params)
def test_every_stage_is_a_distribution_and_the_top_token_survives(lm, model_logits, data, params):
    logits, ids, prompt_length = data.draw(contexts(model_logits))
    dist = Distribution.from_logits(lm, params, logits, ids, prompt_length)
    for name, probs in dist.stages.items():
        assert probs.shape == (VOCAB,), name
        assert is_probability_vector(probs, atol=SUM_TOLERANCE), (
            f"{name}: sum {float(probs.sum())}, finite {bool(probs.isfinite().all())}"
        )
    assert dist.surviving() >= 1 and dist.entropy >= 0
    penalised = penalised_stage(dist)
    best = top_tokens(dist.stages[penalised])
    after = list(dist.stages)[list(dist.stages).index(penalised) + 1 :]
    for name in after:
        assert (dist.stages[name][best] > 0).any(), f"{name} removed every top token of {penalised}"
    assert dist.probs[best].max() == dist.probs.max(), "the most likely token changed"
    vllm = dist.in_vllm_order().probs  # the same stages in vLLM's order: also a distribution, same top token
    assert is_probability_vector(vllm, atol=SUM_TOLERANCE) and vllm[best].max() == vllm.max()


@examples(100)
@given(data=st.data(), params=any_params)
def test_temperature_0_and_top_k_1_are_one_hot(lm, model_logits, data, params):
    logits, ids, prompt_length = data.draw(contexts(model_logits))
    greedy = Distribution.from_logits(lm, params.replace(temperature=0.0), logits, ids, prompt_length)
    assert greedy.surviving() == 1 and float(greedy.probs.max()) == 1.0
    best = top_tokens(greedy.stages[penalised_stage(greedy)])
    assert best[int(greedy.probs.argmax())]

    sampled = params.replace(do_sample=True, temperature=max(params.temperature, 1e-5), top_k=1)
    top1 = Distribution.from_logits(lm, sampled, logits, ids, prompt_length)
    best = top_tokens(top1.stages[penalised_stage(top1)])
    kept = top1.probs > 0
    assert kept.any() and not (kept & ~best).any(), "top_k=1 kept a token that is not the most likely"
    if int(best.sum()) == 1:  # no tie at the top: exactly one-hot
        assert top1.surviving() == 1 and float(top1.probs.max()) == 1.0


@examples(50)
@given(
    data=st.data(),
    params=any_params.map(lambda p: p.replace(do_sample=True, temperature=max(p.temperature, 1e-5))),
    ks=st.lists(st.integers(-1, 200), min_size=2, max_size=4),
    ps=st.lists(st.floats(0, 1, exclude_min=True), min_size=2, max_size=4),
    min_ps=st.lists(st.floats(0, 1), min_size=2, max_size=4),
)
def test_surviving_tokens_are_monotone_in_each_cut_off(lm, model_logits, data, params, ks, ps, min_ps):
    logits, ids, prompt_length = data.draw(contexts(model_logits))
    dist = Distribution.from_logits(lm, params, logits, ids, prompt_length)

    def counts(name, values, key=lambda v: v):
        ordered = sorted(values, key=key)
        return [dist.with_params(**{name: v}).surviving() for v in ordered]

    by_k = counts("top_k", ks, key=lambda k: VOCAB + 1 if k <= 0 else k)  # -1 and 0 keep every token
    assert by_k == sorted(by_k), f"top_k {sorted(ks, key=lambda k: VOCAB + 1 if k <= 0 else k)} -> {by_k}"
    by_p = counts("top_p", ps)
    assert by_p == sorted(by_p), f"top_p {sorted(ps)} -> {by_p}"
    by_min_p = counts("min_p", min_ps)
    assert by_min_p == sorted(by_min_p, reverse=True), f"min_p {sorted(min_ps)} -> {by_min_p}"
