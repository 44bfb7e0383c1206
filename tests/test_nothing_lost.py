"""Nothing lost: tests never write to notebooks, `make notebooks` writes atomically and refuses uncommitted work,
and the embedded model's cache is written atomically and validated on load.

Everything here works on copies in temporary folders (a temporary git repository for `make notebooks`), never on
the committed notebooks or the real model cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import transformers

from smolkit.embedded import (
    MANIFEST,
    STALE_SECONDS,
    cache_problem,
    convert_embedded,
    embedded_gguf_path,
    remove_stale_temporaries,
)

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("execute_notebooks", REPO / "environment" / "execute_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


execute_notebooks = _load_script()


def tiny_notebook(*cells: tuple[str, str | None]) -> nbformat.NotebookNode:
    """A notebook for the `smolkit` kernel; each cell is (source, stored stdout or None for no output)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "smolkit", "display_name": "smolkit", "language": "python"}
    for source, stdout in cells:
        cell = nbformat.v4.new_code_cell(source)
        if stdout is not None:
            cell.execution_count = 1
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stdout)]
        nb.cells.append(cell)
    return nb


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- nbval (make test-notebooks) reads notebooks, never writes them ----------------------------------------------


def _nbval_flags() -> list[str]:
    """The nbval flags `make test-notebooks` uses, read from the Makefile (so this test follows it)."""
    makefile = (REPO / "Makefile").read_text()
    flags = shlex.split(re.search(r"^NBVAL := (.+)$", makefile, re.MULTILINE).group(1))
    return [str(REPO / f) if f.endswith(".cfg") else f for f in flags]


def test_nbval_as_make_test_notebooks_runs_it_leaves_the_notebook_untouched(tmp_path):
    nb = tiny_notebook(("print(1 + 1)", "2\n"), ("print('now')", "a stale output\n"))
    path = tmp_path / "01_tiny.ipynb"
    nbformat.write(nb, path)
    before = _listing(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *_nbval_flags(), str(path)],
        cwd=tmp_path,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)},  # -p tests.nbval_numbers
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "1 failed, 1 passed" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]  # it ran and compared
    assert _listing(tmp_path) == before  # and wrote nothing: the notebook is byte-identical, no new file


# -- make notebooks: atomic, 0644, refuses uncommitted work -------------------------------------------------------


def test_a_crash_while_writing_leaves_the_old_notebook_whole(tmp_path, monkeypatch):
    path = tmp_path / "nb.ipynb"
    nbformat.write(tiny_notebook(("print(1)", "1\n")), path)
    before = path.read_bytes()

    def crash(nb, f, **kwargs):
        f.write('{"cells": [')  # half a notebook
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(execute_notebooks.nbformat, "write", crash)
    with pytest.raises(OSError, match="No space left"):
        execute_notebooks.write_atomically(tiny_notebook(("print(2)", "2\n")), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["nb.ipynb"]  # no temporary file left behind


def test_written_notebooks_are_readable_by_others(tmp_path):
    """0644 under the usual umask, also over a file that had mkstemp's 0600 (what the first version wrote)."""
    path = tmp_path / "nb.ipynb"
    nbformat.write(tiny_notebook(("print(1)", "1\n")), path)
    path.chmod(0o600)
    old = os.umask(0o022)
    try:
        execute_notebooks.write_atomically(tiny_notebook(("print(2)", "2\n")), path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert nbformat.read(path, as_version=4).cells[0].source == "print(2)"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


@pytest.fixture
def notebook_repo(tmp_path):
    """A temporary git repository holding one committed notebook (never the project's own)."""
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    _git(repo, "init", "-q")
    path = repo / "notebooks" / "00_tiny.ipynb"
    nbformat.write(tiny_notebook(("print(6 * 7)", None)), path)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "tiny notebook")
    return path


def test_make_notebooks_refuses_uncommitted_changes(notebook_repo, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(execute_notebooks, "execute", lambda path, timeout: ran.append(path.name) or 0.0)
    notebook_repo.write_text(notebook_repo.read_text().replace("6 * 7", "6 * 9"))  # a learner's unsaved edit
    edited = notebook_repo.read_bytes()
    untracked = notebook_repo.with_name("01_new.ipynb")
    nbformat.write(tiny_notebook(("print(0)", None)), untracked)

    for path in (notebook_repo, untracked):
        assert execute_notebooks.main([str(path)]) == 2
        err = capsys.readouterr().err
        assert f"refusing: uncommitted changes in {path.name}" in err and "FORCE=1" in err
    assert ran == [] and notebook_repo.read_bytes() == edited

    assert execute_notebooks.main(["--force", str(notebook_repo), str(untracked)]) == 0
    assert ran == ["00_tiny.ipynb", "01_new.ipynb"]


def test_make_notebooks_outside_git_refuses_clearly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above tmp_path either
    monkeypatch.setattr(execute_notebooks, "execute", lambda path, timeout: pytest.fail("executed"))
    path = tmp_path / "00_loose.ipynb"
    nbformat.write(tiny_notebook(("print(1)", None)), path)
    assert execute_notebooks.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "cannot tell whether the notebooks have uncommitted changes" in err and "FORCE=1" in err


def test_make_notebooks_executes_a_committed_notebook_in_place(notebook_repo, capsys):
    """The real thing on the tiny notebook: a fresh `smolkit` kernel, outputs saved, 0644, nothing else written."""
    old = os.umask(0o022)
    try:
        assert execute_notebooks.main([str(notebook_repo)]) == 0
    finally:
        os.umask(old)
    assert "00_tiny.ipynb: executed in" in capsys.readouterr().out
    cell = nbformat.read(notebook_repo, as_version=4).cells[0]
    assert [o.get("text") for o in cell.outputs] == ["42\n"]
    assert notebook_repo.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in notebook_repo.parent.iterdir()) == ["00_tiny.ipynb"]
    assert _git(notebook_repo.parent, "status", "--porcelain").strip() == "M notebooks/00_tiny.ipynb"


# -- the embedded model's cache: written atomically, validated on load ---------------------------------------------


@pytest.fixture
def quick_conversion(lm, monkeypatch):
    """convert_embedded with the GGUF reading replaced by a tiny Llama (the writing is the real code): seconds,
    not the ~15 s de-quantization. Returns the tiny model, whose methods a test may break to crash the write."""
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=32,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", classmethod(lambda cls, *a, **k: lm.tokenizer))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(lambda cls, *a, **k: model))
    return model


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("."))


def test_a_finished_conversion_is_sound_and_readable_by_everyone(quick_conversion, tmp_path):
    folder = convert_embedded(tmp_path / "cache" / "model", embedded_gguf_path())
    assert cache_problem(folder, embedded_gguf_path()) is None
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o644} and folder.stat().st_mode & 0o777 == 0o755
    assert _leftovers(folder) == []


@pytest.mark.parametrize("crash", [OSError(28, "No space left on device"), KeyboardInterrupt()], ids=repr)
@pytest.mark.parametrize("previous", [False, True], ids=["first-conversion", "over-a-sound-cache"])
def test_a_crash_mid_conversion_leaves_no_half_folder(quick_conversion, tmp_path, crash, previous):
    folder = tmp_path / "cache" / "model"
    if previous:
        convert_embedded(folder, embedded_gguf_path())
    before = _listing(folder) if previous else None

    def fail(*args, **kwargs):  # after model.safetensors and config.json are written into the temporary folder
        raise crash

    quick_conversion.generation_config.save_pretrained = fail
    with pytest.raises(type(crash)):
        convert_embedded(folder, embedded_gguf_path())
    if previous:
        assert _listing(folder) == before and cache_problem(folder) is None  # the old cache, whole
    else:
        assert not folder.exists()  # no cache rather than half of one
    assert _leftovers(folder) == []


def test_what_killed_conversions_left_is_removed_later(quick_conversion, tmp_path):
    """A SIGKILLed kernel runs no `finally`: its temporary folder stays; the next conversion removes it once it
    is clearly abandoned, and leaves a recent one (another conversion may be running)."""
    folder = tmp_path / "cache" / "model"
    folder.parent.mkdir(parents=True)
    stale, recent = folder.parent / ".model.tmp-dead", folder.parent / ".model.tmp-running"
    for path in (stale, recent):
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"\0" * 1000)
    hours_ago = time.time() - STALE_SECONDS - 60
    os.utime(stale, (hours_ago, hours_ago))
    convert_embedded(folder, embedded_gguf_path())
    assert not stale.exists() and recent.exists()
    assert remove_stale_temporaries(folder, older_than=-1) == [recent] and _leftovers(folder) == []


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "generation_config.json"])
def test_garbled_json_of_the_right_size_is_detected(quick_conversion, tmp_path, name):
    folder = convert_embedded(tmp_path / "cache" / "model", embedded_gguf_path())
    path = folder / name
    text = path.read_text()
    path.write_text("#" + text[1:])  # same size, no longer JSON
    assert f"{name} is unreadable" in cache_problem(folder)


def test_a_manifest_that_lies_about_sizes_is_detected(quick_conversion, tmp_path):
    folder = convert_embedded(tmp_path / "cache" / "model", embedded_gguf_path())
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["config.json"] += 1
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert "config.json has" in cache_problem(folder)
    shutil.rmtree(folder)
    assert cache_problem(folder) == "not converted yet"
