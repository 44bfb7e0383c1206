"""The tested transformers range is stated once (smolkit/compat.py) and agrees with pyproject, requirements and the
compat runner; outside it the kit refuses (older) or says it is unchecked (newer)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import smolkit
from smolkit.compat import TRANSFORMERS_RANGE, TRANSFORMERS_TESTED, transformers_problem

ROOT = Path(__file__).resolve().parent.parent


def pyproject_requirement(name: str) -> Requirement:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, deps) if r.name == name)


def test_pyproject_bound_is_the_tested_range():
    assert pyproject_requirement("transformers").specifier == SpecifierSet(TRANSFORMERS_RANGE)


def test_the_range_spans_exactly_the_tested_versions():
    versions = [Version(v) for v in TRANSFORMERS_TESTED]
    assert versions == sorted(versions) and len(versions) >= 2
    spec = SpecifierSet(TRANSFORMERS_RANGE)
    assert all(spec.contains(v) for v in TRANSFORMERS_TESTED)
    oldest, newest = versions[0], versions[-1]
    assert not spec.contains(f"{oldest.major}.{oldest.minor - 1}.99")  # anything before the oldest tested
    assert spec.contains(f"{newest.major}.{newest.minor}.{newest.micro + 1}")  # a patch release of the newest
    assert not spec.contains(f"{newest.major}.{newest.minor + 1}.0")


def test_requirements_pin_a_tested_version_and_no_torch():
    text = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^transformers==(\S+)$", text, re.M).group(1) in TRANSFORMERS_TESTED
    # No torch line: a GPU recipe installs its CUDA torch first and requirements.txt must keep it.
    assert not re.search(r"^torch\b", text, re.M)
    cpu = (ROOT / "requirements-cpu.txt").read_text()
    assert re.findall(r"^(torch==\S+|-r \S+)$", cpu, re.M) == ["torch==2.13.0", "-r requirements.txt"]


def test_requirements_split_by_audience():
    """A learner's venv (requirements.txt) carries no test or hub package; the tests' and the hub's files build on it,
    and no package is pinned in two files (one version each)."""

    def lines(name: str) -> list[str]:
        return [ln.split("#")[0].strip() for ln in (ROOT / name).read_text().splitlines() if ln.split("#")[0].strip()]

    lab = {Requirement(ln).name for ln in lines("requirements.txt")}
    assert {"transformers", "jupyterlab", "ipywidgets"} <= lab
    assert not lab & {"pytest", "nbval", "ruff", "playwright", "jupyterhub", "jupyterhub-idle-culler"}
    seen = set(lab)
    for name, expected in [("requirements-test.txt", {"pytest", "nbval", "hypothesis", "ruff", "playwright"}),
                           ("requirements-hub.txt", {"jupyterhub", "jupyterhub-idle-culler"})]:  # fmt: skip
        first, *rest = lines(name)
        assert first == "-r requirements.txt", name
        names = {Requirement(ln).name for ln in rest if not ln.startswith("-r ")}
        assert expected <= names and not names & seen, name
        seen |= names
    assert "-r requirements-hub.txt" in lines("requirements-test.txt")  # the tests load the hub's config


def test_installed_torch_satisfies_pyproject():
    import torch

    assert pyproject_requirement("torch").specifier.contains(Version(torch.__version__).base_version)


def test_the_compat_runner_reads_the_same_list():
    out = subprocess.run(["bash", "environment/compat.sh", "--list"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == list(TRANSFORMERS_TESTED)


def test_the_compat_runner_names_test_files_that_exist():
    text = (ROOT / "environment" / "compat.sh").read_text()
    named = re.findall(r"tests/test_\w+\.py", text.split("TESTS=(", 1)[1].split(")", 1)[0])
    assert named and [n for n in named if not (ROOT / n).is_file()] == []


def test_the_installed_transformers_is_in_range():
    assert transformers_problem() is None


@pytest.mark.parametrize(
    ("version", "severity"),
    [
        ("4.57.6", "old"),
        ("5.16.1", "old"),
        ("5.17.0", None),
        ("5.18.0", None),
        ("5.24.1", None),
        ("5.25.0", "new"),
        ("6.0.0", "new"),
    ],
)
def test_versions_outside_the_range_are_named(version, severity):
    problem = transformers_problem(version)
    assert (problem and problem[0]) == severity
    if problem:
        assert version in problem[1] and TRANSFORMERS_RANGE in problem[1]


def test_load_model_refuses_an_older_transformers_before_model_work(monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "4.57.6")
    with pytest.raises(RuntimeError, match=r"transformers 4\.57\.6 is older than smolkit supports .*pip install"):
        smolkit.load_model("embedded", device="cpu")


def test_a_newer_transformers_keeps_working(monkeypatch, lm):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "5.99.0")
    assert transformers_problem()[0] == "new"
    assert smolkit.load_model("embedded", device="cpu").vocab_size == lm.vocab_size


def test_smolvlm_on_5_17_without_torchvision_is_refused_clearly(monkeypatch, tmp_path):
    """5.17's PIL image processor for Idefics3 needs torchvision: load_model says so (text models still load)."""
    import importlib.util

    import transformers

    from smolkit.compat import vision_problem

    assert vision_problem("5.17.0") is None or "needs torchvision" in vision_problem("5.17.0")
    monkeypatch.setattr(transformers, "__version__", "5.17.0")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchvision" else real(name, *a))
    assert "needs torchvision" in vision_problem() and "transformers>=5.18.0" in vision_problem()
    folder = tmp_path / "vlm"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "idefics3", "vision_config": {}, "text_config": {}}')
    (folder / "model.safetensors").write_bytes(b"")  # refused before any weight is read
    with pytest.raises(RuntimeError, match=r"vision-language model, and transformers 5\.17\.0's image processor"):
        smolkit.load_model(str(folder), device="cpu")
