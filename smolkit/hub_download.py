"""Is a model's download in the Hugging Face cache complete? Checked on disk only (never the network).

An interrupted ``hf download`` leaves a snapshot with some files and not others: the config without the weights,
a safetensors index naming shards that never arrived, a shard cut short, ``.incomplete`` blobs. transformers then
fails deep in ``from_pretrained`` with an OSError; this module says what is missing first. Hand-written:
huggingface_hub finds cached files (``try_to_load_from_cache``) but does not judge whether a snapshot is whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["download_problem"]

WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"


def _cached_file(repo_id: str, filename: str, cache_dir: str | os.PathLike | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    return Path(path) if isinstance(path, str) and Path(path).is_file() else None


def _safetensors_problem(path: Path, name: str) -> str | None:
    """Why the safetensors file ``path`` is not whole (its header promises more bytes than it holds), or None.
    safetensors reads only the header here, not the weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except Exception as err:  # safetensors raises its own SafetensorError for a truncated or garbled file
        return f"{name} is truncated or damaged ({str(err).splitlines()[0][:120]})"
    return None


def _shards(index: Path) -> list[str] | str:
    """The shard files a safetensors index names, or why it cannot be read."""
    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (OSError, ValueError, AttributeError) as err:
        return f"{INDEX} is unreadable ({err})"
    if not isinstance(weight_map, dict) or not weight_map:
        return f"{INDEX} names no weight files"
    return sorted(set(map(str, weight_map.values())))


def _weights_problem(repo_id: str, cache_dir: str | os.PathLike | None) -> str | None:
    """Why the safetensors weights (one file, or every shard an index names) are not all there and whole."""
    if (single := _cached_file(repo_id, WEIGHTS, cache_dir)) is not None:
        return _safetensors_problem(single, WEIGHTS)
    index = _cached_file(repo_id, INDEX, cache_dir)
    if index is None:
        return "no safetensors weights"
    shards = _shards(index)
    if isinstance(shards, str):
        return shards
    for shard in shards:
        path = _cached_file(repo_id, shard, cache_dir)
        problem = f"{shard} (named by {INDEX}) is missing" if path is None else _safetensors_problem(path, shard)
        if problem is not None:
            return problem
    return None


def _incomplete_blobs(repo_id: str, cache_dir: str | os.PathLike | None) -> int:
    """How many ``.incomplete`` blobs (downloads cut short) the repository's cache folder holds."""
    from huggingface_hub.constants import HF_HUB_CACHE

    blobs = Path(cache_dir or HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "blobs"
    return sum(1 for _ in blobs.glob("*.incomplete")) if blobs.is_dir() else 0


def download_problem(repo_id: str, cache_dir: str | os.PathLike | None = None) -> str | None:
    """Why model ``repo_id`` is not wholly in the Hugging Face cache (``cache_dir``, default $HF_HUB_CACHE), or
    None when its config.json and all its safetensors weights are there and whole and no download was cut short.
    Reads the disk only: file headers, not the weights."""
    if _cached_file(repo_id, "config.json", cache_dir) is None:
        return "not downloaded (no config.json)"
    if (problem := _weights_problem(repo_id, cache_dir)) is not None:
        return problem
    if count := _incomplete_blobs(repo_id, cache_dir):
        return f"{count} file(s) only partly downloaded (.incomplete)"
    return None
