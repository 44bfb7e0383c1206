"""Files written whole or not at all: the kit's one atomic write, used for the embedded model's manifest, the
advice measurement (bench/measure_advice.py) and executed notebooks (environment/execute_notebooks.py)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_text_atomically"]


def write_text_atomically(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it (``.NAME.tmp-XXXX``), flushed to disk, and
    ``os.replace``: a reader, or a crash, finds the old file or the new one, never half of one. The file gets
    ``mode``, by default what a plain write gives under the umask (0644 under the usual 022), not mkstemp's 0600,
    which would hide it from the other accounts of a shared workshop folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read the umask is to set it
    os.umask(mask)
    return mask
