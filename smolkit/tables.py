"""Numbers behind the figures, as rows and plain-text tables: parameter sweeps, stages, penalties, grids.

Everything here works on a ``Distribution``'s cached logits (no forward pass) and prints with few digits, so that a
notebook can print what a figure shows and the regression tests (nbval) can compare it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import RepetitionPenaltyLogitsProcessor

from smolkit import _checks
from smolkit.distribution import Distribution
from smolkit.processors import (
    FrequencyPenaltyLogitsProcessor,
    PresencePenaltyLogitsProcessor,
    generated_token_counts,
)

__all__ = ["COLUMNS", "format_rows", "grid", "grid_table", "penalty_rows", "stage_rows", "sweep"]

Floats = Sequence[float]

COLUMNS = ("entropy", "surviving", "kept_mass", "top", "p_top")
"""What a row can say about a distribution at a stage: entropy (bits), tokens that can still be sampled, the
model's probability mass they carry, the most likely token and its probability."""


def _row(dist: Distribution, stage: str, columns: Sequence[str]) -> dict[str, Any]:
    best = dist.top(1, stage)[0]
    values = {
        "entropy": lambda: dist.stage_entropy(stage),
        "surviving": lambda: dist.surviving(stage),
        "kept_mass": lambda: dist.kept_mass(stage),
        "top": lambda: best.token,
        "p_top": lambda: best.prob,
    }
    return {name: values[name]() for name in columns}


def _check_columns(columns: Sequence[str]) -> tuple[str, ...]:
    if isinstance(columns, str) or any(c not in COLUMNS for c in columns):
        raise ValueError(f"columns must be a list of names among {', '.join(COLUMNS)}, got {columns!r}")
    return tuple(columns)


def sweep(
    dist: Distribution,
    name: str,
    values: Sequence[Any],
    columns: Sequence[str] = ("entropy", "surviving", "top", "p_top"),
) -> list[dict[str, Any]]:
    """One row per value of parameter ``name`` (e.g. "temperature"), the other parameters as in ``dist``, with
    ``columns`` (see COLUMNS) of the final distribution, from the cached logits. Print it with ``format_rows``."""
    columns = _check_columns(columns)
    return [{name: value, **_row(dist.with_params(**{name: value}), "final", columns)} for value in values]


def stage_rows(
    dist: Distribution, columns: Sequence[str] = ("entropy", "surviving", "top", "p_top")
) -> list[dict[str, Any]]:
    """One row per stage, in the order applied, with ``columns`` (see COLUMNS). Print with ``format_rows``."""
    columns = _check_columns(columns)
    return [{"stage": name, **_row(dist, name, columns)} for name in dist.stages if name != "final"]


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
    vocab = dist.logits.numel()
    ids = list(_checks.token_ids("token_ids", token_ids, vocab)) if token_ids is not None else None
    ids = ids if ids is not None else [t.id for t in dist.top(n, "raw")]
    input_ids, logits = dist.input_ids, dist.logits.unsqueeze(0)
    counts = generated_token_counts(input_ids, dist.prompt_length, vocab)[0]
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
    texts = dist.lm.token_texts(ids)
    return [
        {
            "token": text,
            "in prompt": i in prompt,
            "generated": int(counts[i]),
            "logit": float(dist.logits[i]),
            **{name: float(values[i]) for name, values in penalised.items()},
        }
        for i, text in zip(ids, texts, strict=True)
    ]


def grid(
    dist: Distribution, temperatures: Sequence[float], top_ps: Sequence[float], metric: str = "entropy"
) -> list[list[float]]:
    """``metric`` ("entropy" in bits, or "surviving" tokens) for every top_p (rows, in the order given) and
    temperature (columns), from the cached logits: the numbers behind a temperature x top_p heatmap."""
    _checks.choice("metric", metric, ("entropy", "surviving"))
    rows = []
    for p in top_ps:
        cells = [dist.with_params(temperature=float(t), top_p=float(p), do_sample=True) for t in temperatures]
        rows.append([d.entropy if metric == "entropy" else float(d.surviving()) for d in cells])
    return rows


def grid_table(dist: Distribution, temperatures: Floats, top_ps: Floats, metric: str = "entropy") -> str:
    """The numbers behind ``viz.plot_heatmap``: ``metric`` ("entropy" in bits, or "surviving" tokens) for each
    temperature (columns) and top_p (rows, the largest first, as the heatmap shows them top to bottom)."""
    ordered = sorted(top_ps, reverse=True)
    cell = (lambda v: f"{v:.2f}") if metric == "entropy" else (lambda v: f"{v:.0f}")
    header = ["top_p \\ T", *(f"{t:g}" for t in temperatures)]
    body = [
        [f"{p:g}", *map(cell, row)] for p, row in zip(ordered, grid(dist, temperatures, ordered, metric), strict=True)
    ]
    return layout([header, *body], right=True)


def format_rows(rows: Sequence[dict[str, Any]], digits: int = 3) -> str:
    """A plain-text table of ``rows`` (as from ``sweep``): the first column (the parameter) as given, other floats
    rounded to ``digits``, strings quoted, so that the text is stable for nbval.

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

    return layout([columns, *([cell(row[c], i == 0) for i, c in enumerate(columns)] for row in rows)])


def layout(table: Sequence[Sequence[str]], right: bool = False) -> str:
    """Cells in columns two spaces apart, each column as wide as its widest cell (left- or right-aligned).

    >>> print(layout([["a", "bb"], ["ccc", "d"]]))
    a    bb
    ccc  d
    """
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    pad = str.rjust if right else str.ljust
    return "\n".join("  ".join(pad(v, w) for v, w in zip(row, widths, strict=True)).rstrip() for row in table)
