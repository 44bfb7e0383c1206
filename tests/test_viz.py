"""smolkit.viz: what each figure draws is the distribution's own numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from smolkit import SamplingParams, generate, next_token_distribution, viz

STORY = "Write a short story about a dragon."


@pytest.fixture(scope="module")
def dist(lm):
    return next_token_distribution(lm, STORY, SamplingParams(temperature=0.7, top_p=0.9, top_k=20))


def test_bar_data_is_the_top_tokens_and_the_rest(dist):
    data = viz.bar_data(dist, n=10)
    raw = dist.stages["raw"]
    assert data["ids"] == torch.topk(raw, 10).indices.tolist()
    assert data["other_base"] == pytest.approx(1 - sum(data["base"]), abs=1e-6)
    assert data["other_stage"] == pytest.approx(1 - sum(data["stage"]), abs=1e-6)
    assert data["cut"] == [dist.probs[i].item() == 0 for i in data["ids"]]
    assert any(data["cut"]) and not all(data["cut"])


def test_plot_distribution_draws_both_distributions(dist):
    fig = viz.plot_distribution(dist, n=8)
    ax = fig.axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    assert len(heights) == 2 * 9  # raw and final for 8 tokens and "all other tokens"
    ids = torch.topk(dist.stages["raw"], 8).indices
    assert heights[:8] == pytest.approx(dist.stages["raw"][ids].tolist())
    assert heights[9:17] == pytest.approx(dist.probs[ids].tolist())
    assert f"{dist.entropy:.2f} bits" in ax.get_title()
    assert "cut to 0" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_legend_names_cuts_only_when_there_are_some(dist):
    fig = viz.plot_distribution(dist.with_params(top_p=1.0, top_k=-1), n=8)
    assert "cut to 0" not in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_bars_update_in_place(dist):
    fig = Figure()
    plot = viz.BarsPlot(fig.add_subplot(), dist, n=6)
    hot = dist.with_params(temperature=1.5, top_p=1.0, top_k=-1)
    plot.update(hot)
    heights = [bar.get_height() for bar in plot.stage_bars]
    assert heights[:6] == pytest.approx(hot.probs[torch.tensor(plot.ids)].tolist())
    assert len(plot.cut_marks.get_xdata()) == 0


def test_cumulative_counts_what_top_p_keeps(dist):
    fig = viz.plot_cumulative(dist, n=30)
    ax = fig.axes[0]
    assert f"keeps {dist.surviving('top_p'):,} token" in ax.get_title()
    heights = [bar.get_height() for bar in ax.patches]
    sorted_probs = dist.stages["top_k"].sort(descending=True).values
    assert heights == pytest.approx(sorted_probs.cumsum(0)[:30].tolist(), abs=1e-6)


def test_stages_one_panel_each(dist):
    fig = viz.plot_stages(dist)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split("\n")[0] for ax in visible] == [
        f"{i}. {name}" for i, name in enumerate(s for s in dist.stages if s != "final")
    ]


def test_entropy_curve_and_heatmap(dist):
    temps = [0.2, 0.5, 1.0, 1.5]
    line = viz.plot_entropy_vs_temperature(dist.with_params(top_p=1.0, top_k=-1), temps).axes[0].lines[0]
    expected = [dist.with_params(temperature=t, top_p=1.0, top_k=-1).entropy for t in temps]
    assert list(line.get_ydata()) == pytest.approx(expected)
    assert np.all(np.diff(line.get_ydata()) > 0)
    fig = viz.plot_heatmap(dist, temps, [0.5, 0.9], metric="surviving")
    grid = fig.axes[0].images[0].get_array()
    assert grid[1, 2] == pytest.approx(np.log10(dist.with_params(temperature=1.0, top_p=0.9).surviving()))
    with pytest.raises(ValueError, match="metric must be"):
        viz.plot_heatmap(dist, temps, [0.5], metric="nonsense")


def test_steps_plot(lm):
    result = generate(lm, STORY, SamplingParams(max_new_tokens=6, seed=1))
    ax = viz.plot_steps(result).axes[0]
    assert [bar.get_height() for bar in ax.patches] == pytest.approx([s.prob for s in result.steps])


def test_figures_show_in_a_notebook_without_pyplot(dist):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        viz._register_notebook_display()
        data, _ = shell.display_formatter.format(viz.plot_distribution(dist))
        assert data["image/png"][:4] == b"\x89PNG"
    finally:
        InteractiveShell.clear_instance()


def test_a_stage_figure_counts_the_tokens_of_that_stage(lm):
    """Greedy picks one token; a plotted stage says how many it leaves (issue: 49,151 'can be sampled' under greedy)."""
    dist = next_token_distribution(lm, STORY, SamplingParams(temperature=0, min_tokens=3))
    title = viz.plot_distribution(dist, n=5, stage="min_tokens").axes[0].get_title()
    assert f"{dist.surviving('min_tokens'):,} of {dist.probs.numel():,} tokens left after min_tokens" in title
    assert "greedy picks 1 of" in viz.plot_distribution(dist, n=5).axes[0].get_title()


def test_plot_tail_draws_every_token_by_rank(dist):
    mark = dist.top(3)[2].id
    ax = viz.plot_tail(dist, mark=mark).axes[0]
    probs, beyond, point = ax.get_lines()
    assert len(probs.get_xdata()) == dist.surviving()
    assert probs.get_ydata()[0] == pytest.approx(dist.top(1)[0].prob)
    assert beyond.get_ydata()[0] == pytest.approx(1.0, abs=1e-5)
    assert point.get_xdata()[0] == 3 and point.get_ydata()[0] == pytest.approx(dist.prob_of(mark))


def test_plot_token_logprobs_and_the_beam_tree(lm):
    from smolkit.beams import beam_search, beam_tree
    from smolkit.sequences import score_continuation

    score = score_continuation(lm, STORY, "Once upon a time")
    ax = viz.plot_token_logprobs(score).axes[0]
    assert [b.get_height() for b in ax.patches] == pytest.approx([t.prob for t in score.tokens])
    result = beam_search(lm, STORY, num_beams=3, max_new_tokens=5)
    nodes = beam_tree(lm, result)
    ax = viz.plot_beam_tree(result, nodes).axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert len(labels) == len(nodes) + len(result.beams)
    assert [n.depth for n in nodes if n.parent >= 0] and len(ax.get_lines()) == sum(n.parent >= 0 for n in nodes)


def test_the_beam_tree_keeps_each_shared_beginning_between_its_own_beams():
    """A known tree: beams #1 and #3 share their first two tokens, #2 starts elsewhere, #4 shares one token with
    #1 and #3. Each node must sit within the lanes of the beams through it, and never on another beam's lane."""
    from smolkit.beams import Beam, BeamNode, BeamSearchResult

    tree = [
        BeamNode(0, "As", -1, (0, 2, 3), -1.0), BeamNode(1, " the", 0, (0, 2), -1.5),
        BeamNode(2, " sun", 1, (0,), -2.0), BeamNode(0, "In", -1, (1,), -1.2),
        BeamNode(1, " a", 3, (1,), -2.2), BeamNode(2, " moon", 1, (2,), -2.5), BeamNode(1, " I", 0, (3,), -3.0),
    ]  # fmt: skip
    lanes = viz.beam_lanes(tree)
    assert lanes == {0: 0, 2: 1, 3: 2, 1: 3}  # the best beam on top, beams under one node on neighbouring lanes
    heights, _ = viz._tree_positions(tree)
    for node, height in zip(tree, heights, strict=True):
        own = [lanes[r] for r in node.beams]
        assert min(own) <= -height <= max(own)
        assert -height not in [lanes[r] for r in lanes if r not in node.beams], node
    beams = tuple(Beam((i,) * n, "x", -1.0, -1.0, True) for i, n in ((0, 3), (1, 2), (2, 3), (3, 2)))
    result = BeamSearchResult("p", 4, 1.0, False, 0, beams, 0.0)
    ax = viz.plot_beam_tree(result, tree).axes[0]
    score_labels = {t.get_text().split()[0]: t.get_position()[1] for t in ax.texts if "score" in t.get_text()}
    assert score_labels == {"#1": 0, "#2": -3, "#3": -1, "#4": -2}  # each score at the end of its own lane
