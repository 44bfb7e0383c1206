"""The logits processors transformers lacks: vLLM's additive presence and frequency penalties.

Written by hand because transformers has no equivalent (its ``repetition_penalty`` is multiplicative and also
counts the prompt). Both follow the shape of transformers' own processors: validate in ``__init__``, state the
formula in the docstring, work on a batch of scores in ``__call__``, and can be passed to ``model.generate`` via
``logits_processor=``, where generate runs them after its own penalties and before temperature (as vLLM does).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from smolkit import _checks
from smolkit.vllm_rules import PENALTY_RANGE

__all__ = ["FrequencyPenaltyLogitsProcessor", "PresencePenaltyLogitsProcessor", "generated_token_counts"]


def generated_token_counts(input_ids: torch.LongTensor, prompt_length: int, vocab_size: int) -> torch.Tensor:
    """How often each vocabulary id occurs in each row's generated part (``input_ids[:, prompt_length:]``).

    >>> generated_token_counts(torch.tensor([[5, 1, 1, 3]]), prompt_length=1, vocab_size=4).tolist()
    [[0.0, 2.0, 0.0, 1.0]]
    """
    generated = input_ids[:, prompt_length:]
    counts = torch.zeros(input_ids.shape[0], vocab_size, dtype=torch.float32, device=input_ids.device)
    return counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=torch.float32))


class _GeneratedTokenPenalty(LogitsProcessor):
    """What both penalties share: the penalty (in [-2, 2], vLLM's range; 0 changes nothing), and where the prompt
    ends, whose tokens do not count.

    ``prompt_length=None`` (for a processor reused across ``generate`` calls) finds the prompt's end itself: the
    first call of a generation sees the prompt alone, and every later call of the same generation sees the previous
    call's ids plus one token per row; any other call starts a new generation.
    """

    name = ""

    def __init__(self, penalty: float, prompt_length: int | None = None):
        lo, hi = PENALTY_RANGE
        self.value = _checks.number(self.name, penalty, lo, hi, "vLLM's range; 0 means none")
        self.prompt_length = None if prompt_length is None else _checks.integer("prompt_length", prompt_length, lo=0)
        self._fixed = prompt_length is not None
        self._last: torch.Tensor | None = None

    def _prompt_length(self, input_ids: torch.LongTensor) -> int:
        if self._fixed:
            return self.prompt_length
        last = self._last
        continues = (
            last is not None
            and input_ids.shape == (last.shape[0], last.shape[1] + 1)
            and torch.equal(input_ids[:, :-1], last)
        )
        if not continues:
            self.prompt_length = input_ids.shape[1]
        self._last = input_ids.clone()
        return self.prompt_length

    def counts(self, input_ids: torch.LongTensor, vocab_size: int) -> torch.Tensor:
        """How often each token occurs in each row's generated part."""
        return generated_token_counts(input_ids, self._prompt_length(input_ids), vocab_size)


class PresencePenaltyLogitsProcessor(_GeneratedTokenPenalty):
    r"""Subtracts a flat penalty from every token that already appears in the generated text (vLLM's presence_penalty).

    ``logit[v] -= presence_penalty * [count(v) > 0]``, where count is over generated tokens only (the prompt does not
    count, unlike transformers' multiplicative ``repetition_penalty``). Positive values push towards new tokens,
    negative values towards repeats. ``prompt_length``: see ``_GeneratedTokenPenalty`` (None: one processor serves
    any prompt).

    >>> proc = PresencePenaltyLogitsProcessor(1.5, prompt_length=1)
    >>> proc(torch.tensor([[2, 1, 1]]), torch.zeros(1, 3)).tolist()
    [[0.0, -1.5, 0.0]]
    """

    name = "presence_penalty"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores - self.value * (self.counts(input_ids, scores.shape[-1]) > 0).to(scores.dtype)


class FrequencyPenaltyLogitsProcessor(_GeneratedTokenPenalty):
    r"""Subtracts a penalty proportional to how often a token already appears in the generated text (vLLM's).

    ``logit[v] -= frequency_penalty * count(v)``, where count is over generated tokens only. Unlike the presence
    penalty it grows with every repeat, so a word used five times is pushed down five times as hard.

    >>> proc = FrequencyPenaltyLogitsProcessor(0.5, prompt_length=1)
    >>> proc(torch.tensor([[2, 1, 1]]), torch.zeros(1, 3)).tolist()
    [[0.0, -1.0, 0.0]]
    """

    name = "frequency_penalty"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores - self.value * self.counts(input_ids, scores.shape[-1]).to(scores.dtype)
