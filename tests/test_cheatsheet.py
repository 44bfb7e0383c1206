"""The committed cheat sheet (workshop/cheatsheet.html) says what the kit says, and prints on one A4 page."""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from smolkit import cheatsheet, vllm_rules
from smolkit.advice import README_ADVICE, advice_rows, load_advice
from smolkit.params import SamplingParams

REPO = Path(__file__).resolve().parents[1]
PAGE = cheatsheet.OUT
CHROMIUM = os.environ.get("SMOLKIT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "artifacts" / "cheatsheet"
PARAMETERS = [f.name for f in dataclasses.fields(SamplingParams)]


class Rows(HTMLParser):
    """The page's parameter rows: for each ``<tr data-parameter=...>``, its cells' texts and its image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, list[str]]] = {}
        self.current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr":
            self.current = found.get("data-parameter")
            if self.current:
                self.rows[self.current] = {"cells": [], "images": []}
        elif self.current and tag == "td":
            self.rows[self.current]["cells"].append("")
        elif self.current and tag == "img":
            self.rows[self.current]["images"].append(found["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.current and self.rows[self.current]["cells"]:
            self.rows[self.current]["cells"][-1] += data


@pytest.fixture(scope="module")
def page() -> str:
    return PAGE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def rows(page) -> dict[str, dict[str, list[str]]]:
    parser = Rows()
    parser.feed(page)
    return parser.rows


def text(page: str) -> str:
    """The page's text as a reader sees it (tags dropped, entities decoded, spaces collapsed)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_every_parameter_has_its_row_with_the_kits_own_words(rows):
    assert list(rows) == PARAMETERS
    docs = cheatsheet.field_docs()
    assert set(docs) == set(PARAMETERS)
    for name, row in rows.items():
        assert docs[name] in " ".join(row["cells"][1].split()), name
        assert f"default {SamplingParams.__dataclass_fields__[name].default!r}" in row["cells"][0]


def test_the_pictures_are_of_the_parameters_that_reshape_the_distribution(rows):
    for name, row in rows.items():
        if name not in cheatsheet.PICTURES:
            assert row["images"] == [] and "leaves the distribution as it is" in row["cells"][1], name
            continue
        (src,) = row["images"]
        image = Image.open(io.BytesIO(base64.b64decode(src.removeprefix("data:image/png;base64,"))))
        assert image.format == "PNG" and image.width > 200, name
        setting = ", ".join(f"{k}={v!r}" for k, v in cheatsheet.PICTURES[name].changes.items())
        assert setting in row["cells"][1], name


def test_the_readme_ranges_and_rules_are_the_readmes(page):
    shown = text(page)
    for parameter in ("temperature", "top_p", "repetition_penalty"):
        assert cheatsheet.readme_ranges(parameter) in shown, parameter
    for key in ("one knob", "factual", "creative"):
        assert " ".join(README_ADVICE[key].split()) in shown
    assert "temperature: Low 0.1-0.3, Medium 0.5-0.7, High 0.8-1.5; factual: lower 0.1-0.3" in shown
    assert "repetition_penalty: factual: higher 1.1-1.5" in shown


def test_the_measured_advice_is_the_committed_measurement(page):
    results, shown = load_advice(), text(page)
    for r in results["factual"]:
        assert f"{r['recipe']}: {r['accuracy']:.0%} correct" in shown
    for r in results["creative"]:
        assert f"{r['setting']}: {r['off_topic_rate']:.0%} off-topic" in shown
    for part, pick in results["recommended"].items():
        assert f"{part}: {pick}" in shown
    assert f"{len(results['questions'])} questions" in shown
    for part, key in (("factual", "recipe"), ("creative", "setting")):
        apart = [r[key] for r in advice_rows(results, part) if r["separated"]]
        assert f"{part}: {', '.join(apart) or 'none'}" in shown.split("Told apart from the best")[1]


def test_the_engines_and_stage_orders_are_the_kits_sources(rows, page):
    notes, shown = cheatsheet.engine_notes(), text(page)
    for name, row in rows.items():
        assert [" ".join(c.split()) for c in row["cells"][3:]] == list(notes[name]), name
    assert " → ".join(vllm_rules.STAGE_ORDER) in shown
    assert " → ".join(cheatsheet.LLAMA_CPP["samplers"]) in shown
    assert "default 50 when neither you nor the model set it" in shown  # transformers' top_k, read from it


def numbers(caption: str) -> list[float]:
    return [float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*\.?\d*", caption)]


@pytest.mark.slow
def test_the_committed_pictures_captions_are_what_the_model_gives_now(rows, lm):
    """Regenerated from the model, every caption's numbers match the committed page (to one unit in the last
    printed digit, as the notebooks' numbers are compared): the page is not stale."""
    fresh = {r["name"]: r for r in cheatsheet.parameter_rows(lm)}
    for name in cheatsheet.PICTURES:
        committed = " ".join(rows[name]["cells"][1].split())
        caption = html.unescape(fresh[name]["caption"])
        assert re.sub(r"[\d.,]+", "#", caption) in re.sub(r"[\d.,]+", "#", committed), name
        shown = numbers(committed.split(f"{fresh[name]['setting']}: ", 1)[1])
        assert shown == pytest.approx(numbers(caption), abs=0.011), name


@pytest.mark.browser
def test_the_page_prints_on_one_a4_page_showing_every_parameter(tmp_path):
    """Headless Chromium opens the committed page: a screenshot lands in artifacts/cheatsheet/, every parameter's
    row is visible, the laid-out page is no taller than A4's printable height, and printing gives one page."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: `make test-browser` installs it (apt-get install)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            view = browser.new_page(viewport={"width": 794, "height": 1123}, device_scale_factor=2)
            view.goto(PAGE.as_uri())
            view.emulate_media(media="print")
            view.screenshot(path=ARTIFACTS / "cheatsheet.png", full_page=True)
            for name in PARAMETERS:
                assert view.locator(f"tr[data-parameter='{name}']").is_visible(), name
            height_mm = view.evaluate("document.body.getBoundingClientRect().height") * 25.4 / 96
            pdf = view.pdf(format="A4", print_background=True, prefer_css_page_size=True)
        finally:
            browser.close()
    (ARTIFACTS / "cheatsheet.pdf").write_bytes(pdf)
    assert height_mm <= 297 - 2 * 7, f"the page is {height_mm:.0f} mm tall; A4 less its margins is 283 mm"
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1
