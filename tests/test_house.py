"""The shape of the house: imports run one way, the package root stays small, modules
stay short, and the cheap commands stay cheap.

Every import counts, at the top of a module or inside a function: an import moved into
a function to dodge a circle is still a circle (STYLE.md: imports run one way).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from support.reports import make_report, write

PACKAGE = Path(__file__).resolve().parent.parent / "harness"
MAX_ROOT_FILES = 10
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Dotted name -> file, a package named by its ``__init__.py``."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every dotted name ``name`` imports, anywhere in its file: ``import a.b``, ``from a import
    b`` (both ``a`` and ``a.b``, since b may be a module) and relative forms resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    """Module -> the harness modules it imports. A module importing a package it sits in
    (its ``__init__``) is not an arrow: Python runs that ``__init__`` first anyway."""
    modules = _modules()

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph = {}
    for name, path in modules.items():
        targets = {resolve(t) for t in _imports(name, path) if t.split(".")[0] == PACKAGE.name}
        graph[name] = {t for t in targets if t and t != name and not name.startswith(t + ".")}
    return graph


def _circle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A shortest path start -> ... -> start, if there is one (breadth first)."""
    came_from = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    path = [node]
                    while came_from[path[-1]] is not None:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    return None


def test_no_two_modules_import_each_other_even_inside_functions():
    graph = _graph()
    assert len(graph) > 40 and graph["harness.cli"], "the walk found the package and its imports"
    circles, seen = [], set()
    for name in sorted(graph):
        if name in seen:
            continue
        circle = _circle_through(graph, name)
        if circle:
            seen.update(circle)
            circles.append(" -> ".join(circle))
    assert not circles, "import circles (each arrow an import, top level or inside a function):\n" + \
        "\n".join(circles)


def test_the_circle_finder_sees_function_level_relative_and_package_imports(tmp_path):
    """The walk above would pass vacuously if it missed a form; these are the forms."""
    code = ("from . import sibling\n"
            "from harness import cli\n"
            "def f():\n    from ..gate.compare import collect\n    import harness.sweep.cells\n")
    path = tmp_path / "mod.py"
    path.write_text(code)
    found = _imports("harness.run.mod", path)
    assert {"harness.run.sibling", "harness.cli", "harness.gate.compare", "harness.sweep.cells"} <= found
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circle_through(graph, "a") == ["a", "b", "c", "a"] and _circle_through(graph, "d") is None


def test_the_package_root_holds_few_files():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_FILES, f"{len(root)} .py files directly in harness/: {root}"


def test_no_module_passes_400_lines():
    long = {str(path.relative_to(PACKAGE.parent)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: " + ", ".join(f"{p} ({n})" for p, n in sorted(long.items()))


# --- cheap commands stay cheap: --help, compare, report and bisect's checks import neither torch nor accelerate ---

def _imports_after(script: str) -> str:
    code = f"import sys\nfrom harness.cli import main\n{script}\n" \
           "print('HEAVY', [m for m in ('torch', 'accelerate', 'scipy') if m in sys.modules], file=sys.stderr)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_help_compare_and_report_never_import_torch(tmp_path):
    report = make_report()
    report["environment"]["git"] = {"commit": "a" * 40, "dirty": False, "branch": None}
    a = write(tmp_path, "a", report)
    err = _imports_after(f"""
try:
    main(["--help"])
except SystemExit:
    pass
assert main(["compare", {str(a)!r}, {str(a)!r}, "--format", "json"]) == 0
assert main(["compare", "--calibrate", {str(a)!r}, {str(a)!r}]) == 0
assert main(["report", {str(a)!r}, "--output", {str(tmp_path / "hw")!r}, "--no-plots"]) == 0
assert main(["history", "add", {str(tmp_path / "store")!r}, {str(a)!r}]) == 0
assert main(["bisect", "--good", "a", "--bad", "b", "--repo", {str(tmp_path)!r}, "x.yaml"]) == 2  # not a repository
assert "matplotlib" not in sys.modules
""")
    assert "HEAVY []" in err and (tmp_path / "hw" / "report.html").is_file()


@pytest.mark.slow  # matplotlib draws the plots: seconds on a busy machine
def test_report_with_plots_never_imports_torch(tmp_path):
    a = write(tmp_path, "a", make_report())
    err = _imports_after(f"assert main(['report', {str(a)!r}, '--output', {str(tmp_path / 'hw')!r}]) == 0")
    assert "HEAVY []" in err
