"""Which models are in the Hugging Face cache on this machine, checked on disk only (never the network).

A notebook asks ``cached_smolvlm()`` to decide between running SmolVLM for real and explaining how to get it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from smolkit.models import SMOLVLM_MODELS

__all__ = ["cached_smolvlm", "is_cached"]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
"""A model counts as cached when its config and its safetensors weights (one file, or a sharded index) are there."""


def is_cached(repo_id: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """True when model ``repo_id`` (e.g. "HuggingFaceTB/SmolVLM-256M-Instruct") has its config.json and
    safetensors weights in the Hugging Face cache (``cache_dir``, default $HF_HUB_CACHE). Reads the disk only."""
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")

    def found(filename: str) -> bool:
        path = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        return isinstance(path, str) and Path(path).is_file()

    return found("config.json") and any(found(f) for f in WEIGHT_FILES)


def cached_smolvlm(models: Sequence[str] = SMOLVLM_MODELS, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The first of ``models`` (smallest first by default) that is in the Hugging Face cache, else None."""
    return next((m for m in models if is_cached(m, cache_dir)), None)
