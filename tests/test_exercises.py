"""Every exercise accepts its right answer and rejects a wrong one, checked in the notebook itself.

Each notebook runs once, in the smolkit kernel as nbval runs it, with two cells appended per exercise: the
exercise cell with the right answer from tests/exercise_solutions.py (it must print "Correct!") and with a wrong one
(it must print the exercise's hint). The check functions and the objects they read are the notebook's own.
"""

from __future__ import annotations

import os
import re
import types
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from exercise_solutions import SOLUTIONS
from nbclient import NotebookClient

from smolkit import SamplingParams, next_token_distribution
from smolkit.exercises import EXERCISES, check_exercise

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
KEY = re.compile(r"""check_exercise\(\s*["'](\w+)["']""")
ANSWER = re.compile(r"^answer = None\b.*$", re.M)


def exercise_cells(nb: nbformat.NotebookNode) -> dict[str, str]:
    """The exercise cells of a notebook, by exercise key."""
    return {m.group(1): cell.source for cell in nb.cells if cell.cell_type == "code" for m in [KEY.search(cell.source)]
            if m}  # fmt: skip


def test_every_exercise_has_a_cell_a_check_and_a_solution():
    keys = [k for path in NOTEBOOKS for k in exercise_cells(nbformat.read(path, as_version=4))]
    assert len(keys) == len(set(keys))
    assert sorted(keys) == sorted(EXERCISES) == sorted(SOLUTIONS)
    for path in NOTEBOOKS:
        for key, source in exercise_cells(nbformat.read(path, as_version=4)).items():
            assert key.startswith(path.name[:2]), f"{path.name} holds exercise {key}"
            assert ANSWER.search(source), f"{key}: the cell must start the learner off with 'answer = None'"


def test_a_check_says_what_it_needs(capsys):
    with pytest.raises(TypeError, match="pass dist="):
        check_exercise("03a", 0.3)
    with pytest.raises(ValueError, match="exercise must be one of"):
        check_exercise("99z", 1)
    assert check_exercise("03a", None) is False
    assert "replace None" in capsys.readouterr().out


def test_tolerance_holds_for_numpy_and_torch_numbers(lm, capsys):
    """03a's tolerance (0.01) applies to an answer given as a tensor, a numpy float or a 0-d array as to a float."""
    dist = next_token_distribution(lm, "What is the capital of France?")
    truth = dist.with_params(temperature=0.5).top(1)[0].prob
    close = [truth + 0.004, np.float32(truth + 0.004), np.float64(truth - 0.004), np.array(truth + 0.004),
             torch.tensor(truth + 0.004)]  # fmt: skip
    assert [check_exercise("03a", a, dist=dist) for a in close] == [True] * len(close)
    # a tensor with a dimension is no number (the one rule of _checks.plain), even holding one value
    far = [truth + 0.02, torch.tensor(truth + 0.02), np.float32(truth - 0.02), np.array([truth, truth]), "0.3",
           torch.tensor([truth])]  # fmt: skip
    assert [check_exercise("03a", a, dist=dist) for a in far] == [False] * len(far)
    capsys.readouterr()


def test_true_is_not_one_and_zero_is_not_false(lm):
    """02a's answer is 1 (greedy gives one text): 1 and np.int64(1) are right, True is not; 10b's is False (the best
    beam is likelier than greedy here): False and np.bool_(False) are right, 0 is not."""
    greedy = SamplingParams(temperature=0, max_new_tokens=3)
    answers = [(1, True), (np.int64(1), True), (torch.tensor(1), True), (True, False), (np.bool_(True), False)]
    for answer, right in answers:
        assert check_exercise("02a", answer, lm=lm, prompt="Hi", greedy=greedy) is right, answer
    best = types.SimpleNamespace
    objects = {"greedy": best(best=best(logprob=-5.0)), "beams": best(best=best(logprob=-1.0))}
    answers = [(False, True), (np.bool_(False), True), (torch.tensor(False), True), (0, False), (0.0, False)]
    for answer, right in answers:
        assert check_exercise("10b", answer, **objects) is right, answer


def test_objects_without_the_row_a_check_reads_say_so():
    """rows without a 2048 px row (11a), a client without vLLM's part (12a): a ValueError naming what is missing,
    not a bare StopIteration."""
    with pytest.raises(ValueError, match="rows has no row with 'longest edge' 2048"):
        check_exercise("11a", 5, rows=[{"longest edge": 512, "image tokens": 64}, "junk"])
    with pytest.raises(ValueError, match="client has no part with repetition_penalty"):
        check_exercise("12a", "extra_body", client={"model": "m", "extra_body": {"top_k": 5}})


class _Cut:
    """A stand-in for a Distribution with one token at probability 0.951: top_p up to 0.951 keeps it alone."""

    def __init__(self, top_p: float = 1.0):
        self.top_p = top_p

    def with_params(self, top_p: float) -> _Cut:
        return _Cut(top_p)

    def surviving(self) -> int:
        return 1 if self.top_p <= 0.951 else 2


def test_a_goal_is_checked_on_the_learners_objects(capsys):
    """04b has one right answer, the largest two-decimal top_p that still keeps the token alone: an answer on the
    wrong side of the cut (0.96) or short of it (0.94) is refused, and so is anything that is not a number."""
    assert check_exercise("04b", 0.95, sure=_Cut()) is True
    for wrong in (0.96, 0.94, True, "0.95", 1.5):
        assert check_exercise("04b", wrong, sure=_Cut()) is False
    assert capsys.readouterr().out.count("Not yet") == 5


def _text(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_exercises_accept_the_right_answer_and_reject_a_wrong_one(path):
    nb = nbformat.read(path, as_version=4)
    cells = exercise_cells(nb)
    assert cells, f"{path.name} has no exercises"
    tried = []
    for key, source in cells.items():
        right, wrong = SOLUTIONS[key]
        for answer, expected in ((right, "Correct!"), (wrong, f"Not yet: {EXERCISES[key].hint}")):
            nb.cells.append(nbformat.v4.new_code_cell(ANSWER.sub(f"answer = {answer!r}", source)))
            tried.append((key, answer, expected, nb.cells[-1]))
    client = NotebookClient(nb, timeout=900, kernel_name="smolkit", resources={"metadata": {"path": str(path.parent)}})
    client.execute(env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0"})
    wrong_results = [f"{key} with {answer!r}: expected {expected!r}, got {_text(cell)!r}"
                     for key, answer, expected, cell in tried if _text(cell).strip() != expected]  # fmt: skip
    assert wrong_results == []
