"""Execute the numbered notebooks from a clean kernel and save them with their outputs (`make notebooks`).

The committed outputs are the regression baseline nbval compares against, so they are produced the same way every
time: the `smolkit` kernel, the embedded model, the CPU (CUDA hidden). Each notebook is written atomically
(a temporary file, then a rename), and a notebook with uncommitted changes is refused unless --force is given, so
that nobody's unsaved edits are overwritten.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from smolkit.files import write_text_atomically

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def uncommitted(path: Path) -> bool:
    """True when git sees changes to ``path`` that are not committed (or the file is untracked).

    Asks the repository the notebook lives in (a notebook outside any git repository is an error)."""
    out = subprocess.run(
        ["git", "status", "--porcelain", "--", path.name], cwd=path.parent, capture_output=True, text=True, check=True
    ).stdout
    return bool(out.strip())


def run_notebook(
    path: Path, timeout: int = 900, kernel_name: str = "smolkit", env: dict[str, str] | None = None
) -> nbformat.NotebookNode:
    """``path`` run top to bottom in a fresh kernel, on the CPU (CUDA hidden), in the notebook's folder; the file
    itself is left as it is. ``env``: the kernel's environment (default: this process's)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
        store_widget_state=True,
    )
    client.execute(env={**(os.environ if env is None else env), "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0"})
    return nb


def execute(path: Path, timeout: int) -> float:
    """Run ``path`` top to bottom in a fresh `smolkit` kernel and replace it atomically; returns the seconds taken."""
    start = time.perf_counter()
    nb = run_notebook(path, timeout)
    seconds = time.perf_counter() - start
    write_atomically(nb, path)
    return seconds


def write_atomically(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write ``nb`` to ``path`` whole or not at all (a crash leaves the old notebook), readable by the other
    accounts of a shared workshop folder: ``smolkit.files.write_text_atomically``."""
    text = nbformat.writes(nb)
    write_text_atomically(path, text if text.endswith("\n") else text + "\n")  # as nbformat.write ends a file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/NN_*.ipynb")
    parser.add_argument("--force", action="store_true", help="also run notebooks with uncommitted changes")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"no such notebook: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    if not args.force:
        try:
            dirty = [p for p in paths if uncommitted(p)]
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", None) or err
            print(f"refusing: cannot tell whether the notebooks have uncommitted changes (git: {str(detail).strip()});"
                  " run with FORCE=1 (--force) to execute them anyway", file=sys.stderr)  # fmt: skip
            return 2
        if dirty:
            names = ", ".join(p.name for p in dirty)
            print(f"refusing: uncommitted changes in {names}; commit them, or run with FORCE=1 (--force)",
                  file=sys.stderr)  # fmt: skip
            return 2
    total = 0.0
    for path in paths:
        seconds = execute(path, args.timeout)
        total += seconds
        print(f"{path.name}: executed in {seconds:.1f} s")
    print(f"{len(paths)} notebook(s) in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
