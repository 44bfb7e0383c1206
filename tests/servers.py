"""Start, watch and stop the servers the lab tests drive (JupyterLab, JupyterHub), leaving nothing behind.

Each server starts in its own process group with its output in a log file. Stopping asks politely (SIGTERM to the
group), then insists (SIGKILL); the processes it started (kernels, single-user servers, the proxy: they run in new
sessions, out of the group) are recorded beforehand and killed too if they outlive it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import psutil

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log file, for failure messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def start(cmd: Sequence[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` in a new process group (session), stdout and stderr appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
            start_new_session=True,
        )  # fmt: skip


def wait_for(what: str, check: Callable[[], T | None], timeout: float, proc: subprocess.Popen, log: Path) -> T:
    """Poll ``check`` until it returns something truthy; fail with the server's log if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode} while waiting for {what}:\n{log_tail(log)}")
        try:
            result = check()
            if result:
                return result
        except Exception as err:  # connection refused while starting, and the like
            last_error = err
        time.sleep(0.25)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r}):\n{log_tail(log)}"
    )


def family(proc: subprocess.Popen) -> list[psutil.Process]:
    """``proc`` and everything it started, alive now (psutil handles remember their start time: no pid reuse)."""
    try:
        root = psutil.Process(proc.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(processes: Sequence[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running (zombies count as gone)."""
    result = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                result.append(p)
        except psutil.NoSuchProcess:
            pass
    return result


def describe(processes: Sequence[psutil.Process]) -> str:
    lines = []
    for p in processes:
        try:
            lines.append(f"pid {p.pid}: {' '.join(p.cmdline())[:200]}")
        except psutil.Error:
            lines.append(f"pid {p.pid}")
    return "\n".join(lines)


def stop(proc: subprocess.Popen, known: Sequence[psutil.Process] = (), grace: float = 30.0) -> list[psutil.Process]:
    """Stop ``proc``'s process group and every process in ``known``; returns those that would not die (none, normally).

    SIGTERM first, so that JupyterLab shuts its kernels down and JupyterHub its single-user servers and proxy; after
    ``grace`` seconds SIGKILL for whatever is left.
    """
    processes = [*family(proc), *known]
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
    if proc.poll() is None:
        proc.wait(10)
    _, survivors = psutil.wait_procs(alive(processes), timeout=grace)
    for p in survivors:
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            p.kill()
    _, survivors = psutil.wait_procs(alive(survivors), timeout=10)
    return alive(survivors)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM (a CI timeout, `timeout`, `kill`) into KeyboardInterrupt, so that `finally` blocks still stop
    the servers; pytest would otherwise die at once and leave them running."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
