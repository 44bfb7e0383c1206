"""The fused sampler: every sampling stage of ``smolkit.fastpath.sampler.Sampler`` in one Triton kernel per step,
without sorting the vocabulary. An experiment kept in bench/ (README.md here): it measured slower than the PyTorch
sampler the kit ships, which stays the reference it is tested against (test_fused.py beside it).

One program per row runs these passes over the row (``BLOCK`` tokens at a time):

1. **penalise** as ``sampler.penalise``: repetition penalty on seen tokens, stop tokens at -inf before min_tokens,
   presence and frequency, then temperature; the scores go to a scratch row; the greedy token (argmax, first index).
2. **select** (4 passes): two k-th largest scores at once, exactly, by a radix select over an order-preserving
   integer key of the float (8 bits a pass, a 256-bin histogram of the keys still in the running):
   the top_k-th score (top_k keeps every token >= it, ties included, as TopKLogitsWarper) and the boundary of a
   *window* of the ``CAND`` best tokens in (score, index) order.
3. **window**: the window's tokens written to a scratch list, with the top_k mass Z = sum exp(s - max) and the mass
   below the window; the list sorted by (score, index) (``CAND`` entries, not the vocabulary).
4. **top_p** as TopPLogitsWarper: over the sorted window, the cumulative softmax in ascending order, starting
   from the mass below the window; tokens whose cumulative mass is <= 1 - top_p are removed, the most likely one
   always kept. When the mass below the window already exceeds 1 - top_p (top_p keeps more than ``CAND`` tokens),
   the window moves down ``CAND`` tokens at a time (steps 2-3 again) until it holds the boundary.
   Ties are split in index order, as torch.sort orders them on CUDA (stable for rows this long).
5. **final**: min_p as MinPLogitsWarper (after top_p; ``exp(s - max) < min_p`` is removed, the exact-arithmetic
   form of ``p < min_p * p_max``), the normaliser of what is kept, the entropy, and the draw: the exponential race
   ``argmax p / E`` with E ~ Exp(1), from ``noise`` or drawn in the kernel (Philox, ``tl.rand``, keyed by a seed
   tensor refreshed on the device every call and by the step counter, so a replayed CUDA graph never repeats its
   numbers); greedy takes the step-1 argmax.
6. **records** as ``sampler.record``: token (pad for finished rows), its probability, its rank under the raw logits
   (a last pass), entropy in bits, the 5 most likely tokens (from the first window), optionally the whole
   distribution; counts, seen and finished updated for the row. The step counter is advanced after the kernel.

Where the result can differ from the reference: only where rounding decides. top_p's masses and cumulative sums
are float64 in both (summed in another order here) and compared with 1 - top_p + ``sampler.TOP_P_SLACK``, so only
a cumulative mass within about 1e-12 of that bound may fall on the other side (ties exactly on 1 - top_p do not);
the normalisers of the distribution are float32 sums in another order, min_p compares ``exp(s - max)`` with
min_p instead of two rounded quotients, and the race divides unnormalised masses by the noise (two tokens whose
ratios are within an ulp may swap). Everything else (which tokens top_k keeps, ties, the order of stages, the
noise) is the same.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from smolkit.fastpath.sampler import TOP_P_SLACK, TOP_RECORDS, Progress, Records, Sampler, Settings
from smolkit.params import SamplingParams

__all__ = ["FusedSampler", "self_check_problem"]

INT32_MIN = tl.constexpr(-2147483648)
INT64_MIN = tl.constexpr(-9223372036854775808)
INT64_MAX = tl.constexpr(9223372036854775807)
LN2 = tl.constexpr(0.6931471805599453)
ACCURATE_EXP = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")
SLACK = tl.constexpr(TOP_P_SLACK)


@triton.jit
def _exp(x):
    """exp as torch computes it on CUDA (libdevice's expf, within an ulp or two), not tl.exp's ex2.approx (a few
    ulps more for large |x|); NumPy's exp in Triton's interpreter, which has no libdevice."""
    if ACCURATE_EXP:
        return libdevice.exp(x)
    else:
        return tl.exp(x)


@triton.jit
def _div(x, y):
    """x / y correctly rounded, as torch divides (tl's ``/`` compiles to div.full.f32, within 2 ulps)."""
    return tl.math.div_rn(x, y)


TAIL = 8  # the first window's best tokens kept for the top-5 records (a power of two >= TOP_RECORDS)


@triton.jit
def _key(x):
    """An int32 whose signed order is the order of the float32 ``x`` (-0.0 counted as +0.0)."""
    bits = tl.where(x == 0.0, 0.0, x).to(tl.int32, bitcast=True)
    return tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)


@triton.jit
def _value(key):
    """The float32 of a ``_key``."""
    return tl.where(key >= 0, key, key ^ 0x7FFFFFFF).to(tl.float32, bitcast=True)


@triton.jit
def _composite(key, index):
    """(score, index) order as one int64: ties in score ordered by index."""
    return (key.to(tl.int64) << 32) | index.to(tl.int64)


@triton.jit
def _pick(hist, need):
    """The bin that holds the ``need``-th largest key of a digit histogram; how many of the bin's keys are still
    needed from the top, and how many the bin holds."""
    bins = tl.arange(0, 256)
    at_or_above = tl.sum(hist, 0) - tl.cumsum(hist, 0) + hist
    picked = tl.max(tl.where(at_or_above >= need, bins, -1), 0)
    above = tl.sum(tl.where(bins > picked, hist, 0), 0)
    inside = tl.sum(tl.where(bins == picked, hist, 0), 0)
    return picked, need - above, inside


@triton.jit
def _select(s_ptr, rank_a, rank_b, V: tl.constexpr, BLOCK: tl.constexpr):
    """Radix select of two ranks at once (4 passes over the row's scores): the key of the ``rank_a``-th largest
    score, and for ``rank_b`` its key, how many tokens of that key belong to the top ``rank_b`` and how many
    tokens have that key."""
    prefix_a = 0
    prefix_b = 0
    need_a = rank_a
    need_b = rank_b
    ties_b = rank_b
    for level in tl.static_range(4):
        shift = 24 - 8 * level
        hist_a = tl.zeros([256], tl.int32)
        hist_b = tl.zeros([256], tl.int32)
        for start in range(0, V, BLOCK):
            i = start + tl.arange(0, BLOCK)
            valid = i < V
            unsigned = _key(tl.load(s_ptr + i, mask=valid, other=0.0)) ^ INT32_MIN
            digit = (unsigned >> shift) & 255
            if level == 0:
                hist_a += tl.histogram(digit, 256, mask=valid)
                hist_b += tl.histogram(digit, 256, mask=valid)
            else:
                hist_a += tl.histogram(digit, 256, mask=valid & (((unsigned ^ prefix_a) >> (shift + 8)) == 0))
                hist_b += tl.histogram(digit, 256, mask=valid & (((unsigned ^ prefix_b) >> (shift + 8)) == 0))
        bin_a, need_a, _ = _pick(hist_a, need_a)
        bin_b, need_b, ties_b = _pick(hist_b, need_b)
        prefix_a = prefix_a | (bin_a << shift)
        prefix_b = prefix_b | (bin_b << shift)
    return prefix_a ^ INT32_MIN, prefix_b ^ INT32_MIN, need_b, ties_b


@triton.jit
def _window(s_ptr, cand_ptr, m, k_top, k_sel, needed, ties, c_hi, V: tl.constexpr, BLOCK: tl.constexpr):
    """Write the composites of the tokens in the top ``rank`` (``_select``'s key, needed and ties: of the tokens at
    the boundary key, the highest indices) and below ``c_hi`` to ``cand_ptr``. Returns the top_k mass Z, the mass
    of top_k's tokens below the window (both unnormalised, exp(s - m), in float64 as top_p's cumulative sums are:
    see sampler.keep_top_k) and how many tokens were written."""
    z = tl.zeros([], tl.float64)
    low = tl.zeros([], tl.float64)
    seen_ties = 0
    written = 0
    for start in range(0, V, BLOCK):
        i = start + tl.arange(0, BLOCK)
        valid = i < V
        s = tl.load(s_ptr + i, mask=valid, other=float("-inf"))
        key = _key(s)
        e = _exp(s.to(tl.float64) - m.to(tl.float64))
        kept_k = valid & (key >= k_top)
        tie = valid & (key == k_sel)
        tie_rank = seen_ties + tl.cumsum(tie.to(tl.int32), 0) - 1
        top = valid & ((key > k_sel) | (tie & (tie_rank >= ties - needed)))
        c = _composite(key, i)
        inside = top & (c < c_hi)
        slot = written + tl.cumsum(inside.to(tl.int32), 0) - 1
        tl.store(cand_ptr + slot, c, mask=inside)
        z += tl.sum(tl.where(kept_k, e, 0.0), 0)
        low += tl.sum(tl.where(kept_k & ~top, e, 0.0), 0)
        seen_ties += tl.sum(tie.to(tl.int32), 0)
        written += tl.sum(inside.to(tl.int32), 0)
    return z, low, written


@triton.jit
def _sorted_window(cand_ptr, written, CAND: tl.constexpr):
    """The window's composites in ascending order; the unused slots (INT64_MIN) first."""
    j = tl.arange(0, CAND)
    return tl.sort(tl.load(cand_ptr + j, mask=j < written, other=INT64_MIN))


@triton.jit
def _top_p_cut(cs, written, low, z, budget, m, k_top, c_top, CAND: tl.constexpr):
    """TopPLogitsWarper over the sorted window ``cs``: the composite at and below which every token is removed
    (in float64 with ``budget`` = 1 - top_p + slack, as sampler.top_p_removes decides)."""
    j = tl.arange(0, CAND)
    real = j >= CAND - written
    key = (cs >> 32).to(tl.int32)
    p = tl.where(real & (key >= k_top), _exp(_value(key).to(tl.float64) - m.to(tl.float64)) / z, 0.0)
    cumulative = low / z + tl.cumsum(p, 0)
    removed = real & (cumulative <= budget) & (cs != c_top)
    below_window = tl.min(tl.where(real, cs, INT64_MAX), 0) - 1
    return tl.maximum(below_window, tl.max(tl.where(removed, cs, INT64_MIN), 0))


@triton.jit
def _kept(s, key, c, valid, m, k_top, c_cut, min_p):
    """Whether each token survives top_k, top_p and min_p, and its unnormalised mass exp(s - m)."""
    e = _exp(s - m)
    return valid & (key >= k_top) & (c > c_cut) & ~(e < min_p), e


@triton.jit(do_not_specialize=["use_noise", "keep_probs", "batch", "length"])  # one compile serves every call
def _fused_sample_kernel(
    raw_ptr, seen_ptr, counts_ptr, stop_ptr, s_scratch, cand_scratch, noise_ptr, seed_ptr,
    temp_ptr, top_k_ptr, top_p_ptr, min_p_ptr, rep_ptr, pres_ptr, freq_ptr, min_tokens_ptr, max_new_ptr,
    greedy_ptr, pad_ptr, step_ptr, finished_ptr,
    tokens_ptr, probs_ptr, ranks_ptr, entropy_ptr, top_ids_ptr, top_probs_ptr, full_ptr, out_ptr,
    use_noise, keep_probs, batch, length,
    V: tl.constexpr, BLOCK: tl.constexpr, CAND: tl.constexpr, TOP: tl.constexpr, TAIL_N: tl.constexpr,
):  # fmt: skip
    """One sampling step for one row (program_id 0): the passes of the module docstring. Long because the passes
    share their scalars (max, thresholds, normalisers); each pass is a loop over the row or a helper above."""
    row = tl.program_id(0)
    raw_row, s_row = raw_ptr + row * V, s_scratch + row * V
    cand_row = cand_scratch + row * (CAND + TAIL_N)
    step = tl.load(step_ptr)
    force_stop = step < tl.load(min_tokens_ptr)
    temperature, repetition = tl.load(temp_ptr), tl.load(rep_ptr)
    presence, frequency = tl.load(pres_ptr), tl.load(freq_ptr)
    # 1. penalise (sampler.penalise), the greedy argmax
    best_s = float("-inf")
    greedy_token = 0
    for start in range(0, V, BLOCK):
        i = start + tl.arange(0, BLOCK)
        valid = i < V
        raw = tl.load(raw_row + i, mask=valid, other=float("-inf"))
        seen = tl.load(seen_ptr + row * V + i, mask=valid, other=0) != 0
        counts = tl.load(counts_ptr + row * V + i, mask=valid, other=0.0)
        stop = tl.load(stop_ptr + i, mask=valid, other=0) != 0
        x = tl.where(seen, tl.where(raw > 0, _div(raw, repetition), raw * repetition), raw)
        x = tl.where(stop & force_stop, float("-inf"), x)
        x = x - presence * (counts > 0).to(tl.float32) - frequency * counts
        s = tl.where(valid, _div(x, temperature), float("-inf"))
        tl.store(s_row + i, s, mask=valid)
        chunk_best, where = tl.max(s, 0, return_indices=True, return_indices_tie_break_left=True)
        greedy_token = tl.where(chunk_best > best_s, start + where, greedy_token)
        best_s = tl.maximum(best_s, chunk_best)
    m = best_s
    # 2-3. top_k's threshold and the first window, sorted; its best tokens kept for the records
    top_k = tl.load(top_k_ptr)
    k_rank = tl.where(top_k > 0, tl.minimum(top_k, V), V).to(tl.int32)
    rank = tl.full([], CAND if CAND < V else V, tl.int32)
    k_top, k_sel, needed, ties = _select(s_row, k_rank, rank, V, BLOCK)
    c_hi = tl.full([], INT64_MAX, tl.int64)
    z, low, written = _window(s_row, cand_row, m, k_top, k_sel, needed, ties, c_hi, V, BLOCK)
    cs = _sorted_window(cand_row, written, CAND)
    j = tl.arange(0, CAND)
    tl.store(cand_row + CAND + (CAND - 1 - j), cs, mask=j >= CAND - TAIL_N)
    c_top = tl.max(cs, 0)
    # 4. top_p, moving the window down while the boundary lies below it
    top_p = tl.load(top_p_ptr)
    budget = (1.0 - top_p.to(tl.float64)) + SLACK
    c_cut = tl.full([], INT64_MIN, tl.int64)
    if top_p < 1.0:
        moved = 0
        while (low / z > budget) & (rank < V):
            c_hi = tl.min(tl.load(cand_row + j, mask=j < written, other=INT64_MAX), 0)
            rank = tl.minimum(rank + CAND, V)
            _, k_sel, needed, ties = _select(s_row, k_rank, rank, V, BLOCK)
            z, low, written = _window(s_row, cand_row, m, k_top, k_sel, needed, ties, c_hi, V, BLOCK)
            moved = 1
        if moved == 1:
            cs = _sorted_window(cand_row, written, CAND)
        c_cut = _top_p_cut(cs, written, low, z, budget, m, k_top, c_top, CAND)
    # 5. min_p, the normaliser and entropy of what is kept, the draw
    min_p = tl.load(min_p_ptr)
    seed = tl.load(seed_ptr)
    base = (step * batch + row) * V
    z_kept = 0.0
    h = 0.0
    best_ratio = -1.0
    drawn = 0
    for start in range(0, V, BLOCK):
        i = start + tl.arange(0, BLOCK)
        valid = i < V
        s = tl.load(s_row + i, mask=valid, other=float("-inf"))
        key = _key(s)
        kept, e = _kept(s, key, _composite(key, i), valid, m, k_top, c_cut, min_p)
        if use_noise != 0:
            noise = tl.load(noise_ptr + row * V + i, mask=valid, other=1.0)
        else:
            noise = -tl.log(tl.rand(seed, base + i))
        z_kept += tl.sum(tl.where(kept, e, 0.0), 0)
        h += tl.sum(e * tl.where(kept & (e > 0), s - m, 0.0), 0)
        ratio = tl.where(kept & (e > 0), _div(e, noise), -1.0)
        chunk_best, where = tl.max(ratio, 0, return_indices=True, return_indices_tie_break_left=True)
        drawn = tl.where(chunk_best > best_ratio, start + where, drawn)
        best_ratio = tl.maximum(best_ratio, chunk_best)
    # 6. records and progress (sampler.record)
    active = tl.load(finished_ptr + row) == 0
    token = tl.where(tl.load(greedy_ptr) != 0, greedy_token, drawn)
    token = tl.where(active, token, tl.load(pad_ptr).to(tl.int32))
    s_token = tl.load(s_row + token)
    key_token = _key(s_token)
    c_token = _composite(key_token, token)
    kept_token, e_token = _kept(s_token, key_token, c_token, s_token == s_token, m, k_top, c_cut, min_p)
    raw_token = tl.load(raw_row + token)
    rank_of = 0
    for start in range(0, V, BLOCK):
        i = start + tl.arange(0, BLOCK)
        rank_of += tl.sum((tl.load(raw_row + i, mask=i < V, other=float("-inf")) > raw_token).to(tl.int32), 0)
    column = row * length + tl.minimum(step, length - 1)
    tl.store(tokens_ptr + column, token.to(tl.int64))
    tl.store(probs_ptr + column, tl.where(kept_token, _div(e_token, z_kept), 0.0))
    tl.store(ranks_ptr + column, rank_of.to(tl.int64))
    tl.store(entropy_ptr + column, tl.log2(z_kept) - h / (z_kept * LN2))
    t = tl.arange(0, TAIL_N)
    tail = tl.load(cand_row + CAND + t)
    tail_key = (tail >> 32).to(tl.int32)
    tail_index = (tail & 0xFFFFFFFF).to(tl.int32)
    tail_kept, tail_e = _kept(_value(tail_key), tail_key, tail, tail != INT64_MIN, m, k_top, c_cut, min_p)
    tl.store(top_ids_ptr + column * TOP + t, tail_index.to(tl.int64), mask=t < TOP)
    tl.store(top_probs_ptr + column * TOP + t, tl.where(tail_kept, _div(tail_e, z_kept), 0.0), mask=t < TOP)
    if keep_probs != 0:
        for start in range(0, V, BLOCK):
            i = start + tl.arange(0, BLOCK)
            valid = i < V
            s = tl.load(s_row + i, mask=valid, other=float("-inf"))
            key = _key(s)
            kept, e = _kept(s, key, _composite(key, i), valid, m, k_top, c_cut, min_p)
            tl.store(full_ptr + column.to(tl.int64) * V + i, tl.where(kept, _div(e, z_kept), 0.0), mask=valid)
    if active:
        tl.store(counts_ptr + row * V + token, tl.load(counts_ptr + row * V + token) + 1.0)
        tl.store(seen_ptr + row * V + token, 1)
    stops = tl.load(stop_ptr + token) != 0
    done = (tl.load(finished_ptr + row) != 0) | stops | (step + 1 >= tl.load(max_new_ptr))
    tl.store(finished_ptr + row, done.to(tl.uint8))
    tl.store(out_ptr + row, token.to(tl.int64))


@dataclasses.dataclass
class _Scratch:
    scores: torch.Tensor  # (B, V) float32: the penalised scores
    candidates: torch.Tensor  # (B, CAND + TAIL) int64: the window, then the first window's best tokens
    tokens: torch.Tensor  # (B,) int64: this step's tokens


class FusedSampler:
    """``sampler.Sampler``'s interface (tokens from logits, settings, progress and records), as one Triton kernel a
    step (see the module docstring). ``noise`` None draws in the kernel from ``seed`` (a 1-element int64 device
    tensor: refresh it each call, e.g. ``seed.random_()``); a (B, V) tensor of Exp(1) draws is used instead when
    given (tests compare with the reference on the same noise). ``block``/``cand``: tokens per pass chunk and per
    window (powers of two); ``interpret`` is for Triton's CPU interpreter (TRITON_INTERPRET=1)."""

    def __init__(self, block: int = 4096, cand: int = 1024, num_warps: int = 16):
        self.block, self.cand, self.num_warps = block, cand, num_warps
        self._scratch: dict[tuple[int, int, torch.device], _Scratch] = {}

    def scratch(self, batch: int, vocab: int, device: torch.device) -> _Scratch:
        key = (batch, vocab, device)
        if key not in self._scratch:
            self._scratch[key] = _Scratch(
                torch.empty(batch, vocab, device=device),
                torch.empty(batch, self.cand + TAIL, dtype=torch.int64, device=device),
                torch.empty(batch, dtype=torch.int64, device=device),
            )
        return self._scratch[key]

    def __call__(
        self, logits: torch.Tensor, seed: torch.Tensor, s: Settings, p: Progress, r: Records,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Sample one token per row from ``logits`` (B, V) float32, record it and advance; returns the tokens."""
        batch, vocab = logits.shape
        work = self.scratch(batch, vocab, logits.device)
        full = r.full_probs if r.full_probs is not None else work.scores
        u8 = torch.uint8
        _fused_sample_kernel[(batch,)](
            logits.contiguous(), p.seen.view(u8), p.counts, s.stop_mask.view(u8), work.scores, work.candidates,
            noise if noise is not None else work.scores, seed,
            s.temperature, s.top_k, s.top_p, s.min_p, s.repetition, s.presence, s.frequency, s.min_tokens,
            s.max_new, s.greedy.view(u8), s.pad_id, p.step, p.finished.view(u8),
            r.tokens, r.probs, r.ranks, r.entropy, r.top_ids, r.top_probs, full, work.tokens,
            int(noise is not None), int(r.full_probs is not None), batch, r.tokens.shape[1],
            V=vocab, BLOCK=self.block, CAND=self.cand, TOP=TOP_RECORDS, TAIL_N=TAIL, num_warps=self.num_warps,
        )  # fmt: skip
        p.step.add_(1)
        return work.tokens


def self_check_problem(fused: FusedSampler, vocab: int, device: torch.device, rows: int = 4) -> str | None:
    """Run ``fused`` and the reference (``sampler.Sampler``, eagerly) on the same random logits, parameters and
    noise on ``device``: None when the tokens and the distributions agree (to 1e-5), else what differs or failed.
    The decoder calls it once before it uses the fused sampler (first use compiles the kernel)."""
    gen = torch.Generator(device=device).manual_seed(1234)
    cases = [
        SamplingParams(temperature=0.8, top_p=0.9, top_k=50, min_p=0.02, repetition_penalty=1.1,
                       presence_penalty=0.3, frequency_penalty=0.2, min_tokens=2, max_new_tokens=4),
        SamplingParams(temperature=1.3, top_p=0.95),
        SamplingParams(temperature=0),
    ]  # fmt: skip
    try:
        for params in cases:
            logits = torch.randn(rows, vocab, generator=gen, device=device) * 4
            noise = torch.empty(rows, vocab, device=device).exponential_(generator=gen)
            results = []
            for sample in (Sampler(compile=False), fused):
                settings, progress = Settings.allocate(vocab, device), Progress.allocate(rows, vocab, device)
                records = Records.allocate(rows, vocab, 2, device, keep_probs=True)
                settings.load(params, [0, 1], 0)
                progress.reset(torch.arange(8).view(1, -1))
                if sample is fused:
                    tokens = fused(logits, torch.zeros(1, dtype=torch.int64, device=device), settings, progress,
                                   records, noise)  # fmt: skip
                else:
                    tokens = sample(logits, noise, settings, progress, records)
                results.append((tokens.clone(), records.full_probs[:, 0].clone()))
            (ref_tokens, ref_probs), (tokens, probs) = results
            if not torch.equal(ref_tokens, tokens):
                return f"tokens differ for {params!r}: {ref_tokens.tolist()} vs {tokens.tolist()}"
            if not torch.allclose(ref_probs, probs, rtol=0, atol=1e-5):
                return f"distributions differ for {params!r} by {float((ref_probs - probs).abs().max()):.2e}"
    except Exception as err:  # a compiler or driver failure must not cost the user the fast path
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
    return None

