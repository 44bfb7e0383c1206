"""The explorers driven to the ends of their sliders: never NaN, never an exception; a bad value shows an error.

Sliders are moved as a person moves them (setting ``.value`` fires the same observer the browser does); ``update``
is what code calls. After each move the distribution shown is a probability vector and every bar is finite.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pytest
from conftest import PROMPT

from smolkit import SamplingParams
from smolkit.distribution import is_probability_vector
from smolkit.viz import BarsPlot, CumulativePlot
from smolkit.widgets import CONTROLS, DistributionExplorer, StepExplorer

DEFAULTS = SamplingParams()


def extremes(name: str) -> list:
    """The values a person can reach at the ends of a slider, plus the special values around them."""
    spec = CONTROLS[name]
    values = [spec["min"], spec["max"], spec["min"] + spec["step"], spec["max"] - spec["step"]]
    if name == "top_k":
        values += [1]  # 0 means every token; 1 is greedy by another road
    if name == "top_p":
        values += [1.0]
    return sorted(set(values))


def assert_sound(explorer) -> None:
    dist = explorer.dist
    assert is_probability_vector(dist.probs), dist.params
    assert dist.surviving() >= 1 and math.isfinite(dist.entropy)
    for plot in explorer.live.plots:
        bars = [*plot.stage_bars, *plot.base_bars] if isinstance(plot, BarsPlot) else plot.bars
        assert isinstance(plot, (BarsPlot, CumulativePlot))
        heights = np.array([bar.get_height() for bar in bars])
        assert np.isfinite(heights).all() and (heights >= 0).all() and heights.max() <= 1 + 1e-3
        assert all(math.isfinite(v) for v in plot.ax.get_ylim())
    assert bytes(explorer.png).startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def explorer(lm):
    return DistributionExplorer(lm, PROMPT, SamplingParams(), controls=tuple(CONTROLS), view="both")


@pytest.mark.parametrize("name", list(CONTROLS))
def test_each_slider_at_its_ends(explorer, name):
    for value in extremes(name):
        explorer.sliders[name].value = value
        assert explorer.error.value == "", explorer.error.value
        assert getattr(explorer.params, name) == pytest.approx(value)
        assert_sound(explorer)
    explorer.sliders[name].value = getattr(DEFAULTS, name)


@pytest.mark.parametrize(
    "corner",
    [
        {"temperature": 0.0, "top_k": 1, "top_p": 0.05, "min_p": 0.5},
        {"temperature": 2.0, "top_k": -1, "top_p": 1.0, "min_p": 0.0},
        {"temperature": 0.05, "top_k": 100, "top_p": 0.05, "min_p": 0.5, "repetition_penalty": 2.0},
        {
            "temperature": 2.0,
            "top_k": 1,
            "repetition_penalty": 0.5,
            "presence_penalty": -2.0,
            "frequency_penalty": -2.0,
        },
        {"temperature": 2.0, "top_p": 0.05, "presence_penalty": 2.0, "frequency_penalty": 2.0, "min_tokens": 32},
    ],
    ids=["all-cut", "nothing-cut", "cold-and-cut", "hot-top-1-encouraged", "hot-penalised-min-tokens"],
)
def test_corners_of_every_slider_at_once(explorer, corner):
    explorer.update(**corner)
    assert explorer.error.value == ""
    assert_sound(explorer)
    if corner.get("temperature") == 0.0 or corner.get("top_k") == 1:
        assert explorer.dist.surviving() == 1
    explorer.update(**{name: getattr(DEFAULTS, name) for name in corner})


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"temperature": -0.5}, ["temperature", ">= 0", "-0.5"]),
        ({"top_p": 0.0}, ["top_p", "(0, 1]"]),
        ({"top_k": 2.5}, ["top_k", "integer", "2.5"]),
        ({"min_p": float("nan")}, ["min_p", "finite"]),
        ({"repetition_penalty": 1e-40}, ["repetition_penalty", "[0.01, 100]"]),
        ({"min_tokens": 65}, ["min_tokens", "<= max_new_tokens (64)"]),
        ({"temperture": 0.5}, ["temperture"]),
    ],
    ids=repr,
)
def test_a_bad_value_shows_an_error_and_keeps_the_last_good_picture(explorer, change, words):
    explorer.update(temperature=0.7, top_k=20)
    dist, png, params = explorer.dist, bytes(explorer.png), explorer.params
    returned = explorer.update(**change)
    for word in words:
        assert word in html.unescape(explorer.error.value), f"{word!r} missing from {explorer.error.value!r}"
    assert returned is dist and explorer.dist is dist and bytes(explorer.png) == png and explorer.params == params
    explorer.update(temperature=0.8)  # the next good value clears the error and redraws
    assert explorer.error.value == "" and explorer.params.temperature == 0.8 and bytes(explorer.png) != png
    explorer.update(**{"temperature": 1.0, "top_k": -1})


def test_constructor_refuses_bad_arguments_before_model_work(lm, model_work):
    with model_work(lm) as work:
        for kwargs, error, match in [
            ({"controls": ("temperature", "heat")}, ValueError, r"controls must be .*'heat'"),
            ({"controls": "temperature"}, ValueError, r"controls must be a list"),
            ({"view": "pie"}, ValueError, r"view must be one of .*'pie'"),
            ({"params": {"temperature": 0.5}}, TypeError, r"params must be a smolkit\.SamplingParams"),
        ]:
            with pytest.raises(error, match=match):
                DistributionExplorer(lm, "Tell me a joke.", **kwargs)
            if "view" not in kwargs:
                with pytest.raises(error, match=match):
                    StepExplorer(lm, "Tell me a joke.", **kwargs)
        with pytest.raises(ValueError, match="prompt is empty"):
            StepExplorer(lm, "  ")
        assert work.calls == 0


def test_step_explorer_at_the_ends_of_its_sliders(lm):
    step = StepExplorer(lm, "Write a short poem.", SamplingParams(seed=0, max_new_tokens=16), controls=tuple(CONTROLS))
    for name, spec in CONTROLS.items():
        for value in (spec["min"], spec["max"]):
            step.sliders[name].value = value
            if name == "min_tokens" and value > 16:
                assert "min_tokens must be <= max_new_tokens (16)" in html.unescape(step.error.value)
                continue
            assert step.error.value == "", step.error.value
            assert getattr(step.params, name) == pytest.approx(value)
            assert is_probability_vector(step.dist.probs)
            token = step.sample()  # sampling from the distribution shown never fails
            assert step.token_ids[-1] == token and step.dist.probs.sum() > 0
        step.sliders[name].value = getattr(DEFAULTS, name)
    assert step.error.value == ""


def test_step_explorer_shows_an_invalid_slider_combination_then_recovers(lm):
    """min_tokens beyond max_new_tokens: shown as an error (it was silently ignored, freezing every slider)."""
    step = StepExplorer(lm, "Hi", SamplingParams(max_new_tokens=10), controls=("temperature", "min_tokens"))
    step.sliders["min_tokens"].value = 32
    assert "min_tokens must be <= max_new_tokens (10), got 32" in html.unescape(step.error.value)
    step.sliders["min_tokens"].value = 5
    step.sliders["temperature"].value = 0.0
    assert step.error.value == "" and step.params.min_tokens == 5 and step.params.temperature == 0.0
    assert step.dist.surviving() == 1
