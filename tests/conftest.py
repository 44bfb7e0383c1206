"""Shared fixtures: the embedded model on the CPU (loaded once) and the tiny random Idefics3 test model."""

from __future__ import annotations

import pytest

import smolkit
from smolkit import fastpath
from smolkit.compat import vision_problem
from smolkit.testing import build_tiny_idefics3

PROMPT = "What is the capital of France?"


class ModelWork:
    """Counts the model work done while installed: forward passes of ``lm.model`` and fast-path generate calls.

    Use through the ``model_work`` fixture: ``with model_work(lm) as work: ...`` then ``assert work.calls == 0``.
    """

    def __init__(self, lm, monkeypatch):
        self.calls = 0
        self._handle = lm.model.register_forward_hook(self._count)
        original = fastpath.FastDecoder.generate

        def counted(decoder, *args, **kwargs):
            self.calls += 1
            return original(decoder, *args, **kwargs)

        monkeypatch.setattr(fastpath.FastDecoder, "generate", counted)

    def _count(self, *args):
        self.calls += 1

    def remove(self):
        self._handle.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


@pytest.fixture
def model_work(monkeypatch):
    """A factory of ModelWork counters for a model, removed at the end of the test."""
    counters = []

    def start(lm):
        counters.append(ModelWork(lm, monkeypatch))
        return counters[-1]

    yield start
    for counter in counters:
        counter.remove()


@pytest.fixture(scope="session")
def lm():
    """The embedded SmolLM2-135M-Instruct on the CPU, float32."""
    return smolkit.load_model("embedded", device="cpu")


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    """A tiny random Idefics3 (SmolVLM's architecture) written to a temporary folder: test plumbing only. Skipped,
    with the reason, on a transformers whose SmolVLM image processor cannot start here (5.17 without torchvision:
    load_model refuses SmolVLM there, test_compat checks that refusal)."""
    problem = vision_problem()
    if problem is not None:
        pytest.skip(problem)
    return build_tiny_idefics3(tmp_path_factory.mktemp("tiny-idefics3"))


@pytest.fixture(scope="session")
def tiny_vlm(tiny_vlm_dir):
    return smolkit.load_model(str(tiny_vlm_dir), device="cpu")
