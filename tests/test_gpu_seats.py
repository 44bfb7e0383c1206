"""gpu_seats: a kernel takes one of the hub's seat files (an exclusive flock) before it touches the GPU, holds it
until its process ends however it ends, and with every seat held is told so before it takes anything of the GPU.
Real processes and real locks; no GPU is touched (the device is only named)."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from smolkit import gpu_seats, gpu_share
from smolkit.gpu_share import GpuUnavailable

CUDA = torch.device("cuda", 0)

KERNEL = textwrap.dedent("""
    import sys, torch
    from smolkit.gpu_seats import take_seat
    from smolkit.gpu_share import GpuUnavailable
    try:
        seat = take_seat(torch.device("cuda", 0), sys.argv[1])
    except GpuUnavailable as err:
        print("told:", err, flush=True)
        sys.exit(3)
    print("seat:", seat.name, flush=True)
    sys.stdin.read()  # a kernel at work: it holds its seat until it ends
""")


@pytest.fixture
def seats(tmp_path):
    """A hub's seat folder with two seats, and this process holding none of them."""
    folder = tmp_path / "gpu-seats"
    folder.mkdir()
    for name in ("seat-00", "seat-01"):
        (folder / name).touch(mode=0o444)
    yield folder
    for _seat, descriptor in gpu_seats._held.values():
        os.close(descriptor)
    gpu_seats._held.clear()


def kernel(folder: Path) -> tuple[subprocess.Popen, str]:
    """A process that takes a seat as a kernel does; it and the first line it says."""
    proc = subprocess.Popen([sys.executable, "-c", KERNEL, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    return proc, proc.stdout.readline().strip()


def test_no_more_kernels_than_seats_and_a_killed_kernel_gives_its_seat_back(seats):
    first, said_first = kernel(seats)
    second, said_second = kernel(seats)
    try:
        assert {said_first, said_second} == {"seat: seat-00", "seat: seat-01"}
        third, said_third = kernel(seats)
        assert third.wait(timeout=60) == 3
        assert said_third.startswith("told: The GPU is full: on this hub it runs 2 kernels at once")
        assert 'load_model(device="cpu")' in said_third
        first.send_signal(signal.SIGKILL)  # the culler, the out-of-memory killer or a crash: no cleanup runs
        first.wait(timeout=60)
        fourth, said_fourth = kernel(seats)
        fourth.stdin.close()
        assert said_fourth == said_first  # the seat the killed kernel held, and only that one
        assert fourth.wait(timeout=60) == 0
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait(timeout=60)


def test_a_kernel_holds_one_seat_however_often_it_loads(seats):
    taken = gpu_seats.take_seat(CUDA, str(seats))
    assert gpu_seats.take_seat(CUDA, str(seats)) == taken
    other, said = kernel(seats)  # the second seat is still free for another kernel
    other.stdin.close()
    assert other.wait(timeout=60) == 0
    assert said == f"seat: {({'seat-00', 'seat-01'} - {taken.name}).pop()}"


def test_every_seat_held_is_told_before_the_gpu_is_touched(monkeypatch, seats):
    from smolkit import models

    held = [os.open(seat, os.O_RDONLY) for seat in sorted(seats.iterdir())]  # two other kernels, as far as locks go
    for descriptor in held:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    monkeypatch.setenv(gpu_seats.ENV, str(seats))
    monkeypatch.setattr(models, "resolve_device", lambda device: CUDA)
    monkeypatch.setattr(gpu_share, "apply_gpu_memory_cap", lambda device: pytest.fail("the GPU was touched"))
    try:
        with pytest.raises(GpuUnavailable, match="runs 2 kernels at once"):
            models.load_model(device="cuda", dtype="float32")
    finally:
        for descriptor in held:
            os.close(descriptor)


def test_nothing_to_take_on_the_cpu_or_without_a_seat_folder(monkeypatch, seats):
    monkeypatch.delenv(gpu_seats.ENV, raising=False)
    assert gpu_seats.take_seat(CUDA) is None
    assert gpu_seats.take_seat(torch.device("cpu"), str(seats)) is None
    assert gpu_seats._held == {}


@pytest.mark.parametrize("kind", ["missing", "a file", "empty"])
def test_a_seat_folder_that_is_none_names_the_variable_and_the_value(tmp_path, kind):
    path = tmp_path / "seats"
    if kind == "a file":
        path.touch()
    elif kind == "empty":
        path.mkdir()
    expected = f"SMOLKIT_GPU_SEATS must be the hub's folder of GPU seat files, got '{path}'"
    with pytest.raises(ValueError, match=re.escape(expected)):
        gpu_seats.take_seat(CUDA, str(path))


ON_GPU = textwrap.dedent("""
    import sys, torch
    import smolkit
    from smolkit.gpu_share import GpuUnavailable
    try:
        lm = smolkit.load_model(device="cuda", name=sys.argv[1])
    except GpuUnavailable as err:
        print("told, CUDA initialised:", torch.cuda.is_initialized(), flush=True)
        sys.exit(3)
    print("loaded on", lm.device, flush=True)
    sys.stdin.read()
""")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_a_kernel_without_a_seat_is_told_before_it_creates_a_cuda_context(tmp_path):
    """One seat: the first kernel loads the model on the GPU; the second is told, and CUDA was never initialised in
    it (no context, no memory, no MPS client taken)."""
    folder = tmp_path / "gpu-seats"
    folder.mkdir()
    (folder / "seat-000").touch(mode=0o444)
    env = {**os.environ, "SMOLKIT_GPU_SEATS": str(folder)}
    first = subprocess.Popen([sys.executable, "-c", ON_GPU, "embedded"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env)  # fmt: skip
    try:
        assert first.stdout.readline().strip().startswith("loaded on cuda")
        second = subprocess.run([sys.executable, "-c", ON_GPU, "embedded"], capture_output=True, text=True,
                                env=env, timeout=300)  # fmt: skip
        assert second.returncode == 3, second.stderr
        assert second.stdout.strip() == "told, CUDA initialised: False"
    finally:
        first.kill()
        first.wait(timeout=60)
