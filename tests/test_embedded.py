"""The embedded model's cache (smolkit.embedded) refuses what it did not write: manifest entries that are not plain
names of regular files in the cache folder (issue 23, item 3), and folders, locks and files that another account
could have written (issue 23, item 1, tried as a second local account would)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
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
