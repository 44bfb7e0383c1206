"""The fused sampler (fused.py beside this file, one Triton kernel a step) against smolkit's PyTorch sampler.

An experiment kept in bench/ (README.md here): run from the repository root with Triton installed,
``pytest bench/fused_sampler`` (the `gpu` tests with ``-m gpu`` on a CUDA machine).

On the CPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, set here before Triton is imported): the
same kernel code, executed with NumPy. Compared on the same logits, parameters and noise: the distribution drawn
from (to float32 rounding), the token, every record and every progress update; then the kernel's own random
numbers by a chi-square test. The `gpu` tests run the compiled kernel (`make test-gpu`).
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smolkit import SamplingParams, next_token_distribution
from smolkit.fastpath import sampler
from smolkit.testing import chi_square

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
TRITON_IMPORTED_BEFORE = "triton" in sys.modules  # e.g. by torch._dynamo, through transformers, in an earlier test
pytest.importorskip("triton", reason="the fused sampler needs Triton (pip install triton==3.7.1)")


def interpret_the_triton_library() -> None:
    """Test plumbing: Triton chooses compiled or interpreted jit functions when they are defined, so its own library
    (tl.sort, tl.cumsum, tl.rand...) imported before TRITON_INTERPRET was set is wrapped for the interpreter."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    for name, module in list(sys.modules.items()):
        if name.startswith("triton.language") and module is not None:
            for attr, value in list(vars(module).items()):
                if isinstance(value, JITFunction):
                    setattr(module, attr, InterpretedFunction(value.fn))


if INTERPRETED and TRITON_IMPORTED_BEFORE:
    interpret_the_triton_library()

if "fused" in sys.modules and INTERPRETED:
    importlib.reload(sys.modules["fused"])  # compiled for a GPU before the interpreter was set
import fused  # noqa: E402  (this folder is on sys.path: pytest's rootdir-relative "prepend" import mode)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True, scope="module")
def quicker_interpreter():
    """Test plumbing for speed only: Triton 3.7's interpreter re-patches triton.language on every call of a jit
    helper (inspect.getmembers of the whole language each time: half of the run time); patch once instead. The
    kernel's code runs unchanged."""
    from triton.runtime import interpreter

    if not INTERPRETED or not hasattr(interpreter, "InterpretedFunction"):
        yield
        return
    import triton.language as tl

    patched = []

    def call(self, *args, **kwargs):
        if any(v is tl.core for v in self.fn.__globals__.values()) and not patched:
            interpreter._patch_lang(self.fn)  # the kernel's own launch patches triton.language itself
            patched.append(True)
        return self.rewrite()(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(interpreter.InterpretedFunction, "__call__", call)
        yield


SMALL = fused.FusedSampler(block=256, cand=32, num_warps=4)
"""Small passes and windows, so that tests on a few hundred tokens cross chunks and move the window."""
ONE_CHUNK = fused.FusedSampler(block=32, cand=32, num_warps=4)
REAL = fused.FusedSampler(block=16384) if INTERPRETED else fused.FusedSampler()
"""The decoder's window; in the interpreter, passes of 16,384 tokens (the interpreter's cost is per operation)."""


def run_both(logits, params, sample, noise=None, prompt=(3, 5), generated=(), stop_ids=(0, 1), step=None):
    """One step of the reference and of ``sample`` (a FusedSampler) from the same state; returns both states:
    (tokens, records, progress) each."""
    rows, vocab = logits.shape
    if noise is None:
        noise = torch.empty(rows, vocab, device=logits.device).exponential_(generator=torch.Generator(
            logits.device).manual_seed(7))  # fmt: skip
    out = []
    for which in ("reference", "fused"):
        s = sampler.Settings.allocate(vocab, logits.device)
        p = sampler.Progress.allocate(rows, vocab, logits.device)
        r = sampler.Records.allocate(rows, vocab, 3, logits.device, keep_probs=True)
        s.load(params, list(stop_ids), 2)
        p.reset(torch.tensor([list(prompt)], dtype=torch.int64))
        for token in generated:
            p.counts[:, token] += 1
            p.seen[:, token] = True
        p.step.fill_(len(generated) if step is None else step)
        p.finished[-1] = rows > 2  # a finished row records the pad token
        if which == "reference":
            tokens = sampler.sample_step(logits, noise, s, p, r)
        else:
            tokens = sample(logits, torch.zeros(1, dtype=torch.int64, device=logits.device), s, p, r, noise)
        out.append((tokens.clone(), r, p))
    return out


def assert_same(reference, fused_out, atol=1e-6):
    (tokens_a, ra, pa), (tokens_b, rb, pb) = reference, fused_out
    probs_a, probs_b = ra.full_probs, rb.full_probs
    assert torch.equal(probs_a > 0, probs_b > 0), "the tokens kept differ"
    torch.testing.assert_close(probs_b, probs_a, rtol=1e-5, atol=atol)
    assert torch.equal(tokens_a, tokens_b)
    assert torch.equal(ra.tokens, rb.tokens) and torch.equal(ra.ranks, rb.ranks)
    torch.testing.assert_close(rb.probs, ra.probs, rtol=1e-5, atol=atol)
    torch.testing.assert_close(rb.entropy, ra.entropy, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rb.top_probs, ra.top_probs, rtol=1e-5, atol=atol)
    sixth = probs_a.topk(sampler.TOP_RECORDS + 1, dim=-1).values[..., -1]  # a 5th tied with a 6th: either is right
    distinct = (ra.top_probs[..., :-1] > ra.top_probs[..., 1:]).all(-1) & (ra.top_probs[..., -1] > sixth)
    assert torch.equal(ra.top_ids[distinct], rb.top_ids[distinct])  # where the order and the five are defined
    for field in ("seen", "counts", "step", "finished"):
        assert torch.equal(getattr(pa, field), getattr(pb, field)), field


logits_kinds = st.sampled_from(["normal", "peaked", "ties", "flat", "few-values"])


def make_logits(kind: str, rows: int, vocab: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, vocab, generator=gen)
    if kind == "peaked":
        x = x * 6
    elif kind == "ties":
        x = torch.round(x * 4) / 4  # many equal values, also at the cut-offs
    elif kind == "flat":
        x = x * 0.05
    elif kind == "few-values":
        x = torch.randint(0, 3, (rows, vocab), generator=gen).float()
    return x.to(DEVICE)


params_strategy = st.builds(
    SamplingParams,
    temperature=st.sampled_from([0.0, 0.3, 0.8, 1.0, 1.7]),
    top_k=st.sampled_from([0, 1, 2, 7, 40, 299, 1000]),
    top_p=st.sampled_from([1.0, 0.999, 0.95, 0.8, 0.5, 0.05]),
    min_p=st.sampled_from([0.0, 0.01, 0.2]),
    repetition_penalty=st.sampled_from([1.0, 1.3, 0.8]),
    presence_penalty=st.sampled_from([0.0, 0.5, -0.5]),
    frequency_penalty=st.sampled_from([0.0, 0.3]),
    min_tokens=st.sampled_from([0, 3]),
    max_new_tokens=st.sampled_from([4, 16]),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=params_strategy, kind=logits_kinds, seed=st.integers(0, 2**16), step=st.integers(0, 4))
def test_fused_equals_the_reference_for_any_parameters(params, kind, seed, step):
    """Same distribution (to float32 rounding), same token for the same noise, same records and progress; over
    every stage switched on or off, ties, flat and peaked rows, a window smaller than what top_p keeps."""
    logits = make_logits(kind, 3, 300, seed)
    reference, out = run_both(logits, params, SMALL, generated=(4, 4, 9)[: step % 4], step=step)
    assert_same(reference, out)


def test_a_tie_across_the_top_p_boundary_is_split_in_index_order():
    """Four equal tokens carry the boundary: the reference (stable sort) removes the lower indices first."""
    logits = torch.full((1, 64), -20.0)
    logits[0, [10, 20, 30, 40]] = 1.0  # 4 x 0.25 of the mass
    logits[0, 50] = 1.2
    params = SamplingParams(temperature=1.0, top_p=0.6)
    reference, out = run_both(logits.to(DEVICE), params, SMALL, prompt=(), stop_ids=(63,))
    assert_same(reference, out)
    kept = (out[1].full_probs[0, 0] > 0).nonzero().flatten().tolist()
    assert 50 in kept and 10 not in kept and kept == sorted(kept) and len(kept) in (2, 3)


@pytest.fixture(scope="module")
def real_logits(lm):
    prompts = ["Write a short story about a robot who learns to paint.", "The capital of France is"]
    return torch.stack([next_token_distribution(lm, p, SamplingParams()).logits for p in prompts]).to(DEVICE)


REAL_PARAMS = [
    SamplingParams(temperature=0.8, top_p=0.9, top_k=50, min_p=0.02, repetition_penalty=1.1,
                   presence_penalty=0.3, frequency_penalty=0.2, min_tokens=2),
    SamplingParams(temperature=1.3, top_p=0.95),
    SamplingParams(temperature=2.0, top_p=0.99),  # keeps thousands of tokens: the window moves down
    SamplingParams(temperature=1.0, min_p=0.05),
    SamplingParams(temperature=0.7, top_k=1000),
    SamplingParams(temperature=0),
]  # fmt: skip


@pytest.mark.parametrize("params", REAL_PARAMS, ids=repr)
def test_fused_equals_the_reference_on_real_logits(real_logits, params):
    """The real model's logits over its 49,152-token vocabulary, with the decoder's own block and window sizes."""
    reference, out = run_both(real_logits, params, REAL, generated=(28, 253))
    assert_same(reference, out)
    if params.temperature == 2.0:  # this case exists to move the window: top_p keeps more than one window
        column = int(out[2].step) - 1  # the step's column in the records (run_both starts after two tokens)
        assert int((out[1].full_probs[:, column] > 0).sum(-1).max()) > REAL.cand


def assert_draws_follow_the_distribution(sample, rows: int, vocab: int, bins: int, critical: float) -> None:
    """Chi-square of ``rows`` draws with the kernel's own random numbers (one step of that many equal rows) against
    the distribution it reports (below ``critical``: ``bins`` degrees of freedom at p = 0.001), nothing drawn
    outside it; and another seed gives other numbers."""
    logits = (torch.randn(1, vocab, generator=torch.Generator().manual_seed(3)) * 2).expand(rows, -1).contiguous()
    s, p = sampler.Settings.allocate(vocab, DEVICE), sampler.Progress.allocate(rows, vocab, DEVICE)
    s.load(SamplingParams(temperature=0.9, top_p=0.9), [31], 0)
    draws = []
    for seed, n in ((11, rows), (12, 40)):
        p.reset(torch.zeros(1, 0, dtype=torch.int64))
        r = sampler.Records.allocate(n, vocab, 2, DEVICE, keep_probs=True)
        tokens = sample(logits[:n].to(DEVICE), torch.tensor([seed], device=DEVICE), s, p, r)
        draws.append(tokens.cpu().clone())
    probs = r.full_probs[0, 0].cpu().double()
    counts = torch.bincount(draws[0], minlength=vocab).double()
    assert counts[probs == 0].sum() == 0  # nothing outside what top_p keeps
    assert chi_square(counts, probs, bins=bins) < critical
    assert (draws[0][:40] != draws[1]).float().mean() > 0.3  # another seed, other numbers


def test_the_kernels_draws_follow_the_distribution():
    assert_draws_follow_the_distribution(ONE_CHUNK, rows=400, vocab=32, bins=5, critical=20.5)


def test_self_check_passes_and_reports_a_wrong_kernel(monkeypatch):
    assert fused.self_check_problem(SMALL, 300, DEVICE, rows=3) is None
    original = fused.FusedSampler.__call__

    def off_by_one(self, logits, *args, **kwargs):
        return original(self, logits * 1.01, *args, **kwargs)

    monkeypatch.setattr(fused.FusedSampler, "__call__", off_by_one)
    assert "differ" in fused.self_check_problem(SMALL, 300, DEVICE, rows=3)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu)")


@pytest.mark.gpu
@gpu
def test_gpu_compiled_kernel_equals_the_reference(real_logits):
    """The compiled kernel (the decoder's sizes) on the GPU: real logits with every parameter set above, and random
    rows of every kind with random parameters, against the reference on the same device and noise."""
    for params in REAL_PARAMS:
        assert_same(*run_both(real_logits, params, fused.FusedSampler(), generated=(28, 253)))
    gen = torch.Generator().manual_seed(0)
    for case in range(40):
        pick = lambda options: options[int(torch.randint(len(options), (1,), generator=gen))]  # noqa: E731
        params = SamplingParams(
            temperature=pick([0.0, 0.5, 1.0, 1.7]), top_k=pick([0, 1, 40, 5000]), top_p=pick([1.0, 0.99, 0.9, 0.3]),
            min_p=pick([0.0, 0.05]), repetition_penalty=pick([1.0, 1.2]), presence_penalty=pick([0.0, 0.4]),
        )  # fmt: skip
        logits = make_logits(pick(["normal", "peaked", "ties", "flat", "few-values"]), 8, 49152, case)
        assert_same(*run_both(logits, params, fused.FusedSampler(), generated=(4, 9)))


@pytest.mark.gpu
@gpu
def test_gpu_compiled_kernels_draws_follow_the_distribution():
    """The compiled kernel with the decoder's sizes over a 49,152-token row: 4,096 draws (its own Philox numbers)
    against the distribution it reports, 20 bins (critical value 45.3 at p = 0.001)."""
    assert_draws_follow_the_distribution(fused.FusedSampler(), rows=4096, vocab=49152, bins=20, critical=45.3)


AHEAD_OF_TIME = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import fused

kernel, sampler = fused._fused_sample_kernel, fused.FusedSampler()
types = {"seen_ptr": "*u8", "stop_ptr": "*u8", "greedy_ptr": "*u8", "finished_ptr": "*u8", "cand_scratch": "*i64",
         "seed_ptr": "*i64", "top_k_ptr": "*i64", "min_tokens_ptr": "*i64", "max_new_ptr": "*i64", "pad_ptr": "*i64",
         "step_ptr": "*i64", "tokens_ptr": "*i64", "ranks_ptr": "*i64", "top_ids_ptr": "*i64", "out_ptr": "*i64"}
ints = ("use_noise", "keep_probs", "batch", "length")
constants = {"V": 49152, "BLOCK": sampler.block, "CAND": sampler.cand, "TOP": 5, "TAIL_N": fused.TAIL}
signature = {name: "constexpr" if name in constants else "i32" if name in ints else types.get(name, "*fp32")
             for name in kernel.arg_names}
compiled = triton.compile(ASTSource(kernel, signature, constexprs=constants),
                          target=GPUTarget("cuda", int(sys.argv[1]), 32), options={"num_warps": sampler.num_warps})
print("COMPILED", len(compiled.asm["cubin"]), "bytes of cubin")
"""


@pytest.mark.parametrize("arch", [90, 80], ids=["Hopper sm_90", "Ampere sm_80"])
def test_the_kernel_compiles_for_gpus_without_one(arch):
    """Triton's compiler (front end, LLVM, the ptxas it ships) builds the decoder's kernel for a GPU on this
    machine: what the interpreter cannot check (constexpr rules, types through loops, registers) fails here."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", AHEAD_OF_TIME, str(arch)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=os.path.dirname(__file__))  # fmt: skip
    assert proc.returncode == 0 and "COMPILED" in proc.stdout, proc.stderr[-3000:]
