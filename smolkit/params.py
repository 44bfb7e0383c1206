"""SamplingParams: the seed's generation vocabulary (vLLM's), validated, and its faithful translation to transformers.

vLLM and transformers name and order the same ideas differently. This module is the one place that knows the
mapping:

============================  =====================================  ==========================================
smolkit / vLLM                transformers                           note
============================  =====================================  ==========================================
temperature=0                 do_sample=False                        transformers rejects temperature=0
top_k=-1 or 0 (all tokens)    top_k=0                                transformers rejects -1 and, when unset,
                                                                     silently applies its default top_k=50
presence/frequency_penalty    smolkit's own LogitsProcessors         transformers has none
min_tokens                    min_new_tokens (blocks EOS + stops)    also blocks every stop_token_id, as vLLM;
                                                                     generate derives min_length from it too
stop_token_ids                eos_token_id=[model EOS, *stops]
seed                          torch.Generator state around generate  transformers has no seed argument
min_p                         min_p                                  transformers applies it after top_p;
                                                                     vLLM before top_k (smolkit follows
                                                                     transformers, which really samples)
============================  =====================================  ==========================================
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList

from smolkit.processors import PENALTY_RANGE, FrequencyPenaltyLogitsProcessor, PresencePenaltyLogitsProcessor

__all__ = ["GREEDY_TEMPERATURE", "SamplingParams", "generate_processors", "transformers_processors"]

GREEDY_TEMPERATURE = 1e-5
"""Temperatures below this mean greedy decoding, as in vLLM (its _SAMPLING_EPS)."""

SEED_MAX = 2**64 - 1

REPETITION_PENALTY_RANGE = (0.01, 100.0)
"""The kit's range for repetition_penalty. vLLM and transformers accept any value > 0, but the penalty divides or
multiplies float32 logits: below ~1e-38 a repeated token's score overflows to inf and every probability becomes NaN
(sampling then fails). 0.01-100 already makes repeated tokens all but certain or impossible."""

_NEUTRAL: dict[str, Any] = {
    "min_length": 0,
    "min_new_tokens": 0,
    "no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}
"""Values that switch a transformers stage off, used where a model's generation config switches it on."""


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _integer(name: str, value: Any) -> int:
    # numpy and torch integers pass; floats such as 3.0 do not (they hide mistakes like top_k=0.9).
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})") from None


@dataclasses.dataclass(frozen=True, repr=False)
class SamplingParams:
    """Generation parameters with vLLM's names and meanings, validated on creation.

    Every field is checked in ``__post_init__``: a wrong type raises TypeError, a value out of range ValueError,
    both naming the field, the value and what is valid. Use ``params.replace(temperature=0.7)`` for variations.

    >>> SamplingParams(temperature=0.7, top_k=-1).top_k_for_transformers
    0
    >>> SamplingParams(temperature=0).greedy
    True
    """

    max_new_tokens: int = 64
    """Most tokens to generate (vLLM's max_tokens). Generation may stop earlier at EOS or a stop token."""
    do_sample: bool = True
    """False means greedy decoding: always the most likely token (temperature and the cut-offs are then unused)."""
    temperature: float = 1.0
    """Divides the logits: < 1 sharpens the distribution, > 1 flattens it; 0 (below 1e-5) means greedy."""
    top_p: float = 1.0
    """Nucleus sampling: keep the most likely tokens whose probabilities add up to top_p; 1 keeps all."""
    top_k: int = -1
    """Keep only the k most likely tokens; -1 (or 0) keeps all tokens."""
    min_p: float = 0.0
    """Drop tokens whose probability is below min_p times the top token's probability; 0 keeps all."""
    repetition_penalty: float = 1.0
    """Multiplicative penalty on tokens seen in the prompt or the generated text: > 1 discourages, < 1 encourages
    (0.01 to 100)."""
    presence_penalty: float = 0.0
    """Additive: logit -= presence_penalty for every token already generated at least once (prompt not counted)."""
    frequency_penalty: float = 0.0
    """Additive: logit -= frequency_penalty * (times the token was already generated) (prompt not counted)."""
    seed: int | None = None
    """Seed for this request's random numbers: the same seed, prompt and device give the same samples."""
    min_tokens: int = 0
    """EOS and every stop token are blocked until this many tokens have been generated."""
    stop_token_ids: tuple[int, ...] = ()
    """Generation also stops when one of these token ids is generated (it is kept in the output)."""
    n: int = 1
    """Number of continuations to sample for one prompt, in one batched call."""

    def __post_init__(self) -> None:
        put = object.__setattr__  # the dataclass is frozen; normalise types once, here
        max_new = _integer("max_new_tokens", self.max_new_tokens)
        if max_new < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new}")
        put(self, "max_new_tokens", max_new)
        if not isinstance(self.do_sample, bool):
            raise TypeError(f"do_sample must be True or False, got {self.do_sample!r}")

        temperature = _number("temperature", self.temperature)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature!r}")
        put(self, "temperature", temperature)

        top_p = _number("top_p", self.top_p)
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p!r}")
        put(self, "top_p", top_p)

        top_k = _integer("top_k", self.top_k)
        if top_k < -1:
            raise ValueError(f"top_k must be -1 or 0 (all tokens) or a positive integer, got {top_k}")
        put(self, "top_k", top_k)

        min_p = _number("min_p", self.min_p)
        if not 0 <= min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1] (0 keeps every token), got {min_p!r}")
        put(self, "min_p", min_p)

        repetition = _number("repetition_penalty", self.repetition_penalty)
        lo, hi = REPETITION_PENALTY_RANGE
        if not lo <= repetition <= hi:
            raise ValueError(
                f"repetition_penalty must be > 0 and in [{lo:g}, {hi:g}] (1 means no penalty; vLLM accepts any "
                f"value > 0, but the extremes overflow float32 scores), got {repetition!r}"
            )
        put(self, "repetition_penalty", repetition)

        lo, hi = PENALTY_RANGE
        for name in ("presence_penalty", "frequency_penalty"):
            value = _number(name, getattr(self, name))
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be in [{lo:g}, {hi:g}] (vLLM's range; 0 means none), got {value!r}")
            put(self, name, value)

        if self.seed is not None:
            seed = _integer("seed", self.seed)
            if not 0 <= seed <= SEED_MAX:
                raise ValueError(f"seed must be None or an integer in [0, 2**64 - 1], got {seed}")
            put(self, "seed", seed)

        min_tokens = _integer("min_tokens", self.min_tokens)
        if min_tokens < 0:
            raise ValueError(f"min_tokens must be an integer >= 0, got {min_tokens}")
        if min_tokens > max_new:
            raise ValueError(f"min_tokens must be <= max_new_tokens ({max_new}), got {min_tokens}")
        put(self, "min_tokens", min_tokens)

        stops = self.stop_token_ids
        if stops is None:
            stops = ()
        if isinstance(stops, (str, bytes)) or not isinstance(stops, (Sequence, set, frozenset, torch.Tensor)):
            raise TypeError(f"stop_token_ids must be a list of token ids, got {stops!r}")
        if isinstance(stops, torch.Tensor):
            stops = stops.tolist()
        checked = []
        for token in stops:
            token = _integer("stop_token_ids", token)
            if token < 0:
                raise ValueError(f"stop_token_ids must hold token ids >= 0, got {token}")
            checked.append(token)
        put(self, "stop_token_ids", tuple(dict.fromkeys(checked)))

        n = _integer("n", self.n)
        if n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n}")
        put(self, "n", n)

    def __repr__(self) -> str:
        """Only the fields that differ from the defaults, e.g. ``SamplingParams(temperature=0.7, top_p=0.9)``."""
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        ]
        return f"SamplingParams({', '.join(changed)})"

    # -- derived views -------------------------------------------------------------------------------------------

    @property
    def greedy(self) -> bool:
        """True when decoding picks the most likely token: do_sample off, or temperature below 1e-5 (vLLM)."""
        return not self.do_sample or self.temperature < GREEDY_TEMPERATURE

    @property
    def top_k_for_transformers(self) -> int:
        """top_k as transformers wants it: 0 disables (transformers rejects -1)."""
        return max(self.top_k, 0)

    def replace(self, **changes: Any) -> SamplingParams:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (stop_token_ids as a list)."""
        out = dataclasses.asdict(self)
        out["stop_token_ids"] = list(self.stop_token_ids)
        return out

    def check_vocab(self, vocab_size: int) -> None:
        """Raise ValueError when a stop token id is outside a vocabulary of ``vocab_size`` tokens."""
        bad = [t for t in self.stop_token_ids if t >= vocab_size]
        if bad:
            raise ValueError(f"stop_token_ids must be in [0, {vocab_size - 1}] for this model's vocabulary, got {bad}")

    # -- translation to transformers -----------------------------------------------------------------------------

    def to_generation_config(
        self,
        *,
        prompt_length: int,
        eos_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
        base: GenerationConfig | None = None,
    ) -> tuple[GenerationConfig, LogitsProcessorList]:
        """A transformers GenerationConfig plus the processors it cannot express, for ``model.generate``.

        ``model.generate(ids, generation_config=gc, logits_processor=procs)`` then samples from the same
        distribution smolkit shows. Every sampling field is set explicitly so that neither the model's own
        generation_config.json nor transformers' defaults (top_k=50) leak in. ``prompt_length`` is the number of
        prompt tokens (the presence/frequency penalties count only what comes after them); ``eos_token_id`` is the
        model's end-of-sequence id(s), to which the stop tokens are added; ``base`` is the model's own
        generation config, consulted only to neutralise sampling fields it sets that the kit leaves off.

        >>> gc, procs = SamplingParams(temperature=0.7, top_k=-1, presence_penalty=0.5).to_generation_config(
        ...     prompt_length=10, eos_token_id=2)
        >>> gc.do_sample, gc.temperature, gc.top_k, gc.eos_token_id, [type(p).__name__ for p in procs]
        (True, 0.7, 0, [2], ['PresencePenaltyLogitsProcessor'])
        """
        eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        stops = list(dict.fromkeys([*eos, *self.stop_token_ids]))
        fields: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": not self.greedy,
            "num_beams": 1,
            "repetition_penalty": self.repetition_penalty,
            "eos_token_id": stops or None,
            "pad_token_id": pad_token_id if pad_token_id is not None else (stops[0] if stops else None),
        }
        if self.min_tokens > 0:
            # generate also derives min_length = prompt + min_new_tokens from it: a second stage, same block
            fields["min_new_tokens"] = self.min_tokens
        if not self.greedy:
            # Explicit values, not None: None would be filled in from the model's config or transformers' defaults.
            fields.update(temperature=self.temperature, top_k=self.top_k_for_transformers, top_p=self.top_p)
            if self.min_p > 0:
                fields["min_p"] = self.min_p
        for name, neutral in _NEUTRAL.items():
            value = getattr(base, name, None) if base is not None else None
            if name not in fields and value is not None and value != neutral:
                fields[name] = neutral  # the model's own config sets a stage the kit leaves off: switch it off
        gc = GenerationConfig(**fields)
        return gc, self.logits_processors(prompt_length)

    def logits_processors(self, prompt_length: int) -> LogitsProcessorList:
        """smolkit's own processors for what GenerationConfig cannot express (presence and frequency penalties)."""
        procs = LogitsProcessorList()
        if self.presence_penalty != 0:
            procs.append(PresencePenaltyLogitsProcessor(self.presence_penalty, prompt_length))
        if self.frequency_penalty != 0:
            procs.append(FrequencyPenaltyLogitsProcessor(self.frequency_penalty, prompt_length))
        return procs

    # -- export and import (the work is in smolkit.export) -------------------------------------------------------

    def to_vllm(self, as_object: bool = False) -> Any:
        """vLLM ``SamplingParams`` keyword arguments (a dict; the object with ``as_object=True``): see
        ``smolkit.export.to_vllm``."""
        from smolkit import export

        return export.to_vllm(self, as_object=as_object)

    def to_openai(self, model: str, messages: Sequence[Any] | None = None, tokenizer: Any = None) -> dict[str, Any]:
        """An OpenAI chat-completions request (vLLM's extensions in ``extra_body``): see
        ``smolkit.export.to_openai``."""
        from smolkit import export

        return export.to_openai(self, model=model, messages=messages, tokenizer=tokenizer)

    def snippet(self, target: str, **kwargs: Any) -> str:
        """Code to paste that runs this preset on "transformers", "vllm" or "openai": see ``smolkit.export.snippet``."""
        from smolkit import export

        return export.snippet(self, target, **kwargs)

    @classmethod
    def from_generation_config(cls, gc: Any, logits_processor: Any = None, **kwargs: Any) -> SamplingParams:
        """The preset a transformers GenerationConfig (+ smolkit's processors) stands for: see
        ``smolkit.export.from_generation_config``."""
        from smolkit import export

        return export.from_generation_config(gc, logits_processor, **kwargs)

    @classmethod
    def from_openai(cls, body: Any, **kwargs: Any) -> SamplingParams:
        """The preset an OpenAI chat-completions request body stands for: see ``smolkit.export.from_openai``."""
        from smolkit import export

        return export.from_openai(body, **kwargs)

    @classmethod
    def from_model_defaults(cls, source: Any, **kwargs: Any) -> SamplingParams:
        """The preset a model's own generation_config.json stands for (a LoadedModel, folder or Hub id): see
        ``smolkit.export.from_model_defaults``."""
        from smolkit import export

        return export.from_model_defaults(source, **kwargs)


def transformers_processors(
    model: Any,
    params: SamplingParams,
    input_ids: torch.LongTensor,
    prompt_length: int,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int | None = None,
) -> LogitsProcessorList:
    """The exact LogitsProcessorList ``model.generate`` builds for these params (see generate_processors).

    ``input_ids`` is the sequence the next token follows (prompt plus anything generated so far); ``prompt_length``
    where the prompt ends.
    """
    gc, custom = params.to_generation_config(
        prompt_length=prompt_length, eos_token_id=eos_token_id, pad_token_id=pad_token_id, base=model.generation_config
    )
    return generate_processors(model, gc, custom, input_ids, prompt_length)


def generate_processors(
    model: Any,
    gc: GenerationConfig,
    custom: LogitsProcessorList,
    input_ids: torch.LongTensor,
    prompt_length: int,
) -> LogitsProcessorList:
    """The processors ``model.generate(prompt, generation_config=gc, logits_processor=custom)`` builds, read from
    transformers itself.

    Not a copy of generate's logic: this calls the same (private) steps generate runs, in its order (merge the
    model's generation config and the library defaults, prepare the special tokens, derive the lengths, build the
    list), so the stages the kit shows are by construction the ones generate applies. Tests check the list against
    a real generate call, so a transformers release that changes these steps fails loudly.
    """
    has_default_max_length = gc.max_length is None and model.generation_config.max_length is None
    has_default_min_length = gc.min_length is None and model.generation_config.min_length is None
    merged, model_kwargs = model._prepare_generation_config(gc)
    model._prepare_special_tokens(merged, True, device=input_ids.device, batch_size=input_ids.shape[0])
    merged = model._prepare_generated_length(
        merged, has_default_max_length, has_default_min_length, "input_ids", prompt_length, input_ids
    )
    model_kwargs["attention_mask"] = torch.ones_like(input_ids)
    return model._get_logits_processor(
        generation_config=merged,
        input_ids_seq_length=prompt_length,
        encoder_input_ids=input_ids,
        logits_processor=custom,
        device=input_ids.device,
        model_kwargs=model_kwargs,
    )
