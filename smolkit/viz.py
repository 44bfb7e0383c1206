"""Matplotlib figures of next-token distributions: raw beside reshaped, cut-offs, cumulative mass, entropy, steps.

Every function takes the kit's own objects (Distribution, GenerationResult), draws on a given Axes or a new Figure,
and returns the Figure. Probabilities are always over the whole vocabulary: the mass outside the shown tokens is
drawn as its own "all other tokens" bar, never renormalised away.
"""

from __future__ import annotations

import io
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from smolkit.beams import BeamNode, BeamSearchResult
from smolkit.distribution import Distribution
from smolkit.engines import ENGINES, in_engine
from smolkit.generation import GenerationResult
from smolkit.sequences import ContinuationScore
from smolkit.tables import grid
from smolkit.tokens import visible

__all__ = [
    "BarsPlot",
    "CumulativePlot",
    "bar_data",
    "before_top_p",
    "plot_beam_tree",
    "plot_cumulative",
    "plot_distribution",
    "plot_engines",
    "plot_entropy_vs_temperature",
    "plot_heatmap",
    "plot_stages",
    "plot_steps",
    "plot_tail",
    "plot_token_logprobs",
    "show",
    "token_label",
]

LIVE_TOP = 1.1
"""The largest probability scale of a live (slider-driven) bar chart, with room for the legend."""
RAW = "#b8c2cc"
FINAL = "#2b6cb0"
CUT = "#c53030"
OTHER = "#718096"


def token_label(text: str, width: int = 12) -> str:
    """A token's text for an axis label: whitespace made visible (``smolkit.tokens.visible``), cut to ``width``.

    >>> token_label(" Paris"), token_label("\\n"), token_label(" extraordinarily")
    ('␣Paris', '⏎', '␣extraordin…')
    """
    shown = visible(text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def _new_axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def bar_data(dist: Distribution, n: int = 12, stage: str = "final", base: str = "raw") -> dict[str, Any]:
    """What ``plot_distribution`` draws: the ``n`` most likely tokens under ``base`` (a stable order as sliders
    move), their ``base`` and ``stage`` probabilities, which were cut to 0, and the mass of all other tokens."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (how many tokens to show), got {n!r}")
    base_p, stage_p = dist.stage(base), dist.stage(stage)
    ids = torch.topk(base_p, min(n, base_p.numel())).indices
    shown_base, shown_stage = base_p[ids], stage_p[ids]
    return {
        "ids": ids.tolist(),
        "labels": [token_label(dist.lm.token_text(i)) for i in ids.tolist()],
        "base": shown_base.tolist(),
        "stage": shown_stage.tolist(),
        "cut": (shown_stage == 0).tolist(),
        "other_base": max(float(1 - shown_base.sum()), 0.0),
        "other_stage": max(float(1 - shown_stage.sum()), 0.0),
    }


def describe(dist: Distribution) -> str:
    """One line naming the active parameters and the result, for titles."""
    p = dist.params
    if p.greedy:
        what = "greedy (temperature 0 / do_sample off)"
    else:
        parts = [f"temperature={p.temperature:g}"]
        if p.top_k > 0:
            parts.append(f"top_k={p.top_k}")
        if p.top_p < 1:
            parts.append(f"top_p={p.top_p:g}")
        if p.min_p > 0:
            parts.append(f"min_p={p.min_p:g}")
        what = ", ".join(parts)
    for name in ("repetition_penalty", "presence_penalty", "frequency_penalty"):
        value = getattr(p, name)
        if value != (1.0 if name == "repetition_penalty" else 0.0):
            what += f", {name}={value:g}"
    return what


class BarsPlot:
    """The raw-beside-reshaped bar chart on one Axes, updatable in place (what the sliders use: only the bars, cut
    markers and title change, so a widget redraws just those; see smolkit.widgets).

    The ``n`` tokens shown are the most likely under ``base``; they stay in place while parameters change.
    """

    def __init__(
        self,
        ax: Axes,
        dist: Distribution,
        n: int = 12,
        stage: str = "final",
        base: str = "raw",
        live: bool = False,
    ):
        """``live``: for a figure that will follow a slider: a fixed title, the legend always naming the red x, and
        a scale that grows at once when a bar needs it but shrinks only when the slider settles (``update(...,
        settle=True)``), so that most updates change nothing but the bars."""
        self.ax, self.n, self.stage, self.base, self.live = ax, n, stage, base, live
        data = bar_data(dist, n, stage, base)
        self.ids = data["ids"]
        x = np.arange(len(self.ids) + 1, dtype=float)
        x[-1] += 0.6  # a gap before "all other tokens"
        width = 0.4
        self.base_bars = ax.bar(x - width / 2, [0.0] * len(x), width, color=RAW, label=f"{base} (model)")
        colors = [FINAL] * len(self.ids) + [OTHER]
        label = f"{stage} (sampled from)" if stage == "final" else stage
        self.stage_bars = ax.bar(x + width / 2, [0.0] * len(x), width, color=colors, label=label)
        self.stage_x = x + width / 2
        (self.cut_marks,) = ax.plot([], [], "x", color=CUT, markersize=7, mew=2, label="cut to 0")
        ax.set_xticks(x, [*data["labels"], "all other\ntokens"], rotation=40, ha="right", fontsize=9)
        ax.set_ylabel("probability")
        ax.spines[["top", "right"]].set_visible(False)
        self.legend_shows_cut: bool | None = None
        self.update(dist, settle=True)

    def _legend(self, with_cut: bool) -> None:
        """The legend, naming the red x only when some shown token is cut (rebuilt only when that changes)."""
        if with_cut != self.legend_shows_cut:
            handles = [self.base_bars, self.stage_bars] + ([self.cut_marks] if with_cut else [])
            # upper centre: the tall bars are the first tokens (left) and "all other tokens" (right)
            self.ax.legend(handles=handles, loc="upper center", ncols=len(handles), fontsize=8, frameon=False)
            self.legend_shows_cut = with_cut

    def dynamic_artists(self) -> list[Any]:
        """What ``update`` changes while the axes, ticks and legend stay (unless update says otherwise)."""
        return [*self.base_bars, *self.stage_bars, self.cut_marks, *([] if self.live else [self.ax.title])]

    def _counts(self, dist: Distribution) -> str:
        """The entropy change and how many tokens remain, said of the plotted stage (greedy picks one token)."""
        vocab, left = dist.probs.numel(), dist.surviving(self.stage)
        where = "kept" if self.stage == "final" else f"left after {self.stage}"
        what = f"{left:,} of {vocab:,} tokens {where}"
        if self.stage == "final" and dist.params.greedy:
            what = f"greedy picks 1 of {vocab:,} tokens"
        return f"entropy {dist.stage_entropy(self.base):.2f} → {dist.stage_entropy(self.stage):.2f} bits, {what}"

    def update(self, dist: Distribution, title: str | None = None, settle: bool = False) -> bool:
        """Show ``dist`` (same prompt and context as the one drawn first: the same tokens are shown). Returns True
        when more than the dynamic artists changed (the y range or the legend), so a full redraw is needed."""
        base_p, stage_p = dist.stages[self.base], dist.stages[self.stage]
        ids = torch.tensor(self.ids)
        base_h = [*base_p[ids].tolist(), max(float(1 - base_p[ids].sum()), 0.0)]
        stage_h = [*stage_p[ids].tolist(), max(float(1 - stage_p[ids].sum()), 0.0)]
        for bar, h in zip(self.base_bars, base_h, strict=True):
            bar.set_height(h)
        for bar, h in zip(self.stage_bars, stage_h, strict=True):
            bar.set_height(h)
        kept = dist.kept[self.stage][ids].tolist()
        cut = [x for x, k in zip(self.stage_x[:-1], kept, strict=True) if not k]
        self.cut_marks.set_data(cut, [0.0] * len(cut))
        with_cut = bool(cut) or self.live
        legend_changed = with_cut != self.legend_shows_cut
        self._legend(with_cut)
        needed = max(1e-3, *base_h, *stage_h) * 1.25  # room for the legend above the bars
        top = self.ax.get_ylim()[1]
        if self.live:  # a steady picture while the slider moves: only the bars to redraw
            needed = min(needed, LIVE_TOP)
            rescaled = needed > top or (settle and not 0.8 * top <= needed)
            if rescaled:
                self.ax.set_ylim(0, needed)
            if not self.ax.get_title():
                self.ax.set_title(f"the {len(self.ids)} most likely next tokens: the model's probabilities (grey) and "
                                  "the ones sampled from (blue)", fontsize=10)  # fmt: skip
            return legend_changed or rescaled
        rescaled = not 0.8 * top <= needed <= top
        if rescaled:
            self.ax.set_ylim(0, needed)
        self.ax.set_title(title or f"{describe(dist)}\n{self._counts(dist)}", fontsize=10)
        return legend_changed or rescaled


def plot_distribution(
    dist: Distribution,
    n: int = 12,
    ax: Axes | None = None,
    stage: str = "final",
    base: str = "raw",
    title: str | None = None,
) -> Figure:
    """Bars of the ``n`` most likely next tokens: ``base`` (grey) beside ``stage`` (blue); tokens cut to 0 by
    top-k / top-p / min-p are marked with a red x, and the last pair of bars is all other tokens together."""
    fig, ax = _new_axes(ax, (8, 3.6))
    BarsPlot(ax, dist, n, stage, base).update(dist, title)
    return fig


def before_top_p(dist: Distribution) -> str:
    """The stage top-p reads: the last one before top_p in generate's order (after temperature and top_k)."""
    return [s for s in dist.stages if s not in ("top_p", "min_p", "greedy", "final")][-1]


class CumulativePlot:
    """Bar r: the probability mass of the r most likely tokens, as top-p sees them (after temperature and top-k).
    The nucleus keeps the fewest most-likely tokens whose mass reaches top_p (blue); the rest are removed (grey).
    Updatable in place, like ``BarsPlot``."""

    def __init__(self, ax: Axes, dist: Distribution, n: int = 40, live: bool = False):
        """``live``: for a figure that follows a slider: fixed title and labels, only the bars and the top_p line
        move (the numbers go to the widget's readout)."""
        self.ax, self.n, self.live = ax, n, live
        self.ranks = np.arange(1, n + 1)
        self.bars = ax.bar(self.ranks, [0.0] * n, width=0.85, color=RAW)
        self.line = ax.axhline(1.0, color=CUT, linestyle="--", linewidth=1)
        handles = [
            Patch(facecolor=FINAL, label="kept"),
            Patch(facecolor=RAW, edgecolor=OTHER, linewidth=0.5, label="removed"),
            self.line,
        ]
        # live: outside the axes, since the moving bars are drawn over everything inside them
        where = {"loc": "upper left", "bbox_to_anchor": (1.0, 1.0)} if live else {"loc": "lower right"}
        self.legend = ax.legend(handles=handles, fontsize=8, frameon=False, **where)
        ax.set_xlabel("tokens, most likely first")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0.5, n + 0.5)
        ax.spines[["top", "right"]].set_visible(False)
        self.update(dist)

    def dynamic_artists(self) -> list[Any]:
        return [*self.bars, self.line, *([] if self.live else [self.legend, self.ax.title])]

    def update(self, dist: Distribution, settle: bool = False) -> bool:
        """Show ``dist``; returns True when more than the dynamic artists changed (the y label). ``settle`` changes
        nothing here: the scale is the probability mass, 0 to 1."""
        before = before_top_p(dist)
        cumulative = dist.stages[before].sort(descending=True).values.cumsum(0)[: self.n].tolist()
        kept = dist.surviving("top_p") if "top_p" in dist.stages else dist.surviving(before)
        for rank, bar, height in zip(self.ranks, self.bars, cumulative, strict=False):
            bar.set_height(height)
            bar.set_facecolor(FINAL if rank <= kept else RAW)
        top_p = dist.params.top_p
        self.line.set_ydata([top_p, top_p])
        if self.live:
            label = "mass of the top tokens\n(as top_p sees them)"
            relabelled = label != self.ax.get_ylabel()
            if relabelled:
                self.legend.get_texts()[2].set_text("top_p")
                self.ax.set_ylabel(label)
                self.ax.set_title("top_p keeps the blue tokens: the fewest whose mass reaches it", fontsize=10)
            return relabelled
        self.legend.get_texts()[2].set_text(f"top_p = {top_p:g}")
        label = "mass of the top tokens\n" + ("(the model's)" if before == "raw" else f"(after {before})")
        relabelled = label != self.ax.get_ylabel()
        self.ax.set_ylabel(label)
        self.ax.set_title(f"top_p={top_p:g} keeps {kept:,} token{'s' if kept != 1 else ''}", fontsize=10)
        return relabelled


def plot_cumulative(dist: Distribution, n: int = 40, ax: Axes | None = None) -> Figure:
    """The cumulative-mass chart of ``CumulativePlot`` as a Figure."""
    fig, ax = _new_axes(ax, (7, 3.4))
    CumulativePlot(ax, dist, n)
    return fig


def plot_stages(dist: Distribution, n: int = 8, per_row: int = 4) -> Figure:
    """One small panel per stage, in the order generate applies them, each with the same ``n`` tokens (the most
    likely under "raw"); tokens a stage cut to 0 get a red x, and each title gives entropy and surviving tokens."""
    names = [s for s in dist.stages if s != "final"]
    rows = -(-len(names) // per_row)
    cols = min(per_row, len(names))
    fig = Figure(figsize=(2.6 * cols, 2.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).flatten()
    ids = torch.topk(dist.stages["raw"], n).indices
    labels = [token_label(text, 8) for text in dist.lm.token_texts(ids.tolist())]
    for i, (ax, name) in enumerate(zip(axes, names, strict=False)):
        probs = dist.stages[name][ids].numpy()
        ax.bar(range(n), probs, color=RAW if name == "raw" else FINAL)
        cut = (~dist.kept[name][ids]).nonzero().flatten().tolist()
        ax.plot(cut, [0.0] * len(cut), "x", color=CUT, markersize=6, mew=2)
        ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{i}. {name}\n{dist.stage_entropy(name):.2f} bits, {dist.surviving(name):,} tokens", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel("probability")
    return fig


def plot_entropy_vs_temperature(
    dist: Distribution, temperatures: Sequence[float] | None = None, ax: Axes | None = None
) -> Figure:
    """Entropy (bits) of the next-token distribution as temperature varies, other parameters as in ``dist``."""
    fig, ax = _new_axes(ax, (6, 3.2))
    temperatures = list(temperatures) if temperatures is not None else list(np.round(np.linspace(0.05, 2.0, 40), 3))
    values = [dist.with_params(temperature=float(t), do_sample=True).entropy for t in temperatures]
    ax.plot(temperatures, values, color=FINAL, marker=".")
    ax.axvline(1.0, color=OTHER, linestyle=":", linewidth=1)
    ax.text(1.0, ax.get_ylim()[1] * 0.95, " model as trained", fontsize=8, color=OTHER, va="top")
    ax.set_xlabel("temperature")
    ax.set_ylabel("entropy (bits)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Higher temperature, flatter distribution, more uncertainty", fontsize=10)
    return fig


def plot_heatmap(
    dist: Distribution,
    temperatures: Sequence[float],
    top_ps: Sequence[float],
    metric: str = "entropy",
    ax: Axes | None = None,
) -> Figure:
    """A temperature x top_p grid coloured by ``metric``: "entropy" (bits) or "surviving" (tokens, log scale)."""
    values = np.array(grid(dist, temperatures, top_ps, metric))
    fig, ax = _new_axes(ax, (6.5, 4.2))
    image = ax.imshow(values if metric == "entropy" else np.log10(values), origin="lower", aspect="auto")
    ax.set_xticks(range(len(temperatures)), [f"{t:g}" for t in temperatures], fontsize=8)
    ax.set_yticks(range(len(top_ps)), [f"{p:g}" for p in top_ps], fontsize=8)
    ax.set_xlabel("temperature")
    ax.set_ylabel("top_p")
    label = "entropy (bits)" if metric == "entropy" else "log10(surviving tokens)"
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(f"{label} over temperature x top_p", fontsize=10)
    return fig


def plot_steps(result: GenerationResult, sample: int = 0, ax: Axes | None = None) -> Figure:
    """For each generated token: the probability it had when picked (bars) and the entropy of its step (line)."""
    count = len(result.samples)
    if isinstance(sample, bool) or not isinstance(sample, numbers.Integral) or not -count <= sample < count:
        raise ValueError(f"sample must be an integer in [0, {count - 1}] (this result has {count}), got {sample!r}")
    steps = result.samples[sample].steps
    fig, ax = _new_axes(ax, (max(6.0, 0.32 * len(steps) + 1), 3.4))
    x = np.arange(len(steps))
    ax.bar(x, [s.prob for s in steps], color=[FINAL if s.rank == 0 else CUT for s in steps])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("probability when picked")
    ax.set_xticks(x, [token_label(s.token, 10) for s in steps], rotation=70, ha="right", fontsize=8)
    twin = ax.twinx()
    twin.plot(x, [s.entropy for s in steps], color=OTHER, marker=".", linewidth=1)
    twin.set_ylabel("entropy (bits)", color=OTHER)
    ax.spines[["top"]].set_visible(False)
    ax.set_title("each generated token (red: not the model's first choice) and how uncertain its step was", fontsize=9)
    return fig


def plot_token_logprobs(score: ContinuationScore, ax: Axes | None = None) -> Figure:
    """A continuation token by token: each token's probability given the ones before it (bars, log scale) and the
    running sum of log-probabilities (line): where the text became unlikely."""
    tokens = score.tokens
    fig, ax = _new_axes(ax, (max(6.0, 0.32 * len(tokens) + 1), 3.4))
    x = np.arange(len(tokens))
    ax.bar(x, [t.prob for t in tokens], color=[FINAL if t.rank == 0 else CUT for t in tokens])
    ax.set_yscale("log")
    ax.set_ylim(min(min(t.prob for t in tokens) / 3, 0.1), 1.5)
    ax.set_ylabel("probability of the token")
    ax.set_xticks(x, [token_label(t.token, 10) for t in tokens], rotation=70, ha="right", fontsize=8)
    twin = ax.twinx()
    twin.plot(x, np.cumsum([t.logprob for t in tokens]), color=OTHER, marker=".", linewidth=1)
    twin.set_ylabel("log-probability so far", color=OTHER)
    ax.spines[["top"]].set_visible(False)
    ax.set_title(f"{score.summary()}\n(red: not the model's first choice)", fontsize=9)
    return fig


def plot_tail(dist: Distribution, mark: int | None = None, stage: str = "final", ax: Axes | None = None) -> Figure:
    """Every token's probability against its rank, both on log scales, with the mass of all tokens from each rank
    on (dashed): one token in the tail is negligible, the tail together is not. ``mark``: a token id to point at."""
    probs = dist.stage(stage).double()
    values = probs.sort(descending=True).values
    values = values[values > 0].numpy()
    ranks = np.arange(1, len(values) + 1)
    beyond = np.clip(1 - np.concatenate([[0.0], np.cumsum(values)[:-1]]), 1e-12, None)
    fig, ax = _new_axes(ax, (7, 3.6))
    ax.loglog(ranks, values, color=FINAL, label="probability of the token at this rank")
    ax.loglog(ranks, beyond, color=OTHER, linestyle="--", label="mass of this rank and all below it")
    if mark is not None:
        p = float(probs[mark])
        rank = int((probs > p).sum()) + 1
        ax.plot([rank], [p], "o", color=CUT, label=f"{token_label(dist.lm.token_text(mark))}: p={p:.1e}, rank {rank:,}")
    ax.set_xlabel("rank (1 = the most likely token)")
    ax.set_ylabel("probability")
    ax.legend(fontsize=8, frameon=False, loc="lower left")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(f"the long tail: {len(values):,} tokens can be drawn ({describe(dist)})", fontsize=10)
    return fig


def beam_lanes(nodes: Sequence[BeamNode]) -> dict[int, int]:
    """Each beam's lane (0 at the top), in the order a depth-first walk of the tree reaches the beam's last token
    (children in the order first met, so the best beam gets lane 0): the beams under any node then hold
    neighbouring lanes, and a shared beginning, drawn at the middle of its beams' lanes, never sits on the lane of
    a beam that does not pass through it.

    >>> from smolkit.beams import BeamNode
    >>> tree = [BeamNode(0, "As", -1, (0, 2), -1.0), BeamNode(1, " the", 0, (0,), -2.0),
    ...         BeamNode(0, "In", -1, (1,), -1.5), BeamNode(1, " a", 0, (2,), -2.5)]
    >>> beam_lanes(tree)
    {0: 0, 2: 1, 1: 2}
    """
    children: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        children.setdefault(node.parent, []).append(i)
    lanes: dict[int, int] = {}

    def visit(i: int) -> None:
        below = {rank for child in children.get(i, []) for rank in nodes[child].beams}
        for rank in nodes[i].beams:
            if rank not in below:  # the beam ends here
                lanes.setdefault(rank, len(lanes))
        for child in children.get(i, []):
            visit(child)

    for root in children.get(-1, []):
        visit(root)
    return lanes


def _tree_positions(nodes: Sequence[BeamNode]) -> tuple[list[float], dict[int, int]]:
    """A height for each node (the mean of its beams' lanes, ``beam_lanes``, downwards) and the lanes."""
    lanes = beam_lanes(nodes)
    return [-float(np.mean([lanes[r] for r in node.beams])) for node in nodes], lanes


def plot_beam_tree(result: BeamSearchResult, nodes: Sequence[BeamNode], ax: Axes | None = None) -> Figure:
    """The returned beams as a tree (``smolkit.beams.beam_tree``): one column per generated token, shared beginnings
    merged, the best beam in blue, each beam's score at its end."""
    heights, lanes = _tree_positions(nodes)
    depth = max((n.depth for n in nodes), default=0) + 1
    fig, ax = _new_axes(ax, (max(7.0, 0.95 * depth + 2.5), 1.0 + 0.55 * max(len(result.beams), 2)))
    for i, node in enumerate(nodes):
        best = 0 in node.beams
        if node.parent >= 0:
            ax.plot([node.depth - 1, node.depth], [heights[node.parent], heights[i]], color=FINAL if best else RAW,
                    linewidth=2 if best else 1, zorder=1)  # fmt: skip
        box = {"boxstyle": "round,pad=0.15", "fc": "white", "lw": 0}
        ax.text(node.depth, heights[i], token_label(node.token, 9), fontsize=7, ha="center", va="center",
                color="black" if best else OTHER, bbox=box)  # fmt: skip
    for rank, beam in enumerate(result.beams):
        ax.text(len(beam) - 0.4, -lanes.get(rank, rank), f"  #{rank + 1} score {beam.score:.2f}", fontsize=7,
                va="center", color=FINAL if rank == 0 else OTHER)  # fmt: skip
    ax.set_xlim(-0.6, depth + 1.6)
    ax.set_ylim(-len(result.beams) + 0.4, 0.6)
    ax.set_xlabel("generated token")
    ax.set_yticks([])
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.set_title(f"num_beams={result.num_beams}, length_penalty={result.length_penalty:g}: the beams returned, "
                 "best in blue", fontsize=10)  # fmt: skip
    return fig


def _register_notebook_display() -> None:
    """In IPython, show this module's Figures as PNG even without ``%matplotlib inline`` (they are not pyplot
    figures, so nothing else registers them); a formatter already registered (the inline backend's) is kept."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    png = shell.display_formatter.formatters["image/png"]
    try:
        png.lookup_by_type(Figure)
    except KeyError:
        png.for_type(Figure, _figure_png)


def _figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def show(fig: Figure) -> Figure:
    """Display a Figure made by these functions in a notebook (they are not attached to pyplot)."""
    from IPython.display import display

    display(fig)
    return fig


_register_notebook_display()


def plot_engines(dist: Distribution, n: int = 10, names: Sequence[str] | None = None) -> Figure:
    """The same next token as each engine samples it: for the ``n`` likeliest tokens under "raw", one bar per
    engine (``smolkit.engines.in_engine``); a red x where an engine can no longer draw the token. The legend gives
    each engine's surviving tokens."""
    names = list(names or ENGINES)
    fig, ax = _new_axes(None, (9, 3.4))
    ids = torch.topk(dist.stages["raw"], n).indices
    labels = [token_label(text, 10) for text in dist.lm.token_texts(ids.tolist())]
    width = 0.8 / len(names)
    colours = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c"]
    for k, name in enumerate(names):
        ours = in_engine(dist, name)
        probs = ours.probs[ids].numpy()
        x = np.arange(n) + (k - (len(names) - 1) / 2) * width
        ax.bar(x, probs, width, color=colours[k % len(colours)], label=f"{name} ({ours.surviving():,} tokens)")
        cut = x[probs == 0]
        ax.plot(cut, [0.0] * len(cut), "x", color=CUT, markersize=5, mew=1.5)
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("probability")
    ax.set_title(f"one preset, {len(names)} engines: {dist.params!r}", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig
