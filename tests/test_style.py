"""The code stays ruff- and mypy-clean (STYLE.md habit 7), checked in the same test run as CI,
and its imports flow one way (no module imports one that imports it back)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_lint_and_format() -> None:
    lint = run("ruff", "check", "resablate", "tests", "benchmarks")
    assert lint.returncode == 0, lint.stdout
    fmt = run("ruff", "format", "--check", "resablate", "tests", "benchmarks")
    assert fmt.returncode == 0, fmt.stdout


def test_mypy() -> None:
    typed = run("mypy", "resablate")
    assert typed.returncode == 0, typed.stdout


def imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The package's modules that ``module`` (at ``path``) imports anywhere: at module level,
    inside a function, or for type checking only. Importing a submodule runs its packages'
    ``__init__`` first, so they count too, unless ``module`` is inside them already (and the
    root package aside)."""
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            named.add(node.module)
            named.update(f"{node.module}.{alias.name}" for alias in node.names)
    found = set()
    for name in named:
        parts = name.split(".")
        packages = (".".join(parts[:i]) for i in range(2, len(parts)))
        found.update(p for p in packages if not module.startswith(p + "."))
        found.add(name)
    return found & modules


def import_cycles(package: Path) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan)."""
    files = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {m: sorted(imports(path, m, set(files)) - {m}) for m, path in files.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles() -> None:
    cycles = import_cycles(ROOT / "resablate")
    assert not cycles, "modules that import each other: " + "; ".join(map(", ".join, cycles))
