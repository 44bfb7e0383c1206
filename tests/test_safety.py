"""Safe by default: no remote code, weights only from safetensors or GGUF, JupyterLab on loopback with a token, and
no network access when HF_HUB_OFFLINE=1 (nor for anything already on disk).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests
from conftest import PROMPT
from PIL import Image
from servers import family, free_port, start, stop, wait_for

import smolkit
from smolkit import SamplingParams, generate, load_model, next_token_distribution

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "smolkit"
AUTO_CLASSES = ("AutoConfig", "AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoProcessor", "AutoTokenizer")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


# -- no remote code ----------------------------------------------------------------------------------------------


def test_no_trust_remote_code_anywhere_in_the_package():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        offenders += [
            f"{path.name}: {m.group(0)}" for m in re.finditer(r"trust_remote_code\s*=\s*(?!False\b)\w+", text)
        ]
    assert offenders == []


def test_every_auto_class_load_in_the_package_says_trust_remote_code_false():
    """Explicit, not the library default: a future default (or an interactive prompt) cannot change it."""
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        # keyword dicts built as `name = dict(..., trust_remote_code=False)` and passed as `**name`
        safe_dicts = {
            target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _says_false(node.value)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id.startswith("Auto")
            ):
                spread = {k.value.id for k in node.keywords if k.arg is None and isinstance(k.value, ast.Name)}
                calls.append((f"{path.name}:{node.lineno}", _says_false(node) or bool(spread & safe_dicts)))
    assert len(calls) >= 8  # the loads of models.py, embedded.py and testing.py are all seen
    assert [where for where, ok in calls if not ok] == []


def _says_false(call: ast.Call) -> bool:
    value = next((k.value for k in call.keywords if k.arg == "trust_remote_code"), None)
    return isinstance(value, ast.Constant) and value.value is False


@pytest.fixture
def auto_loads(monkeypatch):
    """Records (class, keyword arguments) of every from_pretrained of the transformers Auto classes."""
    import transformers

    seen = []
    for name in AUTO_CLASSES:
        cls = getattr(transformers, name)
        original = cls.from_pretrained.__func__

        def recorded(klass, *args, _original=original, **kwargs):
            seen.append((klass.__name__, kwargs))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(recorded))
    return seen


@pytest.mark.parametrize("which", ["embedded", "folder"])
def test_load_model_passes_trust_remote_code_false_and_safetensors_only(auto_loads, tiny_vlm_dir, which):
    load_model("embedded" if which == "embedded" else str(tiny_vlm_dir), device="cpu")
    assert auto_loads, "no from_pretrained call was seen"
    for cls, kwargs in auto_loads:
        assert kwargs.get("trust_remote_code") is False, (cls, kwargs)
    models = [kwargs for cls, kwargs in auto_loads if cls.startswith("AutoModel")]
    assert len(models) == 1 and models[0]["use_safetensors"] is True


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def _plant_remote_code(folder: Path, model_type: str, marker: Path) -> None:
    """A config whose auto_map points at a Python file that would leave ``marker`` behind if it were ever run."""
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForImageTextToText": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('remote code ran')\n"
        "from transformers import Idefics3Config as EvilConfig\n"
        "from transformers import Idefics3ForConditionalGeneration as EvilModel\n"
    )


def test_remote_code_in_a_known_architecture_is_never_run(tiny_vlm_dir, tmp_path):
    folder = _copy(tiny_vlm_dir, tmp_path / "model")
    marker = tmp_path / "remote-code-ran"
    _plant_remote_code(folder, "idefics3", marker)
    lm = load_model(str(folder), device="cpu")
    assert type(lm.model).__module__.startswith("transformers.models.idefics3")  # transformers' own class
    assert not marker.exists()


def test_remote_code_for_an_unknown_architecture_is_refused(tiny_vlm_dir, tmp_path):
    folder = _copy(tiny_vlm_dir, tmp_path / "model")
    marker = tmp_path / "remote-code-ran"
    _plant_remote_code(folder, "evil_model", marker)
    with pytest.raises(ValueError, match=r"model folder .* holds no usable transformers config"):
        load_model(str(folder), device="cpu")
    assert not marker.exists()


# -- weights only from safetensors (or the embedded GGUF) --------------------------------------------------------


def test_a_folder_with_only_pickle_weights_is_refused_before_loading(auto_loads, tiny_vlm_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = _copy(tiny_vlm_dir, tmp_path / "model")
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError) as info:
        load_model(str(folder), device="cpu")
    message = str(info.value)
    for words in ("pytorch_model.bin", "only PyTorch pickle weights", "safetensors", "can run code"):
        assert words in message, message
    assert [cls for cls, _ in auto_loads if cls.startswith("AutoModel") or cls == "AutoProcessor"] == []

    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds no model\.safetensors"):
        load_model(str(folder), device="cpu")


def test_the_embedded_model_is_read_from_gguf_and_cached_as_safetensors():
    from smolkit.embedded import embedded_cache_path, embedded_gguf_path

    assert embedded_gguf_path().suffix == ".gguf"
    weights = {p.suffix for p in embedded_cache_path().iterdir() if p.suffix not in (".json", ".jinja", ".txt")}
    assert weights == {".safetensors"}


# -- JupyterLab (make lab) on 127.0.0.1 with a token -------------------------------------------------------------


def _fake_venv(tmp_path: Path) -> Path:
    """A venv whose `jupyter` writes its arguments to $ARGS_OUT instead of starting a server."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    jupyter = venv / "bin" / "jupyter"
    jupyter.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
    jupyter.chmod(0o755)
    return venv


@pytest.mark.parametrize("given_token", [None, "", "my-own-token-0123456789abcdef"], ids=["unset", "empty", "set"])
def test_lab_command_line_binds_loopback_with_a_token(tmp_path, given_token):
    venv = _fake_venv(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_TOKEN"}
    env.update(VENV=str(venv), PORT="8899", ARGS_OUT=str(tmp_path / "args"))
    if given_token is not None:
        env["JUPYTER_TOKEN"] = given_token
    out = subprocess.run(["bash", str(REPO / "environment" / "lab.sh")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    args = (tmp_path / "args").read_text().splitlines()
    token = re.search(r"http://127\.0\.0\.1:8899/lab\?token=(\S+)", out.stdout).group(1)
    assert args[0] == "lab" and "--no-browser" in args
    assert "--ip=127.0.0.1" in args and "--port=8899" in args
    assert f"--IdentityProvider.token={token}" in args
    if given_token:
        assert token == given_token
    else:  # never an empty token (which would switch authentication off): a fresh random one
        assert re.fullmatch(r"[0-9a-f]{48}", token)
    risky = [a for a in args if re.search(r"0\.0\.0\.0|ip=\*|allow_remote|disable_check_xsrf|token=$|password=$", a)]
    assert risky == []


def _listening(processes) -> list[tuple[str, int]]:
    found = []
    for p in processes:
        with contextlib.suppress(psutil.Error):
            found += [(c.laddr.ip, c.laddr.port) for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    return found


def _other_addresses() -> list[str]:
    return [
        a.address
        for addresses in psutil.net_if_addrs().values()
        for a in addresses
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]


def test_lab_listens_on_loopback_only_and_refuses_requests_without_the_token(tmp_path):
    """`make lab`'s script, started for real on a free port (configuration isolated in tmp_path), then stopped."""
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, VENV=sys.prefix, PORT=str(port), JUPYTER_TOKEN=token, JUPYTER_PLATFORM_DIRS="1")
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_WORKSPACES_DIR"):
        (tmp_path / var).mkdir()
        env[var] = str(tmp_path / var)
    log = tmp_path / "lab.log"
    url = f"http://127.0.0.1:{port}"
    server = start(["bash", str(REPO / "environment" / "lab.sh")], log, env)
    try:
        wait_for(
            "JupyterLab to answer",
            lambda: requests.get(f"{url}/api/status", params={"token": token}, timeout=5).ok,
            120,
            server,
            log,
        )
        assert requests.get(f"{url}/api/status", timeout=5).status_code == 403
        assert requests.get(f"{url}/api/contents", params={"token": "wrong"}, timeout=5).status_code == 403
        page = requests.get(f"{url}/lab", timeout=5, allow_redirects=False)
        assert page.status_code == 302 and "/login" in page.headers["Location"]
        assert requests.get(f"{url}/lab", params={"token": token}, timeout=5).status_code == 200
        sockets = _listening(family(server))
        assert (("127.0.0.1", port) in sockets) and {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets
        for address in _other_addresses():
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
                pass
    finally:
        assert stop(server) == []


# -- no network when offline, nor for anything on disk ------------------------------------------------------------


class NetworkAttempt(BaseException):
    """Raised by the guard. A BaseException, so that no library's `except Exception` (retries, fallbacks) hides it."""


@pytest.fixture
def network_guard(monkeypatch):
    """Every TCP/UDP connection or DNS lookup in this process raises NetworkAttempt and is recorded."""
    attempts = []
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(what):
        attempts.append(what)
        raise NetworkAttempt(f"network access attempted: {what!r}")

    def guarded(original):
        def method(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                refuse(address)
            return original(self, address)

        return method

    monkeypatch.setattr(socket.socket, "connect", guarded(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(connect_ex))
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(address))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: refuse(host))
    return attempts


def _hub_settings(monkeypatch, cache: Path, offline: bool) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def _cache_as_hub_model(folder: Path, cache: Path, repo_id: str) -> None:
    """``folder``'s files laid out as huggingface_hub caches a downloaded model."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(folder, repo / "snapshots" / COMMIT)


def test_the_guard_sees_an_attempt(network_guard, monkeypatch, tmp_path):
    """The guard works: online, an uncached Hub id makes huggingface_hub reach for the network, and is stopped."""
    _hub_settings(monkeypatch, tmp_path, offline=False)
    with pytest.raises(NetworkAttempt):
        load_model("someone/not-cached", device="cpu")
    assert network_guard


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE=1", "online"])
def test_embedded_model_never_touches_the_network(network_guard, monkeypatch, tmp_path, offline):
    _hub_settings(monkeypatch, tmp_path, offline)
    lm = load_model("embedded", device="cpu")
    generate(lm, PROMPT, SamplingParams(max_new_tokens=3, seed=0))
    generate(lm, PROMPT, SamplingParams(max_new_tokens=3, seed=0), fast=True)
    next_token_distribution(lm, PROMPT, SamplingParams(temperature=0.7))
    smolkit.doctor()
    assert network_guard == []


def test_uncached_hub_model_offline_fails_without_a_network_attempt(network_guard, monkeypatch, tmp_path):
    _hub_settings(monkeypatch, tmp_path, offline=True)
    with pytest.raises(FileNotFoundError, match=r"not in the Hugging Face cache and HF_HUB_OFFLINE=1 is set"):
        load_model("HuggingFaceTB/SmolVLM-256M-Instruct", device="cpu")
    assert network_guard == []


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE=1", "online"])
def test_cached_hub_model_loads_and_generates_without_the_network(
    network_guard, monkeypatch, tmp_path, tiny_vlm_dir, offline
):
    cache = tmp_path / "hub"
    _cache_as_hub_model(tiny_vlm_dir, cache, "smolkit-test/tiny-idefics3")
    _hub_settings(monkeypatch, cache, offline)
    assert smolkit.is_cached("smolkit-test/tiny-idefics3")
    lm = load_model("smolkit-test/tiny-idefics3", device="cpu")
    assert lm.is_vision
    image = Image.new("RGB", (32, 32), "red")
    result = generate(lm, "Describe the image.", SamplingParams(max_new_tokens=2, seed=0), image=image)
    assert len(result.token_ids) == 2
    assert network_guard == []
