"""ipywidgets explorers: sliders that re-plot the next-token distribution live, and a token-by-token stepper.

The model runs once per prompt (and once per step in the stepper); moving a slider only re-applies the sampling
stages to the cached logits and redraws the bars in place, so the picture follows the slider at once.
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as W
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from smolkit.distribution import Distribution, next_token_distribution
from smolkit.export import SNIPPET_TARGETS, model_id
from smolkit.generation import GenerationResult, generate
from smolkit.models import LoadedModel
from smolkit.params import SamplingParams
from smolkit.viz import BarsPlot, CumulativePlot, token_label

__all__ = ["CONTROLS", "DistributionExplorer", "LiveSamples", "PresetExport", "StepExplorer", "slider"]

CONTROLS: dict[str, dict[str, Any]] = {
    "temperature": {"min": 0.0, "max": 2.0, "step": 0.05, "help": "0 = greedy"},
    "top_p": {"min": 0.05, "max": 1.0, "step": 0.05, "help": "1 = all tokens"},
    "top_k": {"min": -1, "max": 100, "step": 1, "help": "-1 = all tokens"},
    "min_p": {"min": 0.0, "max": 0.5, "step": 0.01, "help": "0 = off"},
    "repetition_penalty": {"min": 0.5, "max": 2.0, "step": 0.05, "help": "1 = off"},
    "presence_penalty": {"min": -2.0, "max": 2.0, "step": 0.1, "help": "0 = off"},
    "frequency_penalty": {"min": -2.0, "max": 2.0, "step": 0.1, "help": "0 = off"},
    "min_tokens": {"min": 0, "max": 32, "step": 1, "help": "0 = off"},
}
"""Slider ranges for each parameter a widget can control: every value in range is a valid SamplingParams value."""

VIEWS = ("bars", "cumulative", "both")


def slider(name: str, value: float | int) -> W.Widget:
    """A slider for parameter ``name`` over its CONTROLS range, starting at ``value``."""
    if name not in CONTROLS:
        raise ValueError(f"control must be one of {sorted(CONTROLS)}, got {name!r}")
    spec = CONTROLS[name]
    cls = W.IntSlider if isinstance(spec["step"], int) else W.FloatSlider
    return cls(
        value=value,
        min=spec["min"],
        max=spec["max"],
        step=spec["step"],
        description=name,
        continuous_update=True,
        style={"description_width": "130px"},
        layout=W.Layout(width="460px"),
        tooltip=spec["help"],
    )


def _check_controls(controls: Sequence[str]) -> None:
    unknown = [c for c in controls if c not in CONTROLS]
    if isinstance(controls, str) or unknown:
        raise ValueError(f"controls must be a list of names among {sorted(CONTROLS)}, got {controls!r}")


def png_of(canvas: FigureCanvasAgg) -> bytes:
    """The canvas as it is drawn, encoded as PNG quickly (fast zlib level)."""
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


class _LiveFigure:
    """A figure with a bars and/or cumulative view of a Distribution, redrawn in place into an Image widget."""

    def __init__(self, dist: Distribution, view: str, n: int):
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        self.view, self.n = view, n
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

    def update(self, dist: Distribution) -> None:
        changed = [plot.update(dist) for plot in self.plots]
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

    def __init__(self, params_of: Any, model: str, prompt: str = "Write a haiku about tea.", vision: bool = False):
        self.params_of, self.model, self.prompt, self.vision = params_of, model, prompt, vision
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
            text = params.snippet(self.target.value, model=self.model, prompt=self.prompt, vision=self.vision)
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


class DistributionExplorer:
    """Sliders over sampling parameters that re-plot the next-token distribution for ``prompt`` live.

    ``controls`` names the sliders (keys of CONTROLS); ``view`` is "bars" (raw beside reshaped), "cumulative"
    (top-p's view) or "both". ``update(**changes)`` does what moving sliders does, for code and tests; ``dist``
    is the current Distribution and ``summary()`` its numbers as text.
    """

    def __init__(
        self,
        lm: LoadedModel,
        prompt: str,
        params: SamplingParams | None = None,
        controls: Sequence[str] = ("temperature", "top_p", "top_k"),
        generated: str | Sequence[int] = "",
        view: str = "bars",
        n: int = 12,
        image: Any = None,
    ):
        self.params = SamplingParams() if params is None else params
        _check_controls(controls)
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        self.dist = next_token_distribution(lm, prompt, self.params, generated=generated, image=image)
        self.live = _LiveFigure(self.dist, view, n)
        self.sliders = {name: slider(name, getattr(self.params, name)) for name in controls}
        for widget in self.sliders.values():
            widget.observe(self._on_slider, names="value")
        self.readout = W.HTML(self._readout_html())
        self.error = W.HTML()
        self.last_update_seconds = 0.0
        self._syncing = False
        self.export = PresetExport(lambda: self.params, model_id(lm), prompt, lm.is_vision)
        self.widget = W.VBox([*self.sliders.values(), self.readout, self.error, self.live.image, self.export.widget])

    def _on_slider(self, change: dict) -> None:
        if not self._syncing:
            self.update(**{name: w.value for name, w in self.sliders.items()})

    def update(self, **changes: Any) -> Distribution:
        """Change parameters, re-apply the stages to the cached logits and redraw. Returns the new Distribution."""
        start = time.perf_counter()
        try:
            params = self.params.replace(**changes)
        except (TypeError, ValueError) as err:  # shown beside the sliders; the last good picture stays
            self.error.value = f"<span style='color:#c53030'>{err}</span>"
            return self.dist
        self.error.value = ""
        self.params = params
        self._syncing = True  # the sliders follow changes made in code without triggering a second update
        try:
            for name, widget in self.sliders.items():
                widget.value = getattr(params, name)
        finally:
            self._syncing = False
        self.dist = self.dist.with_params(params)
        self.live.update(self.dist)
        self.readout.value = self._readout_html()
        self.export.mark_stale()
        self.last_update_seconds = time.perf_counter() - start
        return self.dist

    def summary(self, n: int = 5) -> str:
        return self.dist.summary(n)

    def _readout_html(self) -> str:
        d = self.dist
        return (
            f"<code>{d.params!r}</code><br>entropy {d.stage_entropy('raw'):.2f} → <b>{d.entropy:.2f}</b> bits &nbsp; "
            f"<b>{d.surviving():,}</b> tokens can be sampled &nbsp; top: "
            + ", ".join(f"{token_label(t.token)} {t.prob:.3f}" for t in d.top(3))
        )

    @property
    def png(self) -> bytes:
        """The current picture as PNG bytes."""
        return self.live.image.value

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class LiveSamples:
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
        _check_controls(controls)
        on_gpu = lm.device.type == "cuda"
        base = SamplingParams(seed=0) if params is None else params
        if not isinstance(base, SamplingParams):
            raise TypeError(f"params must be a smolkit.SamplingParams, got {type(base).__name__}")
        self.lm, self.prompt = lm, prompt
        self.params = base.replace(
            n=n if n is not None else (8 if on_gpu else 3),
            max_new_tokens=max_new_tokens if max_new_tokens is not None else (64 if on_gpu else 24),
            seed=base.seed if base.seed is not None else 0,
        )
        self.sliders = {name: slider(name, getattr(self.params, name)) for name in controls}
        for widget in self.sliders.values():
            widget.continuous_update = on_gpu
            widget.observe(self._on_slider, names="value")
        self.samples = W.HTML()
        self.status = W.HTML()
        self.result = self.update()
        self.widget = W.VBox([*self.sliders.values(), self.status, self.samples])

    def _on_slider(self, change: dict) -> None:
        self.update(**{name: w.value for name, w in self.sliders.items()})

    def update(self, **changes: Any) -> GenerationResult | None:
        """Generate the samples again with ``changes``; an invalid value is shown and the last samples stay."""
        try:
            params = self.params.replace(**changes)
        except (TypeError, ValueError) as err:
            self.status.value = f"<span style='color:#c53030'>{html.escape(str(err))}</span>"
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
            f"<code>{params!r}</code><br>{params.n} samples, {made} tokens in {self.result.seconds:.2f} s "
            f"({self.result.backend})"
        )
        return self.result

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class StepExplorer:
    """Build a continuation one token at a time: pick among the top tokens, or sample with the current parameters;
    see the distribution at each step; go back and branch.

    The model runs once per new step (the context grows); the sliders re-warp the current step without a forward
    pass. ``choose(token_id)``, ``sample()``, ``back()`` do what the buttons do.
    """

    def __init__(
        self,
        lm: LoadedModel,
        prompt: str,
        params: SamplingParams | None = None,
        controls: Sequence[str] = ("temperature", "top_p", "top_k"),
        choices: int = 6,
        n: int = 10,
    ):
        self.lm, self.prompt, self.choices = lm, prompt, choices
        self.params = SamplingParams() if params is None else params
        if not isinstance(self.params, SamplingParams):
            raise TypeError(f"params must be a smolkit.SamplingParams, got {type(self.params).__name__}")
        _check_controls(controls)
        self.token_ids: list[int] = []
        self.generator = torch.Generator().manual_seed(self.params.seed if self.params.seed is not None else 0)
        self.dist = next_token_distribution(lm, prompt, self.params)
        self.live = _LiveFigure(self.dist, "bars", n)
        self.sliders = {name: slider(name, getattr(self.params, name)) for name in controls}
        for widget in self.sliders.values():
            widget.observe(self._on_slider, names="value")
        self.error = W.HTML()
        self.text = W.HTML()
        self.buttons = W.HBox()
        self.sample_button = W.Button(description="sample", button_style="primary", tooltip="draw the next token")
        self.back_button = W.Button(description="back", tooltip="remove the last token (then branch)")
        self.sample_button.on_click(lambda _: self.sample())
        self.back_button.on_click(lambda _: self.back())
        self.widget = W.VBox(
            [
                *self.sliders.values(),
                self.error,
                self.text,
                W.HBox([self.sample_button, self.back_button]),
                self.buttons,
                self.live.image,
            ]
        )
        self._refresh(new_context=False)

    @property
    def continuation(self) -> str:
        return self.lm.decode(self.token_ids)

    def choose(self, token_id: int) -> None:
        """Append ``token_id`` to the continuation and move to the next step."""
        token_id = int(token_id)
        if not 0 <= token_id < self.lm.vocab_size:
            raise ValueError(f"token_id must be in [0, {self.lm.vocab_size - 1}], got {token_id}")
        self.token_ids.append(token_id)
        self.dist = next_token_distribution(self.lm, self.prompt, self.params, generated=self.token_ids)
        self._refresh(new_context=True)

    def sample(self) -> int:
        """Draw the next token from the current distribution (the one shown) and append it; returns its id."""
        token_id = int(torch.multinomial(self.dist.probs, 1, generator=self.generator))
        self.choose(token_id)
        return token_id

    def back(self) -> None:
        """Remove the last token; the distribution of that step is shown again (from the cache)."""
        if not self.token_ids:
            return
        self.token_ids.pop()
        self.dist = next_token_distribution(self.lm, self.prompt, self.params, generated=self.token_ids)
        self._refresh(new_context=True)

    def _on_slider(self, change: dict) -> None:
        try:
            self.params = self.params.replace(**{name: w.value for name, w in self.sliders.items()})
        except (TypeError, ValueError) as err:  # shown beside the sliders; the last good picture stays
            self.error.value = f"<span style='color:#c53030'>{err}</span>"
            return
        self.error.value = ""
        self.dist = self.dist.with_params(self.params)
        self._refresh(new_context=False)

    def _refresh(self, new_context: bool) -> None:
        if new_context:
            self.live.reset(self.dist)
        else:
            self.live.update(self.dist)
        shown = self.continuation.replace("<", "&lt;")
        last = token_label(self.lm.token_text(self.token_ids[-1])) if self.token_ids else ""
        self.text.value = (
            f"<b>{len(self.token_ids)}</b> tokens: <span style='background:#ebf4ff'>{shown}</span>"
            + (f" &nbsp; (last: <code>{last}</code>)" if last else "")
            + f"<br>entropy {self.dist.entropy:.2f} bits, {self.dist.surviving():,} tokens can be sampled"
        )
        for old in self.buttons.children:
            old.close()  # else every step would leave its buttons' widget models behind in the notebook
        buttons = []
        for t in self.dist.top(self.choices):
            button = W.Button(description=f"{token_label(t.token)} {t.prob:.2f}", layout=W.Layout(width="auto"))
            button.on_click(lambda _, i=t.id: self.choose(i))
            buttons.append(button)
        self.buttons.children = buttons

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
