"""gpu_share: the share read from SMOLKIT_GPU_MEMORY_FRACTION, the cap applied on CUDA only, and out-of-memory
errors explained (which limit, how much, what to do). On the CPU with torch's CUDA calls replaced; the real cap and
a real out-of-memory error under it run on a GPU (`make test-gpu`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from smolkit import gpu_share
from smolkit.gpu_share import GpuMemory, GpuShareExhausted, out_of_memory, out_of_memory_message, requested_bytes

GB = 10**9
CUDA = torch.device("cuda", 0)  # a device object needs no GPU; nothing here touches one unless marked gpu


@pytest.fixture
def cuda_calls(monkeypatch):
    """torch's CUDA memory calls recorded instead of made."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append(("cap", f, d)))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(("empty_cache",)))
    return calls


def test_the_share_is_read_from_the_variable(monkeypatch):
    monkeypatch.delenv(gpu_share.ENV, raising=False)
    assert gpu_share.memory_fraction() is None
    monkeypatch.setenv(gpu_share.ENV, "0.125")
    assert gpu_share.memory_fraction() == 0.125
    assert gpu_share.memory_fraction("1") == 1.0


@pytest.mark.parametrize("value", ["abc", "0", "-0.5", "1.01", "nan", "inf", "0,5"])
def test_a_bad_share_names_the_variable_and_the_value(value):
    with pytest.raises(ValueError, match=rf"SMOLKIT_GPU_MEMORY_FRACTION must be a number in \(0, 1\], got '{value}'"):
        gpu_share.memory_fraction(value)


def test_the_cap_is_applied_on_cuda_only_and_only_when_a_share_is_set(monkeypatch, cuda_calls):
    monkeypatch.setenv(gpu_share.ENV, "0.25")
    assert gpu_share.apply_gpu_memory_cap(torch.device("cpu")) is None
    assert cuda_calls == []
    assert gpu_share.apply_gpu_memory_cap(CUDA) == 0.25
    assert cuda_calls == [("cap", 0.25, CUDA.index)]
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert gpu_share.apply_gpu_memory_cap(torch.device("cuda")) == 0.25  # torch refuses a device with no index
    assert cuda_calls[-1] == ("cap", 0.25, 3)
    monkeypatch.delenv(gpu_share.ENV)
    assert gpu_share.apply_gpu_memory_cap(CUDA) is None
    monkeypatch.setenv(gpu_share.ENV, "2")
    with pytest.raises(ValueError, match="got '2'"):
        gpu_share.apply_gpu_memory_cap(CUDA)
    assert len(cuda_calls) == 2  # refused before any cap


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 79.19 GiB", 20 * 2**20),
        ("CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total capacity of 139.8 GiB", int(1.5 * 2**30)),
        ("CUDA out of memory. Tried to allocate 512 bytes.", 512),
        ("CUDA error: out of memory", None),
    ],
)
def test_the_requested_size_is_read_from_torchs_message(message, expected):
    assert requested_bytes(message) == expected


def test_over_its_own_share_the_message_names_the_share_and_the_remedy():
    text = out_of_memory_message(GpuMemory(total=140 * GB, fraction=0.05, held=int(6.5 * GB), free=90 * GB), GB)
    assert text.startswith("GPU out of memory for this kernel: it asked for 1.00 GB more while it holds 6.50 GB")
    assert "its share is 7.00 GB (SMOLKIT_GPU_MEMORY_FRACTION=0.05 of the GPU's 140.00 GB" in text
    assert "fewer samples (n), fewer max_new_tokens" in text and "Restart Kernel" in text


def test_within_its_share_on_a_full_gpu_the_message_blames_the_full_gpu_not_the_learner():
    text = out_of_memory_message(GpuMemory(total=140 * GB, fraction=0.05, held=2 * GB, free=GB // 10), GB)
    assert text.startswith("GPU out of memory: the GPU is full. 0.10 GB of its 140.00 GB are free")
    assert "this kernel holds 2.00 GB of its 7.00 GB share" in text and "tell the facilitator" in text


def test_without_a_share_the_message_gives_the_gpus_figures():
    text = out_of_memory_message(GpuMemory(total=24 * GB, fraction=None, held=23 * GB, free=GB // 2), None)
    assert text.startswith("GPU out of memory: this kernel holds 23.00 GB and the GPU has 0.50 GB of its 24.00 GB")
    assert "share" not in text and "fewer max_new_tokens" in text


def test_out_of_memory_explains_torchs_error_and_gives_the_cache_back(cuda_calls):
    seen = GpuMemory(total=80 * GB, fraction=0.1, held=8 * GB, free=50 * GB)
    original = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity")
    with pytest.raises(GpuShareExhausted) as raised, out_of_memory(CUDA, measured=lambda device: seen):
        raise original
    assert isinstance(raised.value, torch.OutOfMemoryError)  # `except torch.OutOfMemoryError` still catches it
    assert raised.value.__cause__ is original
    assert str(raised.value) == out_of_memory_message(seen, 2 * 2**30)
    assert cuda_calls == [("empty_cache",)]


def test_out_of_memory_lets_everything_else_through_unchanged(cuda_calls):
    def measured(device):
        raise AssertionError("measured although nothing ran out of memory")

    with out_of_memory(CUDA, measured=measured):
        pass
    error = ValueError("top_p must be in (0, 1], got 1.2")
    with pytest.raises(ValueError) as raised, out_of_memory(CUDA, measured=measured):
        raise error
    assert raised.value is error
    explained = GpuShareExhausted("already explained")
    with pytest.raises(GpuShareExhausted) as raised, out_of_memory(CUDA, measured=measured):
        raise explained
    assert raised.value is explained and cuda_calls == []


def test_on_the_cpu_nothing_touches_cuda(cuda_calls):
    seen = GpuMemory(total=GB, fraction=None, held=0, free=0)
    with pytest.raises(GpuShareExhausted), out_of_memory(torch.device("cpu"), measured=lambda device: seen):
        raise torch.OutOfMemoryError("out of memory")
    assert cuda_calls == []


RAW_ERRORS = {
    # what torch >= 2.8 raises when the CUDA context cannot be created on a full GPU (seen on the H100, issue 27)
    "context": getattr(torch, "AcceleratorError", RuntimeError)("CUDA error: out of memory\nCUDA kernel errors..."),
    "cublas": RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    "cublas handle": RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"),
    "older torch": RuntimeError("CUDA error: out of memory"),
}


@pytest.mark.parametrize("where", sorted(RAW_ERRORS))
def test_a_raw_cuda_out_of_memory_error_gets_the_kits_message(cuda_calls, where):
    seen = GpuMemory(total=80 * GB, fraction=0.02, held=0, free=GB // 2)
    original = RAW_ERRORS[where]
    with pytest.raises(GpuShareExhausted) as raised, out_of_memory(CUDA, measured=lambda device: seen):
        raise original
    assert raised.value.__cause__ is original
    assert str(raised.value).startswith("GPU out of memory: the GPU is full.") and "CUDA error" not in str(raised.value)


def test_an_out_of_memory_error_wrapped_by_another_is_still_explained(cuda_calls):
    """A CUDA graph's capture that ends in a second error (or torch.compile wrapping the first) keeps the cause."""
    seen = GpuMemory(total=80 * GB, fraction=0.02, held=0, free=0)
    with pytest.raises(GpuShareExhausted), out_of_memory(CUDA, measured=lambda device: seen):
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        except torch.OutOfMemoryError:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")  # noqa: B904


def test_when_the_gpus_figures_cannot_be_read_the_message_still_says_what_to_do(cuda_calls):
    """No CUDA context (its creation is what failed): measuring fails too, the learner still gets the kit's words."""

    def measured(device):
        raise getattr(torch, "AcceleratorError", RuntimeError)("CUDA error: out of memory")

    with pytest.raises(GpuShareExhausted) as raised, out_of_memory(CUDA, measured=measured):
        raise RAW_ERRORS["context"]
    assert str(raised.value) == gpu_share.NO_ROOM


def test_a_gpu_that_takes_no_more_contexts_gets_the_kits_answer_not_cudas(cuda_calls):
    """The 49th client of an H100's MPS server is refused its context at once (bench/mps_clients.py): the learner
    reads what happened and what to do, the raw error stays attached; the GPU's figures are not asked for."""
    raw = getattr(torch, "AcceleratorError", RuntimeError)(
        "CUDA error: CUDA-capable device(s) is/are busy or unavailable\nSearch for `cudaErrorDevicesUnavailable'"
    )
    with pytest.raises(gpu_share.GpuUnavailable) as raised, out_of_memory(CUDA, measured=lambda device: None):
        raise raw
    assert str(raised.value) == gpu_share.BUSY and raised.value.__cause__ is raw
    assert "Shut down the kernels you no longer use" in str(raised.value) and cuda_calls == []


def test_other_cuda_errors_pass_through_unchanged(cuda_calls):
    error = RuntimeError("CUDA error: an illegal memory access was encountered")
    with pytest.raises(RuntimeError) as raised, out_of_memory(CUDA, measured=lambda device: None):
        raise error
    assert raised.value is error and cuda_calls == []


def test_load_model_applies_the_cap_inside_the_translation(monkeypatch):
    """The cap's call is where a full GPU first fails (creating the CUDA context): load_model explains it."""
    from smolkit import models

    def no_context(device):
        raise RAW_ERRORS["context"]

    monkeypatch.setattr(models, "resolve_device", lambda device: CUDA)
    monkeypatch.setattr(gpu_share, "apply_gpu_memory_cap", no_context)
    monkeypatch.setattr(gpu_share, "measure", no_context)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    with pytest.raises(GpuShareExhausted, match="no room left for this kernel"):
        models.load_model(device="cuda", dtype="float32")


GPU_SCRIPT = textwrap.dedent("""
    import os, torch
    from smolkit.gpu_share import GpuShareExhausted, apply_gpu_memory_cap, out_of_memory
    device = torch.device("cuda")
    os.environ["SMOLKIT_GPU_MEMORY_FRACTION"] = "0.02"
    assert apply_gpu_memory_cap(device) == 0.02
    share = 0.02 * torch.cuda.get_device_properties(device).total_memory
    try:
        with out_of_memory(device):
            too_much = torch.empty(int(share * 1.5), dtype=torch.uint8, device=device)
    except GpuShareExhausted as err:
        assert "its share is" in str(err) and "SMOLKIT_GPU_MEMORY_FRACTION=0.02" in str(err), str(err)
        print("explained:", err)
    else:
        raise AssertionError("an allocation of 1.5 shares succeeded under the cap")
    fits = torch.ones(int(share * 0.25), dtype=torch.uint8, device=device)  # the kernel goes on working
    assert int(fits.min()) == int(fits.max()) == 1  # reductions with no copy (sum would widen to int64: 8 bytes each)
    print("ok")
""")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_an_allocation_past_the_share_is_explained_and_the_kernel_goes_on():
    """In a process of its own: the cap is per process and would stay on for the other GPU tests."""
    done = subprocess.run([sys.executable, "-c", GPU_SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr


def test_a_working_kernel_on_a_full_gpu_counts_its_own_cache_as_available(monkeypatch):
    """On an H100 filled by newcomers (0 bytes free), a kernel that holds 0.9 GB of which 0.3 GB are in use can
    still run what fits in the other 0.6 GB: the kit's memory check must not refuse it (it read only the GPU's free
    memory before, and refused an 8 x 64 generate of 0.1 GiB with "this GPU has 0.0 GiB available")."""
    from smolkit import generation

    full = GpuMemory(total=85 * 10**9, fraction=0.0266, held=9 * 10**8, free=0)
    monkeypatch.setattr(gpu_share, "measure", lambda device: full)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 3 * 10**8)
    assert generation.available_bytes(CUDA) == 6 * 10**8
