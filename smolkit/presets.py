"""Ready-made SamplingParams for common jobs: factual answers, balanced chat, creative writing.

Starting points, not laws: each names what it is for and why its values were chosen, so that a learner can
change one thing and see what moves (notebooks 09 and 10 put them side by side).
"""

from __future__ import annotations

from typing import Any

from smolkit.params import SamplingParams

__all__ = ["PRESETS", "preset"]

PRESETS: dict[str, SamplingParams] = {
    "factual": SamplingParams(temperature=0),
    "balanced": SamplingParams(temperature=0.5),
    "creative": SamplingParams(temperature=0.69),
}
"""Each preset turns one knob, as the measurement in ``smolkit/data/advice.json`` advises (notebook 09 shows it, and
tests/test_advice.py holds these values to the file's recommendation). factual: greedy, the most accurate recipe on
the kit's 42 factual questions (30 right; the source README's recipe, temperature 0.2 with top_p 0.3 and
repetition_penalty 1.3, got 24 right, both answering each question the same way every time). Per question their
intervals overlap (0.57-0.86 and 0.43-0.71), and compared question by question (``advice_rows``: ``vs low``,
``vs high``) the difference, -0.14 (-0.31 to 0.02), holds 0: 42 questions cannot tell the two apart, so
greedy is chosen as the simpler recipe, not as the proven better one. creative: temperature 0.69 alone, at the
entropy of the source README's creative recipe (temperature 0.85 with top_p 0.9); the rule prefers, among the
settings eight prompts cannot separate from the lowest off-topic rate, the fewest tokens outside the model's top 5.
balanced: temperature 0.5, between the two (not measured)."""


def preset(name: str, **changes: Any) -> SamplingParams:
    """The preset ``name`` ("factual", "balanced" or "creative"), with any fields changed (validated again).

    >>> preset("factual", seed=1, max_new_tokens=20)
    SamplingParams(max_new_tokens=20, temperature=0.0, seed=1)
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]
