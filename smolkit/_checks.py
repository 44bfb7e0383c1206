"""The one rule set for checking values at the kit's boundaries (SamplingParams, processors, public functions).

Every check names the input, the value and what is valid, and treats Python, numpy and torch values alike:

- a numpy scalar, a 0-d numpy array and a 0-d tensor are the Python value they hold: a numpy or 0-d integer is an
  integer, a numpy or 0-d float a number, and a bool of any kind is neither (``top_k=True`` is a mistake, not
  top_k=1); an array or tensor with dimensions is no number, even with one element;
- a list of token ids may be any iterable of integers: a list, tuple, range, set, generator (read once), or a
  numpy array or tensor (read flat);
- free-form data that is sent on or written out (request bodies, messages) must be JSON data (``json_data``):
  numpy and 0-d values become Python ones, arrays, tensors and generators lists; anything else is refused, and
  NaN and infinities too;
- text must be Unicode: a lone surrogate, or a byte that was not UTF-8 (a command-line argument in another
  encoding), is refused.

Inner code trusts what these return.

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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["boolean", "choice", "describe", "integer", "json_data", "listing", "number", "plain", "text", "token_ids"]

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
    """A 0-d tensor or 0-d array as the numpy scalar of its value; anything else as it is (an array or tensor with
    dimensions, even of one element, is not a number)."""
    if isinstance(value, np.ndarray):
        return value[()] if value.ndim == 0 else value
    if isinstance(value, torch.Tensor):
        if value.dim() != 0:
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
    if isinstance(scalar, np.floating) and scalar.dtype != np.float64:
        return float(np.format_float_positional(scalar, unique=True, trim="-"))
    return scalar.item() if isinstance(scalar, np.generic) else scalar


def json_data(name: str, value: Any) -> Any:
    """``value`` as plain JSON data (dict with string keys, list, str, int, float, bool, None): numpy and 0-d values
    as the Python values they hold, arrays, tensors and other iterables (tuples, ranges, generators) as lists.
    ``name`` (with the path inside it, ``messages[0].content``) is named in the TypeError for anything else and the
    ValueError for NaN or inf.

    >>> json_data("body", {"top_k": np.int64(5), "stop_token_ids": np.array([1, 2]), "ids": (i for i in [3])})
    {'top_k': 5, 'stop_token_ids': [1, 2], 'ids': [3]}
    """
    value = plain(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return text(name, value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, float):
        return number(name, value)
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(plain(k), str)]
        if bad:
            raise TypeError(f"{name} keys must be strings (JSON field names), got "
                            f"{listing([f'{describe(k, 40)} ({type(k).__name__})' for k in bad])}")
        return {str(plain(k)): json_data(f"{name}.{plain(k)}", v) for k, v in value.items()}
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.tolist()
    if isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray)):  # list, tuple, range, generator
        return [json_data(f"{name}[{i}]", v) for i, v in enumerate(value)]
    raise _bad_type(name, value, "JSON data (a number, a string, True/False, None, or a list or dict of them)")


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _bad_type(name: str, value: Any, what: str) -> TypeError:
    return TypeError(f"{name} must be {what}, got {describe(value)} ({type(value).__name__})")


def integer(name: str, value: Any, lo: int | None = None, hi: int | None = None, note: str = "") -> int:
    """``value`` as an int in [lo, hi]; floats (even 3.0) and bools are refused: they hide mistakes."""
    scalar = _scalar(value)
    try:
        if _is_bool(scalar) or isinstance(scalar, (torch.Tensor, np.ndarray)):  # torch.tensor([5]) has __index__
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
        if "\udc80" <= value[err.start] <= "\udcff":  # how Python keeps a byte that was not UTF-8 (surrogateescape)
            raise ValueError(
                f"{name} holds the byte 0x{ord(value[err.start]) - 0xDC00:02x} at position {err.start}, which is not "
                "UTF-8 text: it was written in another encoding (set the terminal or file to UTF-8)"
            ) from None
        raise ValueError(
            f"{name} holds {value[err.start]!r} at position {err.start}: half of a UTF-16 surrogate pair, not a "
            "character; remove it"
        ) from None
    return str(value)  # a str subclass (numpy's str_) as a plain str


def token_ids(name: str, values: Any, vocab_size: int | None = None) -> tuple[int, ...]:
    """``values`` (a list, tuple, range, set or 1-d tensor of integers) as a tuple of ids in [0, vocab_size).

    Out-of-range ids are listed, at most a few of them, with how many there are.
    """
    if isinstance(values, (torch.Tensor, np.ndarray)):
        values = values.flatten().tolist()
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
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
