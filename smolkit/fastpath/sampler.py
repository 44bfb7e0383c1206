"""transformers' sampling stages on the device, as tensors, so that a captured CUDA graph serves any parameters.

Stage by stage as transformers' processors compute them (RepetitionPenaltyLogitsProcessor,
MinNewTokensLengthLogitsProcessor, smolkit's presence/frequency processors, TemperatureLogitsWarper,
TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper), with neutral values where a stage is off, then a draw.
What a batch needs lives in three records: ``Settings`` (the parameters, set once per call), ``Progress`` (what
changes every step: tokens seen, counts, the step, finished rows) and ``Records`` (what each step outputs).
"""

from __future__ import annotations

import dataclasses

import torch

from smolkit.fastpath.compiled import MaybeCompiled
from smolkit.params import SamplingParams

__all__ = ["TOP_RECORDS", "Progress", "Records", "Sampler", "Settings", "sample_step"]

TOP_RECORDS = 5
"""Alternatives recorded per step (Step.top)."""
TOP_P_SLACK = 2.0**-30
"""How far above 1 - top_p a cumulative mass (float64) still counts as <= it: far more than float64's rounding
over a vocabulary (about 1e-12), far less than float32's (6e-8). So a token whose cumulative mass is exactly
1 - top_p (ties: 50 of 100 equal tokens at top_p 0.5) is removed as exact arithmetic says, whatever order the
sum was taken in, on every device and in the fused kernel alike."""
NEG_INF = float("-inf")


def _zeros(*shape: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype, device=device)


@dataclasses.dataclass
class Settings:
    """The parameters of one call, as 0-d device tensors (1 / 0 where a stage is off), and the stop tokens."""

    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    min_p: torch.Tensor
    repetition: torch.Tensor
    presence: torch.Tensor
    frequency: torch.Tensor
    min_tokens: torch.Tensor
    max_new: torch.Tensor
    greedy: torch.Tensor
    stop_mask: torch.Tensor  # (V,) bool: EOS and stop tokens
    pad_id: torch.Tensor

    @classmethod
    def allocate(cls, vocab: int, device: torch.device) -> Settings:
        ints = ("top_k", "min_tokens", "max_new", "pad_id")
        fields = {
            f.name: _zeros(device=device, dtype=torch.int64 if f.name in ints else torch.float32)
            for f in dataclasses.fields(cls)
        }
        fields.update(
            greedy=_zeros(device=device, dtype=torch.bool), stop_mask=_zeros(vocab, device=device, dtype=torch.bool)
        )
        return cls(**fields)

    def load(self, params: SamplingParams, stop_ids: list[int], pad_id: int) -> None:
        """Set the values in place (the tensors a graph captured stay valid); greedy switches the cut-offs off."""
        greedy = params.greedy
        self.temperature.fill_(1.0 if greedy else params.temperature)
        self.top_k.fill_(0 if greedy else params.top_k)
        self.top_p.fill_(1.0 if greedy else params.top_p)
        self.min_p.fill_(0.0 if greedy else params.min_p)
        self.repetition.fill_(params.repetition_penalty)
        self.presence.fill_(params.presence_penalty)
        self.frequency.fill_(params.frequency_penalty)
        self.min_tokens.fill_(params.min_tokens)
        self.max_new.fill_(params.max_new_tokens)
        self.greedy.fill_(greedy)
        self.stop_mask.zero_()
        self.stop_mask[torch.tensor(stop_ids, dtype=torch.int64)] = True
        self.pad_id.fill_(pad_id)


@dataclasses.dataclass
class Progress:
    """What changes from step to step for a batch of B rows over a vocabulary of V tokens."""

    seen: torch.Tensor  # (B, V) bool: prompt and generated tokens (repetition penalty)
    counts: torch.Tensor  # (B, V) float32: generated tokens only (presence / frequency)
    step: torch.Tensor  # () int64: tokens generated so far
    finished: torch.Tensor  # (B,) bool

    @classmethod
    def allocate(cls, batch: int, vocab: int, device: torch.device) -> Progress:
        return cls(
            seen=_zeros(batch, vocab, device=device, dtype=torch.bool),
            counts=_zeros(batch, vocab, device=device),
            step=_zeros(device=device, dtype=torch.int64),
            finished=_zeros(batch, device=device, dtype=torch.bool),
        )

    def reset(self, prompt_ids: torch.Tensor) -> None:
        self.seen.zero_()
        self.seen[:, prompt_ids.flatten().to(self.seen.device)] = True
        self.counts.zero_()
        self.step.zero_()
        self.finished.zero_()


@dataclasses.dataclass
class Records:
    """What each step writes for each row: the token, its probability when drawn, its rank under the raw logits,
    the entropy (bits) and the TOP_RECORDS most likely tokens of the distribution drawn from; optionally that whole
    distribution (for parity tests)."""

    tokens: torch.Tensor  # (B, max_len) int64
    probs: torch.Tensor  # (B, max_len) float32
    ranks: torch.Tensor  # (B, max_len) int64
    entropy: torch.Tensor  # (B, max_len) float32
    top_ids: torch.Tensor  # (B, max_len, TOP_RECORDS) int64
    top_probs: torch.Tensor  # (B, max_len, TOP_RECORDS) float32
    full_probs: torch.Tensor | None = None  # (B, max_len, V) float32

    @classmethod
    def allocate(cls, batch: int, vocab: int, max_len: int, device: torch.device, keep_probs: bool) -> Records:
        z = _zeros
        return cls(
            tokens=z(batch, max_len, device=device, dtype=torch.int64),
            probs=z(batch, max_len, device=device),
            ranks=z(batch, max_len, device=device, dtype=torch.int64),
            entropy=z(batch, max_len, device=device),
            top_ids=z(batch, max_len, TOP_RECORDS, device=device, dtype=torch.int64),
            top_probs=z(batch, max_len, TOP_RECORDS, device=device),
            full_probs=z(batch, max_len, vocab, device=device) if keep_probs else None,
        )


def penalise(raw: torch.Tensor, s: Settings, p: Progress) -> tuple[torch.Tensor, torch.Tensor]:
    """The stages before the cut-offs; returns (the scores greedy decoding compares, the scores after temperature).

    repetition penalty (multiplicative, prompt and generated tokens, once per token), min_tokens (EOS and stop
    tokens at -inf while fewer than min_tokens tokens exist), presence and frequency (additive, generated tokens).
    """
    scores = torch.where(p.seen, torch.where(raw > 0, raw / s.repetition, raw * s.repetition), raw)
    scores = torch.where(s.stop_mask & (p.step < s.min_tokens), NEG_INF, scores)
    scores = scores - s.presence * (p.counts > 0) - s.frequency * p.counts
    return scores, scores / s.temperature


def keep_top_k(sorted_scores: torch.Tensor, top_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """top_k on the scores sorted ascending: which it removes, and the softmax (float64) of what it keeps, in the
    same order. top_k keeps tokens >= the k-th largest (ties kept), as TopKLogitsWarper."""
    vocab = sorted_scores.shape[-1]
    rank = torch.arange(vocab, device=sorted_scores.device)
    k = top_k.clamp(min=1, max=vocab)
    kth = torch.where(rank == vocab - k, sorted_scores, NEG_INF).amax(-1, keepdim=True)  # the k-th largest
    below_k = (sorted_scores < kth) & (top_k > 0)
    return below_k, torch.softmax(sorted_scores.masked_fill(below_k, NEG_INF).double(), dim=-1)


def top_p_removes(cumulative: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Which tokens top_p removes, from the cumulative mass (float64) in ascending order: those whose cumulative
    mass is <= 1 - top_p, keeping at least one, as TopPLogitsWarper. Compared with a slack of ``TOP_P_SLACK``: in
    float32 the rounding of the sum (its order differs between devices and kernels) decides ties that sit exactly
    on 1 - top_p."""
    vocab = cumulative.shape[-1]
    rank = torch.arange(vocab, device=cumulative.device)
    budget = (1 - top_p.double()) + TOP_P_SLACK
    return (cumulative <= budget) & (top_p < 1) & (rank < vocab - 1)  # the most likely token always stays


def cut(
    scores: torch.Tensor, remove_sorted: torch.Tensor, sorted_ids: torch.Tensor, min_p: torch.Tensor
) -> torch.Tensor:
    """The distribution sampled from: top_k/top_p's removals applied, then min_p (as MinPLogitsWarper, after top_p:
    tokens below min_p x the top probability are removed)."""
    remove = torch.zeros_like(remove_sorted).scatter(-1, sorted_ids, remove_sorted)
    scores = scores.masked_fill(remove, NEG_INF)
    probs = torch.softmax(scores, dim=-1)
    scores = torch.where(probs < min_p * probs.amax(-1, keepdim=True), NEG_INF, scores)
    return torch.softmax(scores, dim=-1)


def _argmax(x: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """argmax over the last dimension in two passes (blocks, then their winners), first index on ties like
    torch.argmax: one pass over 49,152 entries is a single serial program for the compiler at batch 1."""
    batch, vocab = x.shape
    if vocab % block:
        return x.argmax(-1)
    values, within = x.view(batch, vocab // block, block).max(-1)
    best = values.argmax(-1, keepdim=True)
    return (best * block + within.gather(-1, best)).squeeze(-1)


def draw(
    probs: torch.Tensor, noise: torch.Tensor, greedy_scores: torch.Tensor, greedy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row and the distribution to report for it.

    ``noise`` holds Exp(1) draws: argmax(p / noise) is a draw from p (the exponential race, equivalent to
    multinomial sampling). Greedy decoding takes the argmax of the penalised scores, as transformers does, and
    reports their softmax.
    """
    token = torch.where(greedy, _argmax(greedy_scores), _argmax(probs / noise))
    shown = torch.where(greedy, torch.softmax(greedy_scores, dim=-1), probs)
    return token, shown


def _cumsum(x: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """cumsum over the last dimension in two levels (within blocks of ``block``, then the blocks' totals): the same
    sums in another order (in float64 the difference is far below TOP_P_SLACK), as many short rows the GPU scans in
    parallel instead of one long row per batch row (measured on the H200: 95 us at batch 64 for the long rows)."""
    batch, vocab = x.shape
    if vocab % block:
        return x.cumsum(-1)
    inner = x.view(batch, vocab // block, block).cumsum(-1)
    totals = inner[..., -1]
    before = totals.cumsum(-1) - totals  # the mass of the blocks before each block
    return (inner + before.unsqueeze(-1)).view(batch, vocab)


def _entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    logs = torch.where(probs > 0, probs.log2(), torch.zeros_like(probs))
    return -(probs * logs).sum(-1)


def record(
    raw: torch.Tensor, token: torch.Tensor, shown: torch.Tensor, sorted_ids: torch.Tensor, s: Settings,
    p: Progress, r: Records,
) -> torch.Tensor:  # fmt: skip
    """Write the step's token and records, update the counts and the finished rows, advance the step.

    The TOP_RECORDS most likely tokens of ``shown`` are the last of ``sorted_ids`` (the scores in ascending order,
    which every cut-off keeps an upper part of): no second search of the vocabulary. Rows already finished emit
    the pad token and stop changing. Returns the tokens (B,).
    """
    active = ~p.finished
    token = torch.where(active, token, s.pad_id)
    column = token.view(-1, 1)
    index = p.step.clamp(max=r.tokens.shape[1] - 1).view(1)  # past max_new_tokens every row is finished
    r.tokens.index_copy_(1, index, column)
    r.probs.index_copy_(1, index, shown.gather(-1, column))
    r.ranks.index_copy_(1, index, (raw > raw.gather(-1, column)).sum(-1, keepdim=True))
    r.entropy.index_copy_(1, index, _entropy_bits(shown).view(-1, 1))
    top_ids = sorted_ids[:, -TOP_RECORDS:].flip(-1)
    r.top_ids.index_copy_(1, index, top_ids.unsqueeze(1))
    r.top_probs.index_copy_(1, index, shown.gather(-1, top_ids).unsqueeze(1))
    if r.full_probs is not None:
        r.full_probs.index_copy_(1, index, shown.unsqueeze(1))
    p.counts.scatter_add_(1, column, active.float().view(-1, 1))
    p.seen.scatter_(1, column, active.view(-1, 1) | p.seen.gather(1, column))
    p.step.add_(1)
    p.finished.copy_(p.finished | s.stop_mask[token] | (p.step >= s.max_new))
    return token


def finish(
    raw: torch.Tensor, scores: torch.Tensor, below_k: torch.Tensor, cumulative: torch.Tensor,
    sorted_ids: torch.Tensor, noise: torch.Tensor, greedy_scores: torch.Tensor, s: Settings, p: Progress,
    r: Records,
) -> torch.Tensor:  # fmt: skip
    """After the cumulative sum: top_p's removals joined to top_k's, the cut (and min_p), the draw, the records."""
    probs = cut(scores, below_k | top_p_removes(cumulative, s.top_p), sorted_ids, s.min_p)
    token, shown = draw(probs, noise, greedy_scores, s.greedy)
    return record(raw, token, shown, sorted_ids, s, p, r)


class Sampler:
    """The stages as three pieces around the two steps that stay PyTorch's own kernels, each piece compiled when
    asked and run eagerly should the compiler fail on it (``problems`` says which): the sort (it cannot be fused)
    and top_p's cumulative sum (inductor's scan fails on it at some batch sizes: SplitScan, torch 2.11, batch 64).
    """

    def __init__(self, compile: bool):
        self.pieces = {fn.__name__: MaybeCompiled(fn, compile) for fn in (penalise, keep_top_k, finish)}

    @property
    def problems(self) -> dict[str, str]:
        return {name: piece.problem for name, piece in self.pieces.items() if piece.problem}

    def __call__(self, logits: torch.Tensor, noise: torch.Tensor, s: Settings, p: Progress, r: Records):
        """Sample one token per row from ``logits`` (B, V) float32, record it and advance; returns the tokens."""
        piece = self.pieces
        greedy_scores, scores = piece["penalise"](logits, s, p)
        sorted_scores, sorted_ids = torch.sort(scores, dim=-1, stable=True)  # ties in index order, as on CUDA
        below_k, kept = piece["keep_top_k"](sorted_scores, s.top_k)
        cumulative = _cumsum(kept)
        return piece["finish"](logits, scores, below_k, cumulative, sorted_ids, noise, greedy_scores, s, p, r)


_EAGER = Sampler(compile=False)


def sample_step(logits: torch.Tensor, noise: torch.Tensor, s: Settings, p: Progress, r: Records) -> torch.Tensor:
    """One sampling step, eagerly (see Sampler): draw, record, advance; returns the tokens (B,)."""
    return _EAGER(logits, noise, s, p, r)
