"""The participant's cheat sheet: one printable A4 page, generated from the kit so that it stays true.

``python -m smolkit.cheatsheet`` (``make cheatsheet``) writes workshop/cheatsheet.html: one row per
``SamplingParams`` field with the field's own docstring (what it does), a small picture of what it does to the
next-token distribution of the embedded model (drawn from ``Distribution.with_params``, grey the model's
probabilities, blue after the parameter, as the notebooks draw them), and what transformers, vLLM and llama.cpp do
differently; then the source README's ranges (``README_ADVICE``) beside the kit's measurement
(``load_advice``), and the three stacks' stage orders. The page is self-contained (pictures as data URIs) with
print CSS; ``--pdf`` also prints it with Chromium. Hand-written HTML: it is one static page, which no templating
library would make shorter.
"""

from __future__ import annotations

import argparse
import ast
import base64
import dataclasses
import html
import inspect
import io
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smolkit import params as params_module
from smolkit import vllm_rules
from smolkit.advice import README_ADVICE, advice_rows, load_advice
from smolkit.distribution import Distribution, next_token_distribution
from smolkit.generation import generate
from smolkit.hf import library_defaults
from smolkit.models import LoadedModel
from smolkit.params import SamplingParams

__all__ = ["COLUMNS", "LLAMA_CPP", "OUT", "PICTURES", "build", "engine_notes", "field_docs", "main", "readme_ranges"]

OUT = Path(__file__).resolve().parent.parent / "workshop" / "cheatsheet.html"

LLAMA_CPP = {
    "temp": 0.8,
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "penalty_repeat": 1.0,
    "penalty_last_n": 64,
    "penalty_freq": 0.0,
    "penalty_present": 0.0,
    "n_predict": -1,
    "samplers": ("penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"),
}
"""llama.cpp's sampling defaults and default sampler chain, as ``struct common_params_sampling`` in
``common/common.h`` sets them (ggml-org/llama.cpp, read at commit 001d906); a seed of ``LLAMA_DEFAULT_SEED``
(0xFFFFFFFF, the default) means a random seed (``llama.h``). The kit has no llama.cpp of its own to ask."""

VLLM_MAX_TOKENS = 16
"""vLLM's ``SamplingParams.max_tokens`` default (vllm/sampling_params.py), for the offline ``LLM.generate``."""


@dataclasses.dataclass(frozen=True)
class Picture:
    """One small picture: ``changes`` applied to the next token of ``scene`` (see ``scenes``)."""

    scene: str
    changes: Mapping[str, Any]


PICTURES = {
    "do_sample": Picture("story", {"do_sample": False}),
    "temperature": Picture("story", {"temperature": 0.5}),
    "top_p": Picture("story", {"top_p": 0.5}),
    "top_k": Picture("story", {"top_k": 5}),
    "min_p": Picture("story", {"min_p": 0.1}),
    "repetition_penalty": Picture("loop", {"repetition_penalty": 1.3}),
    "presence_penalty": Picture("loop", {"presence_penalty": 1.0}),
    "frequency_penalty": Picture("loop", {"frequency_penalty": 1.0}),
    "min_tokens": Picture("answer", {"min_tokens": 64}),
}
"""The parameters that reshape the distribution, each with a setting to show. The others (max_new_tokens, seed,
stop_token_ids, n) leave the distribution as it is: they decide when to stop, which draw, how many."""

SCENES = {
    "story": ("Write a short story about a dragon.", "Once upon a time, there was a"),
    "loop": ("Write a poem about the sea.", None),
    "answer": ("What is the capital of France?", None),
}
"""Prompt and text generated so far for each scene, as notebooks 03, 06-07 and 08 use them; None: the greedy
answer itself (the sea poem's loop; the capital's full answer, after which the model wants to end)."""


def field_docs() -> dict[str, str]:
    """Each SamplingParams field's docstring, read from the source of smolkit/params.py (the one definition)."""
    tree = ast.parse(inspect.getsource(params_module))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SamplingParams")
    docs = {}
    for node, after in zip(cls.body, cls.body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def readme_ranges(parameter: str) -> str:
    """The source README's ranges for ``parameter`` as README_ADVICE words them, grouped by where they stand (its
    own list first, then the factual and creative recipes).

    >>> readme_ranges("top_p")
    'top_p: Low 0.1-0.3, Medium 0.5-0.7, High 0.8-0.9; factual: lower 0.1-0.5; creative: higher 0.8-0.95'
    """
    pattern = re.compile(rf"(\w+) {re.escape(parameter)} \((\d[\d.]*-\d[\d.]*)\)")
    parts = []
    for key, text in README_ADVICE.items():
        found = ", ".join(f"{m.group(1)} {m.group(2)}" for m in pattern.finditer(text))
        if found:
            parts.append(found if key == parameter else f"{key}: {found}")
    return f"{parameter}: " + "; ".join(parts)


def engine_notes() -> dict[str, tuple[str, str, str]]:
    """Per parameter: what transformers, vLLM and llama.cpp do differently (name, default, where it applies).

    transformers' defaults are read from the installed transformers, vLLM's from smolkit.vllm_rules, llama.cpp's
    from LLAMA_CPP; the stage orders are shown apart (``stage_orders``)."""
    hf, ll, order = library_defaults(), LLAMA_CPP, vllm_rules.STAGE_ORDER
    return {
        "max_new_tokens": (f"unset: max_length={hf['max_length']}, prompt included", f"max_tokens, default "
                           f"{VLLM_MAX_TOKENS} (offline SamplingParams)", f"n_predict, default {ll['n_predict']}: "
                           "no cap (until EOS)"),
        "do_sample": (f"default {hf['do_sample']}: greedy unless the model's generation_config.json says so",
                      f"none: temperature < {vllm_rules.GREEDY_TEMPERATURE:g} is greedy (n must be 1)",
                      "none: temp <= 0 is greedy"),
        "temperature": (f"default {hf['temperature']:g}; before top_k, top_p, min_p",
                        f"default 1; (1e-5, {vllm_rules.MIN_TEMPERATURE:g}) raised to {vllm_rules.MIN_TEMPERATURE:g};"
                        f" at most {vllm_rules.MAX_TEMPERATURE:g}", f"temp, default {ll['temp']:g}; applied LAST: "
                        "top_k, top_p, min_p cut the T = 1 probabilities"),
        "top_p": (f"default {hf['top_p']:g} (off)", "default 1 (off)", f"default {ll['top_p']:g}"),
        "top_k": (f"default {hf['top_k']} when neither you nor the model set it", "default 0 = all (-1 also)",
                  f"default {ll['top_k']}; <= 0 = all"),
        "min_p": ("default off; applied last, after top_p", f"default 0; step {order.index('min_p') + 1} of "
                  f"{len(order)}: after temperature, before top_k and top_p", f"default {ll['min_p']:g}; after "
                  "top_p, before temperature"),
        "repetition_penalty": (f"default {hf['repetition_penalty']:g}; prompt + generated", "default 1; prompt "
                               "+ generated", f"repeat_penalty {ll['penalty_repeat']:g}; last "
                               f"{ll['penalty_last_n']} tokens only"),
        "presence_penalty": ("none (the kit adds a processor)", "default 0; generated tokens only; -2 to 2",
                             f"default {ll['penalty_present']:g}; last {ll['penalty_last_n']} tokens"),
        "frequency_penalty": ("none (the kit adds a processor)", "default 0; generated tokens only; -2 to 2",
                              f"default {ll['penalty_freq']:g}; last {ll['penalty_last_n']} tokens"),
        "seed": ("no seed argument: torch.manual_seed() before generate", "per request; None: random",
                 "default 0xFFFFFFFF: random"),
        "min_tokens": ("min_new_tokens", "min_tokens (blocks EOS and stop tokens)", "—"),
        "stop_token_ids": ("eos_token_id (a list)", "stop_token_ids (kept in the output unless special)", "—"),
        "n": ("num_return_sequences", "n; must be 1 when greedy", "—"),
    }  # fmt: skip


def stage_orders(dist: Distribution) -> dict[str, list[str]]:
    """The order each stack applies the reshaping stages in: transformers' as the kit's own Distribution applies
    them (every stage switched on), vLLM's (smolkit.vllm_rules) and llama.cpp's default chain (LLAMA_CPP)."""
    every = dist.with_params(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.1,
                             presence_penalty=0.5, frequency_penalty=0.5, min_tokens=1)  # fmt: skip
    kit = [s for s in every.stages if s not in ("raw", "final")]
    return {"transformers (the kit)": kit, f"vLLM {vllm_rules.VERSION}": list(vllm_rules.STAGE_ORDER),
            "llama.cpp": list(LLAMA_CPP["samplers"])}  # fmt: skip


def scenes(lm: LoadedModel) -> dict[str, Distribution]:
    """The next-token distribution of each scene under the kit's defaults (a greedy answer fills a None)."""
    greedy = SamplingParams(temperature=0, max_new_tokens=48)
    out = {}
    for name, (prompt, so_far) in SCENES.items():
        if so_far is None:
            so_far = generate(lm, prompt, greedy).text + ("\n" if name == "loop" else "")
        out[name] = next_token_distribution(lm, prompt, generated=so_far)
    return out


def picture(after: Distribution, n: int = 8) -> str:
    """A small bar chart as a PNG data URI: the ``n`` tokens most likely before, grey before and blue after (red x:
    cut to 0), then all other tokens together; scaled to its tallest bar (the caption gives the numbers). The
    colours and bar data are smolkit.viz's."""
    import numpy as np
    from matplotlib.figure import Figure

    from smolkit.viz import CUT, FINAL, RAW, bar_data

    data = bar_data(after, n=n, stage="final", base="raw")
    before, now = [*data["base"], data["other_base"]], [*data["stage"], data["other_stage"]]
    x = np.arange(n + 1)
    fig = Figure(figsize=(1.3, 0.5), dpi=220)
    ax = fig.add_axes((0.01, 0.04, 0.98, 0.94))
    ax.bar(x - 0.2, before, 0.4, color=RAW)
    ax.bar(x + 0.2, now, 0.4, color=FINAL)
    cut = [i for i, c in enumerate(data["cut"]) if c]
    top = max(*before, *now) * 1.08
    ax.plot([i + 0.2 for i in cut], [top * 0.06] * len(cut), "x", color=CUT, markersize=3, markeredgewidth=0.8)
    ax.set_ylim(0, top)
    ax.set_xlim(-0.6, n + 0.6)
    ax.set_axis_off()
    ax.axhline(0, color="#4a5568", linewidth=0.5)
    ax.axvline(n - 0.5, color="#a0aec0", linewidth=0.4, linestyle=":")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def caption(before: Distribution, after: Distribution) -> str:
    """What the picture shows, in numbers: the top token's probability, surviving tokens, entropy, before -> after."""
    top_b, top_a = before.top(1)[0], after.top(1)[0]
    tops = f"{top_b.prob:.2f} → {top_a.prob:.2f}" if top_a.id == top_b.id else (
        f"{top_b.prob:.2f} → {html.escape(repr(top_a.token))} {top_a.prob:.2f}")
    return (f"top {html.escape(repr(top_b.token))} {tops} · tokens {before.surviving():,} → {after.surviving():,} · "
            f"{before.entropy:.2f} → {after.entropy:.2f} bits")  # fmt: skip


def parameter_rows(lm: LoadedModel) -> list[dict[str, str]]:
    """One row per SamplingParams field: name and default, what it does, picture and caption, the three stacks."""
    docs, notes, base = field_docs(), engine_notes(), scenes(lm)
    rows = []
    for field in dataclasses.fields(SamplingParams):
        row = {"name": field.name, "default": repr(field.default), "does": docs[field.name], "picture": "",
               "caption": "leaves the distribution as it is", "setting": ""}  # fmt: skip
        if field.name in PICTURES:
            spec = PICTURES[field.name]
            before = base[spec.scene]
            after = before.with_params(**spec.changes)
            row.update(picture=picture(after), caption=caption(before, after),
                       setting=", ".join(f"{k}={v!r}" for k, v in spec.changes.items()))  # fmt: skip
        row["engines"] = notes[field.name]
        rows.append(row)
    return rows


def advice_summary(results: Mapping[str, Any]) -> dict[str, list[str]]:
    """The measured side of the README's advice, in short lines: each factual recipe's accuracy, each creative
    setting's off-topic rate and diversity, what the numbers recommend, and which rows the questions (or requests)
    tell apart from the best one, compared one by one (``advice_rows``' ``separated``): the rest are within what
    the question set can tell."""
    factual = [f"{r['recipe']}: {r['accuracy']:.0%} correct" for r in results["factual"]]
    creative = [f"{r['setting']}: {r['off_topic_rate']:.0%} off-topic, diversity {r['diversity']:.2f}"
                for r in results["creative"]]  # fmt: skip
    apart = {part: [r["recipe" if part == "factual" else "setting"] for r in advice_rows(results, part)
                    if r["separated"]] or ["none"] for part in ("factual", "creative")}  # fmt: skip
    return {"factual": factual, "creative": creative,
            "recommended": [f"{k}: {v}" for k, v in results["recommended"].items()],
            "separated": [f"{part}: {', '.join(names)}" for part, names in apart.items()]}  # fmt: skip


CSS = """
@page { size: A4; margin: 7mm; }
* { box-sizing: border-box; }
body { font: 6.4pt/1.2 "DejaVu Sans", Arial, sans-serif; margin: 0; color: #1a202c; width: 196mm; }
h1 { font-size: 10.5pt; margin: 0 0 0.8mm; } h2 { font-size: 7.4pt; margin: 1.4mm 0 0.5mm; }
p { margin: 0 0 0.8mm; } table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border-bottom: 0.2mm solid #cbd5e0; padding: 0.3mm 0.7mm; vertical-align: top; text-align: left; }
th { background: #edf2f7; font-size: 6pt; } code, .name { font-family: "DejaVu Sans Mono", monospace; }
.name { font-weight: bold; font-size: 6.6pt; } .default { color: #4a5568; font-size: 5.8pt; }
td.pic { padding: 0.3mm 0; } td.pic img { width: 100%; display: block; }
.small { font-size: 5.7pt; color: #4a5568; } td.engine { font-size: 5.7pt; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 2.5mm; }
ul { margin: 0; padding-left: 3mm; } li { margin: 0; }
@media screen { body { margin: 4mm auto; } }
"""
COLUMNS = (("parameter", 27), ("what it does (vLLM's meaning)", 51), ("on the distribution", 27),
           ("transformers", 30), ("vLLM", 30), ("llama.cpp", 31))  # fmt: skip
"""The table's columns and their widths in mm (196 in all: A4 less the 7 mm margins)."""


def _row_html(row: Mapping[str, Any]) -> str:
    pic = f'<img alt="{row["name"]}: {row["setting"]}" src="{row["picture"]}">' if row["picture"] else ""
    hf, vllm, llama = (html.escape(s) for s in row["engines"])
    setting = f"<br><b>{html.escape(row['setting'])}</b>: " if row["setting"] else "<br>"
    return (f'<tr data-parameter="{row["name"]}"><td><span class="name">{row["name"]}</span><br>'
            f'<span class="default">default {html.escape(row["default"])}</span></td>'
            f'<td>{html.escape(row["does"])}<span class="small">{setting}{row["caption"]}</span></td>'
            f'<td class="pic">{pic}</td><td class="engine">{hf}</td><td class="engine">{vllm}</td>'
            f'<td class="engine">{llama}</td></tr>')  # fmt: skip


def _list(items: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _advice_html(results: Mapping[str, Any]) -> str:
    measured = advice_summary(results)
    ranges = [readme_ranges(p) for p in ("temperature", "top_p", "repetition_penalty")]
    rules = [README_ADVICE[k] for k in ("one knob", "factual", "creative")]
    env = results["environment"]
    return (
        "<h2>The source README's advice beside the kit's measurement</h2><div class=grid><div>"
        f"<b>README ranges</b>{_list(ranges)}<b>README rules</b>{_list(rules)}</div><div>"
        f"<b>Factual, {len(results['questions'])} questions with known answers:</b> "
        f"{html.escape('; '.join(measured['factual']))}.<br>"
        f"<b>Creative, every setting tuned to the same entropy:</b> {html.escape('; '.join(measured['creative']))}."
        f"<br><b>Told apart from the best, one question (or request) at a time, 95 %:</b> "
        f"{html.escape('; '.join(measured['separated']))}; every other difference is within what "
        f"{len(results['questions'])} questions and {len(results['creative_prompts'])} requests can tell."
        f"<br><b>What the numbers recommend:</b> {html.escape('; '.join(measured['recommended']))}."
        f"<p class=small>{html.escape(env['model'])}, {html.escape(env['machine'])}; "
        f"<code>{html.escape(results['command'])}</code>. How sure each difference is: notebook 09.</p></div></div>"
    )


def build(lm: LoadedModel, results: Mapping[str, Any] | None = None) -> str:
    """The whole page as one self-contained HTML string."""
    results = load_advice() if results is None else results
    rows = parameter_rows(lm)
    orders = stage_orders(scenes(lm)["story"])
    order_lines = [f"{name}: {' → '.join(stages)}" for name, stages in orders.items()]
    story_prompt, story_start = SCENES["story"]
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>smolkit cheat sheet</title>"
        f"<style>{CSS}</style></head><body><h1>Generation parameters: the cheat sheet</h1>"
        f"<p class=small>Generated by <code>make cheatsheet</code> (smolkit.cheatsheet) from the kit itself: each "
        f"parameter's docstring, pictures of {html.escape(lm.description)} (grey: the model's next-token "
        f"probabilities, blue: after the setting shown, x: cut to 0; the last pair is every other token), the "
        f"README's ranges and the kit's measurement. Pictures: the next token of "
        f"“{html.escape(story_prompt)} → {html.escape(story_start)}”, of the sea poem's loop (penalties) and "
        f"after a full answer (min_tokens).</p>"
        "<table><colgroup>" + "".join(f'<col style="width:{mm}mm">' for _, mm in COLUMNS) + "</colgroup><thead><tr>"
        + "".join(f"<th>{html.escape(name)}</th>" for name, _ in COLUMNS) + "</tr></thead><tbody>"
        + "".join(_row_html(r) for r in rows)
        + "</tbody></table><h2>The order of the stages</h2>"
        + _list(order_lines)
        + _advice_html(results)
        + "<p class=small>Engines: transformers as installed (GenerationConfig defaults, generate's processor "
        "order), vLLM's sampling_params.py and sampler, llama.cpp's common/common.h; —: no such parameter there. "
        "A model's generation_config.json overrides transformers' defaults, and a vLLM server reads it too.</p>"
        "</body></html>\n"
    )


def print_pdf(page: Path, pdf: Path, chromium: str) -> None:
    """Print ``page`` to ``pdf`` with headless Chromium (its own print engine, the page's @page rules)."""
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--print-to-pdf={pdf}",
                    "--no-pdf-header-footer", page.resolve().as_uri()], check=True, capture_output=True)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the participant's cheat sheet (one A4 page of HTML).")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default {OUT}")
    parser.add_argument("--pdf", type=Path, default=None, help="also print it to this PDF with Chromium")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    from smolkit.models import load_model

    args.out.write_text(build(load_model(device="cpu")), encoding="utf-8")
    print(f"wrote {args.out}")
    if args.pdf:
        print_pdf(args.out, args.pdf, args.chromium)
        print(f"wrote {args.pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
