"""Ray Tune on one GPU (issue 34, step 4), measured in one run: real `resablate sweep`s on a local
Ray, recorded in an MLflow sqlite store, each check one line (`ok` / `FAILED` with its numbers)
and all in OUT/ray_gpu.json:

  smoke     sweeps/smoke.yaml (18 trials) with resources.gpu 0.25: every trial's run finished
            (rehearsing: its 6 trials of depth 4, 1 epoch)
  share     16 CIFAR ResNet-20 trials (synthetic images) with resources.gpu 0.25, one trial a
            Ray Tune trial: every run finished, and 4 ran at once (the most MLflow runs whose
            start-to-end spans overlap), trials/hour (rehearsing: 8 smaller trials)
  stacked   4 digits trials stacked as one Ray Tune trial (resources.trials_per_stack 4) on the
            GPU end with the metrics each ends with trained alone on it (resablate.run_trial in
            this process), to float tolerance (rehearsing: 2 epochs)

    python benchmarks/ray_gpu.py --out DIR                   # on a GPU
    python benchmarks/ray_gpu.py --device cpu --out DIR      # the rehearsal: resources.cpu 0.5

The rehearsal shares the CPUs as the GPU is shared (resources.cpu 0.5 on 2 cores: 4 at once),
with smaller trials.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checks import finish, run_checks

ROOT = Path(__file__).resolve().parents[1]
AT_ONCE = 4  # resources.gpu 0.25
SHARE = """\
name: share
model: {{family: cifar, depth: 20, channels: {channels}}}
data: {{name: synthetic, image: [3, 32, 32], samples: {samples}}}
train: {{epochs: {epochs}, batch_size: 128, lr: 0.05}}
grid: {{seed: {seeds}}}
"""
STACKED = """\
name: stacked
model: {family: mlp, depth: 8, width: 32, norm: none}
init: {scheme: he, c: 0.25}
data: {name: digits}
train: {epochs: 5, batch_size: 64, lr: 0.01}
grid: {seed: [0, 1, 2, 3]}
"""


def sweep(folder: Path, yaml_text: str, name: str, *sets: str) -> tuple[float, list[Any]]:
    """``resablate sweep`` of ``yaml_text`` in ``folder`` as a fresh process: (wall, its runs)."""
    from mlflow.tracking import MlflowClient

    path = folder / f"{name}.yaml"
    path.write_text(yaml_text)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    command = [sys.executable, "-m", "resablate.cli", "sweep", str(path), "--quiet"]
    command += [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"sweep {name} exited {done.returncode}: {done.stderr[-1500:]}")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(yaml_name(yaml_text))
    runs = client.search_runs([experiment.experiment_id], "tags.trial_id != ''", max_results=5000)
    return wall, runs


def yaml_name(text: str) -> str:
    return text.split("name:", 1)[1].split("\n", 1)[0].strip()


def most_at_once(runs: list[Any]) -> int:
    """The most runs whose [start, end] spans overlap at one time."""
    edges = sorted(
        [(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same millisecond
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def finished(runs: list[Any]) -> int:
    return sum(r.data.tags.get("resablate.status") == "finished" for r in runs)


def share_sets(device: str) -> list[str]:
    if device == "cpu":
        return ["resources.cpu=0.5", "resources.gpu=0"]
    return ["resources.cpu=1", f"resources.gpu={1 / AT_ONCE}"]


def smoke(device: str, folder: Path, small: bool) -> dict[str, Any]:
    from resablate import make_plan

    path = ROOT / "sweeps" / "smoke.yaml"
    sets = [*share_sets(device), *(["train.epochs=1", "grid.model.depth=[4]"] if small else [])]
    wall, runs = sweep(folder, path.read_text(), "smoke", *sets)
    planned = len(make_plan(path, sets).trials)  # 18; 6 rehearsing
    return {
        "ok": len(runs) == planned == finished(runs),
        "runs": len(runs),
        "finished": finished(runs),
        "wall_s": round(wall, 1),
    }


def share(device: str, folder: Path, small: bool) -> dict[str, Any]:
    trials = 8 if small else 16
    text = SHARE.format(
        channels=4 if small else 16,
        samples=400 if small else 10_000,
        epochs=2 if small else 4,
        seeds=json.dumps(list(range(trials))),
    )
    wall, runs = sweep(folder, text, "share", *share_sets(device), "resources.trials_per_stack=1")
    at_once = most_at_once(runs)
    return {
        "ok": len(runs) == trials == finished(runs) and at_once == AT_ONCE,
        "runs": len(runs),
        "finished": finished(runs),
        "most_at_once": at_once,
        "wall_s": round(wall, 1),
        "trials_per_hour": round(trials / wall * 3600),
    }


def stacked(device: str, folder: Path, small: bool) -> dict[str, Any]:
    from resablate import make_plan, run_trial

    sets = ["resources.cpu=1", f"resources.gpu={0 if device == 'cpu' else 1}"]
    sets.append("resources.trials_per_stack=4")
    sets += ["train.epochs=2"] if small else []
    _, runs = sweep(folder, STACKED, "stacked", *sets)
    as_stack = {r.data.tags["trial_id"]: r.data.metrics for r in runs}
    sizes = sorted({r.data.tags.get("resablate.stack_size", "1") for r in runs})
    loss = acc = 0.0
    for trial in make_plan(folder / "stacked.yaml", sets).trials:  # each alone, in this process
        alone = run_trial(trial.config, device=device)
        mine = as_stack[trial.id]
        for key in ("train_loss", "test_loss"):
            loss = max(loss, abs(mine[key] - alone[key]) / abs(alone[key]))
        for key in ("train_acc", "test_acc"):
            acc = max(acc, abs(mine[key] - alone[key]))
    # 5 epochs of the batched kernels' other rounding order: losses to 1e-3 (tests/conftest.py
    # allows 1e-4 for one step), accuracies to one test image in 100
    return {
        "ok": len(as_stack) == 4 == finished(runs)
        and sizes == ["4"]
        and loss < 1e-3
        and acc <= 0.01,
        "trials": len(as_stack),
        "stack_sizes": sizes,
        "loss_relative_difference": float(f"{loss:.2e}"),
        "accuracy_difference": round(acc, 4),
    }


CHECKS = [smoke, share, stacked]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (rehearsal)")
    parser.add_argument("--out", required=True, help="folder for ray_gpu.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    small = args.device == "cpu"
    print(f"ray_gpu: device {args.device}, {os.cpu_count()} CPUs")
    results = run_checks(CHECKS, lambda check, folder: check(args.device, folder, small))
    (out / "ray_gpu.json").write_text(json.dumps({"device": args.device, "checks": results}))
    return finish("ray_gpu", results)


if __name__ == "__main__":
    sys.exit(main())
