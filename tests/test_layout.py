"""The package's layout, checked: imports flow one way, notebooks use only the public API and the public API is
what the notebooks and the README use, functions are short, and no logic is written twice.

Read from the source (AST), nothing is run, so these checks are cheap and fail with the place to look.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import smolkit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "smolkit"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_FUNCTION_LINES = 60
LONG_REASON = "Long because"
"""A function above MAX_FUNCTION_LINES says why in its docstring, with these words."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def smolkit_imports(name: str, tree: ast.Module) -> set[str]:
    """The smolkit modules ``name`` imports anywhere in it (function-local imports too); ``from smolkit import X``
    counts as importing smolkit.X when X is a module, else smolkit itself."""
    known = set(modules_cache)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("smolkit")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smolkit"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    found.discard(name)
    return found


modules_cache = modules()


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_imports_flow_one_way():
    """Only the package's own __init__ (the public API) may import from every module; no module imports it."""
    graph = {name: smolkit_imports(name, tree) for name, tree in modules_cache.items() if name != "smolkit"}
    assert all("smolkit" not in deps for deps in graph.values()), {n: d for n, d in graph.items() if "smolkit" in d}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def notebook_code() -> dict[str, str]:
    """Each notebook's code, magics left out, keyed by 'notebook [cell]'."""
    cells = {}
    for path in NOTEBOOKS:
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                cells[f"{path.name} [{i}]"] = re.sub(r"^\s*[%!].*$", "", source, flags=re.M)
    return cells


def test_notebooks_use_only_the_public_api():
    public = set(smolkit.__all__)
    problems = []
    for where, source in notebook_code().items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smolkit"):
                problems.append(f"{where}: from {node.module} import ...")
            if isinstance(node, ast.Import) and any(a.name.startswith("smolkit.") for a in node.names):
                problems.append(f"{where}: import {', '.join(a.name for a in node.names)}")
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "smolkit"
                    and node.attr not in public):  # fmt: skip
                problems.append(f"{where}: smolkit.{node.attr} is not in smolkit.__all__")
    assert problems == []


def test_the_public_api_is_what_notebooks_and_readme_use():
    used = "\n".join(notebook_code().values()) + (ROOT / "README.md").read_text()
    unused = [name for name in smolkit.__all__ if not re.search(rf"\b{re.escape(name)}\b", used)]
    assert unused == [], f"exported but used by no notebook and not in the README: {unused}"
    assert all(hasattr(smolkit, name) for name in smolkit.__all__)


def functions() -> list[tuple[str, ast.FunctionDef]]:
    return [
        (f"{name}.{node.name}:{node.lineno}", node)
        for name, tree in modules_cache.items()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]


def test_functions_are_short_or_say_why():
    long = [
        f"{where} ({node.end_lineno - node.lineno + 1} lines)"
        for where, node in functions()
        if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES and LONG_REASON not in (ast.get_docstring(node) or "")
    ]
    assert long == []


def shape(node: ast.AST) -> str:
    """A statement with its names, attributes, strings and numbers blanked: the same logic with other names gives
    the same shape."""
    dumped = ast.dump(node, annotate_fields=False, include_attributes=False)
    dumped = re.sub(r"Name\('[^']*'", "Name('_'", dumped)
    dumped = re.sub(r"Constant\([^()]*\)", "Constant(_)", dumped)
    dumped = re.sub(r"arg\('[^']*'", "arg('_'", dumped)
    return re.sub(r", '[^']*', (Load|Store|Del)\(\)", r", '_', \1()", dumped)


RUN = 4
"""Statements in a row that may not appear twice: four statements are most often six lines or more."""


def statement_runs() -> dict[tuple[str, ...], list[str]]:
    """Every run of RUN consecutive statements (by shape) in any block of the package, and where it stands."""
    runs: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for name, tree in modules_cache.items():
        for node in ast.walk(tree):
            for field in ("body", "orelse", "finalbody"):
                body = getattr(node, field, [])
                block = [s for s in body if isinstance(s, ast.stmt)] if isinstance(body, list) else []
                block = [s for s in block if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
                if isinstance(node, ast.Module):
                    block = [s for s in block if not isinstance(s, (ast.Import, ast.ImportFrom))]
                for i in range(len(block) - RUN + 1):
                    window = block[i : i + RUN]
                    if sum(s.end_lineno - s.lineno + 1 for s in window) >= 6:
                        runs[tuple(shape(s) for s in window)].append(f"{name}:{window[0].lineno}")
    return runs


def test_no_logic_is_written_twice():
    repeated = {where[0]: where[1:] for where in statement_runs().values() if len(where) > 1}
    assert repeated == {}, f"the same statements (by shape) stand in several places: {repeated}"


def test_importing_the_kit_leaves_matplotlib_and_ipywidgets_for_the_figures():
    """The command line and scripts that plot nothing do not import matplotlib (which writes its config folder
    under HOME) or ipywidgets; the figures and explorers import them on first use."""
    import subprocess
    import sys

    code = (
        "import sys, smolkit; before = {'matplotlib', 'ipywidgets'} & set(sys.modules); smolkit.plot_distribution; "
        "print(sorted(before), 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "True"]


def test_every_room_is_on_the_readme_map_and_the_package_reaches_into_none():
    """Each tracked top-level folder has its line in the README's layout block (learners, facilitators and
    maintainers find their part there), and the package imports nothing from the rooms around it: bench/ and
    workshop/ use smolkit, never the other way."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```")[1]
    mapped = {line.split()[0].rstrip("/") for line in block.strip().splitlines()}
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    folders = {path.split("/")[0] for path in tracked.splitlines() if "/" in path and not path.startswith(".")}
    assert folders <= mapped, f"folders missing from the README's layout: {sorted(folders - mapped)}"
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) (bench|workshop)\b", text, re.M), path
