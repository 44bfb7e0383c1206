"""smolkit.widgets: sliders re-plot from cached logits; the stepper builds, samples and branches."""

from __future__ import annotations

import html

import pytest

import smolkit
from smolkit import SamplingParams
from smolkit.widgets import CONTROLS, DistributionExplorer, StepExplorer, slider

STORY = "Write a short story about a dragon."


def test_every_slider_position_is_a_valid_parameter():
    for name, spec in CONTROLS.items():
        for value in (spec["min"], spec["max"]):
            SamplingParams(**{name: value}, max_new_tokens=64)
        widget = slider(name, spec["min"])
        assert (widget.min, widget.max, widget.description) == (spec["min"], spec["max"], name)
    with pytest.raises(ValueError, match="control must be one of"):
        slider("temprature", 1.0)


def test_explorer_moves_with_its_sliders_without_running_the_model(lm, model_work):
    explorer = DistributionExplorer(lm, STORY, controls=("temperature", "top_p"))
    with model_work(lm) as work:
        before_png, before = explorer.png, explorer.dist
        explorer.sliders["temperature"].value = 1.5  # what moving the slider does
        assert explorer.dist.params.temperature == 1.5 and explorer.dist.entropy > before.entropy
        assert explorer.png != before_png and explorer.png[:4] == b"\x89PNG"
        explorer.update(top_p=0.5)
        assert explorer.sliders["top_p"].value == 0.5  # the slider follows a change made in code
        assert explorer.dist.surviving() < before.surviving()
        assert "entropy" in explorer.readout.value and explorer.summary().startswith("top 5:")
        assert work.calls == 0
    assert explorer.last_update_seconds > 0


def test_a_bad_value_is_shown_and_the_last_picture_stays(lm):
    explorer = DistributionExplorer(lm, STORY, controls=("top_p",), view="both")
    png, dist = explorer.png, explorer.dist
    assert explorer.update(top_p=0) is dist
    assert "top_p must be in (0, 1]" in html.unescape(explorer.error.value) and explorer.png == png
    explorer.update(top_p=0.8)
    assert explorer.error.value == "" and explorer.png != png


def test_explorer_arguments_are_checked(lm):
    with pytest.raises(ValueError, match="controls must be"):
        DistributionExplorer(lm, STORY, controls=("heat",))
    with pytest.raises(ValueError, match="view must be one of"):
        DistributionExplorer(lm, STORY, view="pie")


def test_stepper_chooses_samples_and_branches(lm):
    stepper = StepExplorer(lm, STORY, SamplingParams(temperature=0.8, seed=0), choices=4)
    assert len(stepper.buttons.children) == 4
    first = stepper.dist.top(2)
    stepper.choose(first[0].id)
    assert stepper.token_ids == [first[0].id] and stepper.continuation == first[0].token
    old_buttons = stepper.buttons.children
    drawn = stepper.sample()
    assert stepper.token_ids[-1] == drawn and len(stepper.token_ids) == 2
    assert all(button.comm is None for button in old_buttons)  # closed, not left behind
    stepper.back()
    stepper.back()
    stepper.choose(first[1].id)  # the other branch
    assert stepper.token_ids == [first[1].id]
    with pytest.raises(ValueError, match="token_id must be in"):
        stepper.choose(10**7)


def test_stepper_samples_only_what_can_be_sampled(lm):
    stepper = StepExplorer(lm, STORY, SamplingParams(top_k=2, seed=3))
    allowed = {t.id for t in stepper.dist.top(2)}
    assert stepper.sample() in allowed


@pytest.mark.parametrize("view", ["bars", "both"])
def test_redrawing_only_what_moves_gives_the_full_picture(lm, view):
    """The live figure redraws only the moving artists over a saved background: the result must be the picture a
    full redraw gives, with nothing left over from the previous state."""
    import io

    import numpy as np
    from PIL import Image

    explorer = DistributionExplorer(lm, STORY, controls=("temperature", "top_p"), view=view)
    explorer.update(temperature=1.6, top_p=0.6)
    blitted = np.asarray(Image.open(io.BytesIO(explorer.png)))
    explorer.live._render(full=True)
    full = np.asarray(Image.open(io.BytesIO(explorer.png)))
    assert blitted.shape == full.shape
    assert np.abs(blitted.astype(int) - full.astype(int)).max() <= 2


def test_live_samples_regenerate_with_the_slider(lm):
    from smolkit.widgets import LiveSamples

    live = LiveSamples(lm, "Write one sentence about the sea.", max_new_tokens=8)
    assert live.params.n == 3 and live.params.seed == 0  # the CPU defaults: fewer, shorter samples
    assert live.sliders["temperature"].continuous_update is False  # on the CPU: regenerate on release
    cold = live.result
    assert len(cold.samples) == 3 and all(s.text in live.samples.value for s in cold.samples)
    live.sliders["temperature"].value = 1.8  # what releasing the slider does
    hot = live.result
    assert hot.params.temperature == 1.8 and hot.texts != cold.texts
    assert hot.texts == smolkit.generate(lm, live.prompt, hot.params).texts  # the same seed: reproducible
    assert live.update(temperature=-1) is None and "temperature must be" in html.unescape(live.error.value)
    assert live.result is hot


def test_a_preset_outside_a_slider_range_widens_it(lm):
    """top_k=500 with a top_k slider to 100: the slider shows 500 (it showed 100 while 500 was used), and moving
    another slider keeps 500."""
    explorer = DistributionExplorer(lm, STORY, SamplingParams(top_k=500), controls=("temperature", "top_k"))
    assert explorer.sliders["top_k"].value == 500 and explorer.sliders["top_k"].max == 500
    explorer.sliders["temperature"].value = 0.5
    assert explorer.params.top_k == 500 and explorer.dist.surviving() <= 500


def test_the_scale_follows_the_distribution_once_the_sliders_settle(lm):
    """While a slider moves the scale only grows; settle() fits it to what is shown (T=1.3: the bars that matter
    were a fifth of a fixed 0-1.1 axis)."""
    explorer = DistributionExplorer(lm, STORY, SamplingParams(temperature=0.2), controls=("temperature",))
    (plot,) = explorer.live.plots
    high = plot.ax.get_ylim()[1]
    explorer.update(temperature=1.3)
    assert plot.ax.get_ylim()[1] == high  # moving: the scale stays
    explorer.settle()
    tallest = max(bar.get_height() for bar in [*plot.base_bars, *plot.stage_bars])
    assert tallest <= plot.ax.get_ylim()[1] <= 1.25 * tallest + 1e-9 < high
    explorer.update(temperature=0.05)  # a bar taller than the scale: it grows at once
    assert max(bar.get_height() for bar in plot.stage_bars) <= plot.ax.get_ylim()[1]


def test_the_beam_explorer_searches_each_width_once(lm, model_work):
    from smolkit.widgets import BeamExplorer

    explorer = BeamExplorer(lm, "Write a short story about a dragon.", num_beams=2, max_new_tokens=5, widest=3)
    assert len(explorer.result.beams) == 2 and bytes(explorer.image.value).startswith(b"\x89PNG")
    explorer.slider.value = 3
    assert len(explorer.result.beams) == 3 and "#3 score" in explorer.summary()
    with model_work(lm) as work:
        explorer.update(2)  # searched before: no model work
    assert work.calls == 0 and len(explorer.result.beams) == 2 and explorer.slider.value == 2
    with pytest.raises(ValueError, match="num_beams"):
        explorer.update(4)
