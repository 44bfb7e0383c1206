"""Generate text with SamplingParams and keep a record of every step: what was picked, how likely, among what.

The work is done by transformers' own ``model.generate`` with the translated GenerationConfig and smolkit's extra
processors; this module adds the seed, n samples in one batch, and per-step records read from generate's processed
scores (``output_scores``, what it sampled from) and raw logits (``output_logits``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from tqdm.auto import tqdm
from transformers.generation.streamers import BaseStreamer

from smolkit import _checks, cgroups, fastpath, gpu_share
from smolkit.distribution import TokenProb, prepare_inputs
from smolkit.hf import for_model
from smolkit.models import LoadedModel
from smolkit.params import SamplingParams

__all__ = ["GenerationResult", "Sample", "Step", "generate", "seeded"]

TOP_ALTERNATIVES = 5


@dataclasses.dataclass(frozen=True)
class Step:
    """One generated token and the distribution it was drawn from.

    ``prob`` and ``top`` come from that distribution (for greedy decoding: softmax of the penalised logits, whose
    argmax is taken); ``rank`` is the token's place under the model's raw logits (0 = the model's first choice);
    ``entropy`` is in bits.
    """

    index: int
    token_id: int
    token: str
    prob: float
    rank: int
    entropy: float
    top: tuple[TokenProb, ...]


class StepRecords(Sequence[Step]):
    """The Step records of one sample, as arrays, turned into Step objects on first access: a batch of 64 samples of
    64 tokens holds 4,096 steps and 20,480 alternatives, which would cost more to build than to generate."""

    def __init__(
        self,
        lm: LoadedModel,
        token_ids: list[int],
        probs: list[float],
        ranks: list[int],
        entropy: list[float],
        top_ids: list[list[int]],
        top_probs: list[list[float]],
    ):
        self._lm = lm
        self._columns = (token_ids, probs, ranks, entropy, top_ids, top_probs)
        self._steps: tuple[Step, ...] | None = None

    def _build(self) -> tuple[Step, ...]:
        if self._steps is None:
            token_ids, probs, ranks, entropy, top_ids, top_probs = self._columns
            needed = [*token_ids, *(i for top in top_ids for i in top)]
            texts = dict(zip(needed, self._lm.token_texts(needed), strict=True))
            self._steps = tuple(
                Step(t, token, texts[token], probs[t], ranks[t], entropy[t],
                     tuple(TokenProb(texts[i], i, p) for i, p in zip(top_ids[t], top_probs[t], strict=True) if p > 0))
                for t, token in enumerate(token_ids)
            )  # fmt: skip
        return self._steps

    def __getitem__(self, index):  # type: ignore[override]
        return self._build()[index]

    def __len__(self) -> int:
        return len(self._columns[0])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __repr__(self) -> str:
        return f"StepRecords({len(self)} steps)"


def step_columns(
    chosen: torch.Tensor, scores: torch.Tensor, logits: torch.Tensor
) -> tuple[list[float], list[int], list[float], list[list[int]], list[list[float]]]:
    """The records of one step for every row: ``chosen`` tokens (rows,), the processed ``scores`` they were drawn
    from and the raw ``logits`` (rows x vocab): probability when drawn, rank under the raw logits, entropy in bits
    (float64), and the TOP_ALTERNATIVES most likely tokens with their probabilities."""
    probs = torch.softmax(scores.float(), dim=-1)
    column = chosen.view(-1, 1)
    top_p, top_i = torch.topk(probs, TOP_ALTERNATIVES, dim=-1)
    p64 = probs.double()
    entropy = -(p64 * torch.where(p64 > 0, p64.log2(), torch.zeros((), dtype=torch.float64))).sum(-1) + 0.0
    logits = logits.float()
    return (probs.gather(-1, column).flatten().tolist(), (logits > logits.gather(-1, column)).sum(-1).tolist(),
            entropy.tolist(), top_i.tolist(), top_p.tolist())  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Sample:
    """One continuation: its text (special tokens removed), token ids, steps, and why it ended.

    ``finish_reason`` is vLLM's: "stop" when EOS or a stop token was generated (it is the last id), "length" when
    max_new_tokens ran out.
    """

    text: str
    token_ids: tuple[int, ...]
    steps: Sequence[Step]
    finish_reason: Literal["stop", "length"]

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """What ``generate`` returns: ``samples`` (n of them); ``text``, ``token_ids`` and ``steps`` of the first."""

    prompt: str
    params: SamplingParams
    samples: tuple[Sample, ...]
    prompt_tokens: int
    seconds: float
    backend: str

    @property
    def text(self) -> str:
        return self.samples[0].text

    @property
    def token_ids(self) -> tuple[int, ...]:
        return self.samples[0].token_ids

    @property
    def steps(self) -> Sequence[Step]:
        return self.samples[0].steps

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.samples]

    @property
    def tokens_per_second(self) -> float:
        return sum(len(s) for s in self.samples) / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        return "\n".join(s.text for s in self.samples)


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's generator for ``device`` inside the block and restore its state afterwards.

    transformers' generate has no seed argument; this gives a request its own reproducible random stream without
    disturbing the caller's. Same seed, inputs and device give the same samples; other devices draw other numbers.
    """
    if seed is None:
        yield
        return
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cpu"):
        torch.manual_seed(seed)
        yield


def generate(
    lm: LoadedModel,
    prompt: str,
    params: SamplingParams | None = None,
    image: Any = None,
    chat: bool = True,
    fast: bool | None = None,
    progress: bool = False,
) -> GenerationResult:
    """Generate ``params.n`` continuations of ``prompt`` (and ``image`` for SmolVLM) in one batched call.

    Parameters mean what vLLM's vocabulary says: see ``smolkit.SamplingParams``. Invalid input raises
    before any model work. ``fast``: None picks the GPU fast path (``smolkit.fastpath``: decode and sampling
    captured in CUDA graphs) on CUDA when the model allows it, else plain transformers ``generate``; False forces
    plain transformers (for comparison); True forces the fast path (eagerly on the CPU, for tests and teaching).
    ``progress`` shows a tqdm bar of the tokens generated (for long runs, e.g. many samples on the CPU).
    """
    params = SamplingParams() if params is None else params
    if fast is not None:
        _checks.boolean("fast", fast)
    inputs, prompt_length = prepare_inputs(lm, prompt, params, image=image, chat=chat)
    params = fit_context(lm, params, prompt_length)
    progress = _checks.boolean("progress", progress)
    fast = uses_fast_path(lm, fast)
    check_memory(lm, params, prompt_length, fast)
    bar = tqdm(total=params.max_new_tokens, desc="generating", unit="token", disable=not progress, leave=False)
    request = _Request(prompt, params, inputs, prompt_length)
    with bar, gpu_share.out_of_memory(lm.device):
        if fast:
            return _generate_fast(lm, request, bar)
        return _generate_plain(lm, request, bar)


@dataclasses.dataclass(frozen=True)
class _Request:
    """A validated generate call: the prompt, its parameters, the model inputs and the prompt's length in tokens."""

    prompt: str
    params: SamplingParams
    inputs: dict[str, torch.Tensor]
    prompt_length: int


def fit_context(lm: LoadedModel, params: SamplingParams, prompt_length: int) -> SamplingParams:
    """``params`` with max_new_tokens lowered to what fits after a ``prompt_length``-token prompt in the model's
    context (min_tokens with it), and a warning saying so: the rule for every call that generates."""
    max_new = min(params.max_new_tokens, lm.context_length - prompt_length)
    if max_new < params.max_new_tokens:
        warnings.warn(
            f"max_new_tokens={params.max_new_tokens} does not fit after a {prompt_length}-token prompt in "
            f"{lm.context_length} tokens of context; generating at most {max_new}",
            stacklevel=3,
        )
        params = params.replace(max_new_tokens=max_new, min_tokens=min(params.min_tokens, max_new))
    return params


MEMORY_SHARE = 0.5
"""The share of the memory available now that one call running the model may plan to use."""

SCORE_BYTES_PER_LOGIT = 4 + 8 + 8 + 1
"""What scoring a continuation holds per logit of a scored step: the float32 logits, their float64 copy and
log-softmax, and the bools of the rank comparison (about 1 MiB a token for a 49,152-token vocabulary)."""


def _cache_bytes_per_position(lm: LoadedModel) -> int:
    """The KV cache of one position, every layer (keys and values)."""
    text = lm.model.config.get_text_config()
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2 * text.num_hidden_layers * heads * head_dim * (torch.finfo(lm.dtype).bits // 8)


def planned_bytes(lm: LoadedModel, params: SamplingParams, prompt_length: int, fast: bool) -> int:
    """What a generate call will hold at its peak, estimated: per row, the KV cache of every position, and per row
    and step the vocabulary-sized records (transformers keeps each step's processed scores and raw logits until
    the end; the fast path a few vocabulary-sized buffers per row, on the device)."""
    positions = prompt_length + params.max_new_tokens
    if fast:  # the fast path's static cache is a power of two of at least 256 positions
        positions = max(256, 1 << (positions - 1).bit_length())
    kv = _cache_bytes_per_position(lm) * positions
    per_step = 0 if fast else 2 * 4 * lm.vocab_size * params.max_new_tokens
    buffers = 16 * lm.vocab_size  # logits, noise, counts, seen and the softmax of one step
    return params.n * (kv + per_step + buffers)


def forward_bytes(lm: LoadedModel, positions: int, scored: int) -> int:
    """What one forward pass without a cache over ``positions`` tokens holds at its peak when the logits of
    ``scored`` of them are kept and scored (SCORE_BYTES_PER_LOGIT each), estimated: one layer's activations per
    position (hidden states, the MLP's intermediate, the attention's scores over every position) on top."""
    text = lm.model.config.get_text_config()
    item = torch.finfo(lm.dtype).bits // 8
    layer = positions * (8 * text.hidden_size + 3 * text.intermediate_size) * item
    attention = 2 * text.num_attention_heads * positions * positions * item
    return scored * lm.vocab_size * SCORE_BYTES_PER_LOGIT + layer + attention


def available_bytes(device: torch.device) -> int:
    """Memory free for this process now: on a GPU what it can still allocate (its own cached memory, and the GPU's
    free memory up to its share: ``gpu_share.usable``), or the machine's available RAM, lowered to what this
    process's control group still allows (a container's or a workshop kernel's limit)."""
    if device.type == "cuda":
        return gpu_share.usable_bytes(device)
    with open("/proc/meminfo") as f:
        free = int(dict(line.split(":", 1) for line in f)["MemAvailable"].split()[0]) * 1024
    left = cgroups.memory_left()  # v2 or v1, the smallest limit on the process's cgroup path
    return free if left is None else min(free, left)


def check_fits(lm: LoadedModel, need: int, what: str, remedy: str, free: int | None = None) -> None:
    """The memory rule of every call that runs the model: refuse, before any model work, ``what`` when it is
    planned to ``need`` more than MEMORY_SHARE of the memory available (it would end in a killed kernel, or an
    allocation failure deep in the forward pass); the error says what to lower (``remedy``). ``free``: the memory
    available as the caller read it to word ``remedy`` (on a GPU that others fill, a second reading differs)."""
    free = available_bytes(lm.device) if free is None else free
    if need <= MEMORY_SHARE * free:
        return
    where = "GPU" if lm.device.type == "cuda" else "machine"
    raise ValueError(
        f"{what} would need about {need / 2**30:.1f} GiB and this {where} has {free / 2**30:.1f} GiB available: "
        f"{remedy}"
    )


def check_memory(lm: LoadedModel, params: SamplingParams, prompt_length: int, fast: bool) -> None:
    """``check_fits`` for a generate call: n rows of max_new_tokens; the error says how many rows fit now."""
    need = planned_bytes(lm, params, prompt_length, fast)
    per_row, free = need / params.n, available_bytes(lm.device)  # one reading for the check and the advice
    fits = max(int(MEMORY_SHARE * free // per_row), 0)
    check_fits(lm, need, f"n={params.n} x max_new_tokens={params.max_new_tokens}",
               f"{per_row / 2**20:.0f} MiB a sample; lower n (at most {fits} fit now) or max_new_tokens"
               + ("; on a GPU the fast path keeps far less" if not fast else ""), free)  # fmt: skip


def uses_fast_path(lm: LoadedModel, fast: bool | None) -> bool:
    """Whether ``generate(lm, ..., fast=fast)`` runs the fast path: None means on CUDA when it can serve the model
    (a one-line notice, once per model, says why not when it cannot); True insists (ValueError when it cannot)."""
    if fast is False or (fast is None and lm.device.type != "cuda"):
        return False
    problem = fastpath.fast_path_problem(lm)
    if problem is None:
        return True
    if fast:
        raise ValueError(f"fast=True: the fast path cannot run {lm.name!r}: {problem}; use fast=None or False")
    if not lm.fast_path_notice_shown:
        print(f"smolkit: the GPU fast path cannot serve {lm.name!r} ({problem}); using transformers' generate",
              file=sys.stderr)  # fmt: skip
        lm.fast_path_notice_shown = True
    return False


def _generate_plain(lm: LoadedModel, request: _Request, bar: tqdm) -> GenerationResult:
    params, prompt_length = request.params, request.prompt_length
    gc, processors = for_model(lm, params, prompt_length)
    gc.update(output_scores=True, output_logits=True, return_dict_in_generate=True)
    batch = {k: v.repeat(params.n, *([1] * (v.dim() - 1))) for k, v in request.inputs.items()}
    start = time.perf_counter()
    with seeded(params.seed, lm.device), torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' notes about flags the kit sets on purpose
        out = lm.model.generate(
            **batch,
            generation_config=gc,
            logits_processor=processors,
            streamer=_ProgressStreamer(bar) if not bar.disable else None,
        )
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)
    seconds = time.perf_counter() - start
    new_ids = out.sequences[:, prompt_length:].cpu()
    scores, logits = list(out.scores), list(out.logits)
    del out  # each step's scores are freed once its records are made: the records keep only a few numbers
    columns = []
    for t in range(len(scores)):
        columns.append(step_columns(new_ids[:, t], scores[t].cpu(), logits[t].cpu()))
        scores[t] = logits[t] = None
    stop_ids = set(gc.eos_token_id or [])
    rows = [[[step[k][i] for step in columns] for k in range(5)] for i in range(params.n)]
    samples = tuple(_sample(lm, new_ids[i].tolist(), rows[i], stop_ids) for i in range(params.n))
    return GenerationResult(request.prompt, params, samples, prompt_length, seconds, "transformers")


class _ProgressStreamer(BaseStreamer):
    """Moves a tqdm bar one step per generated token (generate calls ``put`` with the prompt first, then each
    step's tokens)."""

    def __init__(self, bar: tqdm):
        self.bar, self.prompt_seen = bar, False

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_seen:
            self.bar.update(1)
        self.prompt_seen = True

    def end(self) -> None:
        self.bar.refresh()


def _generate_fast(lm: LoadedModel, request: _Request, bar: tqdm) -> GenerationResult:
    params = request.params
    decoder = fastpath.get_fast_decoder(lm)
    stop_ids = list(dict.fromkeys([*lm.eos_token_ids, *params.stop_token_ids]))
    # the decoder seeds its own generator with params.seed, after any compile or capture the call needs
    out = decoder.generate(request.inputs, params, stop_ids, lm.pad_token_id or 0, on_chunk=bar.update)
    samples = tuple(_fast_sample(lm, out, row, set(stop_ids)) for row in range(params.n))
    backend = "smolkit fast path (CUDA graphs)" if decoder.use_graphs else "smolkit fast path (eager)"
    return GenerationResult(request.prompt, params, samples, request.prompt_length, out.seconds, backend)


def _cut_at_stop(tokens: list[int], stop_ids: set[int]) -> tuple[int, Literal["stop", "length"]]:
    """How many tokens a row keeps (through its first stop token; rows are padded after it) and why it ended."""
    for t, token in enumerate(tokens):
        if token in stop_ids:
            return t + 1, "stop"
    return len(tokens), "length"


def _fast_sample(lm: LoadedModel, out: fastpath.FastResult, row: int, stop_ids: set[int]) -> Sample:
    """One row of the fast path's result as a Sample: tokens cut at the first stop, step records as recorded."""
    length, finish = _cut_at_stop(out.tokens[row], stop_ids)
    kept = out.tokens[row][:length]
    columns = (out.probs, out.ranks, out.entropy, out.top_ids, out.top_probs)
    records = StepRecords(lm, kept, *(column[row][:length] for column in columns))
    return Sample(lm.decode(kept, skip_special_tokens=True), tuple(kept), records, finish)


def _sample(lm: LoadedModel, tokens: list[int], columns: list, stop_ids: set[int]) -> Sample:
    """One row cut at its first stop token (generate pads finished rows), with its step records; ``columns`` are
    this row's (probs, ranks, entropy, top ids, top probs), one entry per step."""
    length, finish = _cut_at_stop(tokens, stop_ids)
    kept = tokens[:length]
    cut = [column[:length] for column in columns]
    return Sample(lm.decode(kept, skip_special_tokens=True), tuple(kept), StepRecords(lm, kept, *cut), finish)
