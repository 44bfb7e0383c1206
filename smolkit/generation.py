"""Generate text with SamplingParams and keep a record of every step: what was picked, how likely, among what.

The work is done by transformers' own ``model.generate`` with the translated GenerationConfig and smolkit's extra
processors; this module adds the seed, n samples in one batch, and per-step records read from generate's processed
scores (``output_scores``, what it sampled from) and raw logits (``output_logits``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import torch

from smolkit import fastpath
from smolkit.distribution import TokenProb, entropy_bits, prepare_inputs
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


@dataclasses.dataclass(frozen=True)
class Sample:
    """One continuation: its text (special tokens removed), token ids, steps, and why it ended.

    ``finish_reason`` is vLLM's: "stop" when EOS or a stop token was generated (it is the last id), "length" when
    max_new_tokens ran out.
    """

    text: str
    token_ids: tuple[int, ...]
    steps: tuple[Step, ...]
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
    def steps(self) -> tuple[Step, ...]:
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
) -> GenerationResult:
    """Generate ``params.n`` continuations of ``prompt`` (and ``image`` for SmolVLM) in one batched call.

    Parameters mean what the seed's (vLLM's) vocabulary says: see ``smolkit.SamplingParams``. Invalid input raises
    before any model work. ``fast``: None picks the GPU fast path (``smolkit.fastpath``: decode and sampling
    captured in CUDA graphs) on CUDA when the model allows it, else plain transformers ``generate``; False forces
    plain transformers (for comparison); True forces the fast path (eagerly on the CPU, for tests and teaching).
    """
    params = params or SamplingParams()
    inputs, prompt_length = prepare_inputs(lm, prompt, params, image=image, chat=chat)
    max_new = min(params.max_new_tokens, lm.context_length - prompt_length)
    if max_new < params.max_new_tokens:
        warnings.warn(
            f"max_new_tokens={params.max_new_tokens} does not fit after a {prompt_length}-token prompt in "
            f"{lm.context_length} tokens of context; generating at most {max_new}",
            stacklevel=2,
        )
        params = params.replace(max_new_tokens=max_new, min_tokens=min(params.min_tokens, max_new))
    if fast is None:
        fast = lm.device.type == "cuda" and fastpath.fast_path_problem(lm) is None
    if fast:
        return _generate_fast(lm, prompt, params, inputs, prompt_length)
    gc, processors = params.to_generation_config(
        prompt_length=prompt_length,
        eos_token_id=lm.eos_token_ids,
        pad_token_id=lm.pad_token_id,
        base=lm.model.generation_config,
    )
    gc.update(output_scores=True, output_logits=True, return_dict_in_generate=True)
    batch = {k: v.repeat(params.n, *([1] * (v.dim() - 1))) for k, v in inputs.items()}
    start = time.perf_counter()
    with seeded(params.seed, lm.device), torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' notes about flags the kit sets on purpose
        out = lm.model.generate(
            **batch,
            generation_config=gc,
            logits_processor=processors,
        )
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)
    seconds = time.perf_counter() - start
    new_ids = out.sequences[:, prompt_length:].cpu()
    scores = torch.stack(out.scores, dim=1).float().cpu()  # (n, steps, vocab)
    logits = torch.stack(out.logits, dim=1).float().cpu()
    stop_ids = set(gc.eos_token_id or [])
    samples = tuple(_sample(lm, new_ids[i], scores[i], logits[i], stop_ids) for i in range(params.n))
    return GenerationResult(prompt, params, samples, prompt_length, seconds, "transformers")


def _generate_fast(
    lm: LoadedModel, prompt: str, params: SamplingParams, inputs: dict[str, torch.Tensor], prompt_length: int
) -> GenerationResult:
    decoder = fastpath.get_fast_decoder(lm)
    decoder.prepare(params.n, prompt_length + params.max_new_tokens)  # capture before seeding: it draws numbers
    stop_ids = list(dict.fromkeys([*lm.eos_token_ids, *params.stop_token_ids]))
    with seeded(params.seed, lm.device):
        state, seconds = decoder.generate(inputs, params, stop_ids, lm.pad_token_id or 0)
    samples = tuple(fast_sample(lm, state, row, params.max_new_tokens, set(stop_ids)) for row in range(params.n))
    backend = "smolkit fast path (CUDA graphs)" if decoder.use_graphs else "smolkit fast path (eager)"
    return GenerationResult(prompt, params, samples, prompt_length, seconds, backend)


def fast_sample(lm: LoadedModel, state: fastpath.SamplerState, row: int, max_new: int, stop_ids: set[int]) -> Sample:
    """A Sample from the fast path's device buffers: tokens cut at the first stop, step records as recorded."""
    ids = state.tokens[row, :max_new].tolist()
    token_ids: list[int] = []
    finish: Literal["stop", "length"] = "length"
    for token in ids:
        token_ids.append(token)
        if token in stop_ids:
            finish = "stop"
            break
    n = len(token_ids)
    probs, ranks, entropy = (state.probs[row, :n].tolist(), state.ranks[row, :n].tolist(),
                             state.entropy[row, :n].tolist())  # fmt: skip
    top_ids, top_probs = state.top_ids[row, :n].tolist(), state.top_probs[row, :n].tolist()
    steps = tuple(
        Step(
            index=t,
            token_id=token,
            token=lm.token_text(token),
            prob=probs[t],
            rank=ranks[t],
            entropy=entropy[t],
            top=tuple(
                TokenProb(lm.token_text(i), i, p) for i, p in zip(top_ids[t], top_probs[t], strict=True) if p > 0
            ),
        )
        for t, token in enumerate(token_ids)
    )
    return Sample(lm.decode(token_ids, skip_special_tokens=True), tuple(token_ids), steps, finish)


def _sample(
    lm: LoadedModel, ids: torch.Tensor, scores: torch.Tensor, logits: torch.Tensor, stop_ids: set[int]
) -> Sample:
    """Cut one row at its first stop token (generate pads finished rows) and build its step records."""
    token_ids: list[int] = []
    finish: Literal["stop", "length"] = "length"
    for token in ids.tolist():
        token_ids.append(token)
        if token in stop_ids:
            finish = "stop"
            break
    return Sample(
        text=lm.decode(token_ids, skip_special_tokens=True),
        token_ids=tuple(token_ids),
        steps=tuple(step_records(lm, token_ids, scores, logits)),
        finish_reason=finish,
    )


def step_records(lm: LoadedModel, token_ids: list[int], scores: torch.Tensor, logits: torch.Tensor) -> list[Step]:
    """Step records for ``token_ids`` given the processed ``scores`` and raw ``logits`` (both steps x vocab)."""
    steps = []
    probs_all = torch.softmax(scores[: len(token_ids)], dim=-1)
    for t, token in enumerate(token_ids):
        probs = probs_all[t]
        top_p, top_i = torch.topk(probs, TOP_ALTERNATIVES)
        keep = top_p > 0
        steps.append(
            Step(
                index=t,
                token_id=token,
                token=lm.token_text(token),
                prob=float(probs[token]),
                rank=int((logits[t] > logits[t, token]).sum()),
                entropy=entropy_bits(probs),
                top=tuple(
                    TokenProb(lm.token_text(i), int(i), float(p)) for p, i in zip(top_p[keep], top_i[keep], strict=True)
                ),
            )
        )
    return steps
