"""Rerun the notebooks after an upgrade (transformers, torch, another machine) and report every output that moved.

``make regress`` reruns every notebook in the kit's venv and compares it with the committed outputs;
``make regress TRANSFORMERS=5.24.0`` runs them on that transformers (a venv of environment/compat.sh) instead, and
``AGAINST=5.17.0`` compares with a run on that version rather than with the committed outputs. The report
(Markdown, ``artifacts/regress/report.md``) lists, for each cell whose text output differs, the stored and the new
line and each number that moved with the size of the move, and judges it by the rule ``make test`` applies
(tests/nbval_numbers.py): a decimal within one unit of its last printed digit is float noise; anything else (another
token, another count, another sampled word, a decimal that moved further) is a real change, which the maintainer
reads before accepting the upgrade. nbval alone would say "1 failed".

By hand: nbval and nbdime compare outputs but neither judges numbers by the kit's noise rule nor writes a report.

    python -m tests.regress run --out DIR [--python VENV_PYTHON] [NOTEBOOK ...]
    python -m tests.regress compare BASELINE NEW --report PATH   (each a folder of run notebooks, or "committed")
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import difflib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import nbformat

from environment.execute_notebooks import run_notebook, write_atomically
from tests.nbval_numbers import _split, numbers_match

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
ENVIRONMENT = "environment.json"
PROBE = """
import json, platform, torch, transformers
names = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
cpu = names[0] if names else platform.machine()
print(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                  "python": platform.python_version(), "cpu": cpu,
                  "kernels": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}))
"""


@dataclasses.dataclass(frozen=True)
class Moved:
    """One line of one cell's output that differs between the baseline and the new run."""

    notebook: str
    cell: int
    stored: str
    new: str

    @property
    def numbers(self) -> list[tuple[str, str]]:
        """The numbers at the same places that differ, as (stored, new); empty when the words differ."""
        old, new = _split(self.stored), _split(self.new)
        if [kind for kind, _ in old] != [kind for kind, _ in new]:
            return []
        if any(kind == "text" and a != b for (kind, a), (_, b) in zip(old, new, strict=True)):
            return []
        return [(a, b) for (kind, a), (_, b) in zip(old, new, strict=True) if kind == "number" and a != b]

    @property
    def noise(self) -> bool:
        """Float noise by the kit's rule: only numbers moved, each within one unit of its last printed digit."""
        pairs = self.numbers
        return bool(pairs) and all(numbers_match(a, b) for a, b in pairs)


def sanitizers(path: Path = SANITIZE) -> list[tuple[re.Pattern, str]]:
    """nbval's sanitizers (timings, addresses), applied to both sides before comparing, as make test does."""
    config = configparser.ConfigParser()
    config.read(path)
    return [(re.compile(config[s]["regex"]), config[s]["replace"]) for s in config.sections()]


def cell_text(cell: nbformat.NotebookNode, rules: list[tuple[re.Pattern, str]]) -> str:
    """A code cell's compared text: its streams, plain-text results and errors, in order, sanitized."""
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif output.get("output_type") == "error":
            parts.append(f"{output['ename']}: {output['evalue']}\n")
        elif "text/plain" in output.get("data", {}):
            parts.append(output["data"]["text/plain"] + "\n")
    text = "".join(parts)
    for pattern, replace in rules:
        text = pattern.sub(replace, text)
    return text


UNCOMPARED_TAGS = {"nbval-ignore-output", "nbval-skip"}
UNCOMPARED_COMMENTS = ("# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP")


def compared(cell: nbformat.NotebookNode) -> bool:
    """Whether make test compares this code cell's output (nbval's tags and comments that say not to)."""
    tags = set(cell.get("metadata", {}).get("tags", []))
    return not tags & UNCOMPARED_TAGS and not any(c in cell.source for c in UNCOMPARED_COMMENTS)


def compare(name: str, stored: nbformat.NotebookNode, new: nbformat.NotebookNode) -> tuple[int, list[Moved]]:
    """(code cells compared, lines that moved) between two runs of notebook ``name``; cells make test does not
    compare (tagged nbval-ignore-output or nbval-skip: unseeded samples, paths, timings) are left out. Cells are
    numbered as nbval numbers them, counting every code cell."""
    rules = sanitizers()
    old_cells = [c for c in stored.cells if c.cell_type == "code"]
    new_cells = [c for c in new.cells if c.cell_type == "code"]
    moved, count = [], 0
    for index, (a, b) in enumerate(zip(old_cells, new_cells, strict=False)):
        if not compared(a):
            continue
        count += 1
        before, after = cell_text(a, rules).splitlines(), cell_text(b, rules).splitlines()
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            old_lines, new_lines = before[i1:i2], after[j1:j2]
            width = max(len(old_lines), len(new_lines))
            old_lines += [""] * (width - len(old_lines))
            new_lines += [""] * (width - len(new_lines))
            moved += [Moved(name, index, x, y) for x, y in zip(old_lines, new_lines, strict=True)]
    return count, moved


def change_size(stored: str, new: str) -> str:
    """'+0.001 (+0.24 %)' for two printed numbers."""
    a, b = Decimal(stored.replace(",", "")), Decimal(new.replace(",", ""))
    relative = f" ({float((b - a) / a):+.2%})" if a else ""
    return f"{b - a:+}{relative}"


def _environment_row(label: str, base: dict, new: dict) -> str:
    return f"| {label} | {base.get(label, '?')} | {new.get(label, '?')} |"


def report(base: tuple[str, dict], new: tuple[str, dict], results: dict[str, tuple[int, list[Moved]]]) -> str:
    """The Markdown report: environments, a summary per notebook, then every real change and every noise move."""
    (base_label, base_env), (new_label, new_env) = base, new
    moved = [m for _, lines in results.values() for m in lines]
    changes, noise = [m for m in moved if not m.noise], [m for m in moved if m.noise]
    lines = [
        f"# Notebook outputs: {new_label} against {base_label}",
        "",
        "Made by `python -m tests.regress` (`make regress`); the rule is make test's (tests/nbval_numbers.py): a",
        "decimal within one unit of its last printed digit is float noise, every other difference is a real change.",
        "",
        f"| | baseline: {base_label} | new: {new_label} |",
        "|---|---|---|",
        *(_environment_row(key, base_env, new_env) for key in ("transformers", "torch", "python", "cpu", "kernels",
                                                                "threads", "commit")),
        "",
        f"**{sum(n for n, _ in results.values())} compared code cells in {len(results)} notebooks: "
        f"{len({(m.notebook, m.cell) for m in changes})} cells with real changes, "
        f"{len({(m.notebook, m.cell) for m in noise})} with float noise only.**",
        "",
        "| notebook | compared code cells | lines changed | lines with float noise |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {n} | {sum(not m.noise for m in ms)} | {sum(m.noise for m in ms)} |"
          for name, (n, ms) in results.items()),
        "",
        "## Real changes",
        "",
        *(_change_lines(m) for m in changes),
        *([] if changes else ["None."]),
        "",
        "## Float noise (within the rule)",
        "",
        *(["| notebook | cell | stored | new | change |", "|---|---:|---|---|---|"] if noise else ["None."]),
        *(f"| {m.notebook} | {m.cell} | {a} | {b} | {change_size(a, b)} |" for m in noise for a, b in m.numbers),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _change_lines(m: Moved) -> str:
    sizes = "; ".join(f"{a} -> {b} ({change_size(a, b)})" for a, b in m.numbers)
    what = f"numbers moved beyond one unit of the last digit: {sizes}" if sizes else "the words differ"
    return f"- **{m.notebook}, cell {m.cell}**: {what}\n\n  ```diff\n  - {m.stored}\n  + {m.new}\n  ```\n"


def probe(python: str) -> dict:
    """Versions and processor of the interpreter that runs the notebooks."""
    out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def kernel_for(python: str, folder: Path) -> tuple[str, dict[str, str]]:
    """A kernel named for ``python`` (a spec written into ``folder``) and the environment that finds it; the kit is
    imported from this checkout, whatever the venv."""
    name, python = "smolkit-regress", os.path.abspath(python)  # the kernel starts in the notebook's folder
    spec = folder / "kernels" / name
    spec.mkdir(parents=True, exist_ok=True)
    argv = [python, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python"}))
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return name, {**os.environ, "PYTHONPATH": path}


def run(paths: list[Path], out: Path, python: str, timeout: int) -> None:
    """Run each notebook in ``python``'s kernel and save it, with the run's environment, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="smolkit-regress-") as folder:
        name, env = kernel_for(python, Path(folder))
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [folder, os.environ.get("JUPYTER_PATH")]))
        for path in paths:
            start = time.perf_counter()
            write_atomically(run_notebook(path, timeout, kernel_name=name, env=env), out / path.name)
            print(f"{path.name}: run in {time.perf_counter() - start:.0f} s", flush=True)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    (out / ENVIRONMENT).write_text(json.dumps({**probe(python), "commit": commit.stdout.strip() or "?"}, indent=1))


def load_run(folder: str) -> tuple[str, dict, dict[str, nbformat.NotebookNode]]:
    """(label, environment, notebooks by name) of a run folder, or of the committed notebooks ("committed")."""
    if folder == "committed":
        found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
        env = {"transformers": "as committed (requirements.txt)", "torch": "as committed"}
        return "committed outputs", env, {p.name: nbformat.read(p, as_version=4) for p in found}
    path = Path(folder)
    env = json.loads((path / ENVIRONMENT).read_text())
    label = f"transformers {env['transformers']}, torch {env['torch']}"
    return label, env, {p.name: nbformat.read(p, as_version=4) for p in sorted(path.glob("*.ipynb"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    running = commands.add_parser("run", help="run the notebooks into a folder")
    running.add_argument("--out", type=Path, required=True)
    running.add_argument("--python", default=sys.executable, help="the interpreter of the venv to run them in")
    running.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    running.add_argument("notebooks", nargs="*", type=Path)
    comparing = commands.add_parser("compare", help="compare two runs and write the report")
    comparing.add_argument("baseline")
    comparing.add_argument("new")
    comparing.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "run":
        paths = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
        run(paths, args.out, args.python, args.timeout)
        return 0
    base_label, base_env, base = load_run(args.baseline)
    new_label, new_env, new = load_run(args.new)
    results = {name: compare(name, base[name], nb) for name, nb in new.items() if name in base}
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report((base_label, base_env), (new_label, new_env), results))
    changed = sum(not m.noise for _, ms in results.values() for m in ms)
    print(f"{args.report}: {changed} changed line(s) beyond float noise in {len(results)} notebook(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
