"""The facilitator's paths: they name sections the notebooks have, fit their time, and the guide shows them."""

from __future__ import annotations

import re

import nbformat
import pytest

from smolkit import workshop_paths as wp

REPO = wp.ROOT
HEADING = re.compile(r"^#{1,3} +(.+)$", re.MULTILINE)


def notebook_ids(name: str) -> list[str]:
    """The section ids of the committed notebook, read from its markdown cells as bench/time_notebooks.py does."""
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    ids = []
    for cell in nb.cells:
        headings = HEADING.findall(cell.source) if cell.cell_type == "markdown" else []
        if headings:
            ids.append(wp.section_id(" + ".join(h.strip() for h in headings)))
    return ids


@pytest.fixture(scope="module")
def times():
    return wp.load_times()


def test_every_notebook_was_timed_as_it_is_now(times):
    """The measurement covers every numbered notebook, section by section as the notebooks stand: a notebook whose
    sections changed must be timed again (make time-notebooks)."""
    notebooks = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(n.removesuffix(".ipynb") for n in times["notebooks"]) == notebooks
    for name in notebooks:
        timed = [wp.section_id(s["heading"]) for s in times["notebooks"][f"{name}.ipynb"]["sections"]]
        assert [i for i in timed if i != "(before the first heading)"] == notebook_ids(name), name


def test_the_paths_name_sections_that_exist_once_each_in_order(times):
    for name, steps in wp.PATHS.items():
        for step in steps:
            ids = notebook_ids(step.notebook)
            assert all(s in ids for s in step.sections), (name, step.notebook, step.sections, ids)
            assert [ids.index(s) for s in step.sections] == sorted({ids.index(s) for s in step.sections})
        order = [s.notebook for s in steps]
        assert order == sorted(set(order)), f"{name}: each notebook once, in the notebooks' order"


def test_the_2_hour_path_fits_2_hours_and_the_half_day_path_half_a_day(times):
    def total(name: str) -> float:
        return sum(r["run"] + r["people"] for r in wp.path_rows(name, times))

    two, half = total("2-hour"), total("half-day")
    assert 100 <= two <= 120, f"2-hour path: {two:.0f} min"
    assert 150 <= half <= 210, f"half-day path: {half:.0f} min (3.5 h with breaks)"
    assert half > two


def test_a_section_minutes_are_its_run_plus_the_stated_allowance():
    section = {"heading": "3. Play: the slider", "seconds": 90.0, "words": 240, "code_cells": 2}
    assert wp._minutes(section) == {"run": 1.5, "people": 240 / 120 + 2 * 0.5 + 3.0}
    exercises = {"heading": "8. Exercises", "seconds": 0.0, "words": 0, "code_cells": 3}
    assert wp._minutes(exercises)["people"] == 3 * 0.5 + 3 * 5.0


def test_an_unknown_section_names_the_notebook_and_its_sections(times, monkeypatch):
    monkeypatch.setitem(wp.PATHS, "2-hour", (wp.Step("03_temperature", ("0", "42")),))
    with pytest.raises(ValueError, match=r"03_temperature has no section \['42'\]"):
        wp.path_rows("2-hour", times)


def test_the_guide_shows_the_current_tables_and_links_the_cheat_sheet(times):
    guide = wp.GUIDE.read_text()
    assert wp.generated_block(times) in guide, "run python -m smolkit.workshop_paths --write"
    for link in ("cheatsheet.html", "cheatsheet.pdf", "SETUP.md"):
        assert f"]({link})" in guide, link


def test_the_readme_notebook_table_shows_the_2_hour_path():
    """The README's "2-h path" column is the 2-hour path's data, notebook by notebook, homework included."""
    rows = re.findall(r"^\| `(\d\d_\w+)` \|.*\| ([^|]+) \|$", (REPO / "README.md").read_text(), re.MULTILINE)
    notebooks = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [name for name, _ in rows] == notebooks
    assert {name: cell.strip() for name, cell in rows} == {nb: wp.path_cell("2-hour", nb) for nb in notebooks}
