"""NVIDIA's Multi-Process Service (MPS) for the workshop hub: every participant's kernel, whatever its account,
becomes a client of one MPS server, so kernels share the GPU at once instead of taking turns. Measured on an H100
(bench/RESULTS.md): 32 participants, each an account of their own, within both budgets with it; without it the
GPU time-slices their contexts and fewer than 16 fit.

    python workshop/mps_service.py serve    # JupyterHub runs this as a managed service (jupyterhub_config.py)
    python workshop/mps_service.py wanted   # prints "yes" or "no": would the hub start MPS on this box?

``serve`` starts the control daemon as bench/workshop_load.py measured it, in multi-user mode (``-d -M``: one MPS
server for clients of every account; root only; without ``-M`` a server serves one user and another user's client
waits until it exits), with the pipe and log directories of the environment (CUDA_MPS_PIPE_DIRECTORY,
CUDA_MPS_LOG_DIRECTORY); where one already runs there (a hub restarted), that one is adopted. It
then waits until JupyterHub stops the service (SIGTERM) and quits the daemon, which ends its server.

SMOLKIT_HUB_MPS decides: ``auto`` (default: on where the box has an NVIDIA GPU and NVIDIA's MPS control program,
and participants are not given GPU slices of their own, SMOLKIT_HUB_GPU_DEVICES), ``on`` (required: the hub
refuses to start without it) or ``off``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

CONTROL = "nvidia-cuda-mps-control"
CHOICES = ("auto", "on", "off")


def wanted(setting: str | None, gpu_devices: bool, control: str | None, gpus: bool) -> bool:
    """Whether the hub runs MPS: ``setting`` (SMOLKIT_HUB_MPS, default auto), whether participants get GPU devices
    of their own (``gpu_devices``), the control program's path (``control``, None when missing) and whether the box
    has an NVIDIA GPU (``gpus``). ValueError, naming the setting, for what cannot be honoured.

    >>> wanted("auto", False, "/usr/bin/nvidia-cuda-mps-control", True), wanted("auto", False, None, True)
    (True, False)
    >>> wanted("on", False, None, False)
    Traceback (most recent call last):
    ...
    ValueError: SMOLKIT_HUB_MPS=on, but nvidia-cuda-mps-control is not on PATH (NVIDIA's driver utilities)
    """
    setting = (setting or "auto").strip().lower()
    if setting not in CHOICES:
        raise ValueError(f"SMOLKIT_HUB_MPS must be one of {', '.join(CHOICES)}, got {setting!r}")
    if setting == "off":
        return False
    if setting == "on":
        if gpu_devices:
            raise ValueError("SMOLKIT_HUB_MPS=on and SMOLKIT_HUB_GPU_DEVICES: participants with GPU slices of their "
                             "own share nothing through MPS; set one of the two")  # fmt: skip
        if control is None:
            raise ValueError(f"SMOLKIT_HUB_MPS=on, but {CONTROL} is not on PATH (NVIDIA's driver utilities)")
        return True
    return control is not None and gpus and not gpu_devices


def wanted_here(environ: dict[str, str] | None = None) -> bool:
    """``wanted`` for this box and the environment's settings."""
    environ = os.environ if environ is None else environ
    gpus = any(Path("/dev").glob("nvidia[0-9]*"))
    return wanted(environ.get("SMOLKIT_HUB_MPS"), bool(environ.get("SMOLKIT_HUB_GPU_DEVICES")),
                  shutil.which(CONTROL), gpus)  # fmt: skip


def start_daemon(
    control: str, multiuser: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Start the control daemon in the background (``-d``), in multi-user mode (``-M``, root only) unless told
    otherwise, with the pipe and log directories of ``env`` (default: this process's environment). The bench
    (bench/workshop_load.py) starts its daemons here too, so the hub runs what was measured."""
    flags = ["-d", "-M"] if multiuser else ["-d"]
    return subprocess.run([control, *flags], env=env, capture_output=True, text=True, timeout=60)


def ask(
    control: str, command: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Send one command (``get_server_list``, ``quit``, ...) to the control daemon of ``env``'s pipe directory."""
    return subprocess.run([control], input=command + "\n", env=env, capture_output=True, text=True, timeout=timeout)


def clients(control: str, env: dict[str, str] | None = None) -> dict[str, int]:
    """The daemon's MPS servers (one per user id, one in all in multi-user mode) and each one's client count,
    by server pid: whether kernels really are MPS clients (CUDA falls back to no MPS, silently, when a client
    cannot reach the daemon). subprocess.TimeoutExpired where the daemon gives no answer in 30 s."""
    servers = ask(control, "get_server_list", env, timeout=30).stdout.split()
    return {pid: len(ask(control, f"get_client_list {pid}", env, timeout=30).stdout.split()) for pid in servers}


def serve() -> int:
    """Start (or adopt) the multi-user control daemon, wait for SIGTERM or SIGINT, quit the daemon."""
    control = shutil.which(CONTROL)
    if control is None:
        print(f"smolkit mps: {CONTROL} is not on PATH; participants' kernels time-slice the GPU", file=sys.stderr)
        return 1
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # kept until sigwait below
    started = start_daemon(control)
    adopted = started.returncode != 0 and ask(control, "get_server_list").returncode == 0  # one from before
    if started.returncode != 0 and not adopted:
        print(f"smolkit mps: {CONTROL} -d -M failed ({started.returncode}): "
              f"{(started.stderr or started.stdout).strip()[:300]}", file=sys.stderr)  # fmt: skip
        return started.returncode
    where = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    print(f"smolkit mps: control daemon {'adopted' if adopted else 'started'}, multi-user, pipe {where}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    ask(control, "quit")
    print("smolkit mps: control daemon quit", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["serve", "wanted"])
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve()
    try:
        print("yes" if wanted_here() else "no")
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
