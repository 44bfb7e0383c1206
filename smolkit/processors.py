"""The logits processors transformers lacks: vLLM's additive presence and frequency penalties.

Written by hand because transformers has no equivalent (its ``repetition_penalty`` is multiplicative and also
counts the prompt). Both follow the shape of transformers' own processors: validate in ``__init__``, state the
formula in the docstring, work on a batch of scores in ``__call__``, and can be passed to ``model.generate`` via
``logits_processor=``, where generate runs them after its own penalties and before temperature (as vLLM does).
"""

from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor

__all__ = ["FrequencyPenaltyLogitsProcessor", "PresencePenaltyLogitsProcessor", "generated_token_counts"]

PENALTY_RANGE = (-2.0, 2.0)  # vLLM's documented range for presence_penalty and frequency_penalty


def _check_penalty(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    lo, hi = PENALTY_RANGE
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}] (vLLM's range), got {value!r}")
    return float(value)


def _check_prompt_length(prompt_length: int) -> int:
    if isinstance(prompt_length, bool) or not isinstance(prompt_length, int) or prompt_length < 0:
        raise ValueError(f"prompt_length must be an int >= 0, got {prompt_length!r}")
    return prompt_length


def generated_token_counts(input_ids: torch.LongTensor, prompt_length: int, vocab_size: int) -> torch.Tensor:
    """How often each vocabulary id occurs in each row's generated part (``input_ids[:, prompt_length:]``).

    >>> generated_token_counts(torch.tensor([[5, 1, 1, 3]]), prompt_length=1, vocab_size=4).tolist()
    [[0.0, 2.0, 0.0, 1.0]]
    """
    generated = input_ids[:, prompt_length:]
    counts = torch.zeros(input_ids.shape[0], vocab_size, dtype=torch.float32, device=input_ids.device)
    return counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=torch.float32))


class PresencePenaltyLogitsProcessor(LogitsProcessor):
    r"""Subtracts a flat penalty from every token that already appears in the generated text (vLLM's presence_penalty).

    ``logit[v] -= presence_penalty * [count(v) > 0]``, where count is over generated tokens only (the prompt does not
    count, unlike transformers' multiplicative ``repetition_penalty``). Positive values push towards new tokens,
    negative values towards repeats.

    Args:
        presence_penalty: in [-2, 2]; 0 changes nothing.
        prompt_length: number of leading tokens of ``input_ids`` that are the prompt (not counted).

    >>> proc = PresencePenaltyLogitsProcessor(1.5, prompt_length=1)
    >>> proc(torch.tensor([[2, 1, 1]]), torch.zeros(1, 3)).tolist()
    [[0.0, -1.5, 0.0]]
    """

    def __init__(self, presence_penalty: float, prompt_length: int):
        self.presence_penalty = _check_penalty("presence_penalty", presence_penalty)
        self.prompt_length = _check_prompt_length(prompt_length)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        counts = generated_token_counts(input_ids, self.prompt_length, scores.shape[-1])
        return scores - self.presence_penalty * (counts > 0).to(scores.dtype)


class FrequencyPenaltyLogitsProcessor(LogitsProcessor):
    r"""Subtracts a penalty proportional to how often a token already appears in the generated text (vLLM's).

    ``logit[v] -= frequency_penalty * count(v)``, where count is over generated tokens only. Unlike the presence
    penalty it grows with every repeat, so a word used five times is pushed down five times as hard.

    Args:
        frequency_penalty: in [-2, 2]; 0 changes nothing.
        prompt_length: number of leading tokens of ``input_ids`` that are the prompt (not counted).

    >>> proc = FrequencyPenaltyLogitsProcessor(0.5, prompt_length=1)
    >>> proc(torch.tensor([[2, 1, 1]]), torch.zeros(1, 3)).tolist()
    [[0.0, -1.0, 0.0]]
    """

    def __init__(self, frequency_penalty: float, prompt_length: int):
        self.frequency_penalty = _check_penalty("frequency_penalty", frequency_penalty)
        self.prompt_length = _check_prompt_length(prompt_length)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        counts = generated_token_counts(input_ids, self.prompt_length, scores.shape[-1])
        return scores - self.frequency_penalty * counts.to(scores.dtype)
