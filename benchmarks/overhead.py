"""Orchestration overhead, measured in one run: the same short digits trials three ways, each in
a fresh Python process timed from its start (imports and Ray's start included):

  plain      a Python loop calling resablate.train.run_trial, one trial after another
  resablate  `resablate sweep` (local Ray, MLflow sqlite store, summary): what a user runs; its
             default resources.trials_per_stack: auto trains the seeds of one configuration
             stacked as one computation (resablate.batched) while every core keeps a trial
  bare Tune  a Ray Tune script running run_trial with reuse_actors=True, nothing recorded
  unstacked  `resablate sweep` of the same trials with resources.trials_per_stack: 1 (each seed
             its own Ray Tune trial, as bare Ray Tune runs them)

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
name: {name}
model: {{family: mlp, depth: 8, width: 64}}
init: {{c: 0.5}}
data: {{name: digits}}
train: {{epochs: {epochs}, batch_size: 64, lr: 0.02}}
grid: {{seed: {seeds}}}
resources: {{cpu: 1{stack}}}
"""


def configs(sweep: Path) -> list[dict]:
    from resablate import make_plan

    return [t.config for t in make_plan(sweep).trials]


def plain(sweep: Path) -> None:
    import torch

    from resablate import run_trial

    torch.set_num_threads(1)
    for config in configs(sweep):
        run_trial(config)


def bare_tune(sweep: Path, storage: Path) -> None:
    import ray
    from ray import tune

    def trainable(config: dict) -> None:
        import torch

        from resablate import run_trial

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
        seeds = json.dumps(list(range(trials)))
        sweep, unstacked = folder / "overhead.yaml", folder / "unstacked.yaml"
        sweep.write_text(SWEEP.format(name="overhead", epochs=epochs, seeds=seeds, stack=""))
        one = ", trials_per_stack: 1"
        unstacked.write_text(SWEEP.format(name="unstacked", epochs=epochs, seeds=seeds, stack=one))
        me = [sys.executable, str(Path(__file__).resolve())]

        def env(store: str) -> dict[str, str]:  # each run creates its own MLflow store
            return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / store}"}

        sweep_cmd = [sys.executable, "-m", "resablate", "sweep", "--quiet"]
        mine = [*me, "--sweep", str(sweep), "--mode"]
        walls = {
            "plain loop": timed([*mine, "plain"], env("p"), folder),
            "resablate": timed([*sweep_cmd, str(sweep)], env("a.db"), folder),
            "bare Ray Tune": timed([*mine, "bare"], env("b"), folder),
            "resablate unstacked": timed([*sweep_cmd, str(unstacked)], env("c.db"), folder),
        }
    cores = os.cpu_count()
    print(f"{trials} digits trials (mlp depth 8 width 64, {epochs} epochs), {cores} cores")
    print("(resablate: trials_per_stack auto, the default; unstacked: trials_per_stack 1)")
    for name, wall in walls.items():
        print(f"{name:<20} {wall:7.2f} s wall  {wall / trials:6.2f} s per trial")
    for name in ("resablate", "resablate unstacked"):
        to_plain = walls[name] / walls["plain loop"]
        to_bare = walls[name] / walls["bare Ray Tune"]
        print(f"{name}/plain {to_plain:.2f} (target <= 1.25)  bare-Ray {to_bare:.2f} (target < 1)")


if __name__ == "__main__":
    main()
