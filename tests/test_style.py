"""The code stays ruff- and mypy-clean (STYLE.md habit 7), checked in the same test run as CI."""

from __future__ import annotations

import subprocess
import sys

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
