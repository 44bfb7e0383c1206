"""Which models and which torch the fast path serves, and where its compiled kernels are cached."""

from __future__ import annotations

import os
from typing import Any

import torch

from smolkit.embedded import cache_dir

__all__ = ["MIN_TORCH", "compile_cache_dir", "fast_path_problem", "has_triton", "text_config", "use_compile_cache"]

MIN_TORCH = (2, 11)
"""The oldest torch the fast path was run on: 2.11 on the lent H200 (its GPU tests and the notebooks passed there;
on the CPU it runs eagerly under 2.13 in every test run). Older versions use plain transformers, with a one-line
notice, rather than compiled pieces and CUDA graph captures nobody has checked on them."""


def text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def fast_path_problem(lm: Any) -> str | None:
    """Why the fast path cannot serve ``lm`` (then generate uses plain transformers), or None when it can."""
    if _torch_version() < MIN_TORCH:
        return f"torch {torch.__version__} is older than {'.'.join(map(str, MIN_TORCH))}"
    text = text_config(lm.model)
    if text is None or getattr(text, "model_type", "") not in ("llama", "smollm3"):
        return f"the text decoder is not a Llama-architecture model ({getattr(text, 'model_type', None)!r})"
    if getattr(text, "mlp_bias", False) or getattr(text, "attention_bias", False):
        return "biases in attention or MLP projections are not supported"
    if getattr(text, "hidden_act", "silu") != "silu":
        return f"activation {text.hidden_act!r} is not supported"
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
    if isinstance(rope, dict) and rope.get("rope_type", "default") == "dynamic":
        return "dynamic RoPE scaling changes with the sequence length"
    return None


def compile_cache_dir() -> str:
    """Where torch.compile keeps the fast path's compiled kernels between processes (inductor + Triton caches).

    $TORCHINDUCTOR_CACHE_DIR when set, else ``<smolkit cache>/inductor`` (``~/.cache/smolkit/inductor``).
    Delete the folder to force a fresh compile.
    """
    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(cache_dir() / "inductor")


def use_compile_cache() -> None:
    """Point inductor's and Triton's caches at ``compile_cache_dir()`` unless the user chose their own: called where
    compiling starts (``compiled.MaybeCompiled``), so that a decoder that never compiles changes no environment
    variable, and both read them when they compile."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", compile_cache_dir())
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(compile_cache_dir(), "triton"))


def has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
