"""One rule set at every boundary (smolkit._checks): the same odd values fed to SamplingParams, the importers, the
exporters, the image loader, the token counter and the text statistics get the same verdict, with the field named.

Each table row is a value and its verdict: accepted as the plain value it stands for (the boundary then gives what
it gives for that plain value), or refused with the error type. Every boundary of the row's kind must agree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from smolkit import SamplingParams, count_tokens, sample_image, to_openai
from smolkit.images import load_image
from smolkit.importers import from_generation_config, from_openai
from smolkit.textstats import distinct_ngram_fraction, off_top_fraction, repeated_ngram_fraction

ROOT = Path(__file__).resolve().parents[1]


class Gen:
    """A generator of ``values``, made afresh for each boundary (a generator is read once)."""

    def __init__(self, *values):
        self.values = values

    def __repr__(self):
        return f"generator{self.values}"

    def fresh(self):
        return (v for v in self.values)


def _fresh(value):
    return value.fresh() if isinstance(value, Gen) else value


INTEGERS = [  # (value, the plain value it stands for, or the error it must raise)
    (np.int64(5), 5),
    (np.int32(5), 5),
    (np.array(5), 5),
    (torch.tensor(5), 5),
    (np.array([5]), TypeError),
    (torch.tensor([5]), TypeError),
    (Gen(5), TypeError),
    (object(), TypeError),
    (np.bool_(True), TypeError),
    (torch.tensor(True), TypeError),
    (np.float64(5.0), TypeError),
    ("5", TypeError),
    (np.int64(-3), ValueError),
]

INTEGER_BOUNDARIES = {  # field -> what the boundary gives for it
    "SamplingParams.top_k": lambda v: SamplingParams(top_k=v).top_k,
    "from_openai top_k": lambda v: from_openai({"extra_body": {"top_k": v}}).top_k,
    "from_generation_config top_k": lambda v: from_generation_config({"do_sample": True, "top_k": v}).top_k,
    "load_image max_edge": lambda v: max(load_image(sample_image("red_ball"), max_edge=v).size),
    "repeated_ngram_fraction n": lambda v: repeated_ngram_fraction([1, 2] * 8, n=v),
    "distinct_ngram_fraction n": lambda v: distinct_ngram_fraction([[1, 2, 3] * 3, [4, 5, 6, 7]], n=v),
}
FIELD_NAMES = {"SamplingParams.top_k": "top_k", "from_openai top_k": "top_k", "from_generation_config top_k": "top_k",
               "load_image max_edge": "max_edge", "repeated_ngram_fraction n": "n",
               "distinct_ngram_fraction n": "n"}  # fmt: skip

NUMBERS = [
    (np.float32(0.7), 0.7),
    (np.float64(0.7), 0.7),
    (np.array(0.7), 0.7),
    (torch.tensor(0.5), 0.5),
    (np.int64(1), 1.0),
    (np.array([0.7]), TypeError),
    (torch.tensor([0.5]), TypeError),
    (Gen(0.7), TypeError),
    (object(), TypeError),
    (np.bool_(False), TypeError),
    (np.float64("nan"), ValueError),
    (np.float32("inf"), ValueError),
]

NUMBER_BOUNDARIES = {
    "SamplingParams.temperature": lambda v: SamplingParams(temperature=v).temperature,
    "from_openai temperature": lambda v: from_openai({"temperature": v}).temperature,
    "from_generation_config temperature": lambda v: from_generation_config(
        {"do_sample": True, "top_k": 0, "temperature": v}
    ).temperature,
    "to_openai temperature": lambda v: to_openai(SamplingParams(temperature=v), model="m")["temperature"],
}

ID_LISTS = [
    (np.array([1, 2]), (1, 2)),
    (torch.tensor([1, 2]), (1, 2)),
    (Gen(1, 2), (1, 2)),
    ((np.int64(1), 2), (1, 2)),
    (range(1, 3), (1, 2)),
    (np.array([1.5]), TypeError),
    (torch.tensor([1.0]), TypeError),
    ([np.bool_(True)], TypeError),
    ([object()], TypeError),
    ("12", TypeError),
    ({"a": 1}, TypeError),
    (object(), TypeError),
    (np.array([-1]), ValueError),
]

ID_LIST_BOUNDARIES = {
    "SamplingParams.stop_token_ids": lambda v: SamplingParams(stop_token_ids=v).stop_token_ids,
    "from_openai stop_token_ids": lambda v: from_openai({"extra_body": {"stop_token_ids": v}}).stop_token_ids,
    "repeated_ngram_fraction token_ids": lambda v: repeated_ngram_fraction(v, n=1),
    "distinct_ngram_fraction samples": lambda v: distinct_ngram_fraction([v], n=1),
}


def _verdict(boundary, value, expected, name):
    """The boundary's verdict on ``value`` is ``expected``'s: the same result as the plain value, or the error,
    naming the field."""
    value = _fresh(value)
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            boundary(value)
        assert name in str(info.value), f"{info.value!r} does not name {name}"
    else:
        assert boundary(value) == boundary(expected)


@pytest.mark.parametrize("boundary", INTEGER_BOUNDARIES, ids=str)
@pytest.mark.parametrize(("value", "expected"), INTEGERS, ids=repr)
def test_integers_get_one_verdict_everywhere(boundary, value, expected):
    _verdict(INTEGER_BOUNDARIES[boundary], value, expected, FIELD_NAMES[boundary])


@pytest.mark.parametrize("boundary", NUMBER_BOUNDARIES, ids=str)
@pytest.mark.parametrize(("value", "expected"), NUMBERS, ids=repr)
def test_numbers_get_one_verdict_everywhere(boundary, value, expected):
    _verdict(NUMBER_BOUNDARIES[boundary], value, expected, "temperature")


@pytest.mark.parametrize("boundary", ID_LIST_BOUNDARIES, ids=str)
@pytest.mark.parametrize(("value", "expected"), ID_LISTS, ids=repr)
def test_token_id_lists_get_one_verdict_everywhere(boundary, value, expected):
    name = "samples[0]" if "samples" in boundary else "token_ids" if "ngram" in boundary else "stop_token_ids"
    if isinstance(expected, tuple):
        expected = list(expected)
    _verdict(ID_LIST_BOUNDARIES[boundary], value, expected, name)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200), st.sampled_from([np.int64, np.int16, np.array, torch.tensor]))
def test_any_integer_in_any_wrapper_is_that_integer(i, wrap):
    for name in ("SamplingParams.top_k", "from_openai top_k", "from_generation_config top_k",
                 "repeated_ngram_fraction n"):  # fmt: skip
        boundary = INTEGER_BOUNDARIES[name]
        assert boundary(wrap(i)) == boundary(i), name


TEXTS = [
    (np.str_("Hello"), "Hello"),
    (b"Hello", TypeError),
    (object(), TypeError),
    (Gen("Hello"), TypeError),
    ("H\udcff", ValueError),  # a byte that was not UTF-8, as Python keeps it from the command line
]


@pytest.mark.parametrize(("value", "expected"), TEXTS, ids=repr)
def test_text_gets_one_verdict_everywhere(lm, value, expected):
    boundaries = {
        "text": lambda v: count_tokens(lm, v),
        "model": lambda v: to_openai(SamplingParams(), model=v)["model"],
    }
    for name, boundary in boundaries.items():
        _verdict(boundary, value, expected, name)


JSON_VALUES = [
    (np.int64(5), 5),
    (np.float32(0.7), 0.7),
    (np.array([1, 2]), [1, 2]),
    (torch.tensor(3), 3),
    (np.str_("hi"), "hi"),
    (object(), TypeError),
    (float("nan"), ValueError),
    ({1: "a"}, TypeError),
]


@pytest.mark.parametrize(("value", "expected"), JSON_VALUES, ids=repr)
def test_free_form_request_data_is_json_everywhere(value, expected):
    """What a request carries unchecked by SamplingParams (message content, passive fields) must be JSON: numpy
    values arrive as Python ones, anything else is refused naming where it sits."""
    boundaries = {
        "messages[0].content": lambda v: to_openai(SamplingParams(), model="m",
                                                   messages=[{"role": "user", "content": v}])["messages"][0]["content"],
        "body.user": lambda v: (from_openai({"user": v, "temperature": 0.5}), v)[0],
    }  # fmt: skip
    for name, boundary in boundaries.items():
        if isinstance(expected, type):
            _verdict(boundary, value, expected, name)
        elif name.startswith("messages"):  # sent on as the plain value
            result = boundary(value)
            assert result == expected and type(result) is type(expected)
        else:
            assert boundary(value) == SamplingParams(temperature=0.5)


def test_non_utf8_command_line_arguments_are_named(tmp_path):
    """`python -m smolkit generate $'\\xff'`: one line naming the argument and the byte, exit 2, before loading."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "LC_ALL": "C.UTF-8"}
    for args, name in (([b"caf\xe9"], "prompt"), ([b"hi", b"--model", b"\xff"], "--model")):
        out = subprocess.run([sys.executable, "-m", "smolkit", "generate", *args], env=env, capture_output=True,
                             timeout=120, cwd=tmp_path)  # fmt: skip
        err = out.stderr.decode()
        assert out.returncode == 2 and err.count("\n") == 1, err
        assert err.startswith(f"smolkit: {name} holds the byte 0x") and "not UTF-8" in err, err


def test_a_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    """Pillow's DecompressionBombError (raised where its own limit applies) is a ValueError naming the file."""
    path = tmp_path / "bomb.png"
    Image.new("RGB", (8, 8)).save(path)

    def bomb(self):
        raise Image.DecompressionBombError("Image size (999999999 pixels) exceeds limit, could be a decompression bomb")

    monkeypatch.setattr(ImageFile.ImageFile, "load", bomb)
    with pytest.raises(ValueError, match=rf"^image: '{path}' is too large to open safely \(Image size"):
        load_image(path)


def test_off_top_fraction_k_follows_the_rule():
    with pytest.raises(TypeError, match=r"^k must be an integer"):
        off_top_fraction(None, k=2.0)
    with pytest.raises(ValueError, match=r"^k must be an integer >= 1"):
        off_top_fraction(None, k=np.int64(0))
