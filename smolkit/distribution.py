"""The next-token distribution and how each sampling stage reshapes it.

One forward pass gives the raw logits for the next token; every parameter change afterwards only re-applies the
stages (penalties, temperature, top-k, top-p, min-p) to those cached logits, which is what makes the sliders live.
The stages are the very processors ``model.generate`` builds for the same parameters, applied in its order
(``smolkit.hf``), so ``Distribution.probs`` is what generate samples from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch

from smolkit import _checks, gpu_share
from smolkit.hf import apply_stages, processors_for
from smolkit.models import LoadedModel
from smolkit.params import SamplingParams
from smolkit.vllm_rules import STAGE_ORDER, sampled_temperature

__all__ = ["Distribution", "TokenProb", "entropy_bits", "next_token_distribution", "prepare_inputs"]

LOGITS_CACHE_SIZE = 64


def entropy_bits(probs: torch.Tensor) -> float:
    """Shannon entropy in bits of a probability vector (zeros contribute nothing).

    2 ** entropy is the number of equally likely tokens with the same uncertainty.

    >>> entropy_bits(torch.tensor([0.5, 0.5, 0.0]))
    1.0
    """
    p = probs[probs > 0].double()
    return float(-(p * p.log2()).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


@dataclasses.dataclass(frozen=True)
class TokenProb:
    """One candidate next token: its text, id and probability."""

    token: str
    id: int
    prob: float

    def __str__(self) -> str:
        return f"{self.token!r} {self.prob:.3f}"


@dataclasses.dataclass(eq=False)
class Distribution:
    """The next-token distribution after each stage, over the whole vocabulary (never renormalised over a shortlist).

    ``stages`` maps stage names, in the order generate applies them, to probability vectors (float32, CPU): it
    starts with "raw" (softmax of the model's logits) and ends with "final", the distribution generate samples from
    (one-hot at the argmax for greedy decoding). ``probs`` is ``stages["final"]``. ``kept`` maps the same names to
    the tokens no stage so far removed (top_k, top_p, min_p, min_tokens and greedy remove; temperature and the
    penalties only reshape).
    """

    lm: LoadedModel
    params: SamplingParams
    logits: torch.Tensor
    input_ids: torch.Tensor
    prompt_length: int
    stages: dict[str, torch.Tensor]
    kept: dict[str, torch.Tensor]

    @property
    def probs(self) -> torch.Tensor:
        return self.stages["final"]

    @property
    def entropy(self) -> float:
        """Entropy in bits of the final distribution."""
        return entropy_bits(self.probs)

    def stage(self, name: str) -> torch.Tensor:
        """The probabilities after stage ``name``; a ValueError listing the stages when there is none of that name."""
        if name not in self.stages:
            raise ValueError(f"stage must be one of {list(self.stages)}, got {name!r}")
        return self.stages[name]

    def stage_entropy(self, stage: str) -> float:
        return entropy_bits(self.stage(stage))

    def surviving(self, stage: str = "final") -> int:
        """How many tokens the stages up to ``stage`` did not remove.

        Counted from the cuts (scores set to -inf), not from probabilities above 0: at a low temperature float32
        stores most probabilities as exactly 0 (below ~1e-45), and how many land there depends on the processor's
        rounding, so such a count would differ from machine to machine; temperature itself removes nothing.
        """
        self.stage(stage)
        return int(self.kept[stage].sum())

    def kept_mass(self, stage: str = "final", base: str = "raw") -> float:
        """Share of the ``base`` distribution (the model's, by default) carried by the tokens that survive
        ``stage``: 1.0 means the cut-offs removed nothing the model believed in; 0.6 means 40 % of the model's
        probability was on tokens that can no longer be sampled."""
        self.stage(stage)
        return float(self.stage(base)[self.kept[stage]].double().sum())

    def top(self, n: int = 10, stage: str = "final") -> list[TokenProb]:
        """The ``n`` most likely tokens after ``stage`` (text, id, probability), most likely first; never a token
        with probability 0 (so fewer than ``n`` when a cut-off leaves fewer)."""
        probs = self.stage(stage)
        n = _checks.integer("n", n, lo=0, note="how many tokens")
        values, ids = torch.topk(probs, min(n, int((probs > 0).sum())))
        texts = self.lm.token_texts(ids.tolist())
        return [TokenProb(t, int(i), float(v)) for t, v, i in zip(texts, values, ids, strict=True)]

    def prob_of(self, token_id: int, stage: str = "final") -> float:
        """The probability of token ``token_id`` after ``stage``."""
        probs = self.stage(stage)
        return float(probs[_checks.integer("token_id", token_id, 0, probs.numel() - 1)])

    @classmethod
    def from_logits(
        cls,
        lm: LoadedModel,
        params: SamplingParams,
        logits: torch.Tensor,
        input_ids: torch.Tensor,
        prompt_length: int,
    ) -> Distribution:
        """Apply the stages generate would apply to raw next-token ``logits`` (vocab,) that follow ``input_ids``."""
        return _build(lm, params, logits.float().cpu(), input_ids.cpu(), prompt_length)

    def with_params(self, params: SamplingParams | None = None, **changes: Any) -> Distribution:
        """The same next token under other parameters: re-applies the stages to the cached logits, no forward pass."""
        base = self.params if params is None else _check_params(params)
        params = base.replace(**changes) if changes else base
        params.check_vocab(self.lm.vocab_size)
        return _build(self.lm, params, self.logits, self.input_ids, self.prompt_length)

    def in_vllm_order(self) -> Distribution:
        """The same next token with the same stages applied as vLLM applies them: in vLLM's order (min_p right
        after temperature, before top_k and top_p) and with vLLM's temperature (raised to 0.01 when below it).

        The processors are transformers' own for these parameters, only moved: an illustration of how the two
        stacks differ, not a re-implementation of vLLM's kernels. Greedy decoding is the same in both.
        """
        params = self.params
        if not params.greedy:
            params = params.replace(temperature=sampled_temperature(params.temperature))
        processors = processors_for(self.lm, params, self.input_ids, self.prompt_length)
        stages = apply_stages(self.logits, self.input_ids, processors, params.greedy, order=STAGE_ORDER)
        return Distribution(self.lm, self.params, self.logits, self.input_ids, self.prompt_length, *stages)

    def summary(self, n: int = 5) -> str:
        """A short, stable text summary: top tokens with probabilities, surviving tokens, entropy (for nbval)."""
        tops = ", ".join(f"{t.token!r} {t.prob:.3f}" for t in self.top(n))
        return f"top {n}: {tops} | surviving tokens: {self.surviving()} | entropy: {self.entropy:.2f} bits"

    def __repr__(self) -> str:
        return f"Distribution({', '.join(self.stages)}; {self.summary(3)})"


def _check_params(params: Any) -> SamplingParams:
    if not isinstance(params, SamplingParams):
        raise TypeError(f"params must be a smolkit.SamplingParams, got {type(params).__name__}")
    return params


def _check_model(lm: Any) -> LoadedModel:
    if not isinstance(lm, LoadedModel):
        raise TypeError(f"lm must be a model from smolkit.load_model(), got {type(lm).__name__}")
    return lm


def prepare_inputs(
    lm: LoadedModel,
    prompt: str,
    params: SamplingParams,
    generated: str | Sequence[int] = "",
    image: Any = None,
    chat: bool = True,
    name: str = "generated",
) -> tuple[dict[str, torch.Tensor], int]:
    """Validated model inputs for ``prompt`` (+ already ``generated`` text or ids) and the prompt's length in tokens.
    ``name``: what the caller calls ``generated`` (errors about it name it so)."""
    _check_model(lm)
    _check_params(params)
    _checks.text("prompt", prompt)
    if not prompt.strip():
        raise ValueError("prompt is empty: type a question or the start of a text")
    chat = _checks.boolean("chat", chat)
    params.check_vocab(lm.vocab_size)
    if params.min_tokens > 0 and len({*lm.eos_token_ids, *params.stop_token_ids}) >= lm.vocab_size:
        raise ValueError(
            f"stop_token_ids: with min_tokens={params.min_tokens} the end-of-sequence and stop tokens block every "
            "token of the vocabulary: nothing could be generated. Stop at fewer tokens, or set min_tokens=0"
        )
    with gpu_share.out_of_memory(lm.device):  # the inputs go to the device: on a full GPU, the kit's message
        inputs = lm.inputs(prompt, chat=chat, image=image)
    prompt_length = int(inputs["input_ids"].shape[1])
    context = lm.context_length
    if prompt_length >= context:
        raise ValueError(
            f"prompt is {prompt_length} tokens long; {lm.name!r} reads at most {context} tokens (prompt plus "
            f"generated text). Shorten the prompt."
        )
    if isinstance(generated, str):
        _checks.text(name, generated)
        extra = lm.tokenizer(generated, add_special_tokens=False)["input_ids"] if generated else []
    else:
        extra = list(_checks.token_ids(name, generated, lm.vocab_size))
    if extra:
        ids = torch.tensor([extra], dtype=inputs["input_ids"].dtype, device=inputs["input_ids"].device)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], ids], dim=1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if inputs["input_ids"].shape[1] >= context:
        raise ValueError(f"prompt plus {name} text is {inputs['input_ids'].shape[1]} tokens; the limit is {context}")
    return inputs, prompt_length


def _cache_key(inputs: dict[str, torch.Tensor]) -> tuple:
    key: list[Any] = [tuple(inputs["input_ids"][0].tolist())]
    if "pixel_values" in inputs:
        key.append(hashlib.sha1(inputs["pixel_values"].float().cpu().numpy().tobytes()).hexdigest())
    return tuple(key)


@torch.inference_mode()
def next_logits(lm: LoadedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Raw next-token logits (float32, CPU) for ``inputs``; cached per input in ``lm.logits_cache``."""
    key = _cache_key(inputs)
    cache = lm.logits_cache
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    with gpu_share.out_of_memory(lm.device):
        out = lm.model(**inputs, use_cache=False, logits_to_keep=1)
    logits = out.logits[0, -1].float().cpu()
    cache[key] = logits
    while len(cache) > LOGITS_CACHE_SIZE:
        cache.popitem(last=False)
    return logits


def next_token_distribution(
    lm: LoadedModel,
    prompt: str,
    params: SamplingParams | None = None,
    generated: str | Sequence[int] = "",
    image: Any = None,
    chat: bool = True,
) -> Distribution:
    """The distribution the next token is drawn from, after ``prompt`` and any already ``generated`` text/ids.

    ``generated`` counts for the penalties and min_tokens exactly as generated tokens do in ``smolkit.generate``.
    The model runs once per (prompt, generated, image); other parameters reuse its cached logits.
    """
    params = SamplingParams() if params is None else params
    inputs, prompt_length = prepare_inputs(lm, prompt, params, generated, image, chat)
    logits = next_logits(lm, inputs)
    return _build(lm, params, logits, inputs["input_ids"].cpu(), prompt_length)


def _build(
    lm: LoadedModel, params: SamplingParams, logits: torch.Tensor, input_ids: torch.Tensor, prompt_length: int
) -> Distribution:
    processors = processors_for(lm, params, input_ids, prompt_length)
    stages = apply_stages(logits, input_ids, processors, params.greedy)
    return Distribution(lm, params, logits, input_ids, prompt_length, *stages)


def is_probability_vector(probs: torch.Tensor, atol: float = 1e-4) -> bool:
    """True when ``probs`` is finite, non-negative and sums to 1 (within ``atol``)."""
    return bool(
        torch.isfinite(probs).all() and (probs >= 0).all() and math.isclose(float(probs.sum()), 1, abs_tol=atol)
    )
