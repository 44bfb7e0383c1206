"""hub_cache: finding models in a Hugging Face cache folder on disk, without the network."""

from __future__ import annotations

import pytest

from smolkit.hub_cache import cached_smolvlm, is_cached
from smolkit.models import SMOLVLM_MODELS


def _fake_cache(root, repo_id, files=("config.json", "model.safetensors")):
    """The layout huggingface_hub writes: models--owner--name/{refs/main, snapshots/<commit>/<file>}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in files:
        (snapshot / name).write_text("{}")
    return root


def test_is_cached_needs_config_and_weights(tmp_path):
    _fake_cache(tmp_path, "HuggingFaceTB/SmolVLM-256M-Instruct")
    _fake_cache(tmp_path, "HuggingFaceTB/SmolVLM-500M-Instruct", files=("config.json",))
    _fake_cache(tmp_path, "HuggingFaceTB/SmolVLM-Instruct", files=("config.json", "model.safetensors.index.json"))
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
