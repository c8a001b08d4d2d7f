"""The headline study at the speed of its arithmetic (issue 21), measured in one run: the same
sweep three ways, each in a fresh Python process timed from its start (imports, Ray's start and
MLflow's store included):

  default  `resablate sweep SWEEP --profile PROFILE`: a local Ray, what a user runs
  inline   the same with --inline: one trial after another in the driver, recorded in MLflow,
           each on its resources.cpu threads (1), as in a Ray worker
  plain    a hand loop of the same trials (resablate.train.run_trial with the sweep's probes),
           one after another, nothing recorded, on torch's default threads (one per core)
  plain 1  the same hand loop on one thread

and prints the walls and their ratios. Issue 21's target on 2 cores: default/inline <= 0.5.

    python benchmarks/headline.py                     # sweeps/shortcut_depth.yaml, profile cpu
    python benchmarks/headline.py --sweep S --profile P
    python benchmarks/headline.py --smoke             # 4 small trials with a probe, for CI
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = """\
name: headline_smoke
model: {family: mlp, depth: 4, width: 16}
data: {name: digits}
train: {epochs: 3, batch_size: 128, lr: 0.05}
probes: {spp: {at: [init, end], batch: 64}}
grid:
  model.shortcut: [identity, none]
  seed: [0, 1]
"""


def plain(sweep: str, profile: str | None, threads: int | None) -> None:
    """The sweep's trials in a hand loop: run_trial, one after another."""
    import torch

    from resablate import make_plan, run_trial

    if threads:
        torch.set_num_threads(threads)
    plan = make_plan(sweep, (), profile)
    for trial in plan.trials:
        run_trial(trial.config, probes=plan.spec.probes)


def timed(command: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default=str(ROOT / "sweeps" / "shortcut_depth.yaml"))
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="4 small trials, for CI")
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)  # the hand loop
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        plain(args.sweep, args.profile or None, args.threads)
        return
    with tempfile.TemporaryDirectory() as folder:
        sweep, profile = str(Path(args.sweep).resolve()), args.profile
        if args.smoke:
            sweep, profile = str(Path(folder) / "smoke.yaml"), ""
            Path(sweep).write_text(SMOKE)
        from resablate import make_plan

        plan = make_plan(sweep, (), profile or None)
        if plan.spec.search:
            raise SystemExit(f"{sweep}: a searched sweep has no fixed trials for a hand loop")
        cli = [sys.executable, "-m", "resablate.cli", "sweep", sweep, "-q"]
        cli += ["--profile", profile] if profile else []
        hand = [sys.executable, __file__, "--plain", "--sweep", sweep, "--profile", profile]
        walls = {}
        ways = [("default", cli), ("inline", [*cli, "--inline"]), ("plain", hand)]
        ways.append(("plain1", [*hand, "--threads", "1"]))
        for name, command in ways:
            run = Path(folder) / name
            run.mkdir()
            walls[name] = timed(command, run)
    print(
        f"{plan.spec.name} ({profile or 'no profile'}): {len(plan.trials)} trials, "
        f"{os.cpu_count()} cores"
    )
    for name, label in (
        ("default", "resablate default"),
        ("inline", "resablate --inline"),
        ("plain", "plain loop"),
        ("plain1", "plain loop, 1 thread"),
    ):
        print(f"{label:<20} {walls[name]:8.2f} s wall")
    print(
        f"default/inline {walls['default'] / walls['inline']:.2f} (target <= 0.5)  "
        f"inline/plain {walls['inline'] / walls['plain']:.2f}  "
        f"default/plain {walls['default'] / walls['plain']:.2f}  "
        f"default/plain-1-thread {walls['default'] / walls['plain1']:.2f}"
    )


if __name__ == "__main__":
    main()
