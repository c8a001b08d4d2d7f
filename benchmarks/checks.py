"""The check loop of the device scripts (gpu_path.py, ray_gpu.py): each check in a scratch folder
of its own, one line each (`ok` / `FAILED` with its numbers), a check that raises failed;
then one line for all and the exit code."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def run_checks(
    checks: Sequence[Callable[..., dict[str, Any]]], call: Callable[[Callable, Path], dict]
) -> list[dict[str, Any]]:
    """``call(check, folder)`` for each check; the results, each with its check's name."""
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for check in checks:
            folder = Path(scratch) / check.__name__
            folder.mkdir()
            try:
                found = call(check, folder)
            except Exception as exc:  # a check that raises failed: say how, go on
                found = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            results.append({"check": check.__name__, **found})
            figures = ", ".join(f"{k} {v}" for k, v in found.items() if k != "ok")
            print(f"  {'ok    ' if found['ok'] else 'FAILED'} {check.__name__}: {figures}")
    return results


def finish(name: str, results: list[dict[str, Any]]) -> int:
    """The closing line (how many held, the names of those that failed) and the exit code."""
    failed = [r["check"] for r in results if not r["ok"]]
    print(f"{name}: {len(results) - len(failed)} of {len(results)} ok", *failed)
    return 1 if failed else 0
