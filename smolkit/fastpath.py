"""The GPU fast path: decode steps and every sampling stage on the device, many steps replayed as one CUDA graph.

Plain ``model.generate()`` spends ~70-95 ms a token at batch 1 on an H100 launching small kernels from Python.
Here one decode step of a Llama-architecture text model (SmolLM2, SmolVLM's text decoder) is a handful of fused
kernels (``torch.compile`` of one decoder layer, reused for every layer) over a static KV cache, and the sampling
stages run on the device with transformers' exact semantics and order (repetition penalty, min_tokens, presence
and frequency penalties, temperature, top_k, top_p, min_p, then a draw). A chunk of steps is captured once in a
CUDA graph and replayed; the host looks only between chunks whether every sequence has finished.

Written by hand because no maintained library offers this for transformers models: transformers' own
``cache_implementation="static"`` compiles the whole forward for ~50 s per shape and keeps sampling on the host.

The same code runs eagerly (no graph, no compile) on the CPU, where the tests check it against transformers.
``smolkit.generate`` picks this path on CUDA (``fast=None``), falls back to plain transformers otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from smolkit.embedded import cache_dir
from smolkit.models import LoadedModel
from smolkit.params import SamplingParams

__all__ = ["FastDecoder", "compile_cache_dir", "fast_path_problem", "get_fast_decoder"]

CHUNK = 32
"""Decode steps per CUDA graph replay: the host checks for finished sequences once per chunk."""
TOP_RECORDS = 5  # as smolkit.generation.TOP_ALTERNATIVES
"""Alternatives recorded per step (Step.top)."""
NEG_INF = float("-inf")


def compile_cache_dir() -> str:
    """Where torch.compile keeps the fast path's compiled kernels between processes (inductor + Triton caches).

    $TORCHINDUCTOR_CACHE_DIR when set, else ``<smolkit cache>/inductor`` (``~/.cache/smolkit/inductor``).
    Delete the folder to force a fresh compile.
    """
    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(cache_dir() / "inductor")


def fast_path_problem(lm: LoadedModel) -> str | None:
    """Why the fast path cannot serve ``lm`` (then generate uses plain transformers), or None when it can."""
    text = _text_config(lm.model)
    if text is None or getattr(text, "model_type", "") not in ("llama", "smollm3"):
        return f"the text decoder is not a Llama-architecture model ({getattr(text, 'model_type', None)!r})"
    if getattr(text, "mlp_bias", False) or getattr(text, "attention_bias", False):
        return "biases in attention or MLP projections are not supported"
    if getattr(text, "hidden_act", "silu") != "silu":
        return f"activation {text.hidden_act!r} is not supported"
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
    if isinstance(rope, dict) and rope.get("rope_type", "default") == "dynamic":
        return "dynamic RoPE scaling changes with the sequence length"
    return None


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


# -- the decoder: one step of a Llama text model on a static KV cache ------------------------------------------


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm exactly: normalise in float32, cast back, then scale."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def layer_step(
    x: torch.Tensor,
    delta: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor,
    pos: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    ln1: torch.Tensor,
    wqkv: torch.Tensor,
    wo: torch.Tensor,
    ln2: torch.Tensor,
    wgu: torch.Tensor,
    wd: torch.Tensor,
    eps: float,
    n_heads: int,
    n_kv: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoder layer for T new tokens per row; x: (B, T, H), caches: (B, n_kv, L, head_dim) written at ``pos``
    (T positions), ``mask`` (T, L) additive. Decode steps use T = 1, the prompt T = its length.

    The residual stream is carried as (x, delta): the layer adds the previous layer's MLP output first, so that this
    add and the following RMSNorm fuse into one kernel when compiled. Returns (x, this layer's MLP output).
    """
    x = x + delta
    batch, steps, _ = x.shape
    head_dim = k_cache.shape[-1]
    qkv = F.linear(_rms_norm(x, ln1, eps), wqkv)
    q, k, v = qkv.split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
    q = _rope(q.view(batch, steps, n_heads, head_dim).transpose(1, 2), cos, sin)  # (B, n_heads, T, hd)
    k = _rope(k.view(batch, steps, n_kv, head_dim).transpose(1, 2), cos, sin)
    k_cache.index_copy_(2, pos, k)
    v_cache.index_copy_(2, pos, v.view(batch, steps, n_kv, head_dim).transpose(1, 2))
    group = n_heads // n_kv
    q = q.reshape(batch, n_kv, group * steps, head_dim)  # query heads of a kv head side by side
    scores = torch.matmul(q, k_cache.transpose(-1, -2)).float() * (head_dim**-0.5)
    scores = scores.view(batch, n_kv, group, steps, -1) + mask
    probs = torch.softmax(scores, dim=-1).to(v_cache.dtype).view(batch, n_kv, group * steps, -1)
    attn = torch.matmul(probs, v_cache).view(batch, n_heads, steps, head_dim).transpose(1, 2)
    x = x + F.linear(attn.reshape(batch, steps, n_heads * head_dim), wo)
    gate, up = F.linear(_rms_norm(x, ln2, eps), wgu).chunk(2, dim=-1)
    return x, F.linear(F.silu(gate) * up, wd)


SMALL_BATCH = 4
"""Up to this many rows, decode steps use decode_layer_small (matrix-vector products as fused reductions)."""


def decode_layer_small(
    x: torch.Tensor,
    delta: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor,
    pos: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    ln1: torch.Tensor,
    wqkv: torch.Tensor,
    wo: torch.Tensor,
    ln2: torch.Tensor,
    wgu: torch.Tensor,
    wd: torch.Tensor,
    eps: float,
    n_heads: int,
    n_kv: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """layer_step for one token per row at small batch, written for the compiler: every matrix-vector product is an
    elementwise multiply and a sum, which inductor fuses with the norms and activations around it (measured on an
    H100 at batch 1: 24 us a layer against 30 us with cuBLAS GEMVs; see bench/RESULTS.md). Same maths as
    layer_step, accumulated in float32; only for compiled decoding (eagerly it would materialise the products)."""

    def matvec(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (v.float().unsqueeze(-2) * w.float()).sum(-1).to(v.dtype)

    x = x + delta
    batch = x.shape[0]
    head_dim = k_cache.shape[-1]
    group = n_heads // n_kv
    qkv = matvec(_rms_norm(x, ln1, eps), wqkv)
    q, k, v = qkv.split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
    q = _rope(q.view(batch, 1, n_heads, head_dim).transpose(1, 2), cos, sin)
    k = _rope(k.view(batch, 1, n_kv, head_dim).transpose(1, 2), cos, sin)
    k_cache.index_copy_(2, pos, k)
    v_cache.index_copy_(2, pos, v.view(batch, 1, n_kv, head_dim).transpose(1, 2))
    q = q.reshape(batch, n_kv, group, head_dim)
    scores = torch.matmul(q, k_cache.transpose(-1, -2)).float() * (head_dim**-0.5) + mask  # (B, n_kv, group, L)
    attn = torch.matmul(torch.softmax(scores, dim=-1).to(v_cache.dtype), v_cache)  # (B, n_kv, group, head_dim)
    x = x + matvec(attn.reshape(batch, 1, n_heads * head_dim), wo)
    gate, up = matvec(_rms_norm(x, ln2, eps), wgu).chunk(2, dim=-1)
    return x, matvec(F.silu(gate) * up, wd)


@dataclasses.dataclass
class _Layer:
    ln1: torch.Tensor
    wqkv: torch.Tensor
    wo: torch.Tensor
    ln2: torch.Tensor
    wgu: torch.Tensor
    wd: torch.Tensor


def _fuse_linear(modules: list[torch.nn.Linear]) -> torch.Tensor:
    """One weight for several projections of the same input, shared with the modules (they become views of it), so
    the fused GEMM costs no extra memory and the model itself is unchanged."""
    fused = torch.cat([m.weight.data for m in modules], dim=0)
    start = 0
    for m in modules:
        rows = m.weight.shape[0]
        m.weight.data = fused[start : start + rows]
        start += rows
    return fused


# -- the sampler: transformers' stages, on the device, with tensors for every parameter --------------------------


@dataclasses.dataclass
class SamplerState:
    """Everything one batch's sampling needs, as device tensors, so that a captured graph can be reused for other
    parameters: only the values change between calls."""

    temperature: torch.Tensor  # () float32, 1 = off
    top_k: torch.Tensor  # () int64, 0 = off
    top_p: torch.Tensor  # () float32, 1 = off
    min_p: torch.Tensor  # () float32, 0 = off
    repetition: torch.Tensor  # () float32, 1 = off
    presence: torch.Tensor  # () float32
    frequency: torch.Tensor  # () float32
    min_tokens: torch.Tensor  # () int64
    max_new: torch.Tensor  # () int64
    greedy: torch.Tensor  # () bool
    stop_mask: torch.Tensor  # (V,) bool: EOS and stop tokens
    pad_id: torch.Tensor  # () int64
    seen: torch.Tensor  # (B, V) bool: prompt and generated tokens (repetition penalty)
    counts: torch.Tensor  # (B, V) float32: generated tokens only (presence / frequency)
    step: torch.Tensor  # () int64: tokens generated so far
    finished: torch.Tensor  # (B,) bool
    tokens: torch.Tensor  # (B, max_len) int64: the generated tokens
    probs: torch.Tensor  # (B, max_len) float32: probability of each when drawn
    ranks: torch.Tensor  # (B, max_len) int64: rank under the raw logits
    entropy: torch.Tensor  # (B, max_len) float32: bits
    top_ids: torch.Tensor  # (B, max_len, TOP_RECORDS) int64
    top_probs: torch.Tensor  # (B, max_len, TOP_RECORDS) float32
    full_probs: torch.Tensor | None = None  # (B, max_len, V) float32, only when asked for (parity tests)

    @classmethod
    def allocate(cls, batch: int, vocab: int, max_len: int, device: torch.device, keep_probs: bool):
        def z(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        return cls(
            temperature=z(),
            top_k=z(dtype=torch.int64),
            top_p=z(),
            min_p=z(),
            repetition=z(),
            presence=z(),
            frequency=z(),
            min_tokens=z(dtype=torch.int64),
            max_new=z(dtype=torch.int64),
            greedy=z(dtype=torch.bool),
            stop_mask=z(vocab, dtype=torch.bool),
            pad_id=z(dtype=torch.int64),
            seen=z(batch, vocab, dtype=torch.bool),
            counts=z(batch, vocab),
            step=z(dtype=torch.int64),
            finished=z(batch, dtype=torch.bool),
            tokens=z(batch, max_len, dtype=torch.int64),
            probs=z(batch, max_len),
            ranks=z(batch, max_len, dtype=torch.int64),
            entropy=z(batch, max_len),
            top_ids=z(batch, max_len, TOP_RECORDS, dtype=torch.int64),
            top_probs=z(batch, max_len, TOP_RECORDS),
            full_probs=z(batch, max_len, vocab) if keep_probs else None,
        )

    def load(self, params: SamplingParams, stop_ids: list[int], pad_id: int, prompt_ids: torch.Tensor) -> None:
        """Set the parameters and reset the per-call state (in place: the tensors a graph captured stay valid)."""
        greedy = params.greedy
        self.temperature.fill_(1.0 if greedy else params.temperature)
        self.top_k.fill_(0 if greedy else params.top_k_for_transformers)
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
        self.seen.zero_()
        self.seen[:, prompt_ids.flatten().to(self.seen.device)] = True
        self.counts.zero_()
        self.step.zero_()
        self.finished.zero_()
        self.tokens.fill_(pad_id)


def _entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    logs = torch.where(probs > 0, probs.log2(), torch.zeros_like(probs))
    return -(probs * logs).sum(-1)


def penalise(
    raw: torch.Tensor,
    seen: torch.Tensor,
    counts: torch.Tensor,
    stop_mask: torch.Tensor,
    step: torch.Tensor,
    min_tokens: torch.Tensor,
    repetition: torch.Tensor,
    presence: torch.Tensor,
    frequency: torch.Tensor,
    temperature: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stages before the cut-offs; returns (scores greedy decoding compares, scores after temperature)."""
    # repetition penalty: multiplicative, over prompt and generated tokens, at most once per token
    scores = torch.where(seen, torch.where(raw > 0, raw / repetition, raw * repetition), raw)
    # min_tokens: EOS and stop tokens blocked while fewer than min_tokens tokens exist
    scores = torch.where(stop_mask & (step < min_tokens), NEG_INF, scores)
    # presence and frequency: additive, generated tokens only
    scores = scores - presence * (counts > 0) - frequency * counts
    return scores, scores / temperature


def nucleus(sorted_scores: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Which tokens top_k and then top_p remove, in ascending sorted order (``sorted_scores`` sorted ascending).

    top_k keeps tokens >= the k-th largest (ties kept), as TopKLogitsWarper; top_p then drops the least likely
    tokens whose cumulative mass is <= 1 - top_p and keeps at least one, as TopPLogitsWarper.
    """
    vocab = sorted_scores.shape[-1]
    rank = torch.arange(vocab, device=sorted_scores.device)
    k = top_k.clamp(min=1, max=vocab)
    kth = torch.where(rank == vocab - k, sorted_scores, NEG_INF).amax(-1, keepdim=True)  # the k-th largest
    below_k = (sorted_scores < kth) & (top_k > 0)
    masked = sorted_scores.masked_fill(below_k, NEG_INF)
    cumulative = torch.softmax(masked, dim=-1).cumsum(dim=-1)
    below_p = (cumulative <= (1 - top_p)) & (top_p < 1) & (rank < vocab - 1)  # the most likely token always stays
    return below_k | below_p


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
    scores: torch.Tensor,
    remove_sorted: torch.Tensor,
    sorted_ids: torch.Tensor,
    min_p: torch.Tensor,
    noise: torch.Tensor,
    greedy_scores: torch.Tensor,
    greedy: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the cut-offs and min_p (as MinPLogitsWarper), then draw: returns (tokens, the distribution reported).

    ``noise`` holds Exp(1) draws: argmax(p / noise) is a draw from p (the exponential race, equivalent to
    multinomial sampling). Greedy decoding takes the argmax of the penalised scores, as transformers does.
    """
    remove = torch.zeros_like(remove_sorted).scatter(-1, sorted_ids, remove_sorted)
    scores = scores.masked_fill(remove, NEG_INF)
    probs = torch.softmax(scores, dim=-1)
    scores = torch.where(probs < min_p * probs.amax(-1, keepdim=True), NEG_INF, scores)
    probs = torch.softmax(scores, dim=-1)
    token = torch.where(greedy, _argmax(greedy_scores), _argmax(probs / noise))
    shown = torch.where(greedy, torch.softmax(greedy_scores, dim=-1), probs)
    return token, shown


def record(raw: torch.Tensor, token: torch.Tensor, shown: torch.Tensor, s: SamplerState) -> torch.Tensor:
    """Write the step's token and records into the state, update counts and finished rows, advance the step.

    Rows already finished emit the pad token and stop changing. Returns the tokens (B,).
    """
    active = ~s.finished
    token = torch.where(active, token, s.pad_id)
    column = token.view(-1, 1)
    index = s.step.clamp(max=s.tokens.shape[1] - 1).view(1)  # past max_new_tokens every row is finished
    s.tokens.index_copy_(1, index, column)
    s.probs.index_copy_(1, index, shown.gather(-1, column))
    s.ranks.index_copy_(1, index, (raw > raw.gather(-1, column)).sum(-1, keepdim=True))
    s.entropy.index_copy_(1, index, _entropy_bits(shown).view(-1, 1))
    top_values, top_ids = torch.topk(shown, TOP_RECORDS, dim=-1)
    s.top_ids.index_copy_(1, index, top_ids.unsqueeze(1))
    s.top_probs.index_copy_(1, index, top_values.unsqueeze(1))
    if s.full_probs is not None:
        s.full_probs.index_copy_(1, index, shown.unsqueeze(1))
    s.counts.scatter_add_(1, column, active.float().view(-1, 1))
    s.seen.scatter_(1, column, active.view(-1, 1) | s.seen.gather(1, column))
    s.step.add_(1)
    s.finished.copy_(s.finished | s.stop_mask[token] | (s.step >= s.max_new))
    return token


class Sampler:
    """transformers' stages on the device, with tensors for every parameter, in four pieces.

    Stage by stage as transformers' processors compute them (RepetitionPenaltyLogitsProcessor,
    MinNewTokensLengthLogitsProcessor, smolkit's presence/frequency processors, TemperatureLogitsWarper,
    TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper), with neutral values where a stage is off. Each piece is
    compiled separately when asked, and runs eagerly should the compiler fail on it (``problems`` says which).
    """

    def __init__(self, compile: bool):
        self.penalise = _MaybeCompiled(penalise, compile)
        self.nucleus = _MaybeCompiled(nucleus, compile)
        self.draw = _MaybeCompiled(draw, compile)
        self.record = _MaybeCompiled(record, compile)

    @property
    def problems(self) -> dict[str, str]:
        pieces = (self.penalise, self.nucleus, self.draw, self.record)
        return {piece.fn.__name__: piece.problem for piece in pieces if piece.problem}

    def __call__(self, logits: torch.Tensor, noise: torch.Tensor, s: SamplerState) -> torch.Tensor:
        """Sample one token per row from ``logits`` (B, V) float32, record it and advance ``s``."""
        greedy_scores, scores = self.penalise(
            logits, s.seen, s.counts, s.stop_mask, s.step, s.min_tokens, s.repetition, s.presence, s.frequency,
            s.temperature,
        )  # fmt: skip
        sorted_scores, sorted_ids = torch.sort(scores, dim=-1)
        remove_sorted = self.nucleus(sorted_scores, s.top_k, s.top_p)
        token, shown = self.draw(scores, remove_sorted, sorted_ids, s.min_p, noise, greedy_scores, s.greedy)
        return self.record(logits, token, shown, s)


def sample_step(logits: torch.Tensor, noise: torch.Tensor, s: SamplerState) -> torch.Tensor:
    """One sampling step, eagerly (see Sampler): draw, record, advance; returns the tokens (B,)."""
    return _EAGER_SAMPLER(logits, noise, s)


class _MaybeCompiled:
    """``fn`` through torch.compile when asked; if the compiler fails on it, ``fn`` itself from then on.

    The first call must happen outside CUDA-graph capture (the warm-up does it), so that a failure is caught there.
    """

    def __init__(self, fn: Callable[..., Any], compile: bool):
        self.fn = fn
        self.compiled = torch.compile(fn, fullgraph=True, dynamic=False) if compile else None
        self.problem: str | None = None
        self.first_call_seconds: float | None = None  # compile time, for the benchmark's record

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                if self.first_call_seconds is None:
                    start = time.perf_counter()
                    out = self.compiled(*args)
                    self.first_call_seconds = time.perf_counter() - start
                    return out
                return self.compiled(*args)
            except Exception as err:  # a compiler failure must not cost the user the fast path
                self.problem = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
                warnings.warn(f"smolkit fast path: torch.compile failed on {self.fn.__name__}, running it eagerly "
                              f"({self.problem})", stacklevel=2)  # fmt: skip
                self.compiled = None
        return self.fn(*args)


_EAGER_SAMPLER = Sampler(compile=False)


# -- the decoder object: static buffers, compiled step, graphs -------------------------------------------------


class FastDecoder:
    """Runs ``generate`` for one loaded model with the fast path; built once per model (see get_fast_decoder)."""

    def __init__(self, lm: LoadedModel, compile: bool | None = None, use_graphs: bool | None = None):
        problem = fast_path_problem(lm)
        if problem:
            raise ValueError(f"the fast path cannot run {lm.name!r}: {problem}")
        self.lm = lm
        self.device = lm.device
        on_cuda = self.device.type == "cuda"
        self.use_graphs = on_cuda if use_graphs is None else use_graphs
        self.compile = (on_cuda and _has_triton()) if compile is None else compile
        decoder = lm.model.get_decoder()
        config = _text_config(lm.model)
        self.config = config
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.eps = config.rms_norm_eps
        self.embed = decoder.embed_tokens
        self.norm = decoder.norm
        self.rotary = decoder.rotary_emb
        self.lm_head = lm.model.get_output_embeddings().weight
        self.layers = [
            _Layer(
                ln1=layer.input_layernorm.weight,
                wqkv=_fuse_linear([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
                wo=layer.self_attn.o_proj.weight,
                ln2=layer.post_attention_layernorm.weight,
                wgu=_fuse_linear([layer.mlp.gate_proj, layer.mlp.up_proj]),
                wd=layer.mlp.down_proj.weight,
            )
            for layer in decoder.layers
        ]
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", compile_cache_dir())
        # One compiled graph for a decoder layer, reused by every layer (per batch shape), and the sampler's pieces.
        self.layer = _MaybeCompiled(layer_step, self.compile)
        self.layer_small = _MaybeCompiled(decode_layer_small, self.compile)
        self.sampler = Sampler(self.compile)
        self._buffers: dict[tuple[int, int, bool], _Buffers] = {}
        self.setup_seconds: dict[str, float] = {}

    @property
    def compile_seconds(self) -> dict[str, float]:
        """How long the first call of each compiled piece took (compiling it, or loading it from the cache)."""
        pieces = (self.layer, self.layer_small, self.sampler.penalise, self.sampler.nucleus, self.sampler.draw,
                  self.sampler.record)  # fmt: skip
        return {p.fn.__name__: round(p.first_call_seconds, 2) for p in pieces if p.first_call_seconds is not None}

    @property
    def compile_problems(self) -> dict[str, str]:
        """What torch.compile failed on (those parts run eagerly inside the CUDA graph); empty when all compiled."""
        layers = {p.fn.__name__: p.problem for p in (self.layer, self.layer_small) if p.problem}
        return {**layers, **self.sampler.problems}

    # -- pieces ------------------------------------------------------------------------------------------------

    def _rope_table(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(length, device=self.device).unsqueeze(0)
        dummy = torch.zeros(1, dtype=self.lm.dtype, device=self.device)
        cos, sin = self.rotary(dummy, positions)
        return cos[0], sin[0]  # (length, head_dim)

    def _run_layers(self, x: torch.Tensor, buf: _Buffers, cos, sin, mask, pos, rows: int, layer_fn) -> torch.Tensor:
        delta = torch.zeros_like(x)
        for layer, (k_cache, v_cache) in zip(self.layers, buf.caches, strict=True):
            x, delta = layer_fn(
                x, delta, cos, sin, mask, pos, k_cache[:rows], v_cache[:rows],
                layer.ln1, layer.wqkv, layer.wo, layer.ln2, layer.wgu, layer.wd,
                self.eps, self.n_heads, self.n_kv,
            )  # fmt: skip
        return _rms_norm(x + delta, self.norm.weight, self.eps)

    def _forward_step(self, buf: _Buffers) -> torch.Tensor:
        """Logits (B, V) float32 for the tokens in ``buf.token`` at position ``buf.pos`` (one decode step)."""
        x = self.embed(buf.token).unsqueeze(1)  # (B, 1, H)
        cos = buf.cos.index_select(0, buf.pos)  # (1, head_dim): broadcast over rows and heads
        sin = buf.sin.index_select(0, buf.pos)
        mask = torch.where(buf.arange <= buf.pos, 0.0, NEG_INF).unsqueeze(0)  # (1, L)
        rows = buf.token.shape[0]
        layer = self.layer_small if self.compile and rows <= SMALL_BATCH else self.layer
        h = self._run_layers(x, buf, cos, sin, mask, buf.pos, rows, layer)
        return F.linear(h[:, -1], self.lm_head).float()

    def _decode_chunk(self, buf: _Buffers, steps: int) -> None:
        for _ in range(steps):
            # Past max_new_tokens (the tail of the last chunk) every row is finished: clamp to stay in the cache.
            buf.pos.copy_((buf.prompt_len + buf.state.step - 1).clamp(0, buf.arange.numel() - 1))
            logits = self._forward_step(buf)
            buf.token.copy_(self.sampler(logits, buf.noise.exponential_(), buf.state))

    @torch.inference_mode()
    def prepare(self, batch: int, positions: int, keep_probs: bool = False) -> _Buffers:
        """Buffers (and, on CUDA, the captured graph) for ``batch`` rows and ``positions`` (prompt + new tokens).

        Call it outside any seeded block: capturing runs warm-up steps that draw random numbers.
        """
        key = (batch, _bucket(positions), keep_probs)
        if key not in self._buffers:
            self._buffers[key] = _Buffers.allocate(self, batch, key[1], keep_probs)
        buf = self._buffers[key]
        if self.use_graphs and buf.graph is None:
            buf.capture(self)
        return buf

    @torch.inference_mode()
    def _prefill(self, inputs: dict[str, torch.Tensor], buf: _Buffers) -> torch.Tensor:
        """Fill the static cache with the prompt for every row; return the last position's logits (1, V) float32.

        A text prompt runs through the kit's own layers (eagerly: one pass); a prompt with an image runs through
        the transformers model (vision tower and all), whose KV cache is then copied in.
        """
        ids = inputs["input_ids"][:1]
        length = ids.shape[1]
        if set(inputs) <= {"input_ids", "attention_mask"}:
            if self.use_graphs:
                return buf.prefill(self, ids)
            return _prefill_body(self, buf, ids, torch.tensor([length - 1], device=self.device))
        out = self.lm.model(**inputs, use_cache=True, logits_to_keep=1)
        rows = buf.token.shape[0]
        for (k_cache, v_cache), layer in zip(buf.caches, out.past_key_values.layers, strict=True):
            k_cache[:, :, :length].copy_(layer.keys.expand(rows, -1, -1, -1))
            v_cache[:, :, :length].copy_(layer.values.expand(rows, -1, -1, -1))
        return out.logits[:, -1].float()

    # -- generate ----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        inputs: dict[str, torch.Tensor],
        params: SamplingParams,
        stop_ids: list[int],
        pad_id: int,
        keep_probs: bool = False,
        on_chunk: Callable[[int], Any] | None = None,
    ) -> tuple[SamplerState, float]:
        """Generate ``params.n`` continuations of the single prompt in ``inputs``; returns the filled state (tokens
        and step records on the device) and the seconds taken. ``on_chunk(steps)`` is told of each chunk done
        (a progress bar), between chunks only: nothing waits on the host inside one."""
        prompt_len = int(inputs["input_ids"].shape[1])
        buf = self.prepare(params.n, prompt_len + params.max_new_tokens, keep_probs)
        start = time.perf_counter()
        buf.state.load(params, stop_ids, pad_id, inputs["input_ids"])
        buf.prompt_len.fill_(prompt_len)
        logits = self._prefill(inputs, buf).expand(params.n, -1).contiguous()
        buf.token.copy_(self.sampler(logits, buf.noise.exponential_(), buf.state))
        if on_chunk is not None:
            on_chunk(1)
        remaining = params.max_new_tokens - 1
        while remaining > 0 and not bool(buf.state.finished.all()):
            if self.use_graphs:
                buf.graph.replay()  # a whole chunk; steps past max_new_tokens find every row finished
            else:
                self._decode_chunk(buf, min(CHUNK, remaining))
            if on_chunk is not None:
                on_chunk(min(CHUNK, remaining))
            remaining -= CHUNK
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return buf.state, time.perf_counter() - start


@dataclasses.dataclass
class _Buffers:
    """Static inputs, caches and sampler state for one (batch, cache length): what a captured graph reads/writes."""

    token: torch.Tensor
    pos: torch.Tensor
    prompt_len: torch.Tensor
    arange: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    noise: torch.Tensor
    caches: list[tuple[torch.Tensor, torch.Tensor]]
    state: SamplerState
    graph: Any = None
    prefills: dict[int, _PrefillGraph] = dataclasses.field(default_factory=dict)

    @classmethod
    def allocate(cls, dec: FastDecoder, batch: int, length: int, keep_probs: bool) -> _Buffers:
        device, dtype = dec.device, dec.lm.dtype
        cos, sin = dec._rope_table(length)
        shape = (batch, dec.n_kv, length, dec.head_dim)
        caches = [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
                  for _ in dec.layers]  # fmt: skip
        # Records have room for the steps a last chunk runs past max_new_tokens.
        state = SamplerState.allocate(batch, dec.lm.vocab_size, length + CHUNK, device, keep_probs)
        return cls(
            token=torch.zeros(batch, dtype=torch.int64, device=device),
            pos=torch.zeros(1, dtype=torch.int64, device=device),
            prompt_len=torch.zeros((), dtype=torch.int64, device=device),
            arange=torch.arange(length, device=device),
            cos=cos,
            sin=sin,
            noise=torch.ones(batch, dec.lm.vocab_size, device=device),
            caches=caches,
            state=state,
        )

    def prefill(self, dec: FastDecoder, input_ids: torch.Tensor) -> torch.Tensor:
        """Run the prompt pass through a CUDA graph for its length bucket (captured on first use); (1, V) logits."""
        length = input_ids.shape[1]
        steps = min(self.arange.numel(), max(16, 1 << math.ceil(math.log2(length))))
        if steps not in self.prefills:
            ids = torch.zeros(1, steps, dtype=torch.int64, device=self.token.device)
            last = torch.zeros(1, dtype=torch.int64, device=self.token.device)
            stream = torch.cuda.Stream(self.token.device)
            stream.wait_stream(torch.cuda.current_stream(self.token.device))
            with torch.cuda.stream(stream):
                _prefill_body(dec, self, ids, last)
            torch.cuda.current_stream(self.token.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = _prefill_body(dec, self, ids, last)
            self.prefills[steps] = _PrefillGraph(graph, ids, last, logits)
        pg = self.prefills[steps]
        pg.ids.zero_()
        pg.ids[:, :length].copy_(input_ids[:1])
        pg.last.fill_(length - 1)
        pg.graph.replay()
        return pg.logits

    def capture(self, dec: FastDecoder) -> None:
        """Capture CHUNK decode steps in a CUDA graph (after warm-up runs that also compile the kernels).

        The warm-up and capture run on neutral state; every real call loads its own state afterwards.
        """
        start = time.perf_counter()
        dummy = torch.zeros(1, 1, dtype=torch.int64)
        self.state.load(SamplingParams(max_new_tokens=1), dec.lm.eos_token_ids, 0, dummy)
        stream = torch.cuda.Stream(self.token.device)
        stream.wait_stream(torch.cuda.current_stream(self.token.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # compiles (or finds that it cannot) and warms the kernels outside the capture
                dec._decode_chunk(self, 1)
        torch.cuda.current_stream(self.token.device).wait_stream(stream)
        torch.cuda.synchronize(self.token.device)
        warm = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            dec._decode_chunk(self, CHUNK)
        torch.cuda.synchronize(self.token.device)
        self.graph = graph
        key = f"b={self.token.shape[0]} L={self.arange.numel()}"
        dec.setup_seconds[f"compile+warm-up {key}"] = warm - start
        dec.setup_seconds[f"capture {key}"] = time.perf_counter() - warm


@dataclasses.dataclass
class _PrefillGraph:
    """A captured prompt pass for prompts of up to ``ids.shape[1]`` tokens (padded; causal, so padding is harmless:
    it only writes cache positions that decoding overwrites before reading)."""

    graph: Any
    ids: torch.Tensor  # (1, T) int64
    last: torch.Tensor  # (1,) int64: index of the prompt's last token
    logits: torch.Tensor  # (1, V) float32


def _prefill_body(dec: FastDecoder, buf: _Buffers, ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    steps = ids.shape[1]
    pos = buf.arange[:steps]
    mask = torch.where(buf.arange.unsqueeze(0) <= pos.unsqueeze(1), 0.0, NEG_INF)
    h = dec._run_layers(dec.embed(ids), buf, buf.cos[:steps], buf.sin[:steps], mask, pos, 1, layer_step)
    logits = F.linear(h.index_select(1, last)[:, 0], dec.lm_head).float()
    rows = buf.token.shape[0]
    if rows > 1:
        for k_cache, v_cache in buf.caches:
            k_cache[1:, :, :steps].copy_(k_cache[:1, :, :steps].expand(rows - 1, -1, -1, -1))
            v_cache[1:, :, :steps].copy_(v_cache[:1, :, :steps].expand(rows - 1, -1, -1, -1))
    return logits


def _bucket(length: int) -> int:
    """Static cache length for ``length`` positions: a power of two, at least 256, so that graphs are reused."""
    return max(256, 1 << math.ceil(math.log2(length)))


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def get_fast_decoder(lm: LoadedModel) -> FastDecoder:
    """The FastDecoder of ``lm``, built on first use and kept with the model (explicit: lm.fast_decoder)."""
    decoder = getattr(lm, "fast_decoder", None)
    if decoder is None:
        decoder = FastDecoder(lm)
        lm.fast_decoder = decoder
    return decoder
