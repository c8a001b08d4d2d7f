"""Orchestration overhead, measured in one run: the same short digits trials three ways, each in
a fresh Python process timed from its start (imports and Ray's start included):

  plain     a Python loop calling resablate.train.run_trial, one trial after another
  resablate `resablate sweep` (local Ray, MLflow sqlite store, summary): what a user runs
  bare Tune a Ray Tune script running run_trial with reuse_actors=True, nothing recorded

Every trial gets one CPU thread in all three (a small model trains fastest on one), so the plain
loop runs one trial at a time and Ray Tune as many as the machine has cores.

    python benchmarks/overhead.py            # 16 trials of about 1.5 s each (the issue's target)
    python benchmarks/overhead.py --smoke    # 4 trials of a few epochs, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = """\
name: overhead
model: {{family: mlp, depth: 8, width: 64}}
init: {{c: 0.5}}
data: {{name: digits}}
train: {{epochs: {epochs}, batch_size: 64, lr: 0.02}}
grid: {{seed: {seeds}}}
resources: {{cpu: 1}}
"""


def configs(sweep: Path) -> list[dict]:
    from resablate.plan import make_plan

    return [t.config for t in make_plan(sweep).trials]


def plain(sweep: Path) -> None:
    import torch

    from resablate.train import run_trial

    torch.set_num_threads(1)
    for config in configs(sweep):
        run_trial(config)


def bare_tune(sweep: Path, storage: Path) -> None:
    import ray
    from ray import tune

    def trainable(config: dict) -> None:
        import torch

        from resablate.train import run_trial

        torch.set_num_threads(1)
        keep = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")
        run_trial(config["trial"], report=lambda r: tune.report({k: r[k] for k in keep if k in r}))

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"trial": tune.grid_search(configs(sweep))},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0),
    ).fit()


def timed(args: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"benchmark step failed: {' '.join(args)}\n{done.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="4 trials of a few epochs (CI)")
    parser.add_argument("--trials", type=int, help="number of trials (default 16, smoke 4)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (default 40, smoke 3)")
    parser.add_argument("--mode", choices=["plain", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--sweep", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "plain":
        return plain(args.sweep)
    if args.mode == "bare":
        return bare_tune(args.sweep, args.sweep.parent / "tune")

    trials = args.trials or (4 if args.smoke else 16)
    epochs = args.epochs or (3 if args.smoke else 40)
    with tempfile.TemporaryDirectory(prefix="resablate-overhead-") as tmp:
        folder = Path(tmp)
        sweep = folder / "overhead.yaml"
        sweep.write_text(SWEEP.format(epochs=epochs, seeds=json.dumps(list(range(trials)))))
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
        me = [sys.executable, str(Path(__file__).resolve())]
        walls = {
            "plain loop": timed([*me, "--mode", "plain", "--sweep", str(sweep)], env, folder),
            "resablate": timed(
                [sys.executable, "-m", "resablate", "sweep", str(sweep), "--quiet"], env, folder
            ),
            "bare Ray Tune": timed([*me, "--mode", "bare", "--sweep", str(sweep)], env, folder),
        }
    cores = os.cpu_count()
    print(f"{trials} digits trials (mlp depth 8 width 64, {epochs} epochs), {cores} cores")
    for name, wall in walls.items():
        print(f"{name:<14} {wall:7.2f} s wall  {wall / trials:6.2f} s per trial")
    plain_ratio = walls["resablate"] / walls["plain loop"]
    bare_ratio = walls["resablate"] / walls["bare Ray Tune"]
    print(f"resablate/plain    {plain_ratio:.2f}  (target <= 1.25)")
    print(f"resablate/bare-Ray {bare_ratio:.2f}  (target < 1)")


if __name__ == "__main__":
    main()
