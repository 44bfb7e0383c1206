"""The fast path (smolkit.fastpath) samples from the same distributions as transformers, stage for stage.

On the CPU it runs eagerly (no compile, no CUDA graph) and is checked against transformers' generate and the kit's
next_token_distribution. The `gpu` tests run the compiled, graph-captured path (`make test-gpu`).
"""

from __future__ import annotations

import pytest
import torch

import smolkit
from smolkit import SamplingParams, fastpath, generate, next_token_distribution

STORY = "Write one sentence about a cat."

FULL = SamplingParams(
    temperature=0.8, top_p=0.9, top_k=40, min_p=0.05, repetition_penalty=1.2, presence_penalty=0.4,
    frequency_penalty=0.2, min_tokens=3, max_new_tokens=10, seed=3, n=2,
)  # fmt: skip

PARAMS = [
    SamplingParams(temperature=0, max_new_tokens=16),
    SamplingParams(temperature=0, max_new_tokens=16, repetition_penalty=1.3, presence_penalty=0.5, min_tokens=4),
    SamplingParams(temperature=0, max_new_tokens=30, stop_token_ids=[30]),
]


@pytest.mark.parametrize("params", PARAMS, ids=repr)
def test_greedy_equals_plain_generate_token_for_token(lm, params):
    plain = generate(lm, STORY, params, fast=False)
    fast = generate(lm, STORY, params, fast=True)
    assert fast.backend.startswith("smolkit fast path")
    assert fast.token_ids == plain.token_ids
    assert fast.samples[0].finish_reason == plain.samples[0].finish_reason
    for a, b in zip(plain.steps, fast.steps, strict=True):
        assert b.prob == pytest.approx(a.prob, abs=1e-4)
        assert b.rank == a.rank and b.entropy == pytest.approx(a.entropy, abs=1e-3)
        assert [t.id for t in b.top] == [t.id for t in a.top]


def test_every_step_samples_from_the_kits_distribution(lm):
    """Probabilities the fast path draws from == next_token_distribution for the same prefix (float32: 1e-4)."""
    decoder = fastpath.get_fast_decoder(lm)
    state, _ = decoder.generate(lm.inputs(STORY), FULL, lm.eos_token_ids, lm.pad_token_id, keep_probs=True)
    for row in range(FULL.n):
        tokens = state.tokens[row, : FULL.max_new_tokens].tolist()
        for t in range(FULL.max_new_tokens):
            dist = next_token_distribution(lm, STORY, FULL, generated=tokens[:t])
            torch.testing.assert_close(state.full_probs[row, t], dist.probs, rtol=0, atol=1e-4)
            assert dist.probs[tokens[t]] > 0


def test_draws_follow_the_distribution(lm):
    """Chi-square over 10,000 draws of one step (the exponential race) against the distribution it samples from.

    The model's 1,000 most likely next tokens stand in for the vocabulary, to keep 10,000 rows small in memory.
    """
    params = SamplingParams(temperature=0.9, top_k=8, max_new_tokens=1)
    logits = torch.topk(next_token_distribution(lm, "Once upon a time", params).logits, 1000).values
    expected = torch.softmax(torch.where(logits >= logits[7], logits / 0.9, float("-inf")), dim=-1)
    rows = 10_000
    state = fastpath.SamplerState.allocate(rows, 1000, 2, torch.device("cpu"), keep_probs=False)
    state.load(params, [999], 0, torch.zeros(1, 0, dtype=torch.int64))
    gen = torch.Generator().manual_seed(0)
    noise = torch.empty(rows, 1000).exponential_(generator=gen)
    tokens = fastpath.sample_step(logits.expand(rows, -1).contiguous(), noise, state)
    assert set(tokens.unique().tolist()) <= set(range(8))
    observed = torch.bincount(tokens, minlength=8)[:8].double()
    chi2 = float(((observed - expected[:8].double() * rows) ** 2 / (expected[:8].double() * rows)).sum())
    assert chi2 < 24.3  # chi-square with 7 degrees of freedom at p = 0.001
    # and the draws differ from a greedy pick: the test would fail if the noise were ignored
    assert (tokens != 0).sum() > rows * (1 - expected[0]) * 0.9


def test_seeded_fast_samples_repeat(lm):
    first = generate(lm, STORY, FULL, fast=True)
    assert generate(lm, STORY, FULL, fast=True).texts == first.texts
    assert generate(lm, STORY, FULL.replace(seed=4), fast=True).texts != first.texts


def test_finished_rows_stop_changing(lm):
    params = SamplingParams(temperature=0, max_new_tokens=40, n=2)
    result = generate(lm, "Say only: yes", params, fast=True)
    sample = result.samples[0]
    assert sample.finish_reason == "stop" and len(sample.token_ids) < 40
    state = lm.fast_decoder._buffers[(2, 256, False)].state
    assert state.tokens[0, len(sample.token_ids) :].eq(lm.pad_token_id).all()


def test_unsupported_models_fall_back(tiny_vlm):
    # The tiny Idefics3 has a Llama text decoder: supported. A model of another architecture is refused clearly.
    assert fastpath.fast_path_problem(tiny_vlm) is None
    result = generate(tiny_vlm, "Hello", SamplingParams(temperature=0, max_new_tokens=5), fast=True)
    assert (
        result.token_ids
        == generate(tiny_vlm, "Hello", SamplingParams(temperature=0, max_new_tokens=5), fast=False).token_ids
    )


def test_compile_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("SMOLKIT_CACHE_DIR", str(tmp_path))
    assert fastpath.compile_cache_dir() == str(tmp_path / "inductor")


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu)")


@pytest.fixture(scope="module")
def gpu_lm():
    return smolkit.load_model("embedded", device="cuda", dtype="float32")


@pytest.mark.gpu
@gpu
def test_gpu_greedy_equals_plain_generate(gpu_lm):
    params = SamplingParams(temperature=0, max_new_tokens=64, repetition_penalty=1.1)
    fast = generate(gpu_lm, STORY, params)
    assert "CUDA graphs" in fast.backend
    assert fast.token_ids == generate(gpu_lm, STORY, params, fast=False).token_ids


@pytest.mark.gpu
@gpu
def test_gpu_steps_sample_from_the_kits_distribution(gpu_lm):
    decoder = fastpath.get_fast_decoder(gpu_lm)
    params = FULL.replace(max_new_tokens=24, n=1)
    state, _ = decoder.generate(gpu_lm.inputs(STORY), params, gpu_lm.eos_token_ids, gpu_lm.pad_token_id, True)
    tokens = state.tokens[0, :24].tolist()
    for t in range(24):
        dist = next_token_distribution(gpu_lm, STORY, params, generated=tokens[:t])
        torch.testing.assert_close(state.full_probs[0, t].cpu(), dist.probs, rtol=0, atol=2e-3)


def test_two_pass_argmax_equals_argmax():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        x = torch.randn(3, 4096, generator=gen)
        assert torch.equal(fastpath._argmax(x), x.argmax(-1))
    x = torch.full((1, 4096), float("-inf"))
    x[0, 4000] = 0.0
    assert fastpath._argmax(x).item() == 4000


def test_small_batch_layer_computes_what_layer_step_computes():
    """decode_layer_small (for the compiler) and layer_step give the same layer output and cache writes (float32)."""
    gen = torch.Generator().manual_seed(0)
    batch, hidden, n_heads, n_kv, head_dim, length = 2, 64, 4, 2, 16, 32

    def r(*shape):
        return torch.randn(*shape, generator=gen)

    weights = (1 + 0.1 * r(hidden), r(hidden + 2 * n_kv * head_dim, hidden) / 8, r(hidden, hidden) / 8,
               1 + 0.1 * r(hidden), r(2 * 96, hidden) / 8, r(hidden, 96) / 8)  # fmt: skip
    x, delta = r(batch, 1, hidden), r(batch, 1, hidden)
    cos, sin = r(1, head_dim), r(1, head_dim)
    pos = torch.tensor([5])
    mask = torch.where(torch.arange(length) <= 5, 0.0, float("-inf")).unsqueeze(0)
    k, v = r(batch, n_kv, length, head_dim), r(batch, n_kv, length, head_dim)
    caches = [(k.clone(), v.clone()) for _ in range(2)]
    a = fastpath.layer_step(x, delta, cos, sin, mask, pos, *caches[0], *weights, 1e-5, n_heads, n_kv)
    b = fastpath.decode_layer_small(x, delta, cos, sin, mask, pos, *caches[1], *weights, 1e-5, n_heads, n_kv)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(caches[0][0][:, :, :6], caches[1][0][:, :, :6])
    torch.testing.assert_close(caches[0][1][:, :, :6], caches[1][1][:, :, :6])
