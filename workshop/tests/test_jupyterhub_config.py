"""workshop/jupyterhub_config.py refuses, at start and naming the variable, settings that would lift the
workshop's limits: no server cap (SMOLKIT_HUB_MAX_USERS=0), every spawn failing (-3), no process cap (NPROC=-1)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from traitlets.config import Config

CONFIG = Path(__file__).resolve().parents[2] / "workshop" / "jupyterhub_config.py"
SETTINGS = ("SMOLKIT_HUB_MAX_USERS", "SMOLKIT_HUB_NPROC", "SMOLKIT_HUB_CULL_IDLE_S", "SMOLKIT_HUB_CULL_SERVERS_S")


def load_config(monkeypatch, tmp_path, **settings: str) -> str:
    """Run the config file as JupyterHub would with ``settings``; the message it stops with ("" if none)."""
    for name in (*SETTINGS, "SMOLKIT_GPU_MEMORY_FRACTION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMOLKIT_WORKSHOP_DIR", str(tmp_path))
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    try:
        runpy.run_path(str(CONFIG), init_globals={"get_config": Config})
    except SystemExit as stop:
        return str(stop)
    return ""


@pytest.mark.parametrize("value", ["0", "-3", "lots", "1.5"])
@pytest.mark.parametrize("name", ["SMOLKIT_HUB_MAX_USERS", "SMOLKIT_HUB_NPROC"])
def test_a_cap_of_zero_or_less_or_junk_is_refused_naming_the_variable(monkeypatch, tmp_path, name, value):
    message = load_config(monkeypatch, tmp_path, **{name: value})
    assert message.startswith(f"{name} must be"), message
    assert repr(value) in message


@pytest.mark.parametrize("name", ["SMOLKIT_HUB_CULL_IDLE_S", "SMOLKIT_HUB_CULL_SERVERS_S"])
def test_a_negative_cull_time_is_refused_and_zero_means_never(monkeypatch, tmp_path, name):
    assert load_config(monkeypatch, tmp_path, **{name: "-1"}).startswith(f"{name} must be at least 0")
    assert name not in load_config(monkeypatch, tmp_path, **{name: "0"})


def test_sound_caps_pass_the_checks(monkeypatch, tmp_path):
    """Past the numbers, the config stops at what this test does not set up (root, the shared cache), not at them."""
    message = load_config(monkeypatch, tmp_path, SMOLKIT_HUB_MAX_USERS="1", SMOLKIT_HUB_NPROC="64")
    assert not any(name in message for name in SETTINGS), message
