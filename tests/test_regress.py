"""The upgrade report (tests/regress.py): float noise is told from real changes, and the report shows both."""

from __future__ import annotations

import nbformat
import pytest

from tests.regress import Moved, compare, report


def notebook(*outputs: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for text in outputs:
        cell = nbformat.v4.new_code_cell("print(...)")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells.append(cell)
    return nb


STORED = "top 3: ' brave' 0.413, ' bold' 0.201 | surviving tokens: 906 | entropy: 5.17 bits\n"


@pytest.mark.parametrize(
    ("new", "noise"),
    [
        ("top 3: ' brave' 0.414, ' bold' 0.201 | surviving tokens: 906 | entropy: 5.18 bits\n", True),
        ("top 3: ' brave' 0.423, ' bold' 0.201 | surviving tokens: 906 | entropy: 5.17 bits\n", False),  # 0.01
        ("top 3: ' brave' 0.413, ' bold' 0.201 | surviving tokens: 907 | entropy: 5.17 bits\n", False),  # a count
        ("top 3: ' brawl' 0.413, ' bold' 0.201 | surviving tokens: 906 | entropy: 5.17 bits\n", False),  # a token
        ("top 3: ' brave' 0.413, ' bold' 0.201 | kept tokens: 906 | entropy: 5.17 bits\n", False),  # a word
    ],
)
def test_each_moved_line_is_judged_by_the_noise_rule(new, noise):
    cells, moved = compare("03_x.ipynb", notebook("same\n", STORED), notebook("same\n", new))
    assert cells == 2
    assert [(m.cell, m.noise) for m in moved] == [(1, noise)]


def test_unchanged_outputs_move_nothing_and_timings_are_sanitized():
    cells, moved = compare("x.ipynb", notebook("took 1.2 s\n", STORED), notebook("took 9.9 s\n", STORED))
    assert (cells, moved) == (2, [])


def test_a_line_added_or_removed_is_a_real_change():
    _, moved = compare("x.ipynb", notebook("a\nb\n"), notebook("a\nb\nc\n"))
    assert moved == [Moved("x.ipynb", 0, "", "c")]
    assert not moved[0].noise


def test_the_report_lists_real_changes_with_their_size_and_noise_in_a_table():
    results = {
        "03_x.ipynb": compare(
            "03_x.ipynb",
            notebook(STORED, "Paris is about 53,715 times likelier\n"),
            notebook(STORED.replace("5.17", "5.18"), "Paris is about 53,716 times likelier\n"),
        )
    }
    text = report(("committed", {"transformers": "5.23.0"}), ("run", {"transformers": "5.24.0"}), results)
    assert "| transformers | 5.23.0 | 5.24.0 |" in text
    assert "**03_x.ipynb, cell 1**: numbers moved beyond one unit of the last digit: 715 -> 716 (+1 (+0.14%))" in text
    assert "- Paris is about 53,715 times likelier" in text and "+ Paris is about 53,716 times likelier" in text
    assert "| 03_x.ipynb | 0 | 5.17 | 5.18 | +0.01 (+0.19%) |" in text
    assert "2 compared code cells in 1 notebooks: 1 cells with real changes, 1 with float noise only." in text


def test_cells_make_test_does_not_compare_are_left_out():
    stored, new = notebook("seed=None: 'a'\n", STORED), notebook("seed=None: 'b'\n", STORED.replace("0.413", "0.5"))
    stored.cells[0].metadata["tags"] = ["nbval-ignore-output"]
    cells, moved = compare("x.ipynb", stored, new)
    assert cells == 1 and [(m.cell, m.noise) for m in moved] == [(1, False)]
