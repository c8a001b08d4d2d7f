"""The benchmark scripts run (in their --smoke mode) and print their measurements; the three
longest (overhead, driver scale, headline: about 2 minutes on 2 cores) under `pytest -m bench`."""

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


def test_gpu_throughput_benchmark_compares_the_trainer_with_a_hand_loop() -> None:
    out = run_benchmark("gpu_throughput.py")
    rates = dict(re.findall(r"^(hand loop|resablate) +(\d+) images/s", out, re.M))
    assert set(rates) == {"hand loop", "resablate"} and min(map(int, rates.values())) > 0, out
    assert re.search(r"^resablate/hand [\d.]+", out, re.M), out


@pytest.mark.slow
def test_stack_capacity_benchmark_prints_stacks_and_shared_device_rates() -> None:
    out = run_benchmark("stack_capacity.py")
    fit = re.search(r"stacks of up to (\d+) fit .* measured up to (\d+)$", out, re.M)
    assert fit and int(fit[1]) >= int(fit[2]) == 8, out
    line = (
        r"^  stack +(\d+) +([\d.]+) ms per member-epoch +x +([\d.]+) over alone +(\d+) trials/hour"
    )
    rows = [(int(k), float(ms), float(x), int(h)) for k, ms, x, h in re.findall(line, out, re.M)]
    assert [k for k, *_ in rows] == [1, 8], out
    alone = rows[0][1]
    for _, ms, speedup, per_hour in rows:  # each printed ratio is the printed times'
        assert speedup == pytest.approx(alone / ms, abs=0.06)
        assert per_hour == pytest.approx(3600 / (ms / 1000 * 400), rel=0.001, abs=1)
    shared = re.findall(r"^  (\d) at once +(\d+) images/s in all +([\d.]+) trials/hour", out, re.M)
    assert [p for p, *_ in shared] == ["1", "2"], out
    for _, rate, per_hour in shared:
        assert int(rate) > 0
        assert float(per_hour) == pytest.approx(3600 * int(rate) / 600_000, abs=0.06)


@pytest.mark.slow
def test_checkpoint_benchmark_prints_cost_per_checkpoint_and_share_of_a_trial() -> None:
    out = run_benchmark("checkpoint_cost.py")
    found = re.search(
        r"^checkpoint +([\d.]+) s to write +([\d.]+) s to read +([\d.]+) MB", out, re.M
    )
    assert found and float(found[3]) > 1.0, out  # ResNet-20's weights and momentum: ~2 MB
    step = re.search(r"^step +([\d.]+) s +a 64000-iteration trial: +([\d.]+) h", out, re.M)
    assert step and float(step[2]) == pytest.approx(64000 * float(step[1]) / 3600, rel=0.01), out
    share = re.search(r"^cadence +(\d+) checkpoints a trial: ([\d.]+) %", out, re.M)
    assert share, out
    expected = 100 * int(share[1]) * float(found[1]) / (float(step[2]) * 3600)
    assert float(share[2]) == pytest.approx(expected, abs=0.002), out


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
