"""The prepared device check (issue 34): every GPU measurement in one command, in a fixed order
and within one time budget, for the 15 minutes a lent GPU machine gives a session.

  1 throughput   gpu_throughput.py: resablate's trainer against a hand loop, images/s, fp32 and
                 bf16 + channels-last, CIFAR ResNet-20 (4 epochs of 50k synthetic images) and
                 ResNet-110 (3 epochs); the first epoch is warm-up
  2 stacks       stack_capacity.py: width-10 stacks of k = 1, 64, 1024 and the most that fit,
                 member-epochs/s; the lecture net as 1, 2, 4, 8 processes on the device
  3 headline     the whole sweeps/shortcut_depth.yaml (351 trials) with --inline on the GPU, its
                 wall time (or the trials it finished in its share of the budget); and the
                 study's exact Hessian (float64) on the GPU against the CPU, per trial
  4 ray          ray_gpu.py: Ray Tune on the GPU: the smoke sweep and 16 CIFAR trials with
                 resources.gpu 0.25 (4 at once), a stacked trial against its members alone
  5 checkpoint   checkpoint_cost.py (ResNet-110 on the GPU) and gpu_path.py (a CUDA resume
                 against the uninterrupted run, the driver's lack of a CUDA context, ...)

Each step is its own process, stopped at its time limit or the budget's end (what it printed is
kept); each prints its figures, and all go into OUT/device_check.json (with the device's name,
the date and each step's command, wall time and exit status) and OUT/device_check.log: two files,
well inside the 8 that come back from a device call.

    python benchmarks/device_check.py OUT                    # on the lent GPU machine
    python benchmarks/device_check.py OUT --cpu-rehearsal    # every step, tiny, on this CPU (CI)

On the device machine the packages its image lacks come from benchmarks/device_wheels.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


@dataclass
class Step:
    """One measurement: a command (``{json}``: the file it writes its figures to; ``{out}``: a
    folder for a script that writes its own JSON there) and its time limit in seconds."""

    name: str
    command: list[str]
    limit: float
    figures: str = "json"  # how its figures come back: "json" (the file), "out" (a folder)
    count_runs: str | None = None  # the MLflow experiment whose finished runs it counts


def script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(BENCH / name), *args]


def throughput(depth: int, samples: int, epochs: int, fast: bool) -> list[str]:
    sizes = ["--depth", str(depth), "--samples", str(samples), "--epochs", str(epochs)]
    if depth < 20:  # the rehearsal's nets
        sizes += ["--channels", "8"]
    faster = ["--precision", "bf16", "--channels-last"] if fast else []
    return script("gpu_throughput.py", *sizes, *faster, "--no-sharing", "--json", "{json}")


HEADLINE = str(ROOT / "sweeps" / "shortcut_depth.yaml")
# the rehearsal's headline sweep: tests/test_studies.py's reduced profile, one epoch
SMALL_SETS = ["train.epochs=1", "grid.model.depth=[2,6]", "grid.seed=[0,1]"]
SMALL_SETS.append("grid.train.lr=[0.01,0.1]")
SMALL_HEADLINE = ["--profile", "cpu", *(a for s in SMALL_SETS for a in ("--set", s))]


def steps(rehearsal: bool) -> list[Step]:
    sweep = [sys.executable, "-m", "resablate.cli", "sweep", HEADLINE, "--inline", "--quiet"]
    if rehearsal:
        return [
            Step("throughput_r20_fp32", throughput(8, 400, 2, False), 120),
            Step("throughput_r20_bf16", throughput(8, 400, 2, True), 120),
            Step("throughput_r110_fp32", throughput(14, 400, 2, False), 120),
            Step("throughput_r110_bf16", throughput(14, 400, 2, True), 120),
            Step("stacks", script("stack_capacity.py", "--smoke", "--json", "{json}"), 180),
            Step("headline", [*sweep, *SMALL_HEADLINE], 180, "", "shortcut_depth"),
            Step(
                "hessian",
                script("probes.py", "--hessian-on", "cpu", "--profile", "cpu", "--json", "{json}"),
                120,
            ),
            Step("ray", script("ray_gpu.py", "--device", "cpu", "--out", "{out}"), 300, "out"),
            Step(
                "checkpoint",
                script("checkpoint_cost.py", "--smoke", "--device", "cpu", "--json", "{json}"),
                120,
            ),
            Step(
                "gpu_path", script("gpu_path.py", "--device", "cpu", "--out", "{out}"), 120, "out"
            ),
        ]
    return [
        Step("throughput_r20_fp32", throughput(20, 50_000, 4, False), 60),
        Step("throughput_r20_bf16", throughput(20, 50_000, 4, True), 50),
        Step("throughput_r110_fp32", throughput(110, 50_000, 3, False), 120),
        Step("throughput_r110_bf16", throughput(110, 50_000, 3, True), 90),
        Step(
            "stacks",
            script(
                "stack_capacity.py",
                "--stacks",
                "1",
                "64",
                "1024",
                "max",
                "--processes",
                "1",
                "2",
                "4",
                "8",
                "--json",
                "{json}",
            ),
            90,
        ),
        Step("headline", [*sweep, "--set", "resources.gpu=1"], 120, "", "shortcut_depth"),
        Step(
            "hessian", script("probes.py", "--hessian-on", "cpu", "cuda", "--json", "{json}"), 45
        ),
        Step("ray", script("ray_gpu.py", "--out", "{out}"), 150, "out"),
        Step("checkpoint", script("checkpoint_cost.py", "--json", "{json}"), 45),
        Step("gpu_path", script("gpu_path.py", "--out", "{out}"), 60, "out"),
    ]


def run_step(step: Step, scratch: Path, limit: float, log: Any) -> dict[str, Any]:
    """Run one step as its own process group, stopped at ``limit`` seconds; its output goes to
    this process's stdout and ``log``."""
    folder = scratch / step.name
    folder.mkdir()
    figures_file = folder / "figures.json"
    command = [
        a.replace("{json}", str(figures_file)).replace("{out}", str(folder)) for a in step.command
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    header = f"== {step.name} (limit {limit:.0f} s): {' '.join(command)}"
    print(header, flush=True)
    log.write(header + "\n")
    output = folder / "output.txt"
    start = time.perf_counter()
    with output.open("w") as sink:
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a stop reaches Ray's and the workers' too
        )
        try:
            code: int | None = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGINT)  # the sweep's Ctrl-C: runs end as killed
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            code = None
    wall = time.perf_counter() - start
    printed = output.read_text(errors="replace")
    sys.stdout.write(printed)
    log.write(printed)
    found: dict[str, Any] = {
        "step": step.name,
        "command": command,
        "wall_s": round(wall, 2),
        "status": "timed out" if code is None else ("ok" if code == 0 else f"exit {code}"),
        "output_tail": printed[-3000:],
    }
    if step.figures == "json" and figures_file.exists():
        found["figures"] = json.loads(figures_file.read_text())
    elif step.figures == "out":
        found["figures"] = {
            p.stem: json.loads(p.read_text())
            for p in folder.glob("*.json")
            if p.name != "figures.json"
        }
    if step.count_runs:
        found["figures"] = counted_runs(folder, step.count_runs, wall)
    ended = f"== {step.name}: {found['status']} in {wall:.1f} s"
    print(ended, flush=True)
    log.write(ended + "\n")
    return found


def counted_runs(folder: Path, experiment: str, wall: float) -> dict[str, Any]:
    """A sweep's trials in its MLflow store, by status, and its wall time."""
    from mlflow.tracking import MlflowClient

    if not (folder / "mlflow.db").exists():
        return {"wall_s": wall, "trials": 0}
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    runs = (
        []
        if found is None
        else client.search_runs([found.experiment_id], "tags.trial_id != ''", max_results=10_000)
    )
    statuses: dict[str, int] = {}
    for run in runs:
        status = run.data.tags.get("resablate.status", "?")
        statuses[status] = statuses.get(status, 0) + 1
    done = statuses.get("finished", 0) + statuses.get("diverged", 0)
    return {
        "wall_s": round(wall, 1),
        "trials": len(runs),
        "by_status": statuses,
        "trials_per_hour": round(done / wall * 3600),
    }


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for device_check.json and .log")
    parser.add_argument("--cpu-rehearsal", action="store_true", help="tiny sizes, on the CPU")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for all steps (default 540 on a GPU, 1200 rehearsing)",
    )
    parser.add_argument("--only", nargs="+", help="run only these steps (by name)")
    args = parser.parse_args(argv)
    budget = args.budget or (1200 if args.cpu_rehearsal else 540)
    chosen = [s for s in steps(args.cpu_rehearsal) if not args.only or s.name in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    record: dict[str, Any] = {
        "device": device_name(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rehearsal": args.cpu_rehearsal,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "budget_s": budget,
        "steps": [],
    }
    print(
        f"device_check: {record['device']}, torch {torch.__version__}, {record['date']},"
        f" budget {budget:.0f} s, {len(chosen)} steps",
        flush=True,
    )
    deadline = time.monotonic() + budget
    with (
        tempfile.TemporaryDirectory(prefix="device-check-") as scratch,
        (args.out / "device_check.log").open("w") as log,
    ):
        for step in chosen:
            left = deadline - time.monotonic()
            if left < 5:
                record["steps"].append({"step": step.name, "status": "skipped (no time left)"})
                print(f"== {step.name}: skipped, the budget is spent", flush=True)
                continue
            record["steps"].append(run_step(step, Path(scratch), min(step.limit, left), log))
            (args.out / "device_check.json").write_text(json.dumps(record, indent=1))
    (args.out / "device_check.json").write_text(json.dumps(record, indent=1))
    summary = ", ".join(f"{s['step']} {s['status']}" for s in record["steps"])
    print(f"device_check: {summary}")
    return 0 if all(s["status"] == "ok" for s in record["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
