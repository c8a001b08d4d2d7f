"""The benchmark scripts run (in their --smoke mode) and print their measurements."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_probe_benchmark_prints_relative_costs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "probes.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for probe in ("spp", "hessian", "weights", "shattered", "lesion"):
        assert re.search(rf"probe {probe} +[\d.]+ s +[\d.]+ × an epoch", done.stdout), done.stdout
    assert len(re.findall(r"exact Hessian, +\d+ parameters: +[\d.]+ s", done.stdout)) == 2
