"""The benchmark scripts run (in their --smoke mode) and print their measurements; the three
longest (overhead, driver scale, headline: about 2 minutes on 2 cores) under `pytest -m bench`.
The scripts the device check runs (gpu_throughput, stack_capacity, checkpoint_cost, gpu_path)
are checked through its rehearsal, tests/test_device_check.py."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
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


def run_benchmark(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), "--smoke", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.bench
def test_overhead_benchmark_prints_wall_times_and_their_ratios() -> None:
    out = run_benchmark("overhead.py")
    line = r"^(plain loop|resablate|bare Ray Tune|resablate unstacked) +([\d.]+) s wall"
    walls = {name: float(wall) for name, wall in re.findall(line, out, re.M)}
    assert set(walls) == {"plain loop", "resablate", "bare Ray Tune", "resablate unstacked"}, out
    assert all(w > 0 for w in walls.values())
    for name in ("resablate", "resablate unstacked"):
        found = re.search(rf"^{name}/plain ([\d.]+) .* bare-Ray ([\d.]+)", out, re.M)
        assert found, out
        # the ratios are the printed walls' (rounded to the printed digits)
        assert float(found[1]) == pytest.approx(walls[name] / walls["plain loop"], abs=0.02)
        assert float(found[2]) == pytest.approx(walls[name] / walls["bare Ray Tune"], abs=0.02)


@pytest.mark.slow
@pytest.mark.bench
def test_driver_scale_benchmark_plans_the_grid_and_samples_memory() -> None:
    out = run_benchmark("driver_scale.py")
    assert re.search(r"^planning +1000 trials +[\d.]+ s", out, re.M), out
    assert "60 trials on" in out and "as 3 Ray Tune runs" in out, out
    ended = [int(n) for n in re.findall(r"^  run +\d+ +(\d+) trials ended +[\d.]+ MiB", out, re.M)]
    assert ended == [20, 40, 60], out  # every trial of the sweep ended, in runs of 20
    assert re.search(r"^growth +-?[\d.]+ KiB per finished trial after the first run", out, re.M)


@pytest.mark.slow
@pytest.mark.bench
def test_headline_benchmark_prints_the_four_walls_and_their_ratios() -> None:
    out = run_benchmark("headline.py")
    line = r"^(resablate default|resablate --inline|plain loop|plain loop, 1 thread) +([\d.]+) s"
    walls = {name: float(wall) for name, wall in re.findall(line, out, re.M)}
    names = ("resablate default", "resablate --inline", "plain loop", "plain loop, 1 thread")
    assert set(walls) == set(names), out
    found = re.search(
        r"^default/inline ([\d.]+) .* inline/plain ([\d.]+) +default/plain ([\d.]+)"
        r" +default/plain-1-thread ([\d.]+)",
        out,
        re.M,
    )
    assert found and "4 trials" in out, out
    default, inline, hand, one = (walls[k] for k in names)
    assert float(found[1]) == pytest.approx(default / inline, abs=0.02)
    assert float(found[2]) == pytest.approx(inline / hand, abs=0.02)
    assert float(found[3]) == pytest.approx(default / hand, abs=0.02)
    assert float(found[4]) == pytest.approx(default / one, abs=0.02)
