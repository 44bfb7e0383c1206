"""Ready-made SamplingParams for common jobs: factual answers, balanced chat, creative writing.

Starting points, not laws: each names what it is for and why its values were chosen, so that a learner can
change one thing and see what moves (notebooks 09 and 10 put them side by side).
"""

from __future__ import annotations

from typing import Any

from smolkit.params import SamplingParams

__all__ = ["PRESETS", "preset"]

PRESETS: dict[str, SamplingParams] = {
    "factual": SamplingParams(temperature=0.2),
    "balanced": SamplingParams(temperature=0.7, top_p=0.9),
    "creative": SamplingParams(temperature=1.0, top_p=0.95, repetition_penalty=1.1),
}
"""factual: temperature 0.2 (the 0.1-0.3 range) keeps almost all the mass on the model's first choices; answers
barely change from run to run. balanced: temperature 0.7 (0.5-0.7) with top_p 0.9 to drop the unlikely tail.
creative: temperature 1.0 (0.8-1.5) samples the model as trained, top_p 0.95 removes only the far tail, and a mild
repetition_penalty 1.1 keeps small models out of loops."""


def preset(name: str, **changes: Any) -> SamplingParams:
    """The preset ``name`` ("factual", "balanced" or "creative"), with any fields changed (validated again).

    >>> preset("factual", seed=1, max_new_tokens=20)
    SamplingParams(max_new_tokens=20, temperature=0.2, seed=1)
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]
