"""The prepared device check (benchmarks/device_check.py), rehearsed end to end on this CPU as CI
runs it: every step runs, and each printed ratio is the printed times' (never a speed). Also the
parts of it that need no run: the wheels for the device machine, the overlap count."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from tests.conftest import ROOT

BENCH = ROOT / "benchmarks"
STEPS = [
    "throughput_r20_fp32",
    "throughput_r20_bf16",
    "throughput_r110_fp32",
    "throughput_r110_bf16",
    "stacks",
    "headline",
    "hessian",
    "ray",
    "checkpoint",
    "gpu_path",
]


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("device_check")
    done = subprocess.run(
        [sys.executable, str(BENCH / "device_check.py"), str(out), "--cpu-rehearsal"],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    record = json.loads((out / "device_check.json").read_text())
    steps = {s["step"]: s for s in record["steps"]}
    return {"done": done, "out": out, "record": record, "steps": steps}


@pytest.mark.slow
def test_the_rehearsal_runs_every_step_and_records_them(rehearsal: dict[str, Any]) -> None:
    done, record = rehearsal["done"], rehearsal["record"]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert [s["step"] for s in record["steps"]] == STEPS
    assert all(s["status"] == "ok" for s in record["steps"]), record["steps"]
    assert record["rehearsal"] and record["device"].startswith("CPU") and record["date"]
    log = (rehearsal["out"] / "device_check.log").read_text()
    for step in STEPS:  # the log holds every step's own output
        assert f"== {step}: ok in" in log
    assert sorted(p.name for p in rehearsal["out"].iterdir()) == [
        "device_check.json",
        "device_check.log",
    ]  # two files: a device call brings back at most 8


@pytest.mark.slow
@pytest.mark.parametrize("step", [s for s in STEPS if s.startswith("throughput")])
def test_each_throughput_ratio_is_its_printed_rates(rehearsal: dict[str, Any], step: str) -> None:
    found = rehearsal["steps"][step]
    out, figures = found["output_tail"], found["figures"]
    rates = {
        k: int(v) for k, v in re.findall(r"^(hand loop|resablate) +(\d+) images/s", out, re.M)
    }
    ratio = re.search(r"^resablate/hand ([\d.]+)", out, re.M)
    assert ratio and set(rates) == {"hand loop", "resablate"}, out
    assert float(ratio[1]) == pytest.approx(rates["resablate"] / rates["hand loop"], abs=0.006)
    for name, key in (("hand", "hand loop"), ("resablate", "resablate")):
        epochs = figures[f"{name}_epoch_s"][1:]  # the first is warm-up
        assert figures[f"{name}_images_per_s"] == rates[key]
        assert rates[key] == pytest.approx(figures["images"] / (sum(epochs) / len(epochs)), abs=1)
    assert figures["precision"] == ("bf16" if step.endswith("bf16") else "fp32")
    assert figures["channels_last"] == step.endswith("bf16")


@pytest.mark.slow
def test_the_stack_capacity_rates_are_its_printed_times(rehearsal: dict[str, Any]) -> None:
    found = rehearsal["steps"]["stacks"]
    out, figures = found["output_tail"], found["figures"]
    fit = re.search(r"stacks of up to (\d+) fit .* measured up to (\d+)$", out, re.M)
    assert fit and int(fit[1]) == figures["fits"] >= int(fit[2]) == 8, out
    line = r"^  stack +(\d+) +([\d.]+) ms per member-epoch +x +([\d.]+) over alone +(\d+) trials/h"
    rows = [(int(k), float(ms), float(x), int(h)) for k, ms, x, h in re.findall(line, out, re.M)]
    assert [k for k, *_ in rows] == [s["k"] for s in figures["stacks"]] == [1, 8], out
    alone = rows[0][1]
    for (_, ms, speedup, per_hour), stack in zip(rows, figures["stacks"], strict=True):
        assert speedup == pytest.approx(alone / ms, abs=0.06)
        assert per_hour == pytest.approx(3600 / (ms / 1000 * 400), rel=0.001, abs=1)
        assert stack["member_epochs_per_s"] == pytest.approx(1000 / stack["ms_per_member_epoch"])
    shared = re.findall(r"^  (\d) at once +(\d+) images/s in all +([\d.]+) trials/hour", out, re.M)
    assert [int(p) for p, *_ in shared] == [r["processes"] for r in figures["lecture"]] == [1, 2]
    for _, rate, per_hour in shared:
        assert int(rate) > 0
        assert float(per_hour) == pytest.approx(3600 * int(rate) / 600_000, abs=0.06)


@pytest.mark.slow
def test_the_headline_step_counts_the_study_it_ran(rehearsal: dict[str, Any]) -> None:
    from resablate import make_plan

    device_check = script("device_check")
    planned = len(make_plan(device_check.HEADLINE, device_check.SMALL_SETS, "cpu").trials)
    figures = rehearsal["steps"]["headline"]["figures"]
    assert figures["trials"] == planned == 20
    assert set(figures["by_status"]) <= {"finished", "diverged"}
    done = sum(figures["by_status"].values())
    assert figures["trials_per_hour"] == pytest.approx(done / figures["wall_s"] * 3600, rel=0.01)


@pytest.mark.slow
def test_the_hessian_step_times_the_studys_exact_hessian(rehearsal: dict[str, Any]) -> None:
    figures = rehearsal["steps"]["hessian"]["figures"]
    assert figures["depth"] == 12  # the deepest trial of the cpu profile
    assert figures["cpu"]["seconds"] > 0 and math.isfinite(figures["cpu"]["max_abs"])


@pytest.mark.slow
def test_ray_tune_shares_the_device_four_ways_and_stacks_as_alone(
    rehearsal: dict[str, Any],
) -> None:
    checks = {c["check"]: c for c in rehearsal["steps"]["ray"]["figures"]["ray_gpu"]["checks"]}
    assert set(checks) == {"smoke", "share", "stacked"} and all(c["ok"] for c in checks.values())
    assert checks["smoke"]["finished"] == 6  # the rehearsal's smoke sweep: depth 4 only
    share = checks["share"]
    assert share["finished"] == 8 and share["most_at_once"] == 4
    assert share["trials_per_hour"] == pytest.approx(8 / share["wall_s"] * 3600, rel=0.01)
    assert checks["stacked"]["loss_relative_difference"] < 1e-3


@pytest.mark.slow
def test_the_checkpoint_step_prints_its_cost_and_share(rehearsal: dict[str, Any]) -> None:
    found = rehearsal["steps"]["checkpoint"]
    out, figures = found["output_tail"], found["figures"]
    written = re.search(
        r"^checkpoint +([\d.]+) s to write +([\d.]+) s to read +([\d.]+) MB", out, re.M
    )
    assert written and float(written[3]) > 1.0, out  # ResNet-20's weights and momentum: ~2 MB
    step = re.search(r"^step +([\d.]+) s +a 64000-iteration trial: +([\d.]+) h", out, re.M)
    assert step and float(step[2]) == pytest.approx(64000 * float(step[1]) / 3600, rel=0.01), out
    share = re.search(r"^cadence +(\d+) checkpoints a trial: ([\d.]+) %", out, re.M)
    assert share, out
    expected = 100 * int(share[1]) * float(written[1]) / (float(step[2]) * 3600)
    assert float(share[2]) == pytest.approx(expected, abs=0.002), out
    assert figures["size_mb"] == pytest.approx(float(written[3]), abs=0.01)


@pytest.mark.slow
def test_the_gpu_path_checks_all_hold_on_the_cpu(rehearsal: dict[str, Any]) -> None:
    found = rehearsal["steps"]["gpu_path"]["figures"]["gpu_path"]
    assert {c["check"]: c["ok"] for c in found["checks"]} == {
        "driver_has_no_cuda_context": True,
        "lanczos_on_device": True,
        "resume_on_device": True,
        "cache_released": True,
        "probe_on_device": True,
    }


def test_a_step_past_its_limit_is_stopped_and_recorded(tmp_path: Path) -> None:
    device_check = script("device_check")
    step = device_check.Step("sleeps", [sys.executable, "-c", "import time; time.sleep(60)"], 60)
    with (tmp_path / "log").open("w") as log:
        found = device_check.run_step(step, tmp_path, 1.5, log)
    assert found["status"] == "timed out" and found["wall_s"] < 30


def run(start: int, end: int) -> Any:
    return SimpleNamespace(info=SimpleNamespace(start_time=start, end_time=end))


def test_most_at_once_counts_overlapping_spans() -> None:
    most = script("ray_gpu").most_at_once
    assert most([run(0, 10), run(2, 12), run(4, 14), run(6, 16), run(20, 30)]) == 4
    assert most([run(0, 10), run(10, 20), run(20, 30)]) == 1  # one ends as the next starts
    assert most([run(0, 10)] * 3) == 3


def fake_ray_wheel(path: Path) -> Path:
    record = (
        "ray/__init__.py,sha256=x,1\nray/jars/ray.jar,sha256=y,2\nray-2.60.0.dist-info/RECORD,,\n"
    )
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("ray/__init__.py", "x")
        wheel.writestr("ray/jars/ray.jar", b"\0" * 1000)
        wheel.writestr("ray-2.60.0.dist-info/RECORD", record)
    return path


def test_rays_wheel_is_carried_without_its_jars(tmp_path: Path) -> None:
    wheels = script("device_wheels")
    source = fake_ray_wheel(tmp_path / "ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl")
    (tmp_path / "out").mkdir()
    copy = wheels.without_jars(source, tmp_path / "out")
    with zipfile.ZipFile(copy) as found:
        assert found.namelist() == ["ray/__init__.py", "ray-2.60.0.dist-info/RECORD"]
        record = found.read("ray-2.60.0.dist-info/RECORD").decode()
    assert "jars" not in record and "ray/__init__.py,sha256=x,1" in record


def test_the_wheels_split_in_two_folders_under_the_limit(tmp_path: Path) -> None:
    wheels = script("device_wheels")
    sizes = {"a": 50, "b": 30, "c": 25, "d": 10}
    files = []
    for name, size in sizes.items():
        files.append(tmp_path / f"{name}-1-py3-none-any.whl")
        files[-1].write_bytes(b"\0" * size)
    folders = wheels.split(files, 60)
    assert sorted(sum(w.stat().st_size for w in f) for f in folders) == [55, 60]
    with pytest.raises(SystemExit, match="do not fit two folders"):
        wheels.split(files, 50)
    assert wheels.project(Path("Typing_Inspection-0.4-py3-none-any.whl")) == "typing-inspection"
    assert "torch" in wheels.IMAGE and "ray" not in wheels.IMAGE
