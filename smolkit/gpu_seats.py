"""A seat on a shared GPU: never more kernels on it than its memory holds, however many start at once.

A GPU's memory runs out for everyone together: when one kernel more starts than the memory holds, it is often a
kernel already working whose next cell fails, not the newcomer (7 of 32 working kernels stopped so in one of seven
runs on an H100, bench/RESULTS.md). A newcomer that looks at the free memory first does not prevent it: kernels
that start within one model load of each other all see the same free memory. So the workshop hub counts kernels
instead. It makes a folder of K seat files, K chosen so that K kernels, each at its share of the memory plus its
CUDA context, fit in the GPU (workshop/gpu_split.py), and gives every kernel that folder as $SMOLKIT_GPU_SEATS.

Before a kernel first touches the GPU (``load_model``), ``take_seat`` takes one: an exclusive lock (``flock``) on
a seat file that no other process holds. The operating system keeps the lock until the process ends, however it
ends (shut down, restarted, killed by the culler or the out-of-memory killer), so a seat is never lost and never
taken twice. With every seat taken, the kernel gets ``GpuUnavailable`` with what to do, before it has taken
anything of the GPU, and the kernels that hold seats keep the memory they were promised.

Every regular file in the folder is one seat; the folder and its files are the hub's (root's, read-only for
participants: a read-only file can be locked). Like the memory share, the seat is kept by the kit itself: code of
the participant's own that uses the GPU without ``load_model`` takes none. What enforces a split (MIG) is in
workshop/SETUP.md, "The GPU".
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import torch

from smolkit.gpu_share import GpuUnavailable

__all__ = ["ENV", "seat_files", "seats_folder", "take_seat"]

ENV = "SMOLKIT_GPU_SEATS"

_held: dict[Path, tuple[Path, int]] = {}
"""The seat this process holds, by folder: its file and the open descriptor that keeps the lock."""


def seats_folder(value: str | None = None) -> Path | None:
    """The seat folder in ``value`` (default: $SMOLKIT_GPU_SEATS), None when unset; ValueError, naming the
    variable, when it is not a folder of seat files."""
    value = os.environ.get(ENV) if value is None else value
    if not value:
        return None
    folder = Path(value)
    if not folder.is_dir():
        raise ValueError(f"{ENV} must be the hub's folder of GPU seat files, got {value!r}, which is not a folder")
    if not seat_files(folder):
        raise ValueError(f"{ENV} must be the hub's folder of GPU seat files, got {value!r}, which holds none")
    return folder


def seat_files(folder: Path) -> list[Path]:
    """The seats in ``folder``: its regular files, in name order (so that kernels try them in the same order)."""
    return sorted(path for path in folder.iterdir() if path.is_file())


def full_message(seats: int) -> str:
    """What a participant reads when every one of the GPU's ``seats`` is taken.

    >>> print(full_message(32))  # doctest: +ELLIPSIS
    The GPU is full: on this hub it runs 32 kernels at once (one for every open notebook that uses it)...
    """
    return (
        f"The GPU is full: on this hub it runs {seats} kernels at once (one for every open notebook that uses it), "
        "so that each has room to work, and all of them are running. This kernel has not touched the GPU, so the "
        "kernels already working keep their memory. Shut down the kernels you no longer use (the Running "
        "Terminals and Kernels panel, on the left) and run this cell again, or load the model on the CPU for now: "
        "load_model(device=\"cpu\"). If the GPU stays full, tell the facilitator (idle kernels are shut down, "
        "which gives their seats back)."
    )


def take_seat(device: torch.device, value: str | None = None) -> Path | None:
    """Take a free seat of the folder in ``value`` (default: $SMOLKIT_GPU_SEATS) for this process, and hold it
    until the process ends; the seat file, the same one again when this process holds one already. None where
    there is nothing to take: a device other than CUDA, or no seat folder (one user, a GPU of their own).
    ``GpuUnavailable`` (``full_message``) when every seat is held by another process."""
    if device.type != "cuda":
        return None
    folder = seats_folder(value)
    if folder is None:
        return None
    if folder in _held:
        return _held[folder][0]
    seats = seat_files(folder)
    for seat in seats:
        descriptor = os.open(seat, os.O_RDONLY)  # not inherited by programs this kernel starts (PEP 446)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another kernel holds this one
            os.close(descriptor)
            continue
        _held[folder] = (seat, descriptor)
        return seat
    raise GpuUnavailable(full_message(len(seats)))
