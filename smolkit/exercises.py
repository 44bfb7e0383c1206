"""Checking a learner's answer to a notebook exercise against the kit's own computation (never a stored answer)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["check"]


def check(answer: Any, expected: Any | Callable[[], Any], hint: str = "", tolerance: float = 0.0) -> bool:
    """Print whether ``answer`` matches ``expected`` (a value, or a function computing it) and return True if so.

    ``answer`` still ``None`` (or ``...``) means not answered yet: a reminder is printed, not a failure. Numbers
    match within ``tolerance`` (absolute); anything else must be equal.

    >>> check(None, 3)
    Exercise: replace None with your answer, then run this cell again.
    False
    >>> check(3, lambda: 1 + 2)
    Correct!
    True
    >>> check(0.52, 0.5, hint="look at the top bar", tolerance=0.01)
    Not yet: look at the top bar
    False
    """
    if answer is None or answer is Ellipsis:
        print("Exercise: replace None with your answer, then run this cell again.")
        return False
    truth = expected() if callable(expected) else expected
    if isinstance(answer, (int, float)) and isinstance(truth, (int, float)) and not isinstance(answer, bool):
        ok = math.isclose(answer, truth, rel_tol=0, abs_tol=tolerance)
    else:
        ok = answer == truth
    print("Correct!" if ok else f"Not yet{': ' + hint if hint else ', try again.'}")
    return ok
