"""Which models are in the Hugging Face cache on this machine, checked on disk only (never the network).

A notebook asks ``cached_smolvlm()`` to decide between running SmolVLM for real and explaining how to get it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from smolkit.hub_download import download_problem
from smolkit.models import SMOLVLM_MODELS

__all__ = ["cached_smolvlm", "is_cached"]


def is_cached(repo_id: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """True when model ``repo_id`` (e.g. "HuggingFaceTB/SmolVLM-256M-Instruct") is wholly in the Hugging Face cache
    (``cache_dir``, default $HF_HUB_CACHE): its config.json and every safetensors weight file, none cut short
    (``smolkit.hub_download``). A half-finished download does not count. Reads the disk only."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")
    return download_problem(repo_id, cache_dir) is None


def cached_smolvlm(models: Sequence[str] = SMOLVLM_MODELS, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The first of ``models`` (smallest first by default) that is in the Hugging Face cache, else None."""
    return next((m for m in models if is_cached(m, cache_dir)), None)
