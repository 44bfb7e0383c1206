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
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from smolkit.models import LoadedModel, cache_dir
from smolkit.params import SamplingParams

__all__ = ["FastDecoder", "compile_cache_dir", "fast_path_problem", "get_fast_decoder"]

CHUNK = 16
"""Decode steps per CUDA graph replay: the host checks for finished sequences once per chunk."""
TOP_RECORDS = 5
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
) -> torch.Tensor:
    """One decoder layer for one new token per row. x: (B, H); caches: (B, n_kv, L, head_dim), written at ``pos``."""
    batch = x.shape[0]
    head_dim = k_cache.shape[-1]
    qkv = F.linear(_rms_norm(x, ln1, eps), wqkv)
    q, k, v = qkv.split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
    q = _rope(q.view(batch, n_heads, head_dim), cos, sin)
    k = _rope(k.view(batch, n_kv, head_dim), cos, sin)
    k_cache.index_copy_(2, pos, k.unsqueeze(2))
    v_cache.index_copy_(2, pos, v.view(batch, n_kv, 1, head_dim))
    group = n_heads // n_kv
    q = q.view(batch, n_kv, group, head_dim)
    scores = torch.matmul(q, k_cache.transpose(-1, -2)).float() * (head_dim**-0.5) + mask
    attn = torch.matmul(torch.softmax(scores, dim=-1).to(v_cache.dtype), v_cache)
    x = x + F.linear(attn.reshape(batch, n_heads * head_dim), wo)
    gate, up = F.linear(_rms_norm(x, ln2, eps), wgu).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, wd)


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
    stop_ids: torch.Tensor  # (S,) int64, EOS and stop tokens, padded with -1
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
    def allocate(cls, batch: int, vocab: int, max_len: int, stops: int, device: torch.device, keep_probs: bool):
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
            stop_ids=z(stops, dtype=torch.int64),
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
        stops = torch.full((self.stop_ids.numel(),), -1, dtype=torch.int64)
        stops[: len(stop_ids)] = torch.tensor(stop_ids, dtype=torch.int64)
        self.stop_ids.copy_(stops)
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


def sample_step(logits: torch.Tensor, noise: torch.Tensor, s: SamplerState) -> torch.Tensor:
    """Apply transformers' stages to ``logits`` (B, V) float32, draw one token per row, record it, advance.

    ``noise`` (B, V) holds Exp(1) draws: argmax(p / noise) is a draw from p (the exponential race, equivalent to
    multinomial sampling), made by the caller with torch's own generator so that seeds and CUDA graphs behave.

    Stage by stage as transformers' processors compute them (RepetitionPenaltyLogitsProcessor,
    MinNewTokensLengthLogitsProcessor, smolkit's presence/frequency processors, TemperatureLogitsWarper,
    TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper), with neutral values where a stage is off. Rows already
    finished emit the pad token and stop changing. Returns the new tokens (B,).
    """
    raw = logits
    # repetition penalty: multiplicative, over prompt and generated tokens, at most once per token
    penalised = torch.where(raw > 0, raw / s.repetition, raw * s.repetition)
    scores = torch.where(s.seen, penalised, raw)
    # min_tokens: EOS and stop tokens blocked while fewer than min_tokens tokens exist
    vocab = raw.shape[-1]
    slots = torch.where(s.stop_ids >= 0, s.stop_ids, vocab)  # -1 pads the list: send them past the vocabulary
    is_stop = torch.zeros(vocab + 1, dtype=torch.bool, device=raw.device).index_fill_(0, slots, True)[:vocab]
    scores = torch.where(is_stop & (s.step < s.min_tokens), NEG_INF, scores)
    # presence and frequency: additive, generated tokens only
    scores = scores - s.presence * (s.counts > 0) - s.frequency * s.counts
    greedy_scores = scores
    # temperature
    scores = scores / s.temperature
    # top_k: keep tokens >= the k-th largest (ties kept), as TopKLogitsWarper
    sorted_scores, sorted_ids = torch.sort(scores, dim=-1, descending=False)
    k = s.top_k.clamp(min=1, max=vocab)
    kth = sorted_scores.gather(-1, (vocab - k).expand(scores.shape[0], 1))
    kth = torch.where(s.top_k > 0, kth, NEG_INF)
    scores = torch.where(scores < kth, NEG_INF, scores)
    sorted_scores = torch.where(sorted_scores < kth, NEG_INF, sorted_scores)
    # top_p: drop the least likely tokens whose cumulative mass is <= 1 - top_p, keep at least one, as TopPLogitsWarper
    cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - s.top_p)
    remove_sorted[..., -1] = False
    remove_sorted &= s.top_p < 1
    remove = torch.zeros_like(remove_sorted).scatter(-1, sorted_ids, remove_sorted)
    scores = scores.masked_fill(remove, NEG_INF)
    # min_p: drop tokens below min_p x the top probability, as MinPLogitsWarper
    probs = torch.softmax(scores, dim=-1)
    scores = torch.where(probs < s.min_p * probs.amax(-1, keepdim=True), NEG_INF, scores)
    probs = torch.softmax(scores, dim=-1)
    # the draw: exponential race (argmax p / E, E ~ Exp(1)) is a draw from p; greedy takes the argmax
    race = probs / noise
    token = torch.where(s.greedy, greedy_scores.argmax(-1), race.argmax(-1))
    shown = torch.where(s.greedy, torch.softmax(greedy_scores, dim=-1), probs)  # what a step record reports

    active = ~s.finished
    token = torch.where(active, token, s.pad_id)
    index = s.step.view(1)
    s.tokens.index_copy_(1, index, token.view(-1, 1))
    chosen = shown.gather(-1, token.view(-1, 1))
    s.probs.index_copy_(1, index, chosen)
    rank = (raw > raw.gather(-1, token.view(-1, 1))).sum(-1, keepdim=True)
    s.ranks.index_copy_(1, index, rank)
    s.entropy.index_copy_(1, index, _entropy_bits(shown).view(-1, 1))
    top_p_vals, top_i = torch.topk(shown, TOP_RECORDS, dim=-1)
    s.top_ids.index_copy_(1, index, top_i.unsqueeze(1))
    s.top_probs.index_copy_(1, index, top_p_vals.unsqueeze(1))
    if s.full_probs is not None:
        s.full_probs.index_copy_(1, index, shown.unsqueeze(1))
    one = active.float().view(-1, 1)
    s.counts.scatter_add_(1, token.view(-1, 1), one)
    s.seen.scatter_(1, token.view(-1, 1), active.view(-1, 1) | s.seen.gather(1, token.view(-1, 1)))
    s.step.add_(1)
    stopped = (token.view(-1, 1) == s.stop_ids.view(1, -1)).any(-1)
    s.finished.copy_(s.finished | stopped | (s.step >= s.max_new))
    return token


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
        self.layer_fn: Callable[..., torch.Tensor] = layer_step
        self.sample_fn: Callable[..., torch.Tensor] = sample_step
        if self.compile:
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", compile_cache_dir())
            self.layer_fn = torch.compile(layer_step, fullgraph=True, dynamic=False)
            self.sample_fn = torch.compile(sample_step, fullgraph=True, dynamic=False)
        self._buffers: dict[tuple[int, int, bool], _Buffers] = {}
        self.setup_seconds: dict[str, float] = {}

    # -- pieces ------------------------------------------------------------------------------------------------

    def _rope_table(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(length, device=self.device).unsqueeze(0)
        dummy = torch.zeros(1, dtype=self.lm.dtype, device=self.device)
        cos, sin = self.rotary(dummy, positions)
        return cos[0], sin[0]  # (length, head_dim)

    def _forward_step(self, buf: _Buffers) -> torch.Tensor:
        """Logits (B, V) float32 for the tokens in ``buf.token`` at position ``buf.pos`` (one decode step)."""
        x = self.embed(buf.token)
        cos = buf.cos.index_select(0, buf.pos).unsqueeze(1)  # (1, 1, head_dim), broadcast over rows and heads
        sin = buf.sin.index_select(0, buf.pos).unsqueeze(1)
        mask = torch.where(buf.arange <= buf.pos, 0.0, NEG_INF)
        for layer, (k_cache, v_cache) in zip(self.layers, buf.caches, strict=True):
            x = self.layer_fn(
                x, cos, sin, mask, buf.pos, k_cache, v_cache,
                layer.ln1, layer.wqkv, layer.wo, layer.ln2, layer.wgu, layer.wd,
                self.eps, self.n_heads, self.n_kv,
            )  # fmt: skip
        return F.linear(_rms_norm(x, self.norm.weight, self.eps), self.lm_head).float()

    def _decode_chunk(self, buf: _Buffers, steps: int) -> None:
        for _ in range(steps):
            # Past max_new_tokens (the tail of the last chunk) every row is finished: clamp to stay in the cache.
            buf.pos.copy_((buf.prompt_len + buf.state.step - 1).clamp(max=buf.arange.numel() - 1))
            logits = self._forward_step(buf)
            buf.token.copy_(self.sample_fn(logits, buf.noise.exponential_(), buf.state))

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
        """Run the prompt through the transformers model once (it handles images, masks, everything), copy its KV
        cache into the static cache for every row, and return the last position's logits (1, V) float32."""
        out = self.lm.model(**inputs, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        length = inputs["input_ids"].shape[1]
        for (k_cache, v_cache), layer in zip(buf.caches, cache.layers, strict=True):
            k_cache[:, :, :length].copy_(layer.keys.expand(k_cache.shape[0], -1, -1, -1))
            v_cache[:, :, :length].copy_(layer.values.expand(v_cache.shape[0], -1, -1, -1))
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
    ) -> tuple[SamplerState, float]:
        """Generate ``params.n`` continuations of the single prompt in ``inputs``; returns the filled state (tokens
        and step records on the device) and the seconds taken."""
        prompt_len = int(inputs["input_ids"].shape[1])
        buf = self.prepare(params.n, prompt_len + params.max_new_tokens, keep_probs)
        start = time.perf_counter()
        buf.state.load(params, stop_ids, pad_id, inputs["input_ids"])
        buf.prompt_len.fill_(prompt_len)
        logits = self._prefill(inputs, buf).expand(params.n, -1).contiguous()
        buf.token.copy_(self.sample_fn(logits, buf.noise.exponential_(), buf.state))
        for _ in range(math.ceil((params.max_new_tokens - 1) / CHUNK)):
            if bool(buf.state.finished.all()):
                break
            if self.use_graphs:
                buf.graph.replay()
            else:
                self._decode_chunk(buf, CHUNK)
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

    @classmethod
    def allocate(cls, dec: FastDecoder, batch: int, length: int, keep_probs: bool) -> _Buffers:
        device, dtype = dec.device, dec.lm.dtype
        cos, sin = dec._rope_table(length)
        shape = (batch, dec.n_kv, length, dec.head_dim)
        caches = [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
                  for _ in dec.layers]  # fmt: skip
        max_stops = 8 + len(dec.lm.eos_token_ids)
        # Records have room for the steps a last chunk runs past max_new_tokens.
        state = SamplerState.allocate(batch, dec.lm.vocab_size, length + CHUNK, max_stops, device, keep_probs)
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
            for _ in range(2):
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
