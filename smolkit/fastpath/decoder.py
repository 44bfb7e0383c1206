"""FastDecoder: how the fast path replays decode steps: static buffers, CUDA graphs, two tiers, the loop, the seed.

What a step computes is ``model.TextModel`` (embed, layers, norm, lm_head) and ``sampler.Sampler`` (the stages and
the draw); the decoder runs them over static buffers. For each (batch, cache length) it owns one set of buffers (the
KV cache, the sampler's settings, progress and records, and the random generator the draws come from) and, on CUDA,
the CUDA graph of CHUNK decode steps over them; for each prompt-length bucket, a graph of the prompt pass.
``generate`` loads a call's parameters into the buffers, runs the prompt pass, seeds the generator and replays
chunks until every row has finished, and returns plain CPU lists (``FastResult``): the caller never sees the buffers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from smolkit.fastpath.compiled import MaybeCompiled
from smolkit.fastpath.layers import SMALL_BATCH, layer_step
from smolkit.fastpath.model import Cache, Positions, TextModel
from smolkit.fastpath.sampler import Progress, Records, Sampler, Settings
from smolkit.fastpath.support import fast_path_problem, has_triton
from smolkit.params import SamplingParams

__all__ = [
    "CHUNK", "COMPILE_AFTER_ENV", "COMPILE_AFTER_S", "FastDecoder", "FastResult", "compile_after_s", "get_fast_decoder",
]  # fmt: skip

CHUNK = 32
"""Decode steps per CUDA graph replay: the host checks for finished sequences once per chunk."""
COMPILE_AFTER_S = 5.0
"""With ``compile=None`` on a GPU the decoder starts with the plain PyTorch layers and sampler inside its CUDA
graphs (the first token about a second after load) and compiles them once its decode steps have taken this many
seconds in all (the graphs are then captured again). Measured on the H200 (bench/RESULTS.md, third round):
compiling costs the call that does it about 6 s with a warm compile cache (12-17 s with none) and makes a decode
step about three times as fast (batch 1: 1.02 against 3.06 ms), so it is bought once going without has cost a
few seconds, about what buying costs (the ski-rental rule): a notebook that generates a few thousand tokens never
pays it, a long benchmark pays it once. ``SMOLKIT_COMPILE_AFTER_S`` overrides it (``compile_after_s``): the
workshop hub sets "never", so that N kernels sharing a GPU do not each compile in the middle of the session."""
COMPILE_AFTER_ENV = "SMOLKIT_COMPILE_AFTER_S"
NEG_INF = float("-inf")


def compile_after_s(value: str | None = None) -> float:
    """Seconds of plain decoding after which a tiered decoder compiles: ``value`` (default
    $SMOLKIT_COMPILE_AFTER_S) as a number >= 0, or "never" (inf); COMPILE_AFTER_S when unset or empty.

    >>> compile_after_s("never"), compile_after_s("0"), compile_after_s("")
    (inf, 0.0, 5.0)
    >>> compile_after_s("soon")
    Traceback (most recent call last):
    ...
    ValueError: SMOLKIT_COMPILE_AFTER_S must be a number of seconds >= 0 or 'never', got 'soon'
    """
    value = os.environ.get(COMPILE_AFTER_ENV, "") if value is None else value
    if not value.strip():
        return COMPILE_AFTER_S
    if value.strip().lower() == "never":
        return math.inf
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:  # NaN fails this too
        raise ValueError(f"{COMPILE_AFTER_ENV} must be a number of seconds >= 0 or 'never', got {value!r}")
    return seconds


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
    positions: Positions  # 0..L-1 and their rotary tables
    noise: torch.Tensor  # (B, V) Exp(1) draws, refilled every step
    generator: torch.Generator  # the only random stream the steps draw from, seeded by each call (_seed)
    cache: Cache
    settings: Settings
    progress: Progress
    records: Records
    graph: Any = None
    prefills: dict[int, _PrefillGraph] = dataclasses.field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.token.shape[0]

    @property
    def length(self) -> int:
        return self.positions.index.numel()


@dataclasses.dataclass
class _PrefillGraph:
    """A captured prompt pass for prompts of up to ``ids.shape[1]`` tokens (padded; causal, so padding is harmless:
    it only writes cache positions that decoding overwrites before reading)."""

    graph: Any
    ids: torch.Tensor  # (1, T) int64
    last: torch.Tensor  # (1,) int64: index of the prompt's last token
    logits: torch.Tensor  # (1, V) float32


class FastDecoder:
    """Runs ``generate`` for one loaded model with the fast path; built once per model (see get_fast_decoder).

    Building one changes nothing outside it: no environment variable, no global generator (the compile cache's
    location is set where compiling starts, ``compiled.MaybeCompiled``).
    """

    def __init__(self, lm: Any, compile: bool | None = None, use_graphs: bool | None = None, dynamic: bool = True):
        problem = fast_path_problem(lm)
        if problem:
            raise ValueError(f"the fast path cannot run {lm.name!r}: {problem}")
        self.lm, self.device = lm, lm.device
        on_cuda = self.device.type == "cuda"
        self.use_graphs = on_cuda if use_graphs is None else use_graphs
        self.tiered = compile is None and on_cuda and has_triton()  # compile later, when it pays (COMPILE_AFTER_S)
        self.compile, self.dynamic = bool(compile), dynamic
        self.plain_decode_seconds = 0.0  # decode time spent uncompiled, towards COMPILE_AFTER_S
        self.model = TextModel.of(lm.model)
        self._build_pieces()
        self._buffers: dict[tuple[int, int, bool], _Buffers] = {}
        self.setup_seconds: dict[str, float] = {}

    def _build_pieces(self) -> None:
        # One compiled graph for a decoder layer, reused by every layer; ``dynamic``: also by every batch size > 1
        # (up to SMALL_BATCH and above it) and cache length, so a new size costs no compile (model.decode_dims).
        self.layer = MaybeCompiled(layer_step, self.compile, dynamic=self.dynamic)
        self.sampler = Sampler(self.compile)

    def _compile_when_it_pays(self) -> None:
        """Switch a tiered decoder to compiled pieces once uncompiled decoding took ``compile_after_s()`` (read
        here, at each call: the hub's setting); the decode graphs captured over the plain pieces are dropped and
        captured again on their next use."""
        if self.tiered and not self.compile and self.plain_decode_seconds >= compile_after_s():
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

    # -- one decode step: the model's logits, then the sampler's draw ----------------------------------------------

    def _decode_chunk(self, buf: _Buffers, steps: int) -> None:
        for _ in range(steps):
            # Past max_new_tokens (the tail of the last chunk) every row is finished: clamp to stay in the cache.
            buf.pos.copy_((buf.prompt_len + buf.progress.step - 1).clamp(0, buf.length - 1))
            small = self.compile and buf.rows <= SMALL_BATCH
            logits = self.model.decode_logits(buf.token, buf.pos, buf.positions, buf.cache, self.layer, small,
                                              marks=self.layer.varies)  # fmt: skip
            buf.token.copy_(self._sample(logits, buf))

    def _sample(self, logits: torch.Tensor, buf: _Buffers) -> torch.Tensor:
        noise = buf.noise.exponential_(generator=buf.generator)
        return self.sampler(logits, noise, buf.settings, buf.progress, buf.records)

    # -- buffers and graphs --------------------------------------------------------------------------------------

    def _allocate(self, batch: int, length: int, keep_probs: bool) -> _Buffers:
        vocab, device = self.model.vocab, self.device
        return _Buffers(
            token=torch.zeros(batch, dtype=torch.int64, device=device),
            pos=torch.zeros(1, dtype=torch.int64, device=device),
            prompt_len=torch.zeros((), dtype=torch.int64, device=device),
            positions=self.model.positions(length),
            noise=torch.ones(batch, vocab, device=device),
            generator=torch.Generator(device=device),
            cache=self.model.empty_cache(batch, length),
            settings=Settings.allocate(vocab, device),
            progress=Progress.allocate(batch, vocab, device),
            # room for the steps a last chunk runs past max_new_tokens
            records=Records.allocate(batch, vocab, length + CHUNK, device, keep_probs),
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

    def _warm_up(self, buf: _Buffers) -> None:
        """Two decode steps on neutral settings: they compile the pieces (compiled tier) before a capture."""
        buf.settings.load(SamplingParams(max_new_tokens=1), self.lm.eos_token_ids, 0)
        buf.progress.reset(torch.zeros(1, 1, dtype=torch.int64))
        for _ in range(2):
            self._decode_chunk(buf, 1)

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
        key = f"b={buf.rows} L={buf.length}"
        self.setup_seconds[f"compile+warm-up {key}"] = warm - start
        self.setup_seconds[f"capture {key}"] = time.perf_counter() - warm

    def _prompt_graph(self, buf: _Buffers, length: int) -> _PrefillGraph:
        """The captured prompt pass for prompts of ``length`` tokens: one graph per power-of-two bucket."""
        steps = min(buf.length, max(16, 1 << math.ceil(math.log2(length))))
        if steps not in buf.prefills:
            ids = torch.zeros(1, steps, dtype=torch.int64, device=self.device)
            last = torch.zeros(1, dtype=torch.int64, device=self.device)
            _on_side_stream(self.device, lambda: self.model.prompt_logits(ids, last, buf.positions, buf.cache))
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = self.model.prompt_logits(ids, last, buf.positions, buf.cache)
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
                last = torch.tensor([length - 1], device=self.device)
                return self.model.prompt_logits(ids, last, buf.positions, buf.cache)
            pg = self._prompt_graph(buf, length)
            pg.ids.zero_()
            pg.ids[:, :length].copy_(ids)
            pg.last.fill_(length - 1)
            pg.graph.replay()
            return pg.logits
        out = self.lm.model(**inputs, use_cache=True, logits_to_keep=1)
        for (k_cache, v_cache), layer in zip(buf.cache, out.past_key_values.layers, strict=True):
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
    capturing and the caller's own draws use other streams or come before the seeding, so they cannot shift it,
    and a seeded call leaves the caller's stream as it was. On the CPU the draws equal those of
    ``torch.manual_seed(seed)`` followed by the same steps on the global generator (the same Mersenne Twister,
    seeded alike); on CUDA they come from torch's Philox.

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


def _bucket(length: int) -> int:
    """Static cache length for ``length`` positions: a power of two, at least 256, so that graphs are reused."""
    return max(256, 1 << math.ceil(math.log2(length)))


def get_fast_decoder(lm: Any) -> FastDecoder:
    """The FastDecoder of ``lm``, built on first use and kept with the model (explicit: lm.fast_decoder)."""
    if getattr(lm, "fast_decoder", None) is None:
        lm.fast_decoder = FastDecoder(lm)
    return lm.fast_decoder
