"""Nothing lost: tests never write to notebooks, `make notebooks` writes atomically and refuses uncommitted work,
and the embedded model's cache is written atomically and validated on load.

Everything here works on copies in temporary folders (a temporary git repository for `make notebooks`), never on
the committed notebooks or the real model cache.
"""

from __future__ import annotations

import json
import os
import random
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

from smolkit import embedded
from smolkit.embedded import (
    MANIFEST,
    CacheError,
    cache_problem,
    convert_embedded,
    embedded_cache_path,
    embedded_gguf_path,
    leftovers,
)
from smolkit.testing import load_script

REPO = Path(__file__).resolve().parents[1]


execute_notebooks = load_script(REPO / "environment" / "execute_notebooks.py")


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

    def crash(fd):  # the new notebook is in the temporary file, not yet on disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
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
    nb, reference = tiny_notebook(("print(3)", "3\n")), tmp_path / "reference.ipynb"
    execute_notebooks.write_atomically(nb, path)
    nbformat.write(nb, reference)
    assert path.read_bytes() == reference.read_bytes()  # byte for byte what nbformat.write gives, final newline too


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


TINY_LLAMA = dict(
    vocab_size=64, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
    num_key_value_heads=1, max_position_embeddings=32,
)  # fmt: skip


@pytest.fixture
def quick_conversion(lm, monkeypatch):
    """convert_embedded with the GGUF reading replaced by a tiny Llama (the writing is the real code): seconds,
    not the ~15 s de-quantization. Returns the tiny model, whose methods a test may break to crash the write."""
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", classmethod(lambda cls, *a, **k: lm.tokenizer))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(lambda cls, *a, **k: model))
    return model


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


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


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "generation_config.json"])
def test_garbled_json_of_the_right_size_is_detected(quick_conversion, tmp_path, name):
    folder = convert_embedded(tmp_path / "cache" / "model", embedded_gguf_path())
    path = folder / name
    text = path.read_text()
    path.write_text("#" + text[1:])  # same size, no longer JSON
    assert f"{name} does not match its SHA-256 digest" in cache_problem(folder)


def test_a_manifest_that_lies_about_sizes_is_detected(quick_conversion, tmp_path):
    folder = convert_embedded(tmp_path / "cache" / "model", embedded_gguf_path())
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["config.json"]["size"] += 1
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert "config.json has" in cache_problem(folder)
    shutil.rmtree(folder)
    assert cache_problem(folder) == "not converted yet"


def test_the_old_cache_is_deleted_only_once_the_new_one_is_in_place(quick_conversion, tmp_path, monkeypatch):
    """Issue 17, item 8: the old folder was deleted before the new one was moved in, so a process loading at that
    moment found no folder (FileNotFoundError)."""
    folder = convert_embedded(tmp_path / "cache" / "model", embedded_gguf_path())
    seen, real_rmtree = [], shutil.rmtree

    def rmtree(path, *args, **kwargs):
        seen.append((Path(path).name, cache_problem(folder)))  # what a reader finds while the old one is deleted
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    convert_embedded(folder, embedded_gguf_path())  # a rebuild over the sound cache
    assert [problem for name, problem in seen if ".old-" in name] == [None]


CONVERSION_CHILD = r"""
import sys, time, torch, transformers
tokenizer_dir, seconds, config = sys.argv[1], float(sys.argv[2]), eval(sys.argv[3])
real_tokenizer = transformers.AutoTokenizer.from_pretrained
real_model = transformers.AutoModelForCausalLM.from_pretrained

def tokenizer(cls, *args, **kwargs):
    return real_tokenizer(tokenizer_dir) if "gguf_file" in kwargs else real_tokenizer(*args, **kwargs)

def model(cls, *args, **kwargs):
    if "gguf_file" not in kwargs:  # loading the converted folder: the real thing
        return real_model(*args, **kwargs)
    time.sleep(seconds)  # the de-quantization (~15 s), shortened but long enough for the starts to overlap
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))

transformers.AutoTokenizer.from_pretrained = classmethod(tokenizer)
transformers.AutoModelForCausalLM.from_pretrained = classmethod(model)
import smolkit
lm = smolkit.load_model(device="cpu")
print("loaded", lm.model.config.hidden_size, flush=True)
"""


def test_kernels_starting_at_once_convert_once_and_all_load(lm, tmp_path):
    """Issue 17, item 8: 9 kernels started at once on an unconverted cache each converted (~20 s, 1.2 GB each), and
    one failed with FileNotFoundError. Four real processes here; the conversion is the tiny model's, slowed."""
    cache = tmp_path / "cache"
    env = {**os.environ, "SMOLKIT_CACHE_DIR": str(cache), "CUDA_VISIBLE_DEVICES": ""}
    args = [sys.executable, "-c", CONVERSION_CHILD, lm.tokenizer.name_or_path, "4", repr(TINY_LLAMA)]
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]  # fmt: skip
    try:
        outputs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0 and "loaded 8" in out, out + err[-3000:]
    assert sum("converting the embedded GGUF" in out for out, _ in outputs) == 1, [out for out, _ in outputs]
    folder = cache / embedded_cache_path().name
    assert cache_problem(folder) is None and leftovers(folder) == []


def test_leftovers_are_removed_at_the_next_load_unless_a_conversion_runs(
    quick_conversion, tmp_path, monkeypatch, capsys
):
    """Issue 17, item 9: what killed conversions left was removed only by a later conversion (never while the cache
    was sound), and only after an hour. Now at the next load, unless a conversion holds the lock: then the
    temporary folder is its own."""
    monkeypatch.setenv("SMOLKIT_CACHE_DIR", str(tmp_path / "cache"))
    folder = convert_embedded(embedded.embedded_cache_path(), embedded_gguf_path())
    dead = folder.parent / f".{folder.name}.tmp-dead"
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"\0" * 1000)
    half = folder / f".{MANIFEST}.tmp-dead"
    half.write_text("{")
    assert leftovers(folder) == [dead, half]
    with embedded._conversion_lock(folder):  # as a conversion running in another process holds it
        assert embedded.ensure_converted() == folder and dead.exists() and half.exists()
    capsys.readouterr()
    assert embedded.ensure_converted() == folder
    assert not dead.exists() and not half.exists() and leftovers(folder) == []
    assert "converting" not in capsys.readouterr().out  # the sound cache was used as it is


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_a_killed_conversion_leaves_a_sound_cache_and_leftovers_found_and_removed(lm, tmp_path, monkeypatch, capsys):
    """Issue 17, item 9, for real: `python -m smolkit convert --force` (the real GGUF conversion) is killed with
    SIGKILL at a random moment; the sound cache it was replacing is untouched, doctor reports the ~500 MB it left,
    and the next load removes them without converting."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SMOLKIT_CACHE_DIR", str(cache))
    folder = embedded.embedded_cache_path()
    shutil.copytree(lm.tokenizer.name_or_path, folder)
    assert cache_problem(folder) is None
    proc = subprocess.Popen([sys.executable, "-m", "smolkit", "convert", "--force"], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for(lambda: leftovers(folder) or proc.poll() is not None, 120, "the conversion to start")
        time.sleep(random.uniform(0.2, 3.0))  # into the de-quantization, the tokenizer or the writing
        assert proc.poll() is None, "the conversion ended before it could be killed"
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    left = leftovers(folder)
    assert left and cache_problem(folder) is None  # the old cache, whole
    from smolkit.doctor import run_checks

    report = run_checks()
    assert report["embedded model"].status == "ok"
    check = report["conversion leftovers"]
    assert check.status == "warn" and "python -m smolkit convert removes them" in check.remedy
    capsys.readouterr()
    assert embedded.ensure_converted() == folder
    assert leftovers(folder) == [] and "converting" not in capsys.readouterr().out
    assert "conversion leftovers" not in {c.name for c in run_checks().checks}


# -- issue 17, item 10: a cache that cannot be written says so, with the remedy ------------------------------------

NO_MOUNT = "smolkit-test: cannot mount"


def _run_with_folder(args: list[str], folder: Path, env: dict, options: str = "ro") -> subprocess.CompletedProcess:
    """Run ``args`` with ``folder`` read-only (``options="ro"``) or on a small disk (``"size=64m"``) for it alone.

    As root, whom permissions do not stop, this takes a private mount namespace (``unshare``) with a read-only bind
    mount or a tmpfs over ``folder``: nothing outside the command sees it. An ordinary user gets ``chmod a-w``.
    """
    if os.geteuid() != 0:
        if options != "ro":
            pytest.skip("a small disk needs a tmpfs mount, which needs root")
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
        for path in modes:
            path.chmod(0o555)
        try:
            return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
    if shutil.which("unshare") is None:
        pytest.skip("as root, a read-only folder needs unshare (util-linux) for a private mount")
    mount = ('mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"' if options == "ro"
             else f'mount -t tmpfs -o {options} tmpfs "$0"')  # fmt: skip
    script = f'{{ {mount}; }} || {{ echo "{NO_MOUNT}" >&2; exit 99; }}; exec "$@"'
    cmd = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, str(folder), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode in (1, 99) and (NO_MOUNT in proc.stderr or proc.stderr.startswith("unshare:")):
        pytest.skip(f"root here may not mount in a private namespace: {proc.stderr.strip()[-200:]}")
    return proc


def _clean_env(tmp_path: Path, **settings: str) -> dict:
    """The environment without the cache settings, plus ``settings``. matplotlib (imported with smolkit) gets a
    config folder of its own: in a read-only HOME it warns on stderr, and it creates a missing HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("SMOLKIT_CACHE_DIR", "XDG_CACHE_HOME", "HOME")}
    (tmp_path / "matplotlib").mkdir(exist_ok=True)
    return {**env, "CUDA_VISIBLE_DEVICES": "", "MPLCONFIGDIR": str(tmp_path / "matplotlib"), **settings}


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


@pytest.mark.parametrize("command", [["convert"], ["generate", "Hi", "--max-new-tokens", "1"]], ids=lambda c: c[0])
def test_a_read_only_cache_dir_without_a_cache_is_one_clear_line(tmp_path, command):
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    proc = _run_with_folder([sys.executable, "-m", "smolkit", *command], cache,
                            _clean_env(tmp_path, SMOLKIT_CACHE_DIR=str(cache), HOME=str(tmp_path)))  # fmt: skip
    err = _one_line_error(proc)
    assert "is not converted yet and cannot be written" in err and "SMOLKIT_CACHE_DIR" in err, err
    assert "not writable" in err or "Read-only file system" in err, err


def test_a_read_only_cache_dir_with_a_damaged_cache_is_one_clear_line(lm, tmp_path):
    cache = tmp_path / "shared-cache"
    folder = cache / embedded_cache_path().name
    shutil.copytree(lm.tokenizer.name_or_path, folder)
    (folder / "tokenizer.json").unlink()
    proc = _run_with_folder([sys.executable, "-m", "smolkit", "generate", "Hi"], cache,
                            _clean_env(tmp_path, SMOLKIT_CACHE_DIR=str(cache), HOME=str(tmp_path)))  # fmt: skip
    err = _one_line_error(proc)
    assert "is unusable (tokenizer.json is missing) and cannot be written" in err and "SMOLKIT_CACHE_DIR" in err
    assert "python -m smolkit convert" in err


def test_a_read_only_home_is_one_clear_line(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    proc = _run_with_folder([sys.executable, "-m", "smolkit", "convert"], home, _clean_env(tmp_path, HOME=str(home)))
    err = _one_line_error(proc)
    assert f"{home}/.cache/smolkit" in err and "SMOLKIT_CACHE_DIR" in err and "cannot be written" in err, err


def test_a_missing_home_is_one_clear_line_and_not_created(tmp_path):
    home = tmp_path / "gone"
    proc = subprocess.run([sys.executable, "-m", "smolkit", "convert"], env=_clean_env(tmp_path, HOME=str(home)),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    err = _one_line_error(proc)
    assert f"HOME ({home}) does not exist" in err and "SMOLKIT_CACHE_DIR" in err, err
    assert not home.exists()


def test_an_empty_home_does_not_put_the_cache_at_the_root(monkeypatch):
    import pwd

    monkeypatch.delenv("SMOLKIT_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", "")
    account_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert embedded.cache_dir() == account_home / ".cache" / "smolkit"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG specification: relative paths are ignored
    assert embedded.cache_dir() == account_home / ".cache" / "smolkit"


def test_a_full_disk_is_refused_before_any_conversion_work(quick_conversion, tmp_path, monkeypatch):
    """Issue 17, item 10: a full disk failed with `No space left on device` after ~22 s of converting, at every
    load. Now the free space is checked first."""
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        classmethod(lambda cls, *a, **k: pytest.fail("converted on a full disk")))  # fmt: skip
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12 - 10**8, 10**8))
    monkeypatch.setenv("SMOLKIT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(CacheError, match=r"not enough disk space: 95 MB free.*SMOLKIT_CACHE_DIR.*disk with room"):
        embedded.ensure_converted()
    assert leftovers(embedded.embedded_cache_path()) == []


def test_a_disk_that_fills_up_while_converting_is_a_clear_error(quick_conversion, tmp_path):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    quick_conversion.generation_config.save_pretrained = full
    folder = tmp_path / "cache" / "model"
    with pytest.raises(CacheError, match=r"not enough disk space \(No space left on device\).*SMOLKIT_CACHE_DIR"):
        convert_embedded(folder, embedded_gguf_path())
    assert not folder.exists() and _leftovers(folder) == []


def test_a_small_disk_is_one_clear_line_before_any_work(tmp_path):
    """The real thing, as root: a 64 MB tmpfs as the cache folder."""
    cache = tmp_path / "small-disk"
    cache.mkdir()
    env = _clean_env(tmp_path, SMOLKIT_CACHE_DIR=str(cache), HOME=str(tmp_path))
    # mode 0755: a tmpfs is world-writable by default, and such a cache folder is refused (issue 23, item 1)
    proc = _run_with_folder([sys.executable, "-m", "smolkit", "convert"], cache, env, options="size=64m,mode=0755")
    err = _one_line_error(proc)
    assert "not enough disk space: 64 MB free" in err and "SMOLKIT_CACHE_DIR" in err, err


def test_a_cache_dir_that_is_a_file_is_a_clear_error(quick_conversion, tmp_path, monkeypatch):
    taken = tmp_path / "notes.txt"
    taken.write_text("not a folder")
    monkeypatch.setenv("SMOLKIT_CACHE_DIR", str(taken))
    with pytest.raises(CacheError, match=r"is not converted yet and cannot be written: .*notes\.txt is a file"):
        embedded.ensure_converted()
    assert taken.read_text() == "not a folder"
