"""presets: factual / balanced / creative SamplingParams and what they do to the next-token distribution."""

from __future__ import annotations

import pytest
from conftest import PROMPT

from smolkit import SamplingParams, next_token_distribution
from smolkit.presets import PRESETS, preset


def test_presets_sit_in_the_documented_temperature_ranges():
    assert set(PRESETS) == {"factual", "balanced", "creative"}
    assert all(isinstance(p, SamplingParams) for p in PRESETS.values())
    assert PRESETS["factual"].greedy and not PRESETS["balanced"].greedy and not PRESETS["creative"].greedy
    assert PRESETS["factual"].temperature < PRESETS["balanced"].temperature < PRESETS["creative"].temperature


def test_preset_returns_a_validated_copy():
    p = preset("creative", seed=3)
    assert p.seed == 3 and p.temperature == PRESETS["creative"].temperature
    assert PRESETS["creative"].seed is None
    assert preset("factual") is PRESETS["factual"]
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("wild")
    with pytest.raises(ValueError, match="top_p"):
        preset("balanced", top_p=1.5)


def test_presets_order_the_uncertainty(lm):
    """factual samples from a sharper distribution than balanced, balanced than creative."""
    dist = next_token_distribution(lm, "Write a story about a dragon.", SamplingParams())
    entropies = [dist.with_params(PRESETS[name]).entropy for name in ("factual", "balanced", "creative")]
    assert entropies[0] < entropies[1] < entropies[2]
    factual = next_token_distribution(lm, PROMPT, PRESETS["factual"])
    assert factual.top(1)[0].prob > factual.top(1, "raw")[0].prob  # low temperature sharpens the model's choice
