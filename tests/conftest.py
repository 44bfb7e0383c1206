"""Shared fixtures: the embedded model on the CPU (loaded once) and the tiny random Idefics3 test model."""

from __future__ import annotations

import pytest

import smolkit
from smolkit.testing import build_tiny_idefics3

PROMPT = "What is the capital of France?"


@pytest.fixture(scope="session")
def lm():
    """The embedded SmolLM2-135M-Instruct on the CPU, float32."""
    return smolkit.load_model("embedded", device="cpu")


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    """A tiny random Idefics3 (SmolVLM's architecture) written to a temporary folder: test plumbing only."""
    return build_tiny_idefics3(tmp_path_factory.mktemp("tiny-idefics3"))


@pytest.fixture(scope="session")
def tiny_vlm(tiny_vlm_dir):
    return smolkit.load_model(str(tiny_vlm_dir), device="cpu")
