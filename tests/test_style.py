"""The code stays ruff- and mypy-clean (STYLE.md habit 7), checked in the same test run as CI,
and its imports flow one way (no module imports one that imports it back)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow  # a minute of CPU
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


# The package's folders are its layers, in the order data flows (YAML -> spec -> sweep -> trial
# -> tracking -> analysis; cli calls them): what each may import is a rule checked here.
PACKAGE = ROOT / "resablate"
SHARED = {"resablate", "resablate.errors", "resablate.registry", "resablate.results"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path, module_level: bool = False) -> set[str]:
    """Every module ``path`` imports (dotted names), anywhere or at module level only."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level else list(ast.walk(tree))
    named: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            named.add(node.module)
            named.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif module_level and isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports nothing
            continue
    return named


def importers(library: str) -> set[str]:
    """The package's modules that import ``library`` (or a part of it) anywhere."""
    return {
        module
        for module, path in modules().items()
        if any(n == library or n.startswith(library + ".") for n in imported(path))
    }


def within(found: set[str], *folders: str) -> set[str]:
    """The modules of ``found`` outside every one of ``folders`` (``resablate.tracking``)."""
    return {m for m in found if not any(m == f or m.startswith(f + ".") for f in folders)}


def test_only_the_tracking_layer_imports_mlflow() -> None:
    assert importers("mlflow") and not within(importers("mlflow"), "resablate.tracking")


def test_only_the_sweeps_ray_folder_imports_ray() -> None:
    assert importers("ray") and not within(importers("ray"), "resablate.sweep.ray")


def test_only_the_sweep_layer_imports_optuna() -> None:
    assert importers("optuna") and not within(importers("optuna"), "resablate.sweep")


def test_the_trial_layer_and_the_networks_know_nothing_of_sweeps_or_stores() -> None:
    """trial/, models/, probes/: torch only; the layers above them are not theirs to import."""
    above = ("resablate.sweep", "resablate.tracking", "resablate.analysis", "resablate.cli")
    for module, path in modules().items():
        if within({module}, "resablate.trial", "resablate.models", "resablate.probes"):
            continue
        names = imported(path)
        assert not {n for n in names if n.split(".")[0] in ("ray", "mlflow", "optuna")}, module
        assert not (names - set(within(names, *above))), module


def test_the_spec_layer_is_data_it_imports_no_torch_ray_or_mlflow() -> None:
    """spec/ reads and checks YAML: at module level it imports only itself and the shared
    vocabulary (catalog reaches the registries of models/ on first use), and importing all of
    it in a fresh Python loads none of torch, Ray, MLflow, Optuna."""
    spec = {m: p for m, p in modules().items() if not within({m}, "resablate.spec")}
    for module, path in spec.items():
        ours = {n for n in imported(path, module_level=True) if n.startswith("resablate")}
        ours = {n for n in ours if n not in SHARED and n.rsplit(".", 1)[0] not in SHARED}
        outside = within(ours, "resablate.spec")
        assert not outside, (module, outside)
    code = (
        f"import sys, {', '.join(spec)}; "
        "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'optuna') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
