"""The one rule set for checking values at the kit's boundaries (SamplingParams, processors, public functions).

Every check names the input, the value and what is valid, and treats Python, numpy and torch scalars alike: a
numpy or 0-d torch integer is an integer, a numpy or 0-d torch float is a number, and a bool of any of the three
is neither (``top_k=True`` is a mistake, not top_k=1). Inner code trusts what these return.

>>> integer("top_k", np.int64(5))
5
>>> number("temperature", np.float32(0.7))  # float32's shortest decimal, not 0.699999988079071
0.7
>>> integer("top_k", 5.0)
Traceback (most recent call last):
...
TypeError: top_k must be an integer, got 5.0 (float)
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["boolean", "choice", "describe", "integer", "listing", "number", "plain", "text", "token_ids"]

SHOWN = 8
"""How many offending items a message lists before it summarises the rest."""


def describe(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (a 10**400 or a million ids must not become the message)."""
    shown = repr(value)
    return shown if len(shown) <= limit else f"{shown[: limit - 20]}... ({len(shown):,} characters)"


def listing(items: Sequence[str]) -> str:
    """The first SHOWN of ``items`` joined by commas, and how many there are when there are more (a message must
    not list 100,000 refused values).

    >>> listing([str(i) for i in range(10)])
    '0, 1, 2, 3, 4, 5, 6, 7, ... (10 in all)'
    """
    return ", ".join(items[:SHOWN]) + (f", ... ({len(items):,} in all)" if len(items) > SHOWN else "")


def _scalar(value: Any) -> Any:
    """A 0-d (or one-element) tensor or a numpy scalar as the plain Python value it holds; anything else as it is."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return value
        if value.dtype.is_floating_point:
            kind = {torch.float16: np.float16, torch.float64: np.float64}.get(value.dtype, np.float32)
            return kind(value.item())
        return np.bool_(value.item()) if value.dtype == torch.bool else np.int64(value.item())
    return value


def plain(value: Any) -> Any:
    """A numpy scalar, a 0-d numpy array or a 0-d (one-element) tensor as the Python bool, int, float or str it
    holds (a float32 as its shortest decimal); anything else as it is.

    >>> plain(np.float32(0.7)), plain(np.array(3)), plain(torch.tensor(True)), plain(np.str_("m"))
    (0.7, 3, True, 'm')
    """
    scalar = _scalar(value)
    if isinstance(scalar, np.ndarray) and scalar.ndim == 0:
        scalar = scalar[()]
    if isinstance(scalar, np.floating) and scalar.dtype != np.float64:
        return float(np.format_float_positional(scalar, unique=True, trim="-"))
    return scalar.item() if isinstance(scalar, np.generic) else scalar


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _bad_type(name: str, value: Any, what: str) -> TypeError:
    return TypeError(f"{name} must be {what}, got {describe(value)} ({type(value).__name__})")


def integer(name: str, value: Any, lo: int | None = None, hi: int | None = None, note: str = "") -> int:
    """``value`` as an int in [lo, hi]; floats (even 3.0) and bools are refused: they hide mistakes."""
    scalar = _scalar(value)
    try:
        if _is_bool(scalar):
            raise TypeError
        out = operator.index(scalar)
    except TypeError:
        raise _bad_type(name, value, "an integer") from None
    _in_range(name, out, lo, hi, note, closed=True, what="an integer ")
    return out


def number(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    note: str = "",
    open_lo: bool = False,
) -> float:
    """``value`` as a finite float in [lo, hi] ((lo, hi] with ``open_lo``). A numpy/torch float of lower precision
    becomes its shortest decimal (np.float32(0.7) -> 0.7, as the user wrote it)."""
    scalar = _scalar(value)
    if _is_bool(scalar) or not isinstance(scalar, numbers.Real):
        raise _bad_type(name, value, "a number")
    if isinstance(scalar, np.floating) and scalar.dtype != np.float64:
        scalar = float(np.format_float_positional(scalar, unique=True, trim="-"))
    try:
        out = float(scalar)
    except OverflowError:
        raise ValueError(f"{name} must be a finite number, got {describe(value)}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {describe(value)}")
    _in_range(name, out, lo, hi, note, closed=not open_lo)
    return out


def _in_range(
    name: str, value: float, lo: float | None, hi: float | None, note: str, closed: bool, what: str = ""
) -> None:
    too_low = lo is not None and (value < lo if closed else value <= lo)
    if too_low or (hi is not None and value > hi):
        if lo is not None and hi is not None:
            span = f"in {'[' if closed else '('}{_num(lo)}, {_num(hi)}]"
        else:
            span = f"{what}>= {_num(lo)}" if lo is not None else f"{what}<= {_num(hi)}"
        raise ValueError(f"{name} must be {span}{f' ({note})' if note else ''}, got {describe(value)}")


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def boolean(name: str, value: Any) -> bool:
    """``value`` as a bool: True or False (numpy/torch bools too); 0, 1 and "no" are refused."""
    scalar = _scalar(value)
    if not _is_bool(scalar):
        raise _bad_type(name, value, "True or False")
    return bool(scalar)


def choice(name: str, value: Any, options: Sequence[Any]) -> Any:
    """``value`` when it is one of ``options`` (compared by equality, type included for strings)."""
    if isinstance(value, (str, int, float, bool, type(None))) and any(
        value == o and type(value) is type(o) for o in options
    ):
        return value
    raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {describe(value)}")


def text(name: str, value: Any) -> str:
    r"""``value`` when it is a string of Unicode text: a lone surrogate (half of an emoji from badly decoded JSON)
    is refused, since tokenizers fail on it obscurely; emoji, right-to-left scripts, control characters are fine.

    >>> text("prompt", "half an emoji \ud83e")
    Traceback (most recent call last):
    ...
    ValueError: prompt holds '\ud83e' at position 14: half of a UTF-16 surrogate pair, not a character; remove it
    """
    if not isinstance(value, str):
        raise _bad_type(name, value, "a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{name} holds {value[err.start]!r} at position {err.start}: half of a UTF-16 surrogate pair, not a "
            "character; remove it"
        ) from None
    return value


def token_ids(name: str, values: Any, vocab_size: int | None = None) -> tuple[int, ...]:
    """``values`` (a list, tuple, range, set or 1-d tensor of integers) as a tuple of ids in [0, vocab_size).

    Out-of-range ids are listed, at most a few of them, with how many there are.
    """
    if isinstance(values, torch.Tensor):
        values = values.flatten().tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise _bad_type(name, values, "a list of token ids")
    ids = []
    for v in values:
        try:
            ids.append(integer(name, v))
        except TypeError:
            raise TypeError(
                f"{name} must be a list of token ids (integers), got {describe(v)} ({type(v).__name__}) among them"
            ) from None
    hi = None if vocab_size is None else vocab_size - 1
    bad = [t for t in ids if t < 0 or (hi is not None and t > hi)]
    ids = tuple(ids)
    if bad:
        listed = listing([str(t) for t in bad])
        where = f"be in [0, {hi}] for this model's vocabulary" if hi is not None else "hold token ids >= 0"
        raise ValueError(f"{name} must {where}, got {listed}")
    return ids
