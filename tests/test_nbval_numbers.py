"""The notebook comparison (tests/nbval_numbers.py): last-digit noise passes, every real change still fails.

The unit tests check the rule; the end-to-end tests run nbval with the plugin, as ``make test-notebooks`` does, on a
tiny notebook whose stored outputs are the true ones or have been changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.nbval_numbers import numbers_match, snap_numbers

ROOT = Path(__file__).resolve().parent.parent


def agree(stored: str, fresh: str, units: int = 1) -> bool:
    return snap_numbers(stored, fresh, units) == stored


# --- the rule ---


@pytest.mark.parametrize(
    ("stored", "fresh"),
    [
        ("0.413", "0.414"),  # notebook 03's top probability at T=0.3 (AVX-512 vs another MKL kernel)
        ("5.17", "5.18"),  # notebook 00's entropy under ATEN_CPU_CAPABILITY=avx2
        ("0.414", "0.413"),
        ("9.99", "10.00"),  # a carry changes every digit, still one unit
        ("-0.000", "0.000"),
        ("1.2e-05", "1.3e-05"),
        ("41.3%", "41.2%"),
    ],
)
def test_last_digit_differences_pass(stored, fresh):
    assert agree(f"p_top {stored} |", f"p_top {fresh} |")


@pytest.mark.parametrize(
    ("stored", "fresh", "why"),
    [
        ("0.413", "0.423", "a probability off by 0.01"),
        ("0.413", "0.415", "two units in the last digit"),
        ("5.17", "5.20", "an entropy off by 0.03"),
        ("0.413", "0.41", "another printed precision"),
        ("1.0", "1", "a float printed as an integer"),
        ("48992", "48993", "integers are exact (counts, ids)"),
        ("2023", "2024", "integers are exact"),
    ],
)
def test_real_number_changes_fail(stored, fresh, why):
    assert not agree(f"value {stored} end", f"value {fresh} end"), why


def test_a_different_token_fails():
    stored = "top 4: ' brave' 0.344, ' magnificent' 0.316"
    assert not agree(stored, stored.replace("' brave'", "' bold'"))
    swapped = "top 4: ' magnificent' 0.316, ' brave' 0.344"
    assert not agree(stored, swapped)


def test_numbers_inside_token_texts_and_sampled_texts_are_exact():
    assert not agree("'It costs 3.14 dollars'", "'It costs 3.15 dollars'")
    assert not agree('top: "0.5" 0.413', 'top: "0.6" 0.413')
    assert not agree("ids [504, 3458]", "ids [504, 3459]")
    assert agree("'a 3.14' 0.413", "'a 3.14' 0.414")  # the literal is equal: the number outside may move


@pytest.mark.parametrize(
    ("stored", "fresh"),
    [
        ("the capital is Paris. 0.413", "the capital is Rome. 0.413"),
        ("entropy: 5.17 bits", "entropy: 5.17 bit"),
        ("a 0.413", "a  0.413"),
        ("line one\nline two", "line one"),
        ("0.413\n", "0.413\n\n"),
        ("torch 2.13.0", "torch 2.13.1"),  # a version is text, not a number
        ("id 0x7f3a3b", "id 0x7f3a3c"),
    ],
)
def test_changed_text_fails(stored, fresh):
    assert not agree(stored, fresh)


def test_only_the_real_differences_are_left():
    stored = "T=0.3 0.413 906\nT=0.5 0.344 49152"
    fresh = "T=0.3 0.414 907\nT=0.5 0.354 49152"
    assert snap_numbers(stored, fresh) == "T=0.3 0.413 907\nT=0.5 0.354 49152"


def test_units_set_the_tolerance():
    assert not numbers_match("0.413", "0.414", units=0)
    assert numbers_match("0.413", "0.415", units=2)
    assert numbers_match("48992", "48992", units=0)


# --- end to end: nbval with the plugin ---

# (source, stored stdout, tags): the notebook's cells; the stored outputs are what the code prints unless changed.
CELLS = {
    "last-digit": ('print("p 0.414, entropy 5.18 bits")', "p 0.413, entropy 5.17 bits\n", []),
    "probability-off": ('print("p 0.423")', "p 0.413\n", []),
    "other-token": ("print(\"top: ' bold' 0.413\")", "top: ' brave' 0.413\n", []),
    "count-off": ('print("surviving tokens: 48993")', "surviving tokens: 48992\n", []),
    "text-changed": ('print("the answer is 0.413")', "the answers is 0.413\n", []),
    "sampled-text": ("print(repr('It costs 3.15 dollars'))", "'It costs 3.14 dollars'\n", []),
    "tag-ignored": ('print("anything 1")', "something else\n", ["nbval-ignore-output"]),
    "comment-ignored": ('# NBVAL_IGNORE_OUTPUT\nprint("anything 2")', "something else\n", []),
    "sanitized-time": ('print("took 12.3 s, p 0.414")', "took 1.0 s, p 0.413\n", []),
    "unchanged": ('print("p 0.413 | 49152 tokens")', "p 0.413 | 49152 tokens\n", []),
}
RESULT = {"execute-result": ("0.414", "0.413"), "result-off": ("0.433", "0.413")}  # (source, stored text/plain)


def make_notebook(path: Path) -> list[str]:
    """Write the notebook; return the cell names in order (nbval numbers the code cells from 0)."""
    cells = []
    for count, (source, stdout, tags) in enumerate(CELLS.values(), start=1):
        cell = nbformat.v4.new_code_cell(source, execution_count=count, metadata={"tags": tags} if tags else {})
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stdout)]
        cells.append(cell)
    for count, (source, text) in enumerate(RESULT.values(), start=len(cells) + 1):
        cell = nbformat.v4.new_code_cell(source, execution_count=count)
        cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": text}, execution_count=count)]
        cells.append(cell)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return [*CELLS, *RESULT]


def run_nbval(notebook: Path, *options: str) -> dict[str, str]:
    """Run nbval with the plugin as make test-notebooks does; return each cell's outcome by name."""
    names = make_notebook(notebook)
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "tests.nbval_numbers",
               "--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(ROOT / "tests/nbval_sanitize.cfg"),
               "--rootdir", str(notebook.parent), *options, str(notebook)]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    outcomes = dict(re.findall(r"::Cell (\d+) (PASSED|FAILED)", proc.stdout))
    assert len(outcomes) == len(names), proc.stdout + proc.stderr
    return {name: outcomes[str(i)] for i, name in enumerate(names)}


def test_nbval_passes_noise_and_fails_real_changes(tmp_path):
    outcomes = run_nbval(tmp_path / "tiny.ipynb")
    passing = {"last-digit", "tag-ignored", "comment-ignored", "sanitized-time", "unchanged", "execute-result"}
    assert {name for name, outcome in outcomes.items() if outcome == "PASSED"} == passing, outcomes


def test_without_the_tolerance_last_digit_noise_fails(tmp_path):
    """The plugin is what makes 0.413 vs 0.414 pass: with 0 units it fails like plain nbval."""
    outcomes = run_nbval(tmp_path / "tiny.ipynb", "--nbval-last-digit-units", "0")
    assert outcomes["last-digit"] == outcomes["execute-result"] == outcomes["sanitized-time"] == "FAILED"
    assert outcomes["unchanged"] == outcomes["tag-ignored"] == outcomes["comment-ignored"] == "PASSED"


def test_the_failure_report_shows_only_real_differences(tmp_path):
    notebook = tmp_path / "report.ipynb"
    cell = nbformat.v4.new_code_cell('print("T=0.3 0.414 907")', execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="T=0.3 0.413 906\n")]
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), notebook)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.nbval_numbers", "--nbval",
               "--nbval-current-env", "--rootdir", str(tmp_path), "--color=no", str(notebook)]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout
    assert "T=0.3 0.413 906" in proc.stdout and "T=0.3 0.413 907" in proc.stdout  # the count, not the probability


# A layer whose every output is exactly 0.5 (zero weights, bias 0.5): the count above 0.5 is 0 on any CPU, but any
# noise makes about half of them cross; the count above 0.4 is 1000 whatever the noise.
PLANTED = {
    "robust": ("import torch\nlayer = torch.nn.Linear(4, 1000)\ntorch.nn.init.zeros_(layer.weight)\n"
               "torch.nn.init.constant_(layer.bias, 0.5)\nout = layer(torch.ones(4))\nprint(int((out > 0.4).sum()))",
               "1000\n"),
    "fragile": ("print(int((out > 0.5).sum()))", "0\n"),
}  # fmt: skip


def run_planted(folder: Path, *options: str) -> dict[str, str]:
    notebook = folder / "planted.ipynb"
    cells = []
    for count, (source, stdout) in enumerate(PLANTED.values(), start=1):
        cell = nbformat.v4.new_code_cell(source, execution_count=count)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stdout)]
        cells.append(cell)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), notebook)
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "tests.nbval_numbers",
               "--nbval", "--nbval-current-env", "--rootdir", str(folder), *options, str(notebook)]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    outcomes = dict(re.findall(r"::Cell (\d+) (PASSED|FAILED)", proc.stdout))
    assert len(outcomes) == len(PLANTED), proc.stdout + proc.stderr
    return {name: outcomes[str(i)] for i, name in enumerate(PLANTED)}


def test_float_noise_catches_a_planted_fragile_output(tmp_path):
    """--float-noise (tests/float_noise.py) moves what a fragile print depends on; a robust print still passes."""
    assert run_planted(tmp_path) == {"robust": "PASSED", "fragile": "PASSED"}  # without noise: as stored
    assert run_planted(tmp_path, "--float-noise", "2") == {"robust": "PASSED", "fragile": "FAILED"}
