"""hub_cache: finding models in a Hugging Face cache folder on disk, without the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from smolkit.hub_cache import cached_smolvlm, is_cached
from smolkit.models import SMOLVLM_MODELS

COMMIT = "0123456789abcdef0123456789abcdef01234567"
INDEX = "model.safetensors.index.json"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def _fake_cache(root, repo_id, files=("config.json", "model.safetensors")):
    """The layout huggingface_hub writes: models--owner--name/{refs/main, snapshots/<commit>/<file>}; a
    ``.safetensors`` file is a real (tiny) one, an index names the two SHARDS."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in files:
        if name.endswith(".safetensors"):
            save_file({"w": torch.zeros(4, 4)}, str(snapshot / name))
        elif name.endswith(".index.json"):
            weight_map = {f"layer{i}.w": shard for i, shard in enumerate(SHARDS)}
            (snapshot / name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        else:
            (snapshot / name).write_text(json.dumps({"model_type": "idefics3"}))
    return root


def test_is_cached_needs_config_and_weights(tmp_path):
    _fake_cache(tmp_path, "HuggingFaceTB/SmolVLM-256M-Instruct")
    _fake_cache(tmp_path, "HuggingFaceTB/SmolVLM-500M-Instruct", files=("config.json",))
    _fake_cache(tmp_path, "HuggingFaceTB/SmolVLM-Instruct", files=("config.json", INDEX, *SHARDS))
    assert is_cached("HuggingFaceTB/SmolVLM-256M-Instruct", cache_dir=tmp_path)
    assert not is_cached("HuggingFaceTB/SmolVLM-500M-Instruct", cache_dir=tmp_path)
    assert is_cached("HuggingFaceTB/SmolVLM-Instruct", cache_dir=tmp_path)
    assert not is_cached("someone/else", cache_dir=tmp_path)


def test_cached_smolvlm_picks_the_first_cached(tmp_path):
    assert cached_smolvlm(cache_dir=tmp_path) is None
    _fake_cache(tmp_path, SMOLVLM_MODELS[1])
    assert cached_smolvlm(cache_dir=tmp_path) == SMOLVLM_MODELS[1]
    _fake_cache(tmp_path, SMOLVLM_MODELS[0])
    assert cached_smolvlm(cache_dir=tmp_path) == SMOLVLM_MODELS[0]
    assert cached_smolvlm(cache_dir=tmp_path / "missing") is None


def test_is_cached_never_touches_the_network(tmp_path, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert not is_cached("HuggingFaceTB/SmolVLM-256M-Instruct", cache_dir=tmp_path)


@pytest.mark.parametrize("bad", ["SmolVLM", "a/b/c", "", 3])
def test_is_cached_rejects_bad_ids(bad, tmp_path):
    with pytest.raises(ValueError, match="repo_id"):
        is_cached(bad, cache_dir=tmp_path)


# -- issue 23, item 7: a half-finished download is not cached ------------------------------------------------------

VLM = "HuggingFaceTB/SmolVLM-256M-Instruct"
SNAPSHOT = f"models--{VLM.replace('/', '--')}/snapshots/{COMMIT}"


def _half_downloads():
    """Ways an interrupted `hf download` leaves the cache: (id, what to do to a whole fake cache, the problem)."""

    def missing_shard(root):
        (root / SNAPSHOT / "model.safetensors").unlink()
        _fake_cache(root, VLM, files=(INDEX, SHARDS[0]))

    def truncated(root):
        path = root / SNAPSHOT / "model.safetensors"
        path.write_bytes(path.read_bytes()[:-10])

    def incomplete_blob(root):
        blobs = root / f"models--{VLM.replace('/', '--')}" / "blobs"
        blobs.mkdir()
        (blobs / "a1b2c3.incomplete").write_bytes(b"\0" * 100)

    def no_weights(root):
        (root / SNAPSHOT / "model.safetensors").unlink()

    return [
        pytest.param(missing_shard, "model-00002-of-00002.safetensors (named by", id="index-names-a-missing-shard"),
        pytest.param(truncated, "model.safetensors is truncated or damaged", id="truncated-weights"),
        pytest.param(incomplete_blob, "1 file(s) only partly downloaded (.incomplete)", id="incomplete-blob"),
        pytest.param(no_weights, "no safetensors weights", id="config-only"),
    ]


@pytest.mark.parametrize(("damage", "problem"), _half_downloads())
def test_a_half_finished_download_is_not_cached(tmp_path, damage, problem):
    from smolkit.hub_download import download_problem

    _fake_cache(tmp_path, VLM)
    assert is_cached(VLM, cache_dir=tmp_path)
    damage(tmp_path)
    assert not is_cached(VLM, cache_dir=tmp_path)
    assert problem in download_problem(VLM, cache_dir=tmp_path)
    assert cached_smolvlm(cache_dir=tmp_path) is None


def _env(tmp_path):
    return {**os.environ, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_generate_with_a_half_finished_download_is_one_line_and_exit_2(tmp_path):
    _fake_cache(tmp_path, VLM, files=("config.json", INDEX, SHARDS[0]))
    proc = subprocess.run([sys.executable, "-m", "smolkit", "generate", "hi", "--model", VLM], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "incomplete: model-00002-of-00002.safetensors" in proc.stderr and f"hf download {VLM}" in proc.stderr


def test_doctor_names_a_half_finished_download(tmp_path):
    _fake_cache(tmp_path, VLM, files=("config.json",))
    code = "from smolkit.doctor import run_checks; c = run_checks()['hub cache']; print(c.status, c.found, c.remedy)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True,
                         timeout=300).stdout  # fmt: skip
    assert out.startswith(f"warn {VLM} is incomplete: no safetensors weights") and f"hf download {VLM}" in out, out
