"""SamplingParams: the generation parameters in vLLM's vocabulary, validated once, as a plain value.

This module knows nothing of transformers: the translation to transformers' GenerationConfig and processors is
``smolkit.hf``; the exports to vLLM and OpenAI-style servers are ``smolkit.export``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from smolkit import _checks
from smolkit.vllm_rules import GREEDY_TEMPERATURE, PENALTY_RANGE

__all__ = ["REPETITION_PENALTY_RANGE", "SEED_MAX", "SamplingParams"]

SEED_MAX = 2**64 - 1

REPETITION_PENALTY_RANGE = (0.01, 100.0)
"""The kit's range for repetition_penalty. vLLM and transformers accept any value > 0, but the penalty divides or
multiplies float32 logits: below ~1e-38 a repeated token's score overflows to inf and every probability becomes NaN
(sampling then fails). 0.01-100 already makes repeated tokens all but certain or impossible."""


@dataclasses.dataclass(frozen=True, repr=False)
class SamplingParams:
    """Generation parameters with vLLM's names and meanings, validated on creation.

    Every field is checked in ``__post_init__`` (``smolkit._checks``): a wrong type raises TypeError, a value out
    of range ValueError, both naming the field, the value and what is valid. Use ``params.replace(temperature=0.7)``
    for variations.

    >>> SamplingParams(temperature=0.7, top_k=-1)
    SamplingParams(temperature=0.7)
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
    top_k: int = 0
    """Keep only the k most likely tokens; 0 keeps all tokens (vLLM's default and transformers' "off"). -1, older
    vLLM's spelling of "all", is accepted and stored as 0."""
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
        for name, value in _validated(self).items():
            object.__setattr__(self, name, value)  # frozen: the normalised values are set once, here

    def __repr__(self) -> str:
        """Only the fields that differ from the defaults, e.g. ``SamplingParams(temperature=0.7, top_p=0.9)``."""
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        ]
        return f"SamplingParams({', '.join(changed)})"

    @property
    def greedy(self) -> bool:
        """True when decoding picks the most likely token: do_sample off, or temperature below 1e-5 (vLLM)."""
        return not self.do_sample or self.temperature < GREEDY_TEMPERATURE

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
        _checks.token_ids("stop_token_ids", self.stop_token_ids, vocab_size)


REPETITION_NOTE = "must be > 0; 1 means no penalty; vLLM accepts any value > 0, but the extremes overflow float32"


def _validated(p: SamplingParams) -> dict[str, Any]:
    """Every field of ``p`` checked and normalised (ints as int, numbers as float, ids as a tuple)."""
    c = _checks
    max_new = c.integer("max_new_tokens", p.max_new_tokens, lo=1)
    lo, hi = REPETITION_PENALTY_RANGE
    plo, phi = PENALTY_RANGE
    stops = () if p.stop_token_ids is None else p.stop_token_ids  # an array has no truth value: no `or ()`
    out = {
        "max_new_tokens": max_new,
        "do_sample": c.boolean("do_sample", p.do_sample),
        "temperature": c.number("temperature", p.temperature, lo=0, note="0 means greedy"),
        "top_p": c.number("top_p", p.top_p, 0, 1, "1 keeps every token", open_lo=True),
        "top_k": max(c.integer("top_k", p.top_k, lo=-1, note="0 (or -1) keeps all tokens"), 0),
        "min_p": c.number("min_p", p.min_p, 0, 1, "0 keeps every token"),
        "repetition_penalty": c.number("repetition_penalty", p.repetition_penalty, lo, hi, REPETITION_NOTE),
        "presence_penalty": c.number("presence_penalty", p.presence_penalty, plo, phi, "vLLM's range; 0 means none"),
        "frequency_penalty": c.number("frequency_penalty", p.frequency_penalty, plo, phi, "vLLM's range; 0 means none"),
        "seed": None if p.seed is None else c.integer("seed", p.seed, 0, SEED_MAX, "None or 0 to 2**64 - 1"),
        "min_tokens": c.integer("min_tokens", p.min_tokens, lo=0),
        "stop_token_ids": tuple(dict.fromkeys(c.token_ids("stop_token_ids", stops))),
        "n": c.integer("n", p.n, lo=1),
    }
    if out["min_tokens"] > max_new:
        raise ValueError(f"min_tokens must be <= max_new_tokens ({max_new}), got {out['min_tokens']}")
    return out
