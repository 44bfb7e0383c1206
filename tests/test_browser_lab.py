"""The lab as a person uses it: JupyterLab in headless Chromium, run notebook 03, move the temperature slider.

Starts JupyterLab from this venv on 127.0.0.1 (free port, token, settings isolated under a temp dir) on a COPY of
the notebooks folder, so that the committed notebook is never saved over; drives Debian's Chromium with Playwright
(`make test-browser` installs Chromium when missing). Screenshots land in artifacts/browser/.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image, ImageChops
from servers import describe, family, free_port, sigterm_as_interrupt, start, stop, wait_for

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = Path(os.environ.get("SMOLKIT_BROWSER_NOTEBOOK", REPO / "notebooks" / "03_temperature.ipynb"))
"""The notebook the test opens (SMOLKIT_BROWSER_NOTEBOOK overrides it, e.g. to try a draft)."""
CHROMIUM = os.environ.get("SMOLKIT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "artifacts" / "browser"
SLIDER = "temperature"
STEPS = 8  # arrow-key presses on the slider; each moves it by one step (0.05 for temperature)

# Generous for a fresh 2-core machine: the first cells import torch and load the model.
SERVER_START_S = 120
OPEN_S = 120
RUN_ALL_S = 900
UPDATE_S = 60

KERNEL_IDLE = """() => document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']") !== null
    && document.querySelector(".jp-Dialog") === null"""
CELLS_QUEUED = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
    .some(prompt => /\\[(\\*|\\d+)\\]/.test(prompt.textContent))"""
ALL_CELLS_RAN = """() => {
    const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
    if (cells.length === 0) return false;
    const ran = cells.every(cell => {
        const prompt = cell.querySelector('.jp-InputPrompt')?.textContent ?? '';
        const source = cell.querySelector('.cm-content')?.textContent ?? '';
        return /\\[\\d+\\]/.test(prompt) || source.trim() === '';
    });
    return ran && document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']") !== null;
}"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_settings(settings: Path) -> None:
    """JupyterLab settings for an unattended run: no news prompt, no kernel prompt, every cell attached to the page."""
    files = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
            "windowingMode": "none",
            "autoStartDefaultKernel": True,
        },
    }
    for name, value in files.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a copy of the notebook's folder; yields (URL, token, server, list for processes to stop).

    Always stopped, also when the test fails or pytest is interrupted; the log is kept beside the screenshots."""
    assert NOTEBOOK.is_file(), f"the browser test opens {NOTEBOOK}, which does not exist"
    root = tmp_path / "root"
    shutil.copytree(NOTEBOOK.parent, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    env = dict(os.environ)
    for var, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
    ]:
        (tmp_path / sub).mkdir()
        env[var] = str(tmp_path / sub)
    write_settings(tmp_path / "settings")
    env.update(JUPYTER_PLATFORM_DIRS="1", CUDA_VISIBLE_DEVICES="", PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.pop("MPLBACKEND", None)
    port, token = free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
    ]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = tmp_path / "jupyterlab.log"
    url = f"http://127.0.0.1:{port}"
    known = []
    with sigterm_as_interrupt():
        server = start(cmd, log, env)
        try:
            wait_for(
                "JupyterLab to answer /api/status",
                lambda: requests.get(f"{url}/api/status", params={"token": token}, timeout=5).ok,
                SERVER_START_S, server, log,
            )  # fmt: skip
            yield url, token, server, known
        finally:
            stuck = stop(server, known=[*known, *family(server)])
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, ARTIFACTS / "jupyterlab.log")
            assert not stuck, f"JupyterLab processes would not stop:\n{describe(stuck)}"


def stderr_outputs(page) -> list[str]:
    """Texts of the outputs a person would read as errors: stderr, tracebacks, widgets that failed to show."""
    found = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
    found += [t for t in page.locator(".jp-OutputArea-output").all_inner_texts() if "Error displaying widget" in t]
    return found


def test_temperature_slider_redraws_the_figure(lab):
    """Open notebook 03, Run All, move the temperature slider: the shown value, the readout and the figure change."""
    from playwright.sync_api import sync_playwright

    url, token, server, known = lab
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: `make test-browser` installs it (apt-get install)"
    committed = sha256(NOTEBOOK)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # this run's artefacts only
    ARTIFACTS.mkdir(parents=True)
    timings = {}
    clock = time.perf_counter()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}", timeout=OPEN_S * 1000)
                page.wait_for_selector(".jp-Notebook", timeout=OPEN_S * 1000)
                wait_until(page, "the notebook's kernel to be idle", KERNEL_IDLE, OPEN_S, hold_s=3)
                known.extend(family(server))  # the kernel runs now: remembered, in case it outlives the server
                timings["open notebook"], clock = time.perf_counter() - clock, time.perf_counter()

                run_all(page)
                wait_until(page, "Run All to finish", ALL_CELLS_RAN, RUN_ALL_S)
                timings["run all cells"], clock = time.perf_counter() - clock, time.perf_counter()
                page.screenshot(path=ARTIFACTS / "01_notebook_after_run_all.png")
                assert_no_errors(page, "after Run All")

                explorer = Explorer.find(page, SLIDER)
                before = explorer.capture("02_before")
                key, expected = explorer.move(STEPS)
                after = explorer.capture("03_after")
                timings["slider to redrawn figure"] = time.perf_counter() - clock

                assert float(after.value) == pytest.approx(expected, abs=1e-6), (
                    f"the slider shows {after.value} after {STEPS} x {key} from {before.value}, expected {expected:g}"
                )
                assert after.readout != before.readout, f"the explorer's readout did not change: {after.readout!r}"
                assert before.figure.size == after.figure.size, "the figure changed size"
                assert ImageChops.difference(before.figure, after.figure).getbbox(), (
                    "the figure's pixels did not change"
                )
                assert_no_errors(page, "after moving the slider")
            except BaseException:
                with contextlib.suppress(Exception):  # keep the original error if the page is gone too
                    page.screenshot(path=ARTIFACTS / "failure.png")
                raise
        finally:
            browser.close()

    print("browser test timings (s):", {k: round(v, 1) for k, v in timings.items()})
    (ARTIFACTS / "timings.json").write_text(json.dumps({k: round(v, 2) for k, v in timings.items()}, indent=2))
    assert sha256(NOTEBOOK) == committed, f"{NOTEBOOK} changed during the test"


@dataclass
class Shot:
    value: str  # the slider's shown value
    readout: str  # the explorer's text under the sliders (parameters, entropy, top tokens)
    figure: Image.Image


@dataclass
class Explorer:
    """The DistributionExplorer on the page: the slider named ``name``, and the widget box around it."""

    page: Any
    slider: Any
    box: Any

    @classmethod
    def find(cls, page, name: str) -> Explorer:
        label = page.locator(".widget-label", has_text=re.compile(f"^{re.escape(name)}$"))
        sliders = page.locator(".widget-slider", has=label)
        assert sliders.count() >= 1, f"no slider labelled {name!r} on the page after Run All"
        slider = sliders.first
        box = slider.locator("xpath=ancestor::div[contains(concat(' ', @class, ' '), ' widget-vbox ')][1]")
        assert box.locator("img").count() >= 1, f"no figure (<img>) in the widget box of the {name!r} slider"
        return cls(page, slider, box)

    @property
    def figure(self):
        return self.box.locator("img").first

    def capture(self, prefix: str) -> Shot:
        """Screenshots of the explorer and of its figure (kept as artefacts), and what it shows."""
        self.box.scroll_into_view_if_needed()
        self.figure.wait_for(state="visible", timeout=UPDATE_S * 1000)
        self.page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=self.figure.element_handle(), timeout=UPDATE_S * 1000
        )
        self.box.screenshot(path=ARTIFACTS / f"{prefix}_explorer.png")
        png = self.figure.screenshot(path=ARTIFACTS / f"{prefix}_figure.png")
        value = self.slider.locator(".widget-readout").inner_text().strip()
        readout = self.box.locator(".widget-html").first.inner_text()
        return Shot(value, readout, Image.open(io.BytesIO(png)).convert("RGB"))

    def move(self, steps: int) -> tuple[str, float]:
        """Press an arrow key ``steps`` times on the slider's handle (right, or left near the top of its range), as
        a person does; wait until the last redrawn figure is shown. Returns the key and the value it should show."""
        from smolkit.widgets import CONTROLS

        handle = self.slider.locator(".noUi-handle")
        now, top = float(handle.get_attribute("aria-valuenow")), float(handle.get_attribute("aria-valuemax"))
        step = CONTROLS[SLIDER]["step"]
        key, sign = ("ArrowRight", 1) if now + steps * step <= top else ("ArrowLeft", -1)
        src, shown = self.figure.get_attribute("src"), self.slider.locator(".widget-readout")
        shown_before = shown.inner_text().strip()
        handle.focus()
        for _ in range(steps):
            handle.press(key)
        self.page.wait_for_function(
            "([el, before]) => el.textContent.trim() !== before",
            arg=[shown.element_handle(), shown_before],
            timeout=UPDATE_S * 1000,
        )
        # Each step sends the new value to the kernel, which redraws the figure (a new image URL each time).
        self.page.wait_for_function(
            "([img, before]) => img.getAttribute('src') !== before && img.complete",
            arg=[self.figure.element_handle(), src],
            timeout=UPDATE_S * 1000,
        )
        wait_until(self.page, "the kernel to be idle after the slider moved", KERNEL_IDLE, UPDATE_S, hold_s=1)
        wait_stable(self.page, self.figure)
        return key, now + sign * steps * step


def assert_no_errors(page, when: str) -> None:
    errors = stderr_outputs(page)
    assert not errors, f"cells show errors or stderr {when}:\n" + "\n---\n".join(errors)


def wait_until(page, what: str, condition: str, timeout_s: float, hold_s: float = 0.0) -> None:
    """Poll the JavaScript ``condition`` until it has held for ``hold_s`` seconds; accept a dialog if one shows;
    fail at once on an error output."""
    deadline = time.monotonic() + timeout_s
    since = None
    while time.monotonic() < deadline:
        if page.evaluate(condition):
            since = since or time.monotonic()
            if time.monotonic() - since >= hold_s:
                return
        else:
            since = None
        errors = stderr_outputs(page)
        assert not errors, f"while waiting for {what}, cells show errors or stderr:\n" + "\n---\n".join(errors)
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and dialog.first.is_visible():
            print(f"accepting a dialog: {dialog.first.inner_text()!r}")
            dialog.locator(".jp-mod-accept").first.click()
        page.wait_for_timeout(500)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def run_all(page, attempts: int = 3) -> None:
    """Clear all outputs, then Run > Run All Cells, through the menus as a person does.

    Right after a notebook opens, JupyterLab may reconnect to the new kernel once (idle, initializing, idle again);
    a Run All clicked in that moment queues nothing. So check that the cells were queued, and click again if not.
    """
    page.get_by_role("menuitem", name="Edit", exact=True).click()
    page.locator("[data-command='editmenu:clear-all']").click()
    for attempt in range(1, attempts + 1):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.locator("[data-command='runmenu:run-all']").click()
        try:
            wait_until(page, "Run All to queue the cells", CELLS_QUEUED, 20)
            return
        except AssertionError:
            if attempt == attempts:
                raise
            print(f"Run All queued no cell (attempt {attempt}); waiting for the kernel and trying again")
            wait_until(page, "the notebook's kernel to be idle", KERNEL_IDLE, OPEN_S, hold_s=3)


def wait_stable(page, figure, quiet_s: float = 1.0, timeout_s: float = UPDATE_S) -> None:
    """Wait until the figure's image has not been replaced for ``quiet_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    last, since = figure.get_attribute("src"), time.monotonic()
    while time.monotonic() < deadline:
        page.wait_for_timeout(200)
        src = figure.get_attribute("src")
        if src != last:
            last, since = src, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
    raise AssertionError(f"the figure kept changing for {timeout_s} s after the slider stopped")
