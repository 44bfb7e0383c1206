"""workshop/mps_service.py, the hub's NVIDIA MPS (the GPU side ran on a lent H100: bench/RESULTS.md): when the hub
starts it, how its service starts, adopts and quits the control daemon (a stand-in `nvidia-cuda-mps-control` that
records its calls), and what jupyterhub_config.py makes of it."""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from smolkit.testing import load_script

WORKSHOP = Path(__file__).resolve().parents[1]
SERVICE = WORKSHOP / "mps_service.py"
mps_service = load_script(SERVICE)
CONTROL = "/usr/bin/nvidia-cuda-mps-control"


@pytest.mark.parametrize(
    ("setting", "gpu_devices", "control", "gpus", "expected"),
    [
        (None, False, CONTROL, True, True),  # auto: a GPU box with MPS
        ("auto", False, None, True, False),  # no MPS program: time-slicing, silently
        ("auto", False, CONTROL, False, False),  # no GPU (a CPU box with the driver utilities)
        ("auto", True, CONTROL, True, False),  # participants have GPU slices of their own (MIG)
        (" OFF ", False, CONTROL, True, False),
        ("on", False, CONTROL, False, True),  # asked for: no guessing
    ],
)
def test_when_the_hub_runs_mps(setting, gpu_devices, control, gpus, expected):
    assert mps_service.wanted(setting, gpu_devices, control, gpus) is expected


@pytest.mark.parametrize(
    ("setting", "gpu_devices", "control", "message"),
    [
        ("yes", False, CONTROL, "SMOLKIT_HUB_MPS must be one of auto, on, off, got 'yes'"),
        ("on", False, None, "SMOLKIT_HUB_MPS=on, but nvidia-cuda-mps-control is not on PATH"),
        ("on", True, CONTROL, "SMOLKIT_HUB_MPS=on and SMOLKIT_HUB_GPU_DEVICES"),
    ],
)
def test_what_cannot_be_honoured_is_refused_naming_the_setting(setting, gpu_devices, control, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        mps_service.wanted(setting, gpu_devices, control, True)


def stand_in(tmp_path: Path, start_rc: int = 0, probe_rc: int = 1) -> dict[str, str]:
    """An `nvidia-cuda-mps-control` on PATH that appends each call (its arguments, stdin, pipe directory) to
    calls.log; ``start_rc`` for `-d -M`, ``probe_rc`` for commands on stdin other than quit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-cuda-mps-control"
    script.write_text(f"""#!/bin/bash
if [ $# -gt 0 ]; then echo "args $* pipe=$CUDA_MPS_PIPE_DIRECTORY" >> {tmp_path}/calls.log; exit {start_rc}; fi
read -r line; echo "stdin $line" >> {tmp_path}/calls.log
[ "$line" = quit ] && exit 0
exit {probe_rc}
""")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CUDA_MPS_PIPE_DIRECTORY": str(tmp_path / "pipe")}


def serve(env: dict[str, str]) -> tuple[int, str, str]:
    """Run `mps_service.py serve`; once it says what it did, stop it as JupyterHub stops a service (SIGTERM)."""
    proc = subprocess.Popen([sys.executable, str(SERVICE), "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    first = proc.stdout.readline()
    if proc.poll() is None and first:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, first + out, err


def test_serve_starts_the_daemon_multi_user_and_quits_it_when_stopped(tmp_path):
    code, out, err = serve(stand_in(tmp_path))
    assert code == 0, err
    assert "control daemon started, multi-user" in out and "control daemon quit" in out
    assert (tmp_path / "calls.log").read_text().splitlines() == [f"args -d -M pipe={tmp_path / 'pipe'}", "stdin quit"]


def test_serve_adopts_a_daemon_that_already_answers(tmp_path):
    code, out, _ = serve(stand_in(tmp_path, start_rc=1, probe_rc=0))
    assert code == 0 and "control daemon adopted" in out
    assert (tmp_path / "calls.log").read_text().splitlines()[1:] == ["stdin get_server_list", "stdin quit"]


def test_serve_says_why_when_the_daemon_will_not_start(tmp_path):
    code, _, err = serve(stand_in(tmp_path, start_rc=3, probe_rc=1))
    assert code == 3 and "nvidia-cuda-mps-control -d -M failed (3)" in err
    assert "quit" not in (tmp_path / "calls.log").read_text()


def test_clients_counts_each_servers_clients_and_the_bench_starts_the_daemon_as_the_hub(monkeypatch, tmp_path):
    """The daemon's answers to get_server_list and get_client_list become a count per server; and the bench's
    daemon (bench/workshop_load.py) is started and quit with the hub's command lines, in its own pipe directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    control = bin_dir / "nvidia-cuda-mps-control"
    control.write_text(f"""#!/bin/bash
if [ $# -gt 0 ]; then echo "args $* pipe=$CUDA_MPS_PIPE_DIRECTORY" >> {tmp_path}/calls.log; exit 0; fi
read -r line; echo "stdin $line" >> {tmp_path}/calls.log
case "$line" in
  get_server_list) printf '101\\n102\\n' ;;
  "get_client_list 101") printf '201\\n202\\n203\\n' ;;
esac
""")
    control.chmod(0o755)
    assert mps_service.clients(str(control)) == {"101": 3, "102": 0}
    workshop_load = load_script(WORKSHOP.parent / "bench" / "workshop_load.py")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with workshop_load.mps_daemon(tmp_path / "scratch", multiuser=True) as env:
        assert workshop_load.mps_clients(env) == {"servers": 2, "clients": {"101": 3, "102": 0}}
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[3] == f"args -d -M pipe={tmp_path / 'scratch' / 'mps-pipe'}" and calls[-1] == "stdin quit"


def hub_config(monkeypatch, tmp_path: Path, **settings: str):
    """Load workshop/jupyterhub_config.py as JupyterHub would (as root, a cache and a proxy in place), with a
    stand-in MPS program on PATH; its config object."""
    if os.geteuid() != 0:
        pytest.skip("the hub's config runs as root only")
    (tmp_path / "cache" / "smolkit").mkdir(parents=True, exist_ok=True)
    proxy = tmp_path / "proxy"
    proxy.write_text("")
    env = stand_in(tmp_path)
    for name in ("SMOLKIT_HUB_MPS", "SMOLKIT_HUB_GPU_DEVICES", "SMOLKIT_HUB_MAX_USERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("SMOLKIT_WORKSHOP_DIR", str(tmp_path))
    monkeypatch.setenv("SMOLKIT_HUB_PROXY", str(proxy))
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(WORKSHOP / "jupyterhub_config.py"), init_globals={"get_config": Config})["c"]


def test_the_hub_runs_mps_as_a_managed_service_and_points_every_server_at_it(monkeypatch, tmp_path):
    c = hub_config(monkeypatch, tmp_path, SMOLKIT_HUB_MPS="on")
    (service,) = [s for s in c.JupyterHub.services if s["name"] == "mps"]
    assert service["command"][1:] == [str(SERVICE), "serve"]
    pipe = tmp_path / "mps" / "pipe"
    assert service["environment"]["CUDA_MPS_PIPE_DIRECTORY"] == str(pipe)
    assert c.Spawner.environment["CUDA_MPS_PIPE_DIRECTORY"] == str(pipe)
    assert pipe.stat().st_mode & 0o777 == 0o755  # every participant's kernel connects through it


def test_without_mps_the_hub_starts_no_daemon(monkeypatch, tmp_path):
    c = hub_config(monkeypatch, tmp_path, SMOLKIT_HUB_MPS="off")
    assert "mps" not in [s["name"] for s in c.JupyterHub.services]
    assert "CUDA_MPS_PIPE_DIRECTORY" not in c.Spawner.environment
    with pytest.raises(SystemExit, match="SMOLKIT_HUB_MPS must be one of auto, on, off, got 'maybe'"):
        hub_config(monkeypatch, tmp_path / "again", SMOLKIT_HUB_MPS="maybe")
