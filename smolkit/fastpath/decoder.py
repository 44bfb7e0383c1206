"""FastDecoder: generate with the fast path's layers and sampler over static buffers, chunks of steps as CUDA graphs.

A FastDecoder is built once per loaded model. For each (batch, cache length) it owns one set of static buffers (the
KV cache, the sampler's settings, progress and records) and, on CUDA, the CUDA graph of CHUNK decode steps over
them; for each prompt-length bucket, a graph of the prompt pass. ``generate`` loads a call's parameters into the
buffers, runs the prompt pass and replays chunks until every row has finished, and returns plain CPU lists
(``FastResult``): the caller never sees the buffers.
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

from smolkit.fastpath.compiled import MaybeCompiled, vary
from smolkit.fastpath.layers import SMALL_BATCH, Dims, layer_step, rms_norm, weights_of
from smolkit.fastpath.sampler import Progress, Records, Sampler, Settings
from smolkit.fastpath.support import compile_cache_dir, fast_path_problem, has_triton, text_config
from smolkit.params import SamplingParams

__all__ = ["CHUNK", "FastDecoder", "FastResult", "get_fast_decoder"]

CHUNK = 32
"""Decode steps per CUDA graph replay: the host checks for finished sequences once per chunk."""
COMPILE_AFTER_S = 5.0
"""With ``compile=None`` on a GPU the decoder starts with the plain PyTorch layers and sampler inside its CUDA
graphs (the first token about a second after load) and compiles them once its decode steps have taken this many
seconds in all (the graphs are then captured again). Measured on the H200 (bench/RESULTS.md, third round):
compiling costs the call that does it about 6 s with a warm compile cache (12-17 s with none) and makes a decode
step about three times as fast (batch 1: 1.02 against 3.06 ms), so it is bought once going without has cost a
few seconds, about what buying costs (the ski-rental rule): a notebook that generates a few thousand tokens never
pays it, a long benchmark pays it once."""
NEG_INF = float("-inf")


@dataclasses.dataclass(frozen=True)
class FastResult:
    """What one fast-path ``generate`` call produced, per row (lists of max_new_tokens entries, padded after the
    first stop token), copied to the host once; ``full_probs`` (rows, steps, vocab) only when asked for."""

    tokens: list[list[int]]
    probs: list[list[float]]
    ranks: list[list[int]]
    entropy: list[list[float]]
    top_ids: list[list[list[int]]]
    top_probs: list[list[list[float]]]
    seconds: float
    full_probs: torch.Tensor | None = None

    @classmethod
    def of(cls, r: Records, rows: int, steps: int, seconds: float) -> FastResult:
        def host(t: torch.Tensor) -> list:
            return t[:rows, :steps].cpu().tolist()

        full = r.full_probs[:rows, :steps].cpu() if r.full_probs is not None else None
        return cls(host(r.tokens), host(r.probs), host(r.ranks), host(r.entropy), host(r.top_ids),
                   host(r.top_probs), seconds, full)  # fmt: skip


@dataclasses.dataclass
class _Buffers:
    """Static inputs, caches and sampler state for one (batch, cache length): what a captured graph reads/writes."""

    token: torch.Tensor  # (B,) the tokens to feed next
    pos: torch.Tensor  # (1,) their position
    prompt_len: torch.Tensor  # ()
    arange: torch.Tensor  # (L,)
    cos: torch.Tensor  # (L, head_dim)
    sin: torch.Tensor
    noise: torch.Tensor  # (B, V) Exp(1) draws, refilled every step (the PyTorch sampler)
    generator: torch.Generator  # the only random stream the steps draw from, seeded by each call (_seed)
    seed: torch.Tensor  # (1,) int64: the fused sampler's random stream, drawn anew every call
    caches: list[tuple[torch.Tensor, torch.Tensor]]
    settings: Settings
    progress: Progress
    records: Records
    graph: Any = None
    prefills: dict[int, _PrefillGraph] = dataclasses.field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.token.shape[0]


@dataclasses.dataclass
class _PrefillGraph:
    """A captured prompt pass for prompts of up to ``ids.shape[1]`` tokens (padded; causal, so padding is harmless:
    it only writes cache positions that decoding overwrites before reading)."""

    graph: Any
    ids: torch.Tensor  # (1, T) int64
    last: torch.Tensor  # (1,) int64: index of the prompt's last token
    logits: torch.Tensor  # (1, V) float32


class FastDecoder:
    """Runs ``generate`` for one loaded model with the fast path; built once per model (see get_fast_decoder)."""

    def __init__(
        self, lm: Any, compile: bool | None = None, use_graphs: bool | None = None, fused: bool = False,
        dynamic: bool = True,
    ):  # fmt: skip
        problem = fast_path_problem(lm)
        if problem:
            raise ValueError(f"the fast path cannot run {lm.name!r}: {problem}")
        self.lm, self.device, self.dtype = lm, lm.device, lm.dtype
        on_cuda = self.device.type == "cuda"
        self.use_graphs = on_cuda if use_graphs is None else use_graphs
        self.tiered = compile is None and on_cuda and has_triton()  # compile later, when it pays (COMPILE_AFTER_S)
        self.compile, self.dynamic = bool(compile), dynamic
        self.plain_decode_seconds = 0.0  # decode time spent uncompiled, towards COMPILE_AFTER_S
        decoder, config = lm.model.get_decoder(), text_config(lm.model)
        n_heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        self.dims = Dims(n_heads, config.num_key_value_heads, head_dim, config.rms_norm_eps)
        self.embed, self.norm, self.rotary = decoder.embed_tokens, decoder.norm, decoder.rotary_emb
        self.lm_head = lm.model.get_output_embeddings().weight
        self.vocab = int(self.lm_head.shape[0])
        self.layers = [weights_of(layer) for layer in decoder.layers]
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", compile_cache_dir())
        os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(compile_cache_dir(), "triton"))
        self._build_pieces()
        # The fused Triton sampler only when asked for (on CUDA, once it passes its check on the device): on the H200
        # it was slower than the PyTorch sampler at batch 1 (350 vs 253 us a step) and 8-29x slower when top_p keeps
        # thousands of tokens (its window moves), faster only at batch 64 with ordinary settings (bench/RESULTS.md).
        self.fused, self.fused_problem = _fused_sampler(self.device, self.vocab, fused)
        self._buffers: dict[tuple[int, int, bool], _Buffers] = {}
        self.setup_seconds: dict[str, float] = {}

    def _build_pieces(self) -> None:
        # One compiled graph for a decoder layer, reused by every layer; ``dynamic``: also by every batch size > 1
        # (up to SMALL_BATCH and above it) and cache length, so a new size costs no compile (see decode_dims).
        self.layer = MaybeCompiled(layer_step, self.compile, dynamic=self.dynamic)
        self.sampler = Sampler(self.compile)

    def _compile_when_it_pays(self) -> None:
        """Switch a tiered decoder to compiled pieces once uncompiled decoding took COMPILE_AFTER_S; the decode
        graphs captured over the plain pieces are dropped and captured again on their next use."""
        if self.tiered and not self.compile and self.plain_decode_seconds >= COMPILE_AFTER_S:
            self.compile = True
            self._build_pieces()
            for buf in self._buffers.values():
                buf.graph = None

    @property
    def tier(self) -> str:
        """What runs the decode steps: "compiled" or "plain" (PyTorch's own kernels), on CUDA inside CUDA graphs."""
        return "compiled" if self.compile else "plain"

    @property
    def compiled_pieces(self) -> list[MaybeCompiled]:
        return [self.layer, *self.sampler.pieces.values()]

    @property
    def compile_seconds(self) -> dict[str, float]:
        """How long the first call of each compiled piece took (compiling it, or loading it from the cache)."""
        return {p.name: round(p.first_call_seconds, 2) for p in self.compiled_pieces if p.first_call_seconds}

    @property
    def compile_problems(self) -> dict[str, str]:
        """What torch.compile failed on (those parts run eagerly inside the CUDA graph); empty when all compiled."""
        return {p.name: p.problem for p in self.compiled_pieces if p.problem}

    # -- the model's forward: prompt pass and decode steps ------------------------------------------------------

    def _run_layers(self, x: torch.Tensor, buf: _Buffers, rope, mask, pos, rows: int, layer, small: bool):
        delta = torch.zeros_like(x)
        for w, (k_cache, v_cache) in zip(self.layers, buf.caches, strict=True):
            cache = (k_cache[:rows], v_cache[:rows])
            if layer is self.layer and layer.varies:
                decode_dims(x, delta, mask, cache)
            x, delta = layer(x, delta, rope, mask, pos, cache, w, self.dims, small)
        return rms_norm(x + delta, self.norm.weight, self.dims.eps)

    def _forward_step(self, buf: _Buffers) -> torch.Tensor:
        """Logits (B, V) float32 for the tokens in ``buf.token`` at position ``buf.pos`` (one decode step)."""
        x = self.embed(buf.token).unsqueeze(1)  # (B, 1, H)
        rope = (buf.cos.index_select(0, buf.pos), buf.sin.index_select(0, buf.pos))  # broadcast over rows, heads
        mask = torch.where(buf.arange <= buf.pos, 0.0, NEG_INF).unsqueeze(0)  # (1, L)
        small = self.compile and buf.rows <= SMALL_BATCH
        h = self._run_layers(x, buf, rope, mask, buf.pos, buf.rows, self.layer, small)
        return F.linear(h[:, -1], self.lm_head).float()

    def _prompt_pass(self, buf: _Buffers, ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Fill row 0's cache with the prompt ``ids`` (1, T), copy it to every row; the logits (1, V) after ``last``."""
        steps = ids.shape[1]
        pos = buf.arange[:steps]
        mask = torch.where(buf.arange.unsqueeze(0) <= pos.unsqueeze(1), 0.0, NEG_INF)
        rope = (buf.cos[:steps], buf.sin[:steps])
        h = self._run_layers(self.embed(ids), buf, rope, mask, pos, 1, layer_step, False)
        logits = F.linear(h.index_select(1, last)[:, 0], self.lm_head).float()
        if buf.rows > 1:
            for k_cache, v_cache in buf.caches:
                k_cache[1:, :, :steps].copy_(k_cache[:1, :, :steps].expand(buf.rows - 1, -1, -1, -1))
                v_cache[1:, :, :steps].copy_(v_cache[:1, :, :steps].expand(buf.rows - 1, -1, -1, -1))
        return logits

    def _decode_chunk(self, buf: _Buffers, steps: int) -> None:
        for _ in range(steps):
            # Past max_new_tokens (the tail of the last chunk) every row is finished: clamp to stay in the cache.
            buf.pos.copy_((buf.prompt_len + buf.progress.step - 1).clamp(0, buf.arange.numel() - 1))
            logits = self._forward_step(buf)
            buf.token.copy_(self._sample(logits, buf))

    def _sample(self, logits: torch.Tensor, buf: _Buffers) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(logits, buf.seed, buf.settings, buf.progress, buf.records)
        noise = buf.noise.exponential_(generator=buf.generator)
        return self.sampler(logits, noise, buf.settings, buf.progress, buf.records)

    @property
    def sampler_name(self) -> str:
        return "fused (Triton)" if self.fused is not None else "PyTorch"

    # -- buffers and graphs --------------------------------------------------------------------------------------

    def _rope_table(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(length, device=self.device).unsqueeze(0)
        cos, sin = self.rotary(torch.zeros(1, dtype=self.dtype, device=self.device), positions)
        return cos[0], sin[0]  # (length, head_dim)

    def _allocate(self, batch: int, length: int, keep_probs: bool) -> _Buffers:
        cos, sin = self._rope_table(length)
        shape = (batch, self.dims.n_kv, length, self.dims.head_dim)
        caches = [(torch.zeros(shape, dtype=self.dtype, device=self.device),
                   torch.zeros(shape, dtype=self.dtype, device=self.device)) for _ in self.layers]  # fmt: skip
        return _Buffers(
            token=torch.zeros(batch, dtype=torch.int64, device=self.device),
            pos=torch.zeros(1, dtype=torch.int64, device=self.device),
            prompt_len=torch.zeros((), dtype=torch.int64, device=self.device),
            arange=torch.arange(length, device=self.device),
            cos=cos,
            sin=sin,
            noise=torch.ones(batch, self.vocab, device=self.device),
            generator=torch.Generator(device=self.device),
            seed=torch.zeros(1, dtype=torch.int64, device=self.device),
            caches=caches,
            settings=Settings.allocate(self.vocab, self.device),
            progress=Progress.allocate(batch, self.vocab, self.device),
            # room for the steps a last chunk runs past max_new_tokens
            records=Records.allocate(batch, self.vocab, length + CHUNK, self.device, keep_probs),
        )

    @torch.inference_mode()
    def prepare(self, batch: int, positions: int, keep_probs: bool = False) -> _Buffers:
        """Buffers (and, on CUDA, the captured graph) for ``batch`` rows and ``positions`` (prompt + new tokens)."""
        key = (batch, _bucket(positions), keep_probs)
        if key not in self._buffers:
            self._buffers[key] = self._allocate(batch, key[1], keep_probs)
        buf = self._buffers[key]
        if self.use_graphs and buf.graph is None:
            self._capture_decode(buf)
        return buf

    def _capture_decode(self, buf: _Buffers) -> None:
        """Capture CHUNK decode steps in a CUDA graph (after warm-up runs that also compile the kernels).

        The warm-up and capture run on neutral settings and draw from the buffers' generator; every real call loads
        its own settings and seeds the generator afterwards. The graph reads the generator's seed and offset at each
        replay (``register_generator_state``: torch's graph-safe RNG), so a replay draws what the same steps run
        eagerly would draw after the same seeding.
        """
        start = time.perf_counter()
        _on_side_stream(self.device, lambda: self._warm_up(buf))
        warm = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(buf.generator)
        with torch.cuda.graph(graph):
            self._decode_chunk(buf, CHUNK)
        torch.cuda.synchronize(self.device)
        buf.graph = graph
        key = f"b={buf.rows} L={buf.arange.numel()}"
        self.setup_seconds[f"compile+warm-up {key}"] = warm - start
        self.setup_seconds[f"capture {key}"] = time.perf_counter() - warm

    def _warm_up(self, buf: _Buffers) -> None:
        """Two decode steps on neutral settings: they compile the pieces (compiled tier) before a capture."""
        buf.settings.load(SamplingParams(max_new_tokens=1), self.lm.eos_token_ids, 0)
        buf.progress.reset(torch.zeros(1, 1, dtype=torch.int64))
        for _ in range(2):
            self._decode_chunk(buf, 1)

    def _prompt_graph(self, buf: _Buffers, length: int) -> _PrefillGraph:
        """The captured prompt pass for prompts of ``length`` tokens: one graph per power-of-two bucket."""
        steps = min(buf.arange.numel(), max(16, 1 << math.ceil(math.log2(length))))
        if steps not in buf.prefills:
            ids = torch.zeros(1, steps, dtype=torch.int64, device=self.device)
            last = torch.zeros(1, dtype=torch.int64, device=self.device)
            _on_side_stream(self.device, lambda: self._prompt_pass(buf, ids, last))
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = self._prompt_pass(buf, ids, last)
            buf.prefills[steps] = _PrefillGraph(graph, ids, last, logits)
        return buf.prefills[steps]

    @torch.inference_mode()
    def _prefill(self, inputs: dict[str, torch.Tensor], buf: _Buffers) -> torch.Tensor:
        """Fill the static cache with the prompt for every row; return the last position's logits (1, V) float32.

        A text prompt runs through the kit's own layers (as a CUDA graph on CUDA); a prompt with an image runs
        through the transformers model (vision tower and all), whose KV cache is then copied in.
        """
        ids = inputs["input_ids"][:1]
        length = ids.shape[1]
        if set(inputs) <= {"input_ids", "attention_mask"}:
            if not self.use_graphs:
                return self._prompt_pass(buf, ids, torch.tensor([length - 1], device=self.device))
            pg = self._prompt_graph(buf, length)
            pg.ids.zero_()
            pg.ids[:, :length].copy_(ids)
            pg.last.fill_(length - 1)
            pg.graph.replay()
            return pg.logits
        out = self.lm.model(**inputs, use_cache=True, logits_to_keep=1)
        for (k_cache, v_cache), layer in zip(buf.caches, out.past_key_values.layers, strict=True):
            k_cache[:, :, :length].copy_(layer.keys.expand(buf.rows, -1, -1, -1))
            v_cache[:, :, :length].copy_(layer.values.expand(buf.rows, -1, -1, -1))
        return out.logits[:, -1].float()

    # -- generate ------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        inputs: dict[str, torch.Tensor],
        params: SamplingParams,
        stop_ids: list[int],
        pad_id: int,
        keep_probs: bool = False,
        on_chunk: Callable[[int], Any] | None = None,
    ) -> FastResult:
        """Generate ``params.n`` continuations of the single prompt in ``inputs``, drawing from ``params.seed``
        (see ``_seed``). ``on_chunk(steps)`` is told of each chunk done (a progress bar), between chunks only:
        nothing waits on the host inside one."""
        prompt_len = int(inputs["input_ids"].shape[1])
        self._compile_when_it_pays()
        buf = self.prepare(params.n, prompt_len + params.max_new_tokens, keep_probs)
        start = time.perf_counter()
        buf.settings.load(params, stop_ids, pad_id)
        buf.progress.reset(inputs["input_ids"])
        buf.records.tokens.fill_(pad_id)
        buf.prompt_len.fill_(prompt_len)
        logits = self._prefill(inputs, buf).expand(params.n, -1).contiguous()
        _seed(buf, params.seed)  # after every compile and capture this call may have caused: next, the first draw
        if self.fused is not None:
            buf.seed.random_(generator=buf.generator)  # the fused sampler's stream, from the seeded one
        buf.token.copy_(self._sample(logits, buf))
        if on_chunk is not None:
            on_chunk(1)
        remaining = params.max_new_tokens - 1
        while remaining > 0 and not bool(buf.progress.finished.all()):
            if self.use_graphs:
                buf.graph.replay()  # a whole chunk; steps past max_new_tokens find every row finished
            else:
                self._decode_chunk(buf, min(CHUNK, remaining))
            if on_chunk is not None:
                on_chunk(min(CHUNK, remaining))
            remaining -= CHUNK
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        if not self.compile:
            self.plain_decode_seconds += seconds
        return FastResult.of(buf.records, params.n, params.max_new_tokens, seconds)


def _seed(buf: _Buffers, seed: int | None) -> None:
    """Seed the buffers' generator, the one random stream the steps draw from, for one call: with ``seed``, or,
    unseeded, with a number drawn from torch's global generator (so ``torch.manual_seed`` still makes a session's
    unseeded calls repeat, as it does for transformers' generate). The decoder owns this stream: compiling,
    capturing and the caller's own draws use other streams, so they cannot shift it, and the caller's stream is
    left as it was by a seeded call. On the CPU the draws equal those of ``torch.manual_seed(seed)`` and the same
    steps run on the global generator (the same Mersenne Twister, seeded alike); on CUDA, torch's Philox.

    vLLM's v1 sampler does the same per request (a ``torch.Generator`` seeded from SamplingParams.seed, its
    exponential race drawn from it); its Model Runner V2 keys counter-based noise by (seed, position) in a Triton
    kernel instead, which would change every CPU sample the notebooks show.
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    buf.generator.manual_seed(seed)


def _on_side_stream(device: torch.device, work: Callable[[], Any]) -> None:
    """Run ``work`` on a side stream and wait for it: warm-ups before a CUDA-graph capture must not run on the
    default stream."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        work()
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize(device)


def decode_dims(x: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor, cache: tuple[torch.Tensor, ...]) -> None:
    """The dimensions of a decode step's layer inputs that change between calls: the batch (x, delta and the
    caches: dim 0) and the cache length (the mask's dim 1, the caches' dim 2)."""
    for t in (x, delta, *cache):
        vary(t, 0)
    vary(mask, 1)
    for t in cache:
        vary(t, 2)


def _fused_sampler(device: torch.device, vocab: int, wanted: bool) -> tuple[Any, str | None]:
    """The fused sampler for ``device`` once it passed its self-check there (``fastpath.fused``), else None and
    why; a failed check prints one line and leaves the PyTorch sampler in charge."""
    if not wanted:
        return None, "not asked for"
    if device.type != "cuda" or not has_triton():
        return None, "needs CUDA and Triton"
    try:
        from smolkit.fastpath import fused
    except Exception as err:  # a broken Triton install must not cost the user the fast path
        return None, f"Triton cannot be imported ({type(err).__name__})"
    sampler = fused.FusedSampler()
    problem = fused.self_check_problem(sampler, vocab, device)
    if problem is not None:
        fused.notice(problem)
        return None, problem
    return sampler, None


def _bucket(length: int) -> int:
    """Static cache length for ``length`` positions: a power of two, at least 256, so that graphs are reused."""
    return max(256, 1 << math.ceil(math.log2(length)))


def get_fast_decoder(lm: Any) -> FastDecoder:
    """The FastDecoder of ``lm``, built on first use and kept with the model (explicit: lm.fast_decoder)."""
    if getattr(lm, "fast_decoder", None) is None:
        lm.fast_decoder = FastDecoder(lm)
    return lm.fast_decoder
