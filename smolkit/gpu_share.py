"""One kernel's share of a GPU that several people use: the cap it puts on itself, and a clear message when a
cell needs more than the share or the GPU has left.

The workshop hub gives each participant's kernel ``SMOLKIT_GPU_MEMORY_FRACTION`` (e.g. 0.1 of the GPU's memory);
``apply_gpu_memory_cap`` turns it into ``torch.cuda.set_per_process_memory_fraction``, so that torch's allocator
in this process stops at the share and raises an out-of-memory error instead of taking the memory the others'
kernels need. That cap is kept by this process itself: it is a courtesy between kernels, not an enforcement, since
the participant can change the variable or call torch again. What does enforce a share (MIG partitions, MPS v3
memory limits) is in workshop/SETUP.md, "The GPU".

``out_of_memory`` turns torch's out-of-memory error into one that says which limit was hit (this kernel's share,
or the whole GPU, full of other kernels), how much this kernel holds, and what to do; it also hands the memory
torch keeps cached back to the GPU, so that the next, smaller cell can run. It also catches the raw CUDA errors a
full GPU gives outside torch's allocator (``torch.AcceleratorError: CUDA error: out of memory`` when the CUDA context
is created, cuBLAS's workspace, a CUDA graph's capture): every place a kernel first touches the GPU runs inside it
(load_model, generate with the fast path's capture and compile, next_token_distribution, beams, sequences). And a
GPU that takes no more CUDA contexts (an MPS server at its client limit, 48 on an H100) refuses the kernel at once
with a raw "busy or unavailable": that becomes ``GpuUnavailable``, with what to do. How many kernels the hub lets on
the GPU at once, so that each keeps room for its share, is ``gpu_seats``'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Callable, Iterator

import torch

__all__ = [
    "ENV",
    "GpuMemory",
    "GpuShareExhausted",
    "GpuUnavailable",
    "apply_gpu_memory_cap",
    "is_gpu_unavailable",
    "is_out_of_memory",
    "measure",
    "memory_fraction",
    "out_of_memory",
    "out_of_memory_message",
    "requested_bytes",
    "usable_bytes",
]

ENV = "SMOLKIT_GPU_MEMORY_FRACTION"
GB = 1e9


def memory_fraction(value: str | None = None) -> float | None:
    """The share of the GPU's memory in ``value`` (default: $SMOLKIT_GPU_MEMORY_FRACTION), None when unset.

    >>> memory_fraction("0.25")
    0.25
    >>> memory_fraction("")
    >>> memory_fraction("1.5")
    Traceback (most recent call last):
    ...
    ValueError: SMOLKIT_GPU_MEMORY_FRACTION must be a number in (0, 1], got '1.5'
    """
    value = os.environ.get(ENV) if value is None else value
    if not value:
        return None
    try:
        fraction = float(value)
    except ValueError:
        fraction = float("nan")
    if not 0 < fraction <= 1:  # NaN fails this too
        raise ValueError(f"{ENV} must be a number in (0, 1], got {value!r}")
    return fraction


def apply_gpu_memory_cap(device: torch.device) -> float | None:
    """Cap torch's allocator in this process at $SMOLKIT_GPU_MEMORY_FRACTION of ``device`` (CUDA only); returns
    the fraction applied, or None (a CPU device, or no share set)."""
    fraction = memory_fraction()
    if device.type != "cuda" or fraction is None:
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()  # "cuda" names no index
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return fraction


@dataclasses.dataclass(frozen=True)
class GpuMemory:
    """What one kernel sees of a GPU: its memory (bytes), this kernel's share of it (a fraction; None: no share
    set), what this kernel's torch holds (reserved: allocated and cached) and what the GPU has free for anyone."""

    total: int
    fraction: float | None
    held: int
    free: int

    @property
    def share(self) -> int | None:
        return None if self.fraction is None else int(self.fraction * self.total)


def measure(device: torch.device) -> GpuMemory:
    """The figures of ``GpuMemory`` for a CUDA ``device``, from torch and the driver."""
    free, total = torch.cuda.mem_get_info(device)
    return GpuMemory(total=total, fraction=memory_fraction(), held=torch.cuda.memory_reserved(device), free=free)


def usable(free: int, reserved: int, allocated: int, share: int | None) -> int:
    """What this process can still allocate on the GPU: the memory its torch keeps cached (``reserved`` less
    ``allocated``, reused first) plus what the GPU has ``free``, the latter no more than its ``share`` leaves
    (torch's cap counts reserved memory). A kernel on a GPU that others have filled still works within its cache.

    >>> GB = 10**9
    >>> usable(free=0, reserved=int(0.9 * GB), allocated=int(0.3 * GB), share=int(2.26 * GB)) / GB  # a full GPU
    0.6
    >>> usable(free=40 * GB, reserved=2 * GB, allocated=2 * GB, share=int(2.26 * GB)) / GB  # the share binds
    0.26
    >>> usable(free=5 * GB, reserved=GB, allocated=0, share=None) / GB
    6.0
    """
    grow = free if share is None else max(0, min(free, share - reserved))
    return max(0, reserved - allocated) + grow


def usable_bytes(device: torch.device) -> int:
    """``usable`` for a CUDA ``device``, from torch and the driver."""
    memory = measure(device)
    return usable(memory.free, memory.held, torch.cuda.memory_allocated(device), memory.share)


_SIZE = re.compile(r"Tried to allocate ([0-9.]+) ?(bytes|B|KiB|MiB|GiB|TiB)")
_UNITS = {"bytes": 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def requested_bytes(message: str) -> int | None:
    """How much the failed allocation asked for, read from torch's out-of-memory message (None if it says not).

    >>> requested_bytes("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB")
    2147483648
    >>> requested_bytes("out of memory")
    """
    found = _SIZE.search(message)
    return None if found is None else int(float(found.group(1)) * _UNITS[found.group(2)])


REMEDY = (
    "Ask for less at once: fewer samples (n), fewer max_new_tokens, a shorter prompt or a smaller image; or free "
    "what earlier cells keep (`del` results you no longer need) and run the cell again. Kernel > Restart Kernel "
    "gives back everything this kernel holds."
)


def out_of_memory_message(memory: GpuMemory, requested: int | None) -> str:
    """The learner's explanation of an out-of-memory error, from what the kernel saw (``GpuMemory``): its own share
    used up, or the GPU full of other kernels' memory, or (no share set) the GPU's memory used up.

    >>> print(out_of_memory_message(GpuMemory(total=80 * 10**9, fraction=0.1, held=int(7.5e9), free=40 * 10**9),
    ...                             requested=2**30))  # doctest: +NORMALIZE_WHITESPACE +ELLIPSIS
    GPU out of memory for this kernel: it asked for 1.07 GB more while it holds 7.50 GB, and its share is 8.00 GB
    (SMOLKIT_GPU_MEMORY_FRACTION=0.1 of the GPU's 80.00 GB, set for each participant so that one kernel cannot
    take the others' memory). Ask for less at once: ...
    """
    asked = f"it asked for {requested / GB:.2f} GB more while " if requested else ""
    share = memory.share
    if share is not None and memory.held + (requested or 0) > share * 0.95:
        return (
            f"GPU out of memory for this kernel: {asked}it holds {memory.held / GB:.2f} GB, and its share is "
            f"{share / GB:.2f} GB ({ENV}={memory.fraction:g} of the GPU's {memory.total / GB:.2f} GB, set for each "
            f"participant so that one kernel cannot take the others' memory). {REMEDY}"
        )
    if share is not None:
        return (
            f"GPU out of memory: the GPU is full. {memory.free / GB:.2f} GB of its {memory.total / GB:.2f} GB are "
            f"free, the rest is held by other kernels, while this kernel holds {memory.held / GB:.2f} GB of its "
            f"{share / GB:.2f} GB share ({ENV}={memory.fraction:g}). Run the cell again in a moment; if the GPU "
            "stays full, tell the facilitator (idle kernels are shut down, which frees their memory)."
        )
    return (
        f"GPU out of memory: {asked}this kernel holds {memory.held / GB:.2f} GB and the GPU has "
        f"{memory.free / GB:.2f} GB of its {memory.total / GB:.2f} GB free. {REMEDY}"
    )


NO_ROOM = (
    "GPU out of memory: the GPU has no room left for this kernel (it could not get memory for its CUDA context or "
    "its first buffers: the other participants' kernels hold the rest). Restart this kernel in a moment (Kernel > "
    "Restart Kernel); if the GPU stays full, tell the facilitator (idle kernels are shut down, which frees their "
    "memory)."
)
"""The message when the GPU's figures cannot be read either (the CUDA context itself could not be created)."""

# cuBLAS may report a handle it could not get memory for as NOT_INITIALIZED rather than ALLOC_FAILED
_RAW_SIGNS = (
    "out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_NOT_INITIALIZED", "cudaErrorMemoryAllocation",
)  # fmt: skip


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) is the GPU running out of memory: torch's
    ``OutOfMemoryError``, or a raw CUDA/cuBLAS error that says so (``torch.AcceleratorError`` and the
    RuntimeErrors of older torch, also when torch.compile wrapped them).

    >>> is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    True
    >>> is_out_of_memory(RuntimeError("CUDA error: an illegal memory access was encountered"))
    False
    """
    return any(
        isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and any(s in str(e) for s in _RAW_SIGNS))
        for e in _chain(err)
    )


BUSY = (
    "The GPU takes no more kernels right now: CUDA answered that the device is busy or unavailable. On the workshop "
    "hub every open notebook's kernel shares the GPU through NVIDIA's Multi-Process Service, which serves a fixed "
    "number of kernels at once (48 on an H100, measured). Shut down the kernels you no longer use (the Running "
    "Terminals and Kernels panel, on the left), then Kernel > Restart Kernel here; if it stays so, tell the "
    "facilitator. (Outside the hub: another program holds this GPU in exclusive mode; nvidia-smi shows which.)"
)
"""The message when the GPU refuses another CUDA context (cudaErrorDevicesUnavailable): an MPS server at its client
limit (bench/mps_clients.py measured 48 on an H100: the 49th client gets this at once, it does not wait), or a GPU
in exclusive-process mode that another process holds."""


def is_gpu_unavailable(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) is CUDA refusing this process a context on the GPU.

    >>> is_gpu_unavailable(RuntimeError("CUDA error: CUDA-capable device(s) is/are busy or unavailable"))
    True
    >>> is_gpu_unavailable(RuntimeError("CUDA error: out of memory"))
    False
    """
    signs = ("busy or unavailable", "cudaErrorDevicesUnavailable")
    return any(isinstance(e, RuntimeError) and any(sign in str(e) for sign in signs) for e in _chain(err))


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """``err`` and the errors it was raised from (its cause, else its context), each once."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _explain(device: torch.device, err: BaseException, measured: Callable[[torch.device], GpuMemory]) -> str:
    """The learner's message for ``err``: from the GPU's figures, or NO_ROOM when even those cannot be read."""
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return out_of_memory_message(measured(device), requested_bytes(str(err)))
    except Exception:  # no CUDA context to ask (it could not be created): the figures are unknown
        return NO_ROOM


class GpuShareExhausted(torch.OutOfMemoryError):
    """torch's out-of-memory error, explained (``out_of_memory_message``); still a ``torch.OutOfMemoryError``."""


class GpuUnavailable(RuntimeError):
    """CUDA's refusal of a context on the GPU (``is_gpu_unavailable``), explained (``BUSY``)."""


@contextlib.contextmanager
def out_of_memory(device: torch.device, measured: Callable[[torch.device], GpuMemory] = measure) -> Iterator[None]:
    """Turn an out-of-memory error raised inside (``is_out_of_memory``: torch's, or a raw CUDA one) into a
    ``GpuShareExhausted`` that says which limit was hit and what to do, after giving torch's cached memory back to
    the GPU; and a GPU that refuses this kernel a context (``is_gpu_unavailable``) into ``GpuUnavailable``. Anything
    else passes through unchanged.

    ``measured`` reads the GPU's figures (tests give their own; on the CPU there is no GPU to read).
    """
    try:
        yield
    except (GpuShareExhausted, GpuUnavailable):
        raise
    except Exception as err:
        if is_gpu_unavailable(err):
            raise GpuUnavailable(BUSY) from err
        if not is_out_of_memory(err):
            raise
        raise GpuShareExhausted(_explain(device, err, measured)) from err
