"""Looking inside the sampling stages: per-stage tables, the penalty arithmetic, vLLM's order, parameter grids.

Everything here works on a ``Distribution``'s cached logits (no forward pass) and uses the processors transformers'
``generate`` builds for the same parameters (``smolkit.params.transformers_processors``): the kit shows the stages,
it never re-implements them. The results are plain rows for ``smolkit.distribution.format_rows``, or text with few
digits, so that a notebook can print what a figure shows and nbval can compare it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from transformers import RepetitionPenaltyLogitsProcessor

from smolkit.distribution import Distribution, entropy_bits, grid, stage_name
from smolkit.export import VLLM_STAGE_ORDER
from smolkit.params import transformers_processors
from smolkit.processors import (
    FrequencyPenaltyLogitsProcessor,
    PresencePenaltyLogitsProcessor,
    generated_token_counts,
)

__all__ = [
    "grid_table",
    "in_order",
    "order_of",
    "penalty_rows",
    "stage_rows",
]


def order_of(stage_names: Sequence[str], order: Sequence[str] = VLLM_STAGE_ORDER) -> list[str]:
    """``stage_names`` sorted into ``order``; names ``order`` does not know keep their place at the front.

    >>> order_of(["raw", "temperature", "top_k", "top_p", "min_p", "final"])
    ['temperature', 'min_p', 'top_k', 'top_p']
    """
    names = [s for s in stage_names if s not in ("raw", "greedy", "final")]
    unknown = [s for s in names if s not in order]
    return unknown + sorted((s for s in names if s in order), key=order.index)


def in_order(dist: Distribution, order: Sequence[str] = VLLM_STAGE_ORDER) -> Distribution:
    """The same next token with the same stages applied in another ``order`` (default: vLLM's), stage by stage,
    from the cached logits. The processors are transformers' own for ``dist.params``, only their order changes
    (``smolkit.export.in_vllm_order`` gives the final probabilities alone; this keeps every stage, for plots).

    With temperature, top_p and min_p together the orders disagree: min_p before top_p (vLLM) renormalises first,
    so top_p's share is taken of a smaller total and keeps fewer tokens than min_p after top_p (transformers).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' notes about generation flags the kit sets on purpose
        processors = transformers_processors(
            dist.lm.model, dist.params, dist.input_ids, dist.prompt_length, dist.lm.eos_token_ids, dist.lm.pad_token_id
        )
    by_name = {stage_name(p): p for p in processors}
    scores = dist.logits.unsqueeze(0)
    stages: dict[str, torch.Tensor] = {"raw": torch.softmax(scores, dim=-1)[0]}
    for name in order_of(list(by_name), order):
        scores = by_name[name](dist.input_ids, scores)
        stages[name] = torch.softmax(scores, dim=-1)[0]
    if dist.params.greedy:
        one_hot = torch.zeros_like(dist.logits)
        one_hot[int(scores[0].argmax())] = 1.0
        stages["greedy"] = one_hot
    stages["final"] = stages[list(stages)[-1]]
    return Distribution(dist.lm, dist.params, dist.logits, dist.input_ids, dist.prompt_length, stages)


def stage_rows(dist: Distribution) -> list[dict[str, Any]]:
    """One row per stage, in the order applied: entropy (bits), tokens that can still be sampled, the top token and
    its probability. Print with ``format_rows``."""
    rows = []
    for name, probs in dist.stages.items():
        if name == "final":
            continue
        top = dist.top(1, name)[0]
        rows.append(
            {
                "stage": name,
                "entropy": entropy_bits(probs),
                "surviving": int((probs > 0).sum()),
                "top": top.token,
                "p_top": top.prob,
            }
        )
    return rows


def penalty_rows(
    dist: Distribution,
    n: int = 6,
    repetition_penalty: float | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    token_ids: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """The penalty arithmetic for the ``n`` most likely next tokens (or ``token_ids``), one penalty at a time.

    Columns: in the prompt (True or False), times already generated, the raw logit, then the logit after each
    penalty given, alone: repetition (multiplicative, prompt and generated: logit / r if positive, logit * r if
    negative), presence (``logit - p`` once generated) and frequency (``logit - f * count``). With no penalty
    given, all three are shown at 1.3, 1.0 and 0.5. A logit is the model's score before the softmax; probabilities
    are proportional to exp(logit), so subtracting 1 from a logit divides that token's odds by e (about 2.7).
    """
    if repetition_penalty is None and presence_penalty is None and frequency_penalty is None:
        repetition_penalty, presence_penalty, frequency_penalty = 1.3, 1.0, 0.5
    ids = list(token_ids) if token_ids is not None else [t.id for t in dist.top(n, "raw")]
    input_ids, logits = dist.input_ids, dist.logits.unsqueeze(0)
    counts = generated_token_counts(input_ids, dist.prompt_length, logits.shape[-1])[0]
    prompt = set(input_ids[0, : dist.prompt_length].tolist())
    after: dict[str, Any] = {}
    if repetition_penalty is not None:
        after[f"repetition {repetition_penalty:g}"] = RepetitionPenaltyLogitsProcessor(repetition_penalty)
    if presence_penalty is not None:
        after[f"presence {presence_penalty:g}"] = PresencePenaltyLogitsProcessor(presence_penalty, dist.prompt_length)
    if frequency_penalty is not None:
        after[f"frequency {frequency_penalty:g}"] = FrequencyPenaltyLogitsProcessor(
            frequency_penalty, dist.prompt_length
        )
    penalised = {name: proc(input_ids, logits.clone())[0] for name, proc in after.items()}
    rows = []
    for i in ids:
        row: dict[str, Any] = {
            "token": dist.lm.token_text(i),
            "in prompt": i in prompt,
            "generated": int(counts[i]),
            "logit": float(dist.logits[i]),
        }
        row.update({name: float(values[i]) for name, values in penalised.items()})
        rows.append(row)
    return rows


def grid_table(
    dist: Distribution,
    temperatures: Sequence[float],
    top_ps: Sequence[float],
    metric: str = "entropy",
) -> str:
    """The numbers behind ``viz.plot_heatmap``: ``metric`` ("entropy" in bits, or "surviving" tokens) for each
    temperature (columns) and top_p (rows, the largest first, as the heatmap shows them top to bottom)."""
    rows = sorted(top_ps, reverse=True)
    values = grid(dist, temperatures, rows, metric)
    header = ["top_p \\ T", *(f"{t:g}" for t in temperatures)]
    table = [header] + [
        [f"{p:g}", *(f"{v:.2f}" if metric == "entropy" else f"{v:.0f}" for v in row)]
        for p, row in zip(rows, values, strict=True)
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in table)
