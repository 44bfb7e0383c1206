"""How the workshop hub splits one GPU among participants' kernels so that every kernel keeps room to work: K
seats (at most K kernels on the GPU at once, smolkit/gpu_seats.py) and a memory share for each, such that

    K * (share * total + context) <= USE * total,    so    share = USE / K - context / total

where ``total`` is the GPU's memory, ``share`` the fraction each kernel's torch may hold
(SMOLKIT_GPU_MEMORY_FRACTION, smolkit/gpu_share.py) and ``context`` what a kernel holds outside torch's allocator
(its CUDA context, CUDA's kernel code as it loads, the MPS client's part), which torch's cap does not count. The
bench measures it (bench/capacity.py): 0.90 GB a kernel on an H100 under MPS; the hub assumes CONTEXT_GB unless
SMOLKIT_HUB_GPU_CONTEXT_GB says otherwise. USE leaves the rest for the MPS server, the driver and the code a notebook
loads that the bench's did not. The hub (jupyterhub_config.py, through runpy: no torch in the hub's process), the
bench and the capacity planner all split by these functions.

The capacity planner measures a session of the embedded model. For kernels that hold more (notebook 11 loads
SmolVLM beside it), ask how many this GPU holds, with what one such kernel's torch held at most
(``torch.cuda.max_memory_reserved()`` after running the notebook once):

    python workshop/gpu_split.py --torch-gb 2.5 --context-gb 0.9   # this box's GPU (nvidia-smi), or --total-gb 85.5
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
from pathlib import Path

USE = 0.9
CONTEXT_GB = 1.0
HEADROOM = 1.25  # a kernel's share is at least this times the most its torch held in the bench's scripted session
GB = 1e9


def kernel_fraction(total_bytes: int, seats: int, context_bytes: float, use: float = USE) -> float:
    """Each kernel's share of the GPU (SMOLKIT_GPU_MEMORY_FRACTION) when ``seats`` kernels, each with a context of
    ``context_bytes``, split ``use`` of ``total_bytes``; ValueError when the contexts alone take it all.

    >>> round(kernel_fraction(85 * 10**9, 32, 1e9), 4)  # an H100: 85 GB; 32 kernels get 1.39 GB each
    0.0164
    >>> kernel_fraction(85 * 10**9, 80, 1e9)
    Traceback (most recent call last):
    ...
    ValueError: 80 kernels do not fit a GPU of 85.0 GB: their CUDA contexts alone (1.0 GB each) take more than the 0.9 \
of it that kernels may use
    """
    fraction = use / seats - context_bytes / total_bytes
    if fraction <= 0:
        raise ValueError(f"{seats} kernels do not fit a GPU of {total_bytes / GB:.1f} GB: their CUDA contexts alone "
                         f"({context_bytes / GB:.1f} GB each) take more than the {use:g} of it that kernels may use")
    return fraction


def seats_allowed(total_bytes: int, need_bytes: float, context_bytes: float, use: float = USE) -> int:
    """How many kernels the GPU holds when each may hold HEADROOM times ``need_bytes`` in torch (the most a kernel
    held in the bench) besides its context: the K for which ``kernel_fraction`` still gives each that much.

    >>> seats_allowed(85 * 10**9, 0.94e9, 0.9e9)  # the H100's figures under MPS (bench/results-capacity-hub.json)
    36
    """
    return math.floor(use * total_bytes / (HEADROOM * need_bytes + context_bytes))


def make_seats(folder: Path, count: int) -> Path:
    """The hub's seat folder: ``count`` read-only seat files (``seat-000``, ...) in ``folder``, which only its owner
    may change; seat files beyond ``count`` (a smaller hub than last time) removed. Returns ``folder``."""
    if count < 1:
        raise ValueError(f"a GPU needs at least one seat, got {count}")
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    folder.chmod(0o755)
    wanted = {f"seat-{index:03d}" for index in range(count)}
    for path in folder.iterdir():
        if path.name not in wanted:
            path.unlink()
    for name in wanted:
        (folder / name).touch(mode=0o444)
    return folder


def gpu_query(field: str, nvidia_smi: str | None = None) -> str | None:
    """One of NVIDIA's driver's figures for the box's first GPU (``nvidia-smi --query-gpu=FIELD``, no units), as it
    prints it; None where there is none (no nvidia-smi, or it fails). Asking the driver creates no CUDA context."""
    program = nvidia_smi or shutil.which("nvidia-smi")
    if program is None:
        return None
    try:
        done = subprocess.run([program, f"--query-gpu={field}", "--format=csv,noheader,nounits", "-i", "0"],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def gpu_total_bytes(nvidia_smi: str | None = None) -> int | None:
    """The memory of the box's first GPU as NVIDIA's driver reports it (bytes), None where there is none: the GPU
    every participant's kernel uses unless SMOLKIT_HUB_GPU_DEVICES says otherwise."""
    total = gpu_query("memory.total", nvidia_smi)  # MiB
    try:
        return int(float(total.split()[0]) * 2**20) if total else None
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    """The seats (SMOLKIT_HUB_MAX_USERS) this GPU holds for kernels whose torch holds --torch-gb at most."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--torch-gb", type=float, required=True, help="the most one kernel's torch held (GB)")
    parser.add_argument("--context-gb", type=float, default=CONTEXT_GB, help=f"its context (default {CONTEXT_GB:g})")
    parser.add_argument("--total-gb", type=float, default=None, help="the GPU's memory (default: nvidia-smi's)")
    args = parser.parse_args(argv)
    for name in ("torch_gb", "context_gb", "total_gb"):
        value = getattr(args, name)
        if value is not None and not (value > 0 or (name == "context_gb" and value == 0)):
            parser.error(f"--{name.replace('_', '-')} must be a positive number of GB, got {value:g}")
    total = args.total_gb * GB if args.total_gb else gpu_total_bytes()
    if total is None:
        parser.error("no GPU found (nvidia-smi): give --total-gb")
    seats = seats_allowed(total, args.torch_gb * GB, args.context_gb * GB)
    if seats < 1:
        print(f"A GPU of {total / GB:.1f} GB holds no kernel of {args.torch_gb:g} GB in torch with room to spare.")
        return 1
    share = kernel_fraction(total, seats, args.context_gb * GB)
    print(f"A GPU of {total / GB:.1f} GB holds {seats} kernels whose torch holds {args.torch_gb:g} GB at most (each "
          f"gets a share of {share * total / GB:.2f} GB, at least {HEADROOM:g} times that, and "
          f"{args.context_gb:g} GB for its context).\n"
          f"Set SMOLKIT_HUB_MAX_USERS={seats} SMOLKIT_HUB_GPU_CONTEXT_GB={args.context_gb:g} "
          "(workshop/workshop.sh start reads them).")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
