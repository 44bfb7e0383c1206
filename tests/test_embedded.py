"""The embedded model's cache (smolkit.embedded) refuses what it did not write: manifest entries that are not plain
names of regular files in the cache folder (issue 23, item 3), and folders, locks and files that another account
could have written (issue 23, item 1, tried as a second local account would)."""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from smolkit import embedded
from smolkit.embedded import CACHE_FORMAT, MANIFEST, CacheError, cache_problem

FILES = {"model.safetensors": b"weights" * 100, "config.json": b'{"model_type": "llama"}'}


def sound_cache(folder: Path, files: dict[str, bytes] = FILES) -> Path:
    """A cache folder whose manifest matches its files (what a conversion leaves, in miniature)."""
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    entries = {n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()}
    write_manifest(folder, entries)
    return folder


def write_manifest(folder: Path, entries: dict) -> None:
    gguf = embedded.embedded_gguf_path()  # what ensure_converted compares the manifest's source_size with
    manifest = {"format": CACHE_FORMAT, "files": entries, "verified": {}, "source_size": gguf and gguf.stat().st_size}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def add_entry(folder: Path, name: str, size: int = 0) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"][name] = {"size": size, "sha256": hashlib.sha256(b"").hexdigest()}
    (folder / MANIFEST).write_text(json.dumps(manifest))


class Hung(Exception):
    """Not an OSError (TimeoutError is one), so that no ``except OSError`` in the code under test swallows it."""


@contextlib.contextmanager
def within(seconds: int, what: str):
    """Fail instead of hanging (the old code read /dev/zero and opened FIFOs forever)."""

    def timeout(signum, frame):
        raise Hung(f"{what} still ran after {seconds} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_sound_miniature_cache_is_sound(tmp_path):
    assert cache_problem(sound_cache(tmp_path / "model"), full=True) is None


# -- item 3: manifest entries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("/dev/zero", "lists '/dev/zero', which is not the name of a file in the cache folder"),
        ("", "lists '', which is not the name"),
        ("..", "lists '..', which is not the name"),
        ("../model/config.json", "lists '../model/config.json'"),
        ("/etc/hostname", "lists '/etc/hostname'"),
    ],
    ids=["dev-zero", "empty", "dot-dot", "dot-dot-path", "absolute"],
)
def test_an_entry_that_is_not_a_plain_name_is_refused_before_any_read(tmp_path, entry, expected):
    folder = sound_cache(tmp_path / "model")
    add_entry(folder, entry)
    with within(10, "cache_problem"):
        problem = cache_problem(folder, full=True)
    assert problem is not None and expected in problem, problem


def test_a_fifo_in_the_cache_is_refused_without_opening_it(tmp_path):
    folder = sound_cache(tmp_path / "model")
    os.mkfifo(folder / "pipe")
    add_entry(folder, "pipe")
    with within(10, "cache_problem"):
        assert cache_problem(folder, full=True) == "pipe is not a regular file"


def test_a_fifo_as_the_manifest_is_refused_without_hanging(tmp_path):
    folder = sound_cache(tmp_path / "model")
    (folder / MANIFEST).unlink()
    os.mkfifo(folder / MANIFEST)
    with within(10, "cache_problem"):
        assert f"{MANIFEST} is unreadable" in cache_problem(folder, full=True)


@pytest.mark.parametrize("target", ["/dev/zero", "outside.bin"])
def test_a_link_out_of_the_cache_is_refused(tmp_path, target):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(FILES["model.safetensors"])  # the right bytes: only the link is wrong
    folder = sound_cache(tmp_path / "model")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(target if target.startswith("/") else outside)
    with within(10, "cache_problem"):
        problem = cache_problem(folder, full=True)
    assert problem == "model.safetensors is a symbolic link, not a file the conversion wrote"


def test_a_folder_as_an_entry_is_refused(tmp_path):
    folder = sound_cache(tmp_path / "model")
    (folder / "sub").mkdir()
    add_entry(folder, "sub")
    assert cache_problem(folder, full=True) == "sub is not a regular file"


def test_a_bad_entry_in_a_cache_that_cannot_be_written_is_a_cache_error_naming_the_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOLKIT_CACHE_DIR", str(tmp_path))
    folder = sound_cache(embedded.embedded_cache_path())
    add_entry(folder, "/dev/zero")
    monkeypatch.setattr(embedded, "write_problem", lambda folder: f"{folder.parent} is not writable")
    with within(10, "ensure_converted"), pytest.raises(CacheError) as err:
        embedded.ensure_converted()
    assert "lists '/dev/zero'" in str(err.value) and "python -m smolkit convert" in str(err.value)


# -- item 1: a cache no other account can poison ------------------------------------------------------------------


@pytest.fixture
def other_account():
    """A second local account (the neighbour on a shared machine), always removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating a second local account (useradd) needs root; CI runs as root")
    name = f"smk-other-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)
        with pytest.raises(KeyError):
            pwd.getpwnam(name)


@pytest.fixture
def shared_tmp():
    """A folder every account may write in, sticky, as /tmp is."""
    folder = Path(tempfile.mkdtemp(prefix="smolkit-shared-"))
    folder.chmod(0o1777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def as_account(name: str, *command: str) -> None:
    subprocess.run(["runuser", "-u", name, "--", *command], check=True, capture_output=True)


def test_a_cache_planted_by_another_account_is_refused(other_account, shared_tmp, monkeypatch):
    """Issue 23, item 1: a sound-looking cache (manifest digests matching the planted weights) in a folder another
    account made loaded silently. Now it is refused, with a private place to use instead."""
    staging = sound_cache(shared_tmp / "staging")
    for path in [staging, *staging.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    cache = shared_tmp / "smolkit-cache"
    monkeypatch.setenv("SMOLKIT_CACHE_DIR", str(cache))
    as_account(other_account, "mkdir", str(cache))
    as_account(other_account, "cp", "-r", str(staging), str(embedded.embedded_cache_path()))
    with pytest.raises(CacheError) as err:
        embedded.ensure_converted()
    message = str(err.value)
    assert f"belongs to {other_account}" in message and "SMOLKIT_CACHE_DIR" in message, message
    remedy = message.split("To fix it, ")[1]
    assert "mktemp -d" in remedy and "/tmp" not in remedy


def test_a_dangling_lock_link_planted_by_another_account_creates_nothing(other_account, shared_tmp, monkeypatch):
    """Issue 23, item 1: a dangling `.lock` link made the victim create the file it points to."""
    cache, target = shared_tmp / "smolkit-cache", shared_tmp / "made-by-the-victim"
    monkeypatch.setenv("SMOLKIT_CACHE_DIR", str(cache))
    lock = cache / f".{embedded.embedded_cache_path().name}.lock"
    as_account(other_account, "mkdir", str(cache))
    as_account(other_account, "ln", "-s", str(target), str(lock))
    monkeypatch.setattr(embedded, "_write_conversion", lambda tmp, gguf: pytest.fail("converted into their folder"))
    with pytest.raises(CacheError, match="belongs to"):
        embedded.ensure_converted()
    assert not target.exists() and lock.is_symlink()


def test_a_lock_link_in_ones_own_cache_is_not_followed(tmp_path, monkeypatch):
    """Whoever made it (a race, a restore from a backup): the lock is opened with O_NOFOLLOW."""
    monkeypatch.setenv("SMOLKIT_CACHE_DIR", str(tmp_path / "cache"))
    folder = embedded.embedded_cache_path()
    folder.parent.mkdir()
    target = tmp_path / "elsewhere"
    (folder.parent / f".{folder.name}.lock").symlink_to(target)
    monkeypatch.setattr(embedded, "_write_conversion", lambda tmp, gguf: pytest.fail("converted"))
    with pytest.raises(CacheError, match="is a symbolic link, which smolkit never makes"):
        embedded.ensure_converted()
    assert not target.exists()


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o757], ids=oct)
def test_a_cache_folder_others_can_write_is_refused(tmp_path, mode):
    cache = tmp_path / "cache"
    sound_cache(cache / "model")
    cache.chmod(mode)
    with pytest.raises(CacheError, match=r"can be written by other accounts \(mode d"):
        cache_problem(cache / "model")


def test_a_cache_folder_a_shared_group_can_write_is_refused(other_account, tmp_path):
    cache = tmp_path / "cache"
    sound_cache(cache / "model")
    os.chown(cache, -1, pwd.getpwnam(other_account).pw_gid)  # the other account's group
    cache.chmod(0o775)
    with pytest.raises(CacheError, match=r"can be written by other accounts \(mode drwxrwxr-x\)"):
        cache_problem(cache / "model")


def test_group_writable_by_ones_own_private_group_is_trusted(tmp_path):
    """Debian and Ubuntu give each account a group of its own and a umask of 002: folders come out 0775."""
    me = pwd.getpwuid(os.geteuid())
    if grp.getgrgid(me.pw_gid).gr_name != me.pw_name:
        pytest.skip(f"{me.pw_name}'s primary group is not a private group of its own")
    cache = tmp_path / "cache"
    sound_cache(cache / "model")
    cache.chmod(0o775)
    (cache / "model").chmod(0o775)
    assert cache_problem(cache / "model", full=True) is None


def test_a_file_another_account_owns_is_a_problem_to_rebuild(other_account, tmp_path):
    folder = sound_cache(tmp_path / "model")
    os.chown(folder / "config.json", pwd.getpwnam(other_account).pw_uid, -1)
    assert cache_problem(folder) == f"config.json belongs to {other_account} (uid " + (
        f"{pwd.getpwnam(other_account).pw_uid}), not to you or root"
    )


def test_a_folder_of_ones_own_under_a_sticky_shared_folder_is_trusted(shared_tmp):
    folder = sound_cache(shared_tmp / "mine" / "model")
    assert cache_problem(folder, full=True) is None


def test_no_remedy_sends_anyone_to_a_shared_folder():
    assert "/tmp" not in embedded.REMEDY and "mktemp -d" in embedded.REMEDY
