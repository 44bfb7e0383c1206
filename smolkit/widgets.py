"""ipywidgets explorers: sliders that re-plot the next-token distribution live, and a token-by-token stepper.

The model runs once per prompt (and once per step in the stepper); moving a slider only re-applies the sampling
stages to the cached logits and redraws the bars in place, so the picture follows the slider at once.
"""

from __future__ import annotations

import asyncio
import html
import io
import time
import warnings
from collections.abc import Sequence
from typing import Any

import ipywidgets as W
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from smolkit import _checks, engines
from smolkit.beams import MAX_BEAMS, BeamSearchResult, beam_search, beam_tree
from smolkit.distribution import Distribution, next_token_distribution
from smolkit.export import ExportWarning
from smolkit.generation import GenerationResult, generate
from smolkit.models import LoadedModel
from smolkit.params import SamplingParams
from smolkit.snippets import SNIPPET_TARGETS, snippet
from smolkit.viz import BarsPlot, CumulativePlot, _figure_png, plot_beam_tree, token_label

__all__ = ["CONTROLS", "BeamExplorer", "DistributionExplorer", "LiveSamples", "PresetExport", "StepExplorer", "slider"]

CONTROLS: dict[str, dict[str, Any]] = {
    "temperature": {"min": 0.0, "max": 2.0, "step": 0.05, "help": "0 = greedy"},
    "top_p": {"min": 0.05, "max": 1.0, "step": 0.05, "help": "1 = all tokens"},
    "top_k": {"min": 0, "max": 100, "step": 1, "help": "0 = all tokens"},
    "min_p": {"min": 0.0, "max": 0.5, "step": 0.01, "help": "0 = off"},
    "repetition_penalty": {"min": 0.5, "max": 2.0, "step": 0.05, "help": "1 = off"},
    "presence_penalty": {"min": -2.0, "max": 2.0, "step": 0.1, "help": "0 = off"},
    "frequency_penalty": {"min": -2.0, "max": 2.0, "step": 0.1, "help": "0 = off"},
    "min_tokens": {"min": 0, "max": 32, "step": 1, "help": "0 = off"},
}
"""Slider ranges for each parameter a widget can control: every value in range is a valid SamplingParams value."""

VIEWS = ("bars", "cumulative", "both")
CUTOFF_CONTROLS = ("temperature", "top_p", "top_k")


def slider(name: str, value: float | int) -> W.Widget:
    """A slider for parameter ``name`` over its CONTROLS range, starting at ``value``; the range is widened to hold a
    value outside it (a preset with top_k=500 shows 500, not the clamped 100)."""
    spec = CONTROLS[_checks.choice("control", name, tuple(CONTROLS))]
    cls = W.IntSlider if isinstance(spec["step"], int) else W.FloatSlider
    return cls(
        value=value,
        min=min(spec["min"], value),
        max=max(spec["max"], value),
        step=spec["step"],
        description=name,
        continuous_update=True,
        style={"description_width": "130px"},
        layout=W.Layout(width="460px"),
        tooltip=spec["help"],
    )


def _check_controls(controls: Sequence[str]) -> tuple[str, ...]:
    unknown = [c for c in controls if c not in CONTROLS]
    if isinstance(controls, str) or unknown:
        raise ValueError(f"controls must be a list of names among {sorted(CONTROLS)}, got {controls!r}")
    return tuple(controls)


def _error_html(err: Exception) -> str:
    return f"<span style='color:#c53030'>{html.escape(str(err))}</span>"


def png_of(canvas: FigureCanvasAgg) -> bytes:
    """The canvas as it is drawn, encoded as PNG quickly (fast zlib level)."""
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


class _LiveFigure:
    """A figure with a bars and/or cumulative view of a Distribution, redrawn in place into an Image widget."""

    def __init__(self, dist: Distribution, view: str, n: int):
        self.view, self.n = _checks.choice("view", view, VIEWS), n
        width = 12.5 if view == "both" else 8
        self.figure = Figure(figsize=(width, 3.8), dpi=80, layout="constrained")
        self.canvas = FigureCanvasAgg(self.figure)
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.reset(dist)

    def reset(self, dist: Distribution) -> None:
        """Rebuild for a new context (other tokens to show)."""
        self.figure.clear()
        self.figure.set_layout_engine("constrained")
        if self.view == "both":
            left, right = self.figure.subplots(1, 2, width_ratios=[3, 2])
            self.plots = [BarsPlot(left, dist, self.n, live=True), CumulativePlot(right, dist, live=True)]
        elif self.view == "bars":
            self.plots = [BarsPlot(self.figure.add_subplot(), dist, self.n, live=True)]
        else:
            self.plots = [CumulativePlot(self.figure.add_subplot(), dist, live=True)]
        # Lay out once with everything drawn, then fix the layout: the constrained layout engine costs ~10 ms a
        # redraw and would make the bars jump.
        self.canvas.draw()
        self.figure.set_layout_engine("none")
        for artist in self.dynamic_artists():
            artist.set_animated(True)  # drawn by _render, over the saved background
        self._render(full=True)

    def dynamic_artists(self) -> list:
        return [artist for plot in self.plots for artist in plot.dynamic_artists()]

    def update(self, dist: Distribution, settle: bool = False) -> None:
        """Show ``dist``; ``settle`` (the slider has stopped) lets the scale shrink to fit it."""
        changed = [plot.update(dist, settle=settle) for plot in self.plots]
        self._render(full=any(changed))

    def _render(self, full: bool) -> None:
        """Blit: redraw only what moves over a saved background (axes, ticks, labels); a full draw when the
        background itself changed. About 4x faster than drawing the figure (bench/RESULTS.md)."""
        if full:
            self.canvas.draw()  # everything but the animated artists
            self.background = self.canvas.copy_from_bbox(self.figure.bbox)
        else:
            self.canvas.restore_region(self.background)
        for artist in self.dynamic_artists():
            self.figure.draw_artist(artist)
        self.image.value = png_of(self.canvas)


class PresetExport:
    """A "copy this preset" row: pick a target (transformers, vLLM, OpenAI), press the button, and the code that
    runs the current settings there appears below, ready to copy. The code is written only when the button is
    pressed or the target changes, never on a slider move (a moved slider marks it out of date)."""

    def __init__(self, params_of: Any, lm: LoadedModel, prompt: str = "Write a haiku about tea."):
        self.params_of, self.lm, self.prompt = params_of, lm, prompt
        self.target = W.Dropdown(options=SNIPPET_TARGETS, description="export to", layout=W.Layout(width="250px"))
        self.button = W.Button(description="copy this preset", icon="copy", tooltip="write the code for these settings")
        self.status = W.HTML()
        self.code = W.Textarea(layout=W.Layout(width="100%", display="none"))
        self.button.on_click(lambda _: self.show())
        self.target.observe(lambda _: self.show() if self.code.value else None, names="value")
        self.widget = W.VBox([W.HBox([self.target, self.button, self.status]), self.code])

    def show(self) -> str:
        """Write the code for the current settings and target into the box; returns it."""
        try:
            params = self.params_of()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ExportWarning)
                text = snippet(params, self.target.value, prompt=self.prompt, vision=self.lm.is_vision, lm=self.lm)
            text = "".join(f"# note: {w.message}\n" for w in caught) + text
            self.status.value = "select the code below and copy it (Ctrl+A, Ctrl+C)"
        except ValueError as err:  # a value the target cannot hold, e.g. temperature > 2 for vLLM
            text = f"# cannot export to {self.target.value}: {err}"
            self.status.value = "<span style='color:#c53030'>this target cannot hold these settings</span>"
        self.code.value = text
        self.code.rows = min(text.count("\n") + 1, 30)
        self.code.layout.display = None
        return text

    def mark_stale(self) -> None:
        if self.code.value:
            self.status.value = (
                "<span style='color:#b7791f'>settings changed: press <i>copy this preset</i> again</span>"
            )


class _Explorer:
    """What every explorer shares: a model and prompt, parameters set by sliders, and an error line.

    A slider move calls ``_apply(params)`` with the new, validated parameters; an invalid combination (e.g.
    min_tokens above max_new_tokens) is shown in the error line and the last good state stays. ``widget`` is what a
    notebook displays.
    """

    widget: W.Widget

    def __init__(self, lm: LoadedModel, prompt: str, params: SamplingParams | None, controls: Sequence[str]):
        self.lm, self.prompt = lm, prompt
        self.params = SamplingParams() if params is None else params
        if not isinstance(self.params, SamplingParams):
            raise TypeError(f"params must be a smolkit.SamplingParams, got {type(self.params).__name__}")
        self.controls = _check_controls(controls)
        self.error = W.HTML()

    def _make_sliders(self, continuous: bool = True) -> None:
        self.sliders = {name: slider(name, getattr(self.params, name)) for name in self.controls}
        for widget in self.sliders.values():
            widget.continuous_update = continuous
            widget.observe(self._on_slider, names="value")

    def _on_slider(self, change: dict) -> None:
        self.update(**{name: w.value for name, w in self.sliders.items()})

    def _validated(self, changes: dict[str, Any]) -> SamplingParams | None:
        """The parameters with ``changes``, or None (the error shown) when they are invalid."""
        try:
            params = self.params.replace(**changes)
        except (TypeError, ValueError) as err:  # shown beside the sliders; the last good state stays
            self.error.value = _error_html(err)
            return None
        self.error.value = ""
        return params

    def update(self, **changes: Any) -> Any:
        raise NotImplementedError

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


SETTLE_SECONDS = 0.3
"""After the last slider move, how long until the figure's scale is fitted to the distribution again."""


class DistributionExplorer(_Explorer):
    """Sliders over sampling parameters that re-plot the next-token distribution for ``prompt`` live.

    ``controls`` names the sliders (keys of CONTROLS); ``view`` is "bars" (raw beside reshaped), "cumulative"
    (top-p's view) or "both". ``update(**changes)`` does what moving sliders does, for code and tests; ``dist``
    is the current Distribution and ``summary()`` its numbers as text. While a slider moves the scale stays (or
    grows, when a bar needs it); SETTLE_SECONDS after the last move it fits the distribution again (``settle()``).
    ``engine`` (a menu too, ``set_engine``): whose order and penalty rules reshape the logits
    (``smolkit.engines``: "transformers", "vllm", "sglang", "llama.cpp", "llama-cpp-python").
    """

    def __init__(
        self,
        lm: LoadedModel,
        prompt: str,
        params: SamplingParams | None = None,
        controls: Sequence[str] = CUTOFF_CONTROLS,
        generated: str | Sequence[int] = "",
        view: str = "bars",
        n: int = 12,
        image: Any = None,
        engine: str = "transformers",
    ):
        super().__init__(lm, prompt, params, controls)
        _checks.choice("view", view, VIEWS)
        self.engine = engines.engine(engine).name
        self._base = next_token_distribution(lm, prompt, self.params, generated=generated, image=image)
        self.dist = engines.in_engine(self._base, self.engine)
        self.engine_menu = W.Dropdown(options=list(engines.ENGINES), value=self.engine, description="engine")
        self.engine_menu.observe(lambda change: self.set_engine(change["new"]), names="value")
        self.live = _LiveFigure(self.dist, view, n)
        self._make_sliders()
        self.readout = W.HTML(self._readout_html())
        self.last_update_seconds = 0.0
        self._syncing = False
        self._settle_handle: Any = None
        self.export = PresetExport(lambda: self.params, lm, prompt)
        self.widget = W.VBox(
            [self.engine_menu, *self.sliders.values(), self.readout, self.error, self.live.image, self.export.widget]
        )

    def set_engine(self, name: str) -> Distribution:
        """Show the same logits and parameters as engine ``name`` samples them (what the menu does)."""
        self.engine = engines.engine(name).name
        if self.engine_menu.value != self.engine:
            self.engine_menu.value = self.engine  # calls back here once, with the same engine
        return self.update()

    def _on_slider(self, change: dict) -> None:
        if not self._syncing:
            super()._on_slider(change)

    def update(self, **changes: Any) -> Distribution:
        """Change parameters, re-apply the stages to the cached logits and redraw. Returns the new Distribution."""
        start = time.perf_counter()
        params = self._validated(changes)
        if params is None:
            return self.dist
        self.params = params
        self._syncing = True  # the sliders follow changes made in code without triggering a second update
        try:
            for name, widget in self.sliders.items():
                widget.value = getattr(params, name)
        finally:
            self._syncing = False
        self._base = self._base.with_params(params)
        self.dist = engines.in_engine(self._base, self.engine)
        self.live.update(self.dist)
        self.readout.value = self._readout_html()
        self.export.mark_stale()
        self.last_update_seconds = time.perf_counter() - start
        self._schedule_settle()
        return self.dist

    def settle(self) -> None:
        """Fit the figure's scale to the current distribution (done by itself shortly after the sliders stop)."""
        self._settle_handle = None
        self.live.update(self.dist, settle=True)

    def _schedule_settle(self) -> None:
        """In a running notebook kernel, settle SETTLE_SECONDS after the last update (each update resets the clock)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (plain Python, tests): call settle() when wanted
        if self._settle_handle is not None:
            self._settle_handle.cancel()
        self._settle_handle = loop.call_later(SETTLE_SECONDS, self.settle)

    def summary(self, n: int = 5) -> str:
        return self.dist.summary(n)

    def _readout_html(self) -> str:
        d = self.dist
        return (
            f"<code>{html.escape(repr(d.params))}</code> in {html.escape(self.engine)}'s order<br>"
            f"entropy {d.stage_entropy('raw'):.2f} → "
            f"<b>{d.entropy:.2f}</b> bits &nbsp; <b>{d.surviving():,}</b> tokens kept &nbsp; top: "
            + ", ".join(f"{html.escape(token_label(t.token))} {t.prob:.3f}" for t in d.top(3))
        )

    @property
    def png(self) -> bytes:
        """The current picture as PNG bytes."""
        return self.live.image.value


class LiveSamples(_Explorer):
    """Several whole continuations, generated again as the sliders move: how a parameter changes whole texts.

    The seed stays fixed, so what changes between two slider positions is the parameter's doing. On a GPU (the
    fast path) the samples follow the slider while it moves; on the CPU they are fewer and shorter by default and
    are generated when the slider is released. ``update(**changes)`` does what moving a slider does.
    """

    def __init__(
        self,
        lm: LoadedModel,
        prompt: str,
        params: SamplingParams | None = None,
        controls: Sequence[str] = ("temperature",),
        n: int | None = None,
        max_new_tokens: int | None = None,
    ):
        super().__init__(lm, prompt, SamplingParams(seed=0) if params is None else params, controls)
        on_gpu = lm.device.type == "cuda"
        self.params = self.params.replace(
            n=n if n is not None else (8 if on_gpu else 3),
            max_new_tokens=max_new_tokens if max_new_tokens is not None else (64 if on_gpu else 24),
            seed=self.params.seed if self.params.seed is not None else 0,
        )
        self._make_sliders(continuous=on_gpu)
        self.samples = W.HTML()
        self.status = W.HTML()
        self.result = self.update()
        self.widget = W.VBox([*self.sliders.values(), self.error, self.status, self.samples])

    def update(self, **changes: Any) -> GenerationResult | None:
        """Generate the samples again with ``changes``; an invalid value is shown and the last samples stay."""
        params = self._validated(changes)
        if params is None:
            return None
        self.params = params
        self.result = generate(self.lm, self.prompt, params)
        rows = "".join(
            f"<li><span style='white-space:pre-wrap'>{html.escape(sample.text)}</span> "
            f"<small style='color:#718096'>({len(sample)} tokens, {sample.finish_reason})</small></li>"
            for sample in self.result.samples
        )
        self.samples.value = f"<ol>{rows}</ol>"
        made = sum(len(s) for s in self.result.samples)
        self.status.value = (
            f"<code>{html.escape(repr(params))}</code><br>{params.n} samples, {made} tokens in "
            f"{self.result.seconds:.2f} s ({self.result.backend})"
        )
        return self.result


class StepExplorer(_Explorer):
    """Build a continuation one token at a time: pick among the top tokens, or sample with the current parameters;
    see the distribution at each step; go back and branch.

    The model runs once per new step (the context grows); the sliders re-warp the current step without a forward
    pass. ``choose(token_id)``, ``sample()``, ``back()`` do what the buttons do.
    """

    def __init__(self, lm: LoadedModel, prompt: str, params: SamplingParams | None = None,
                 controls: Sequence[str] = CUTOFF_CONTROLS, choices: int = 6, n: int = 10):  # fmt: skip
        super().__init__(lm, prompt, params, controls)
        self.choices = _checks.integer("choices", choices, lo=1)
        self.token_ids: list[int] = []
        self.generator = torch.Generator().manual_seed(self.params.seed if self.params.seed is not None else 0)
        self.dist = next_token_distribution(lm, prompt, self.params)
        self.live = _LiveFigure(self.dist, "bars", n)
        self._make_sliders()
        self.text = W.HTML()
        self.buttons = W.HBox()
        self.sample_button = W.Button(description="sample", button_style="primary", tooltip="draw the next token")
        self.back_button = W.Button(description="back", tooltip="remove the last token (then branch)")
        self.sample_button.on_click(lambda _: self.sample())
        self.back_button.on_click(lambda _: self.back())
        controls_row = W.HBox([self.sample_button, self.back_button])
        self.widget = W.VBox([*self.sliders.values(), self.error, self.text, controls_row, self.buttons,
                              self.live.image])  # fmt: skip
        self._refresh(new_context=False)

    @property
    def continuation(self) -> str:
        return self.lm.decode(self.token_ids)

    def choose(self, token_id: int) -> None:
        """Append ``token_id`` to the continuation and move to the next step."""
        token_id = _checks.integer("token_id", token_id, 0, self.lm.vocab_size - 1)
        self.token_ids.append(token_id)
        self._step_to(self.token_ids)

    def sample(self) -> int:
        """Draw the next token from the current distribution (the one shown) and append it; returns its id."""
        token_id = int(torch.multinomial(self.dist.probs, 1, generator=self.generator))
        self.choose(token_id)
        return token_id

    def back(self) -> None:
        """Remove the last token; the distribution of that step is shown again (from the cache)."""
        if self.token_ids:
            self.token_ids.pop()
            self._step_to(self.token_ids)

    def _step_to(self, token_ids: list[int]) -> None:
        self.dist = next_token_distribution(self.lm, self.prompt, self.params, generated=token_ids)
        self._refresh(new_context=True)

    def update(self, **changes: Any) -> Distribution:
        """Change parameters (as the sliders do): the current step re-warped, no forward pass."""
        params = self._validated(changes)
        if params is not None:
            self.params = params
            self.dist = self.dist.with_params(params)
            self._refresh(new_context=False)
        return self.dist

    def _refresh(self, new_context: bool) -> None:
        if new_context:
            self.live.reset(self.dist)
        else:
            self.live.update(self.dist, settle=True)
        shown = html.escape(self.continuation)
        last = html.escape(token_label(self.lm.token_text(self.token_ids[-1]))) if self.token_ids else ""
        self.text.value = (
            f"<b>{len(self.token_ids)}</b> tokens: <span style='background:#ebf4ff'>{shown}</span>"
            + (f" &nbsp; (last: <code>{last}</code>)" if last else "")
            + f"<br>entropy {self.dist.entropy:.2f} bits, {self.dist.surviving():,} tokens kept"
        )
        for old in self.buttons.children:
            old.close()  # else every step would leave its buttons' widget models behind in the notebook
        self.buttons.children = [self._choice_button(t) for t in self.dist.top(self.choices)]

    def _choice_button(self, t: Any) -> W.Button:
        button = W.Button(description=f"{token_label(t.token)} {t.prob:.2f}", layout=W.Layout(width="auto"))
        button.on_click(lambda _, i=t.id: self.choose(i))
        return button


class BeamExplorer:
    """A num_beams slider over beam search (transformers' ``generate``) for one prompt: the tree of the returned
    beams is drawn again, with their scores, when the slider is released. Each width is searched once and kept,
    so going back is instant. ``update(num_beams)`` does what the slider does; ``summary()`` is the table as text."""

    def __init__(self, lm: LoadedModel, prompt: str, num_beams: int = 3, max_new_tokens: int = 10,
                 length_penalty: float = 1.0, widest: int = 6):  # fmt: skip
        self.lm, self.prompt = lm, prompt
        self.max_new_tokens, self.length_penalty = max_new_tokens, length_penalty
        widest = _checks.integer("widest", widest, lo=1, hi=MAX_BEAMS)
        self.slider = W.IntSlider(value=num_beams, min=1, max=widest, description="num_beams",
                                  continuous_update=False, style={"description_width": "130px"})  # fmt: skip
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.table = W.HTML()
        self.searched: dict[int, tuple[BeamSearchResult, list]] = {}
        self.slider.observe(lambda change: self.update(change["new"]), names="value")
        self.widget = W.VBox([self.slider, self.table, self.image])
        self.result = self.update(num_beams)

    def update(self, num_beams: int) -> BeamSearchResult:
        """Search with ``num_beams`` beams (or reuse that search) and redraw."""
        num_beams = _checks.integer("num_beams", num_beams, lo=1, hi=self.slider.max)
        if num_beams not in self.searched:
            result = beam_search(self.lm, self.prompt, num_beams, self.max_new_tokens, self.length_penalty)
            self.searched[num_beams] = (result, beam_tree(self.lm, result))
        self.result, nodes = self.searched[num_beams]
        if self.slider.value != num_beams:
            self.slider.value = num_beams
        self.image.value = _figure_png(plot_beam_tree(self.result, nodes))
        rows = "".join(
            f"<tr><td>{i + 1}</td><td>{b.score:.3f}</td><td>{b.logprob:.2f}</td>"
            f"<td style='text-align:left'>{html.escape(b.text)}</td></tr>"
            for i, b in enumerate(self.result.beams)
        )
        self.table.value = f"<table><tr><th>#</th><th>score</th><th>logprob</th><th>text</th></tr>{rows}</table>"
        return self.result

    def summary(self) -> str:
        return "\n".join(f"#{i + 1} score {b.score:.3f} logprob {b.logprob:.2f} {b.text!r}"
                         for i, b in enumerate(self.result.beams))  # fmt: skip

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
