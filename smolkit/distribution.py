"""The next-token distribution and how each sampling stage reshapes it.

One forward pass gives the raw logits for the next token; every parameter change afterwards only re-applies the
stages (penalties, temperature, top-k, top-p, min-p) to those cached logits, which is what makes the sliders live.
The stages are the very processors ``model.generate`` builds for the same parameters, applied in its order
(``smolkit.params.transformers_processors``), so ``Distribution.probs`` is what generate samples from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import operator
import re
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from smolkit.models import LoadedModel, check_text
from smolkit.params import SamplingParams, transformers_processors

__all__ = [
    "Distribution",
    "TokenProb",
    "entropy_bits",
    "format_rows",
    "grid",
    "next_token_distribution",
    "prepare_inputs",
    "sweep",
]

LOGITS_CACHE_SIZE = 64

STAGE_NAMES = {
    "RepetitionPenaltyLogitsProcessor": "repetition_penalty",
    "MinNewTokensLengthLogitsProcessor": "min_tokens",
    "PresencePenaltyLogitsProcessor": "presence_penalty",
    "FrequencyPenaltyLogitsProcessor": "frequency_penalty",
    "TemperatureLogitsWarper": "temperature",
    "TopKLogitsWarper": "top_k",
    "TopPLogitsWarper": "top_p",
    "MinPLogitsWarper": "min_p",
}
"""Stage name for each transformers processor class; any other processor is named after its class."""


def stage_name(processor: Any) -> str:
    """The kit's name for a processor: the parameter it implements (e.g. 'top_p'), else its class in snake case."""
    cls = type(processor).__name__
    if cls in STAGE_NAMES:
        return STAGE_NAMES[cls]
    base = re.sub(r"Logits(Processor|Warper)$", "", cls)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()


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
    (one-hot at the argmax for greedy decoding). ``probs`` is ``stages["final"]``.
    """

    lm: LoadedModel
    params: SamplingParams
    logits: torch.Tensor
    input_ids: torch.Tensor
    prompt_length: int
    stages: dict[str, torch.Tensor]

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
        """How many tokens keep a non-zero probability after ``stage``."""
        return int((self.stage(stage) > 0).sum())

    def top(self, n: int = 10, stage: str = "final") -> list[TokenProb]:
        """The ``n`` most likely tokens after ``stage`` (text, id, probability), most likely first; never a token
        with probability 0 (so fewer than ``n`` when a cut-off leaves fewer)."""
        probs = self.stage(stage)
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be an integer >= 0 (how many tokens), got {n!r}")
        values, ids = torch.topk(probs, min(int(n), probs.numel()))
        return [TokenProb(self.lm.token_text(i), int(i), float(v)) for v, i in zip(values, ids, strict=True) if v > 0]

    def prob_of(self, token_id: int, stage: str = "final") -> float:
        probs = self.stage(stage)
        if not 0 <= int(token_id) < probs.numel():
            raise ValueError(f"token_id must be in [0, {probs.numel() - 1}], got {token_id!r}")
        return float(probs[int(token_id)])

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
        base = params if params is not None else self.params
        params = base.replace(**changes) if changes else base
        return _build(self.lm, params, self.logits, self.input_ids, self.prompt_length)

    def summary(self, n: int = 5) -> str:
        """A short, stable text summary: top tokens with probabilities, surviving tokens, entropy (for nbval)."""
        tops = ", ".join(f"{t.token!r} {t.prob:.3f}" for t in self.top(n))
        return f"top {n}: {tops} | surviving tokens: {self.surviving()} | entropy: {self.entropy:.2f} bits"

    def __repr__(self) -> str:
        return f"Distribution({', '.join(self.stages)}; {self.summary(3)})"


def prepare_inputs(
    lm: LoadedModel,
    prompt: str,
    params: SamplingParams,
    generated: str | Sequence[int] = "",
    image: Any = None,
    chat: bool = True,
) -> tuple[dict[str, torch.Tensor], int]:
    """Validated model inputs for ``prompt`` (+ already ``generated`` text or ids) and the prompt's length in tokens."""
    if not isinstance(params, SamplingParams):
        raise TypeError(f"params must be a smolkit.SamplingParams, got {type(params).__name__}")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError("prompt is empty: type a question or the start of a text")
    if not isinstance(chat, bool):
        raise TypeError(f"chat must be True or False, got {chat!r}")
    params.check_vocab(lm.vocab_size)
    inputs = lm.inputs(prompt, chat=chat, image=image)
    prompt_length = int(inputs["input_ids"].shape[1])
    context = lm.context_length
    if prompt_length >= context:
        raise ValueError(
            f"prompt is {prompt_length} tokens long; {lm.name!r} reads at most {context} tokens (prompt plus "
            f"generated text). Shorten the prompt."
        )
    if isinstance(generated, str):
        check_text("generated", generated)
        extra = lm.tokenizer(generated, add_special_tokens=False)["input_ids"] if generated else []
    elif isinstance(generated, torch.Tensor):
        extra = _token_ids(generated.flatten().tolist())
    elif isinstance(generated, Sequence):
        extra = _token_ids(generated)
    else:
        raise TypeError(f"generated must be text or a list of token ids, got {type(generated).__name__}")
    if any(not 0 <= t < lm.vocab_size for t in extra):
        raise ValueError(f"generated holds token ids outside [0, {lm.vocab_size - 1}]")
    if extra:
        ids = torch.tensor([extra], dtype=inputs["input_ids"].dtype, device=inputs["input_ids"].device)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], ids], dim=1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if inputs["input_ids"].shape[1] >= context:
        raise ValueError(f"prompt plus generated text is {inputs['input_ids'].shape[1]} tokens; the limit is {context}")
    return inputs, prompt_length


def _token_ids(values: Sequence[Any]) -> list[int]:
    """``values`` as ints; a float (1.5), a bool or a string among them is a mistake, not a token id."""
    out = []
    for value in values:
        try:
            if isinstance(value, bool):
                raise TypeError
            out.append(operator.index(value))
        except TypeError:
            raise TypeError(
                f"generated must be text or a list of token ids (integers), got {value!r} ({type(value).__name__}) "
                "in the list"
            ) from None
    return out


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' notes about generation flags; the kit sets them on purpose
        processors = transformers_processors(
            lm.model, params, input_ids, prompt_length, lm.eos_token_ids, lm.pad_token_id
        )
    scores = logits.unsqueeze(0)
    stages: dict[str, torch.Tensor] = {"raw": torch.softmax(scores, dim=-1)[0]}
    for processor in processors:
        scores = processor(input_ids, scores)
        stages[stage_name(processor)] = torch.softmax(scores, dim=-1)[0]
    if params.greedy:
        one_hot = torch.zeros_like(logits)
        one_hot[int(scores[0].argmax())] = 1.0
        stages["greedy"] = one_hot
    stages["final"] = stages[list(stages)[-1]]
    return Distribution(lm, params, logits, input_ids, prompt_length, stages)


def sweep(dist: Distribution, name: str, values: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per value of parameter ``name``: entropy (bits), surviving tokens and the top token with its
    probability, all from the cached logits (no forward pass). Print it with ``format_rows``."""
    rows = []
    for value in values:
        d = dist.with_params(**{name: value})
        top = d.top(1)[0]
        rows.append(
            {name: value, "entropy": d.entropy, "surviving": d.surviving(), "top": top.token, "p_top": top.prob}
        )
    return rows


def grid(
    dist: Distribution, temperatures: Sequence[float], top_ps: Sequence[float], metric: str = "entropy"
) -> list[list[float]]:
    """``metric`` ("entropy" in bits, or "surviving" tokens) for every top_p (rows, in the order given) and
    temperature (columns), from the cached logits: the numbers behind a temperature x top_p heatmap."""
    if metric not in ("entropy", "surviving"):
        raise ValueError(f"metric must be 'entropy' or 'surviving', got {metric!r}")
    cells = ((p, t) for p in top_ps for t in temperatures)
    values = []
    for p, t in cells:
        d = dist.with_params(temperature=float(t), top_p=float(p), do_sample=True)
        values.append(d.entropy if metric == "entropy" else float(d.surviving()))
    width = len(temperatures)
    return [values[i : i + width] for i in range(0, len(values), width)]


def format_rows(rows: list[dict[str, Any]], digits: int = 3) -> str:
    """A plain-text table of ``rows`` (as from ``sweep``): the first column (the parameter) as given, other floats
    rounded to ``digits`` so that the text is stable for nbval.

    >>> print(format_rows([{"temperature": 0.5, "entropy": 1.23456, "top": " Paris"}]))
    temperature  entropy  top
    0.5          1.235    ' Paris'
    """
    if not rows:
        return ""
    columns = list(rows[0])

    def cell(value: Any, first: bool) -> str:
        if isinstance(value, float):
            return f"{value:g}" if first else f"{value:.{digits}f}"
        return repr(value) if isinstance(value, str) else str(value)

    table = [columns] + [[cell(row[c], i == 0) for i, c in enumerate(columns)] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table)


def is_probability_vector(probs: torch.Tensor, atol: float = 1e-4) -> bool:
    """True when ``probs`` is finite, non-negative and sums to 1 (within ``atol``)."""
    return bool(
        torch.isfinite(probs).all() and (probs >= 0).all() and math.isclose(float(probs.sum()), 1, abs_tol=atol)
    )
