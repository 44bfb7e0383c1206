"""How long each section of each notebook takes to run (`python bench/time_notebooks.py --out ...`).

For the facilitator's paths (workshop/README.md): every numbered notebook is executed from a clean
`smolkit` kernel, as `make notebooks` does (the embedded model, the CPU), but on a copy in a temporary folder, so
the committed notebooks are never written. nbclient records when each cell started and ended; a section is a
markdown heading and the cells after it, up to the next heading, and gets the seconds of its code cells and the
words of its text. The kernel's start, before the first cell, is counted apart. Prints JSON (--out writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
HEADING = re.compile(r"^(#{1,3}) +(.+)$", re.MULTILINE)


def cell_seconds(cell: nbformat.NotebookNode) -> float:
    """Seconds between the kernel starting a code cell and its reply, from nbclient's recorded timestamps."""
    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def sections(nb: nbformat.NotebookNode) -> list[dict]:
    """The notebook cut at its headings: each heading with the run seconds and text words of the cells under it.

    A markdown cell with several headings (an explanation and the show that follows it) opens one section, named
    by its headings joined with " + "."""
    out = [{"heading": "(before the first heading)", "seconds": 0.0, "words": 0, "code_cells": 0}]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            headings = [m.group(2).strip() for m in HEADING.finditer(cell.source)]
            if headings:
                out.append({"heading": " + ".join(headings), "seconds": 0.0, "words": 0, "code_cells": 0})
            out[-1]["words"] += len(cell.source.split())
        elif cell.cell_type == "code":
            out[-1]["seconds"] = round(out[-1]["seconds"] + cell_seconds(cell), 2)
            out[-1]["code_cells"] += 1
    return [s for s in out if s["code_cells"] or s["words"]]


def run(path: Path, timeout: int) -> dict:
    """Execute a copy of ``path`` in a temporary folder; its sections, kernel start and total wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        shutil.copy(path, copy)
        nb = nbformat.read(copy, as_version=4)
        client = NotebookClient(nb, timeout=timeout, kernel_name="smolkit", record_timing=True,
                                resources={"metadata": {"path": str(path.parent)}})  # fmt: skip
        start = time.perf_counter()
        client.execute(env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0"})
        wall = time.perf_counter() - start
    found = sections(nb)
    return {"wall_seconds": round(wall, 1), "kernel_start_seconds": round(wall - sum(s["seconds"] for s in found), 1),
            "sections": found}  # fmt: skip


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average_at_start": os.getloadavg()[0]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/NN_*.ipynb")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--out", type=Path, help="write the JSON here (one notebook's run updates its entry)")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    result = json.loads(args.out.read_text()) if args.out and args.out.exists() else {"notebooks": {}}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    nice = f"nice -n {os.nice(0)} " if os.nice(0) else ""  # as run: the niceness this process has
    result.update(machine=machine(), command=nice + " ".join([Path(sys.executable).name, *sys.argv]))
    for path in paths:
        entry = run(path, args.timeout)
        entry["commit"] = commit.stdout.strip()
        entry["load_average_after"] = round(os.getloadavg()[0], 2)
        result["notebooks"][path.name] = entry
        print(f"{path.name}: {entry['wall_seconds']} s", file=sys.stderr)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.out:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
