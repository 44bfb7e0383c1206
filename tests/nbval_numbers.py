"""nbval with printed numbers compared to one unit in their last digit; all other text still compared exactly.

Load it beside nbval: ``pytest -p tests.nbval_numbers --nbval ...`` (``make test-notebooks`` does).

Why: a probability printed as ``0.413`` on one processor prints ``0.414`` on another (AVX2 or AVX-512 kernels,
Intel's or AMD's, one thread or two sum in other orders: float32 noise of about 1e-7 crosses a rounding boundary now
and then). Any printed decimal can sit on such a boundary, so the committed notebooks failed strict nbval on the
next machine. The rule here:

- A decimal number (``0.413``, ``5.17``, ``1.2e-05``) matches when it differs by at most ``units`` (default 1) in
  its last printed digit: float noise moves a rounded number by one unit, never two, while any real change of what
  the kit computes moves it by more (``0.413`` vs ``0.423`` fails).
- Integers are compared exactly: token ids, counts, seeds, positions, years in a sampled text. A token id off by
  one is another token.
- Text inside a Python string literal (``' brave'``, ``'Over the summer of 2023...'``, i.e. token texts and sampled
  texts printed with ``repr``) is compared exactly, numbers included.
- Everything else is compared exactly, as nbval does: words, spacing, line count, and how a number is written
  (``0.41`` vs ``0.413`` or ``1`` vs ``1.0`` fails).

nbval's regex sanitizers (``--nbval-sanitize-with``) still apply first, and nbval's cell tags and comments
(``nbval-ignore-output`` / ``# NBVAL_IGNORE_OUTPUT``, ``nbval-skip``, ``raises-exception``) keep their meaning: only
cells whose outputs nbval compares reach this code.

Written by hand because nothing well kept does it: nbval 0.11 compares each output with ``!=`` after its
sanitizers, and a sanitizer is a regex applied to each side alone, so it can only blank a number out (ignore it),
not compare two numbers within a tolerance; pytest-notebook's ``diff_replace`` has the same shape; nbdime diffs
without tolerances. nbval has no hook of its own for the comparison, so this plugin swaps its notebook collector
for a subclass whose cells override ``IPyNbCell.compare_outputs``: before calling nbval's own comparison (and its
failure report), each number of the fresh output that matches the stored one by the rule above is written as the
stored one. What is left different is what nbval reports, so a failure shows only the real differences.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from nbval.plugin import IPyNbCell, IPyNbFile

from tests import float_noise

__all__ = ["numbers_match", "snap_numbers"]

# A Python string literal on one line (how repr prints token texts and sampled texts), or a number standing alone
# (not part of a word, a hex id or a version such as 2.13.0). Literals come first so that numbers inside stay text.
_STRING_LITERAL = r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\""
_NUMBER = r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w|\.\d)"
_SEGMENTS = re.compile(f"({_STRING_LITERAL})|({_NUMBER})")


def _is_decimal(number: str) -> bool:
    return "." in number or "e" in number.lower()


def numbers_match(stored: str, fresh: str, units: int = 1) -> bool:
    """Whether two printed numbers agree: decimals within ``units`` in their last digit, integers exactly.

    >>> numbers_match("0.413", "0.414"), numbers_match("5.17", "5.18"), numbers_match("0.413", "0.423")
    (True, True, False)
    >>> numbers_match("48992", "48993"), numbers_match("0.41", "0.413"), numbers_match("1.2e-05", "1.3e-05")
    (False, False, True)
    """
    if stored == fresh:
        return True
    if not (_is_decimal(stored) and _is_decimal(fresh)) or _decimals(stored) != _decimals(fresh):
        return False
    a, b = Decimal(stored), Decimal(fresh)
    last_digit = Decimal(1).scaleb(max(a.as_tuple().exponent, b.as_tuple().exponent))
    return abs(a - b) <= units * last_digit


def _decimals(number: str) -> int:
    """How many digits follow the decimal point: the printed precision, which must agree."""
    mantissa = re.split("[eE]", number)[0]
    return len(mantissa.split(".")[1]) if "." in mantissa else 0


def _split(line: str) -> list[tuple[str, str]]:
    """A line as (kind, text) pieces: kind "number" for a number outside string literals, "text" otherwise."""
    pieces, end = [], 0
    for match in _SEGMENTS.finditer(line):
        if match.group(2) is None:  # a string literal: left in the text around it
            continue
        pieces += [("text", line[end : match.start()]), ("number", match.group(2))]
        end = match.end()
    return [*pieces, ("text", line[end:])]


def _snap_line(stored: str, fresh: str, units: int) -> str:
    old, new = _split(stored), _split(fresh)
    if [kind for kind, _ in old] != [kind for kind, _ in new]:
        return fresh
    return "".join(
        a if kind == "number" and numbers_match(a, b, units) else b for (kind, a), (_, b) in zip(old, new, strict=True)
    )


def snap_numbers(stored: str, fresh: str, units: int = 1) -> str:
    """``fresh`` with each number that matches the stored one at the same place (``numbers_match``) written as stored.

    The result equals ``stored`` exactly when the two outputs agree by this module's rule; whatever still differs
    is a real difference.

    >>> snap_numbers("top: ' brave' 0.413 | entropy: 5.17 bits", "top: ' brave' 0.414 | entropy: 5.18 bits")
    "top: ' brave' 0.413 | entropy: 5.17 bits"
    >>> snap_numbers("p 0.413, 906 tokens", "p 0.423, 907 tokens")
    'p 0.423, 907 tokens'
    """
    old, new = stored.split("\n"), fresh.split("\n")
    if len(old) != len(new):
        return fresh
    return "\n".join(_snap_line(a, b, units) for a, b in zip(old, new, strict=True))


def _text_slots(outputs: list, skip: tuple[str, ...]) -> dict[str, list[tuple[dict, str]]]:
    """Every compared value as (container, field), grouped and ordered as nbval pairs them: by stream or MIME type."""
    slots = defaultdict(list)
    for output in outputs:
        if output.get("output_type") == "stream":
            slots[output["name"]].append((output, "text"))
            continue
        for key in output:
            if key == "data":
                for mime in output["data"]:
                    if mime not in skip:
                        slots[mime].append((output["data"], mime))
            elif key not in skip:
                slots[key].append((output, key))
    return slots


class NumberTolerantCell(IPyNbCell):
    """nbval's cell, whose fresh numbers are snapped onto the stored ones before nbval's own comparison."""

    def compare_outputs(self, test, ref, skip_compare=None):
        skip = skip_compare or self.parent.skip_compare
        test, ref = copy.deepcopy(test), copy.deepcopy(ref)  # nbval keeps the fresh outputs for its reports
        units = self.config.getoption("nbval_last_digit_units")
        fresh, stored = _text_slots(test, skip), _text_slots(ref, skip)
        for key in fresh.keys() & stored.keys():
            for (new, nfield), (old, ofield) in zip(fresh[key], stored[key], strict=False):
                if isinstance(new[nfield], str) and isinstance(old[ofield], str):
                    # sanitize first (timings, addresses), as nbval would; it sanitizes again, to the same result
                    old[ofield] = self.sanitize(old[ofield])
                    new[nfield] = snap_numbers(old[ofield], self.sanitize(new[nfield]), units)
        return super().compare_outputs(test, ref, skip_compare)


class NumberTolerantNotebook(IPyNbFile):
    """nbval's notebook collector, yielding NumberTolerantCell items (nbval names its cell class directly)."""

    def collect(self):
        for cell in super().collect():
            yield NumberTolerantCell.from_parent(
                self, name=cell.name, cell_num=cell.cell_num, cell=cell.cell, options=cell.options
            )


def pytest_addoption(parser):
    parser.getgroup("nbval").addoption(
        "--nbval-last-digit-units",
        type=int,
        default=1,
        help="decimals in notebook outputs may differ by this many units in their last printed digit (0: exact)",
    )
    parser.getgroup("nbval").addoption(
        "--float-noise",
        type=int,
        default=0,
        metavar="SEED",
        help="perturb every notebook kernel's linear layers by 1 + 1e-6 * N(0, 1) drawn from SEED, the size of the "
        "differences between CPUs' float32 kernels (tests/float_noise.py); 0: no noise",
    )


def pytest_configure(config):
    """With --float-noise, every kernel nbval starts gets an IPython startup file planting the noise: kernels
    inherit IPYTHONDIR from this process."""
    seed = config.getoption("float_noise", 0)
    if seed:
        folder = Path(tempfile.mkdtemp(prefix="smolkit-float-noise-"))
        startup = folder / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-float-noise.py").write_text(float_noise.startup_file(seed))
        config._float_noise_ipythondir = (folder, os.environ.get("IPYTHONDIR"))
        os.environ["IPYTHONDIR"] = str(folder)


def pytest_report_header(config):
    seed = config.getoption("float_noise", 0)
    return [f"float noise: seed {seed}, scale {float_noise.SCALE:g} (tests/float_noise.py)"] if seed else []


def pytest_unconfigure(config):
    saved = getattr(config, "_float_noise_ipythondir", None)
    if saved:
        folder, before = saved
        shutil.rmtree(folder, ignore_errors=True)
        if before is None:
            os.environ.pop("IPYTHONDIR", None)
        else:
            os.environ["IPYTHONDIR"] = before


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path, parent):
    collected = yield
    return [
        NumberTolerantNotebook.from_parent(parent, path=file_path) if type(node) is IPyNbFile else node
        for node in collected or []
    ]
