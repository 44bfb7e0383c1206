"""What vLLM does with the same parameters: its constants, ranges and stage order, in one place.

The kit speaks vLLM's vocabulary but samples with transformers; wherever the two stacks differ, the difference is
written here once and read by the parameters, the exports, ``explain`` and the vLLM-order replay. Checked against
vLLM 0.24 (``vllm/sampling_params.py``, ``vllm/v1/sample/sampler.py``, the OpenAI-compatible server's protocol).
"""

from __future__ import annotations

__all__ = [
    "GREEDY_TEMPERATURE",
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "OPENAI_MAX_SEED",
    "OPENAI_MAX_STOP",
    "PENALTY_RANGE",
    "SERVER_GENERATION_CONFIG_FIELDS",
    "STAGE_ORDER",
    "VERSION",
    "sampled_temperature",
]

VERSION = "0.24"
"""The vLLM release these rules were checked against."""

GREEDY_TEMPERATURE = 1e-5
"""Temperatures below this mean greedy decoding (vLLM's ``_SAMPLING_EPS``)."""

MIN_TEMPERATURE = 0.01
"""vLLM raises a temperature in (1e-5, 0.01) to 0.01 before sampling, with a warning (a tiny temperature
overflows the scaled logits)."""

MAX_TEMPERATURE = 2.0
"""vLLM >= 0.24 rejects temperature > 2, as the OpenAI API does."""

PENALTY_RANGE = (-2.0, 2.0)
"""vLLM's range for presence_penalty and frequency_penalty."""

OPENAI_MAX_SEED = 2**63 - 1
"""The OpenAI API's seed (and vLLM's server's) is a signed 64-bit integer."""

OPENAI_MAX_STOP = 4
"""The OpenAI API accepts at most 4 stop strings."""

STAGE_ORDER = (
    "min_tokens",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "temperature",
    "min_p",
    "top_k",
    "top_p",
)
"""The order vLLM's sampler applies the stages in (the ``Sampler`` docstring): processors that can change the
argmax (min_tokens), the penalties, temperature, the argmax-invariant processors (min_p), then top-k and top-p.
transformers applies min_p last, after top_p."""

SERVER_GENERATION_CONFIG_FIELDS = (
    "repetition_penalty",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "max_new_tokens",
)
"""The fields of a model's generation_config.json that a vLLM server takes as request defaults
(``ModelConfig.get_diff_sampling_param``); it reads no ``do_sample``."""


def sampled_temperature(temperature: float) -> float:
    """The temperature vLLM really divides by: 0 (greedy) below 1e-5, at least 0.01 otherwise.

    >>> sampled_temperature(0.0), sampled_temperature(0.005), sampled_temperature(0.7)
    (0.0, 0.01, 0.7)
    """
    if temperature < GREEDY_TEMPERATURE:
        return 0.0
    return max(temperature, MIN_TEMPERATURE)
