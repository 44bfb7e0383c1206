"""The fast path (smolkit.fastpath) samples from the same distributions as transformers, stage for stage.

On the CPU it runs eagerly (no compile, no CUDA graph) and is checked against transformers' generate and the kit's
next_token_distribution. The `gpu` tests run the graph-captured path in both of its tiers, the plain PyTorch
pieces a decoder starts with and the compiled ones it moves to (`make test-gpu`).
"""

from __future__ import annotations

import pytest
import torch

import smolkit
from smolkit import SamplingParams, fastpath, generate, next_token_distribution
from smolkit.fastpath import layers, sampler
from smolkit.testing import chi_square

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
    out = decoder.generate(lm.inputs(STORY), FULL, lm.eos_token_ids, lm.pad_token_id, keep_probs=True)
    for row in range(FULL.n):
        tokens = out.tokens[row]
        for t in range(FULL.max_new_tokens):
            dist = next_token_distribution(lm, STORY, FULL, generated=tokens[:t])
            torch.testing.assert_close(out.full_probs[row, t], dist.probs, rtol=0, atol=1e-4)
            assert dist.probs[tokens[t]] > 0


def test_draws_follow_the_distribution(lm):
    """Chi-square over 10,000 draws of one step (the exponential race) against the distribution it samples from.

    The model's 1,000 most likely next tokens stand in for the vocabulary, to keep 10,000 rows small in memory.
    """
    params = SamplingParams(temperature=0.9, top_k=8, max_new_tokens=1)
    logits = torch.topk(next_token_distribution(lm, "Once upon a time", params).logits, 1000).values
    expected = torch.softmax(torch.where(logits >= logits[7], logits / 0.9, float("-inf")), dim=-1)
    rows = 10_000
    cpu = torch.device("cpu")
    settings, progress = sampler.Settings.allocate(1000, cpu), sampler.Progress.allocate(rows, 1000, cpu)
    records = sampler.Records.allocate(rows, 1000, 2, cpu, keep_probs=False)
    settings.load(params, [999], 0)
    progress.reset(torch.zeros(1, 0, dtype=torch.int64))
    gen = torch.Generator().manual_seed(0)
    noise = torch.empty(rows, 1000).exponential_(generator=gen)
    tokens = sampler.sample_step(logits.expand(rows, -1).contiguous(), noise, settings, progress, records)
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


def test_seeded_fast_calls_leave_the_callers_random_stream_alone(lm):
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    generate(lm, STORY, FULL, fast=True)
    assert torch.equal(torch.rand(3), expected)


def test_a_seeded_call_draws_the_same_whatever_runs_before_its_first_draw(lm, monkeypatch):
    """The decoder seeds its own generator right before the first draw (issue 24): warm-up steps drawing from that
    very generator (what a CUDA-graph capture runs first, on the call that switches tiers) and draws from the
    global stream (compiling) before it change no token. Seeding around the call, as before, failed this."""
    decoder = fastpath.FastDecoder(lm)
    monkeypatch.setattr(lm, "fast_decoder", decoder)
    params = FULL.replace(max_new_tokens=8)
    first = generate(lm, STORY, params, fast=True)
    prepare = decoder.prepare

    def prepare_and_warm_up(*args, **kwargs):
        buf = prepare(*args, **kwargs)
        decoder._warm_up(buf)
        torch.rand(1000)
        return buf

    monkeypatch.setattr(decoder, "prepare", prepare_and_warm_up)
    again = generate(lm, STORY, params, fast=True)
    assert [s.token_ids for s in again.samples] == [s.token_ids for s in first.samples]


def test_unseeded_fast_calls_follow_torch_manual_seed(lm):
    """Without a seed the decoder seeds itself from torch's global generator, as transformers' generate draws from
    it: torch.manual_seed makes a session repeat, and two unseeded calls differ."""
    params = FULL.replace(seed=None, max_new_tokens=8)
    torch.manual_seed(5)
    a, b = generate(lm, STORY, params, fast=True), generate(lm, STORY, params, fast=True)
    torch.manual_seed(5)
    assert generate(lm, STORY, params, fast=True).texts == a.texts
    assert b.texts != a.texts


def test_finished_rows_stop_changing(lm):
    params = SamplingParams(temperature=0, max_new_tokens=40, n=2)
    result = generate(lm, "Say only: yes", params, fast=True)
    sample = result.samples[0]
    assert sample.finish_reason == "stop" and len(sample.token_ids) < 40
    records = lm.fast_decoder._buffers[(2, 256, False)].records
    assert records.tokens[0, len(sample.token_ids) :].eq(lm.pad_token_id).all()


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


def test_fallback_when_the_fast_path_cannot_serve_a_model(lm, monkeypatch, capsys):
    """fast=None falls back to transformers with a one-line notice (once per model); fast=True refuses clearly."""
    from smolkit.generation import uses_fast_path

    monkeypatch.setattr(fastpath, "fast_path_problem", lambda _: "torch 2.10.0 is older than 2.11")
    monkeypatch.setattr(lm, "device", torch.device("cuda"))  # as if on a GPU: only the decision is exercised
    monkeypatch.setattr(lm, "fast_path_notice_shown", False)
    assert uses_fast_path(lm, None) is False and uses_fast_path(lm, None) is False
    notice = capsys.readouterr().err
    assert notice.count("\n") == 1 and "fast path cannot serve 'embedded' (torch 2.10.0 is older than 2.11)" in notice
    with pytest.raises(ValueError, match=r"fast=True: the fast path cannot run 'embedded': torch 2\.10\.0"):
        uses_fast_path(lm, True)
    assert uses_fast_path(lm, False) is False


def test_fast_path_problem_names_the_reason(lm, monkeypatch):
    assert fastpath.fast_path_problem(lm) is None
    monkeypatch.setattr(torch, "__version__", "2.10.1+cu128")
    assert fastpath.fast_path_problem(lm) == "torch 2.10.1+cu128 is older than 2.11"
    monkeypatch.undo()
    monkeypatch.setattr(lm.model.config, "hidden_act", "gelu")
    assert fastpath.fast_path_problem(lm) == "activation 'gelu' is not supported"
    with pytest.raises(ValueError, match="activation 'gelu' is not supported"):
        fastpath.FastDecoder(lm)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu)")

CHI2_PARAMS = [
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=1.3, top_p=0.95),
    SamplingParams(temperature=0.8, top_k=40, min_p=0.02, repetition_penalty=1.1),
]
"""Parameter sets whose first-token draws are tested against the distribution the kit shows (one cuts with
top_p, one with top_k and min_p)."""
DRAWS, CALLS = 32_768, 64
CHI2_BINS = 20
CHI2_CRITICAL = 45.3  # chi-square with 20 degrees of freedom (20 tokens and "all others" - 1) at p = 0.001


@pytest.fixture(scope="module")
def gpu_lm():
    """The embedded model as load_model() gives it on a GPU: the default dtype."""
    return smolkit.load_model("embedded", device="cuda")


@pytest.fixture(scope="module")
def gpu_decoders(gpu_lm):
    """One decoder per tier: the plain pieces a decoder starts with, the compiled ones it moves to."""
    return {tier: fastpath.FastDecoder(gpu_lm, compile=tier == "compiled") for tier in ("plain", "compiled")}


@pytest.fixture(params=["plain", "compiled"])
def gpu_tier(request, gpu_lm, gpu_decoders):
    """``gpu_lm`` whose generate runs the decoder of one tier meanwhile."""
    decoder = gpu_decoders[request.param]
    assert decoder.tier == request.param
    gpu_lm.fast_decoder = decoder
    yield gpu_lm
    gpu_lm.fast_decoder = None


@pytest.mark.gpu
@gpu
def test_gpu_default_dtype_is_float32(gpu_lm):
    assert gpu_lm.dtype == torch.float32


@pytest.mark.gpu
@gpu
def test_gpu_greedy_equals_plain_generate(gpu_tier):
    gpu_lm = gpu_tier
    params = SamplingParams(temperature=0, max_new_tokens=64, repetition_penalty=1.1)
    fast = generate(gpu_lm, STORY, params)
    assert "CUDA graphs" in fast.backend
    assert fast.token_ids == generate(gpu_lm, STORY, params, fast=False).token_ids


@pytest.mark.gpu
@gpu
def test_gpu_steps_sample_from_the_kits_distribution(gpu_tier):
    """Every step's probabilities (fast path, CUDA graphs) equal next_token_distribution for the same prefix
    within 1e-4 (float32 arithmetic in two orders; measured differences are ~1e-6)."""
    gpu_lm = gpu_tier
    decoder = fastpath.get_fast_decoder(gpu_lm)
    for n in (1, 8):
        params = FULL.replace(max_new_tokens=24, n=n)
        out = decoder.generate(gpu_lm.inputs(STORY), params, gpu_lm.eos_token_ids, gpu_lm.pad_token_id, True)
        for row in (0, n - 1):
            for t in range(24):
                dist = next_token_distribution(gpu_lm, STORY, params, generated=out.tokens[row][:t])
                torch.testing.assert_close(out.full_probs[row, t], dist.probs, rtol=0, atol=1e-4)


SEED_PARAMS = SamplingParams(temperature=1.0, max_new_tokens=48, seed=7)
"""The measurement of issue 24 (embedded model, float32): the call that switched tiers drew other tokens."""


def _token_ids(result) -> list[tuple[int, ...]]:
    return [s.token_ids for s in result.samples]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("n", [1, 4])
def test_gpu_same_seed_same_tokens_across_the_tier_switch(gpu_lm, monkeypatch, n):
    """A tiered decoder (compile=None) with COMPILE_AFTER_S tiny: its first call decodes plain, the second compiles
    and captures its graphs again, the third replays them. The same seed gives the same tokens on all three, for
    one sample and for a row of four (float32: the tiers' roundings differ far below what moves a draw)."""
    from smolkit.fastpath import decoder as decoder_module

    monkeypatch.setattr(decoder_module, "COMPILE_AFTER_S", 1e-9)
    decoder = fastpath.FastDecoder(gpu_lm)
    assert decoder.tiered and decoder.tier == "plain"
    monkeypatch.setattr(gpu_lm, "fast_decoder", decoder)
    params = SEED_PARAMS.replace(n=n)
    before = generate(gpu_lm, STORY, params)
    assert "CUDA graphs" in before.backend and decoder.tier == "plain"
    switching = generate(gpu_lm, STORY, params)
    assert decoder.tier == "compiled"
    after = generate(gpu_lm, STORY, params)
    assert _token_ids(switching) == _token_ids(after), "the switching call drew other numbers (the defect)"
    assert _token_ids(switching) == _token_ids(before), "the tiers' roundings moved a draw"


@pytest.mark.gpu
@gpu
def test_gpu_same_seed_same_tokens_across_load_model_calls(monkeypatch):
    """Two load_model calls in one process, each with its own decoder (its own compile, captures and generator):
    the same seed gives the same tokens, at n = 1 on the plain tier and on the switching call, then at n = 4."""
    from smolkit.fastpath import decoder as decoder_module

    monkeypatch.setattr(decoder_module, "COMPILE_AFTER_S", 1e-9)
    runs = []
    for _ in range(2):
        lm = smolkit.load_model("embedded", device="cuda")
        runs.append([_token_ids(generate(lm, STORY, SEED_PARAMS.replace(n=n))) for n in (1, 1, 4)])
        assert lm.fast_decoder.tier == "compiled"
        del lm
        torch.cuda.empty_cache()
    assert runs[0][0] == runs[0][1]
    assert runs[1] == runs[0]


def test_chi_square_tells_a_wrong_distribution():
    """The statistic used on the GPU: small for draws from the distribution, large for draws from another one."""
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(1000, generator=gen) * 2, dim=0)
    draws = torch.multinomial(probs, DRAWS, replacement=True, generator=gen)
    counts = torch.bincount(draws, minlength=1000).float()
    assert chi_square(counts, probs) < CHI2_CRITICAL
    shifted = torch.softmax(torch.log(probs) + 0.05 * torch.randn(1000, generator=gen), dim=0)  # a few per cent off
    assert chi_square(counts, shifted) > CHI2_CRITICAL


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("params", CHI2_PARAMS, ids=repr)
def test_gpu_draws_follow_the_plotted_distribution(gpu_tier, params):
    """32,768 first tokens drawn by the fast path (64 calls of n=512, seeds 0-63) against next_token_distribution's
    probs for the same prompt: chi-square below the p = 0.001 critical value, and no draw outside the support."""
    gpu_lm = gpu_tier
    prompt = "Write a short story about a robot who learns to paint."
    shown = next_token_distribution(gpu_lm, prompt, params).probs
    counts = torch.zeros_like(shown)
    per_call = params.replace(max_new_tokens=1, n=DRAWS // CALLS)
    for seed in range(CALLS):
        result = generate(gpu_lm, prompt, per_call.replace(seed=seed))
        first = torch.tensor([s.token_ids[0] for s in result.samples])
        counts += torch.bincount(first, minlength=shown.numel()).float()
    assert int(counts.sum()) == DRAWS
    outside = counts[shown == 0].sum()
    assert outside == 0, f"{int(outside)} draws of tokens the plot shows as cut"
    assert chi_square(counts, shown) < CHI2_CRITICAL


def test_two_pass_argmax_equals_argmax():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        x = torch.randn(3, 4096, generator=gen)
        assert torch.equal(sampler._argmax(x), x.argmax(-1))
    x = torch.full((1, 4096), float("-inf"))
    x[0, 4000] = 0.0
    assert sampler._argmax(x).item() == 4000


def test_the_compilers_notes_do_not_reach_the_user():
    """A warning the compiler issues from its own modules (inductor's notes on its choices) is not shown; the
    compiled function still runs."""
    import warnings

    from smolkit.fastpath.compiled import MaybeCompiled

    def noting_backend(graph, example_inputs):
        warnings.warn_explicit("Online softmax is disabled on the fly", UserWarning, "lowering.py", 1,
                               module="torch._inductor.lowering")  # fmt: skip
        return graph.forward

    piece = MaybeCompiled(lambda x: x * 2, True, backend=noting_backend)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert torch.equal(piece(torch.ones(3)), torch.full((3,), 2.0))
    assert piece.problem is None and not [w for w in seen if "Online softmax" in str(w.message)]


def test_two_level_cumsum_equals_cumsum():
    """The sampler's cumulative mass in blocks: torch.cumsum's sums within far less than TOP_P_SLACK, and exactly
    where every partial sum is exact (small integers); a vocabulary that is no multiple of the block runs
    cumsum itself."""
    gen = torch.Generator().manual_seed(0)
    for rows, vocab in ((1, 4096), (3, 49152), (2, 1000)):
        x = torch.softmax(torch.randn(rows, vocab, generator=gen, dtype=torch.float64) * 3, dim=-1)
        torch.testing.assert_close(sampler._cumsum(x), x.cumsum(-1), rtol=0, atol=1e-13)
    ints = torch.randint(0, 5, (2, 8192), generator=gen).double()
    assert torch.equal(sampler._cumsum(ints), ints.cumsum(-1))


def test_small_batch_layer_computes_what_layer_step_computes():
    """layer_step with small=True (for the compiler) and without give the same output and cache writes (float32)."""
    gen = torch.Generator().manual_seed(0)
    x, _, rope, mask, pos, (k, v), weights, dims = _layer_inputs(2, 32, gen)
    delta = torch.randn(x.shape, generator=gen)  # a residual carried in from the layer before
    caches = [(k.clone(), v.clone()) for _ in range(2)]
    a = layers.layer_step(x, delta, rope, mask, pos, caches[0], weights, dims)
    b = layers.layer_step(x, delta, rope, mask, pos, caches[1], weights, dims, small=True)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(caches[0][0][:, :, :6], caches[1][0][:, :, :6])
    torch.testing.assert_close(caches[0][1][:, :, :6], caches[1][1][:, :, :6])


def test_a_decoder_compiles_once_plain_decoding_took_compile_after_s(lm, monkeypatch):
    """The tiers: a tiered decoder (compile=None on a GPU with Triton) decodes with the plain pieces, counts their
    time, and moves to compiled pieces once it reaches COMPILE_AFTER_S; what it samples does not change. Traced
    with dynamo's eager backend here (the CPU has no Triton to compile for)."""
    import functools

    from smolkit.fastpath import compiled
    from smolkit.fastpath import decoder as decoder_module
    from smolkit.fastpath import sampler as sampler_module

    eager_backend = functools.partial(compiled.MaybeCompiled, backend="eager")
    monkeypatch.setattr(decoder_module, "MaybeCompiled", eager_backend)
    monkeypatch.setattr(sampler_module, "MaybeCompiled", eager_backend)
    decoder = fastpath.FastDecoder(lm)
    assert not decoder.tiered and decoder.tier == "plain"  # on the CPU: plain, for good
    decoder.tiered = True  # as on a GPU with Triton
    threshold = 3600.0  # far above what the first call takes, however slow the machine
    monkeypatch.setattr(decoder_module, "COMPILE_AFTER_S", threshold)
    params, inputs = FULL.replace(max_new_tokens=6), lm.inputs(STORY)
    plain = decoder.generate(inputs, params, lm.eos_token_ids, lm.pad_token_id, keep_probs=True)
    assert decoder.tier == "plain" and 0 < decoder.plain_decode_seconds < threshold
    assert decoder.layer.compiled is None
    decoder.plain_decode_seconds = threshold
    torch._dynamo.reset()
    torch.rand(1000)  # the caller's stream moved: the draws come from params.seed alone
    again = decoder.generate(inputs, params, lm.eos_token_ids, lm.pad_token_id, keep_probs=True)
    assert decoder.tier == "compiled" and decoder.layer.first_call_seconds is not None
    assert decoder.compile_problems == {}
    assert again.tokens == plain.tokens
    torch.testing.assert_close(again.full_probs, plain.full_probs, rtol=0, atol=1e-5)


def test_smolkit_compile_after_s_never_keeps_a_tiered_decoder_plain(lm, monkeypatch):
    """The workshop hub's setting: read where the decoder decides, so a kernel past COMPILE_AFTER_S of decoding
    stays plain under "never" and compiles once the variable is unset again (set by the hub, read at each call)."""
    from smolkit.fastpath import decoder as decoder_module

    decoder = fastpath.FastDecoder(lm)
    decoder.tiered = True  # as on a GPU with Triton
    decoder.plain_decode_seconds = decoder_module.COMPILE_AFTER_S + 1
    monkeypatch.setenv(decoder_module.COMPILE_AFTER_ENV, "never")
    decoder._compile_when_it_pays()
    assert decoder.tier == "plain"
    monkeypatch.setenv(decoder_module.COMPILE_AFTER_ENV, "")
    monkeypatch.setattr(decoder, "_build_pieces", lambda: None)  # the switch only, no compile on the CPU
    decoder._compile_when_it_pays()
    assert decoder.tier == "compiled"


def test_the_models_steps_are_transformers_forward(lm):
    """model.TextModel, from plain tensors: the prompt pass's logits and one decode step's (two rows) equal the
    transformers model's forward over the same tokens (float32, 1e-4)."""
    from smolkit.fastpath.model import TextModel

    model = TextModel.of(lm.model)
    ids = lm.inputs(STORY)["input_ids"]
    steps = ids.shape[1]
    table, cache = model.positions(256), model.empty_cache(2, 256)
    with torch.inference_mode():
        prompt = model.prompt_logits(ids[:, :-1], torch.tensor([steps - 2]), table, cache)
        step = model.decode_logits(ids[0, -1:].expand(2), torch.tensor([steps - 1]), table, cache)
        reference = lm.model(ids).logits[0, -2:].float()
    torch.testing.assert_close(prompt[0], reference[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(step, reference[1].expand(2, -1), rtol=0, atol=1e-4)


def test_building_a_decoder_changes_no_process_wide_state(lm, monkeypatch):
    """No environment variable (the compile cache's location is set where compiling starts, which neither tier's
    construction does) and no global random state."""
    import os

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    environment, rng = dict(os.environ), torch.random.get_rng_state()
    for compile in (False, True, None):
        fastpath.FastDecoder(lm, compile=compile)
    assert dict(os.environ) == environment
    assert torch.equal(torch.random.get_rng_state(), rng)


def _layer_inputs(batch: int, length: int, gen: torch.Generator):
    hidden, n_heads, n_kv, head_dim = 64, 4, 2, 16

    def r(*shape):
        return torch.randn(*shape, generator=gen)

    weights = layers.LayerWeights(
        1 + 0.1 * r(hidden),
        r(hidden + 2 * n_kv * head_dim, hidden) / 8,
        r(hidden, hidden) / 8,
        1 + 0.1 * r(hidden),
        r(2 * 96, hidden) / 8,
        r(hidden, 96) / 8,
    )
    pos = torch.tensor([5])
    mask = torch.where(torch.arange(length) <= 5, 0.0, float("-inf")).unsqueeze(0)
    cache = (r(batch, n_kv, length, head_dim), r(batch, n_kv, length, head_dim))
    x = r(batch, 1, hidden)
    return x, torch.zeros_like(x), (r(1, head_dim), r(1, head_dim)), mask, pos, cache, weights, \
        layers.Dims(n_heads, n_kv, head_dim, 1e-5)  # fmt: skip


@pytest.mark.parametrize("small", [False, True])
def test_one_compiled_layer_serves_every_batch_size_and_cache_length(small):
    """The decoder marks batch and cache length as varying (decode_dims): torch.compile traces the layer once for
    batch sizes 2..64 and cache lengths 256 and 512 (batch 1 once more: sizes 1 are specialised), where static
    shapes trace it for every combination. Traced with a counting backend: the graphs, not the kernels."""
    from torch._dynamo.testing import CompileCounter

    from smolkit.fastpath.compiled import MaybeCompiled
    from smolkit.fastpath.model import decode_dims

    gen = torch.Generator().manual_seed(0)
    counts = {}
    for dynamic in (True, False):
        torch._dynamo.reset()
        counter = CompileCounter()
        layer = MaybeCompiled(layers.layer_step, True, dynamic=dynamic, backend=counter)
        for batch in (2, 8, 64, 1):
            for length in (256, 512):
                args = _layer_inputs(batch, length, gen)
                if dynamic:
                    decode_dims(args[0], args[1], args[3], args[5])
                out = layer(*args, small)
                torch.testing.assert_close(out, layers.layer_step(*args, small))
        assert layer.problem is None
        counts[dynamic] = counter.frame_count
    torch._dynamo.reset()
    assert counts == {True: 2, False: 8}
