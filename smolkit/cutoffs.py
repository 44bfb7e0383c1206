"""What a cut-off (top_k, top_p, min_p) keeps: how many tokens, and how much of the model's probability mass.

top_k keeps a fixed number of tokens whatever the distribution looks like; top_p keeps a fixed share of the
probability mass, so the number of tokens adapts. Counting both, survivors and the model's mass they carry, makes
the difference visible in numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from smolkit.distribution import Distribution

__all__ = ["cutoff_rows", "kept_mass", "mass_of_survivors"]


def mass_of_survivors(base: torch.Tensor, after: torch.Tensor) -> float:
    """The total ``base`` probability of the tokens that still have a non-zero probability in ``after``.

    >>> mass_of_survivors(torch.tensor([0.5, 0.25, 0.25]), torch.tensor([0.6, 0.4, 0.0]))
    0.75
    """
    return float(base[after > 0].double().sum())


def kept_mass(dist: Distribution, stage: str = "final", base: str = "raw") -> float:
    """Share of the ``base`` distribution (the model's, by default) carried by the tokens that survive ``stage``.

    1.0 means the cut-off removed nothing the model believed in; 0.6 means 40 % of the model's probability was on
    tokens that can no longer be sampled.
    """
    for name in (stage, base):
        if name not in dist.stages:
            raise ValueError(f"stage must be one of {list(dist.stages)}, got {name!r}")
    return mass_of_survivors(dist.stages[base], dist.stages[stage])


def cutoff_rows(dist: Distribution, name: str, values: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per value of parameter ``name`` (e.g. "top_k"): surviving tokens, the model's mass they carry,
    entropy (bits) and the top token's probability, from the cached logits. Print with
    ``smolkit.distribution.format_rows``."""
    rows = []
    for value in values:
        d = dist.with_params(**{name: value})
        rows.append(
            {
                name: value,
                "surviving": d.surviving(),
                "kept_mass": kept_mass(d),
                "entropy": d.entropy,
                "p_top": d.top(1)[0].prob,
            }
        )
    return rows
