"""The fused-sampler experiment's tests (``pytest bench/fused_sampler`` from the repository root, with Triton)."""

from __future__ import annotations

import pytest

import smolkit

collect_ignore = ["fused.py"]  # imported by test_fused.py once it has chosen Triton's interpreter or the GPU


@pytest.fixture(scope="session")
def lm():
    """The embedded SmolLM2-135M-Instruct on the CPU, float32 (as tests/conftest.py's)."""
    return smolkit.load_model("embedded", device="cpu")
