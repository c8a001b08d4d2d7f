"""The driver at scale, measured in one run:

planning  `resablate plan`'s work (validate, expand, resolve and hash every trial) for a
          10,000-trial grid (target: under 5 s)
memory    the driver's resident memory while a sweep of many tiny trials runs on a local Ray,
          which runs them as several Ray Tune runs (capacity.STACKS_PER_RUN trials each)
          (target: flat as trials finish: no growth per finished trial beyond noise)

  python benchmarks/driver_scale.py            # 10,000-trial plan, 5,000 tiny trials run
  python benchmarks/driver_scale.py --smoke    # 1,000-trial plan, 60 tiny trials, runs of 20 (CI)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import tempfile
import time
from pathlib import Path

GRID = """\
name: scale
model: {{family: mlp, width: 8, shortcut_depth: 1, activation: pre}}
data: {{name: synthetic, samples: 40, features: 8}}
train: {{epochs: 1, batch_size: full}}
grid:
  model.depth: {depths}
  model.shortcut: [identity, none]
  init.c: {cs}
  seed: {seeds}
resources: {{cpu: 1, trials_per_stack: 1}}  # one Ray Tune trial per trial: the driver's worst case
"""


def rss_mib() -> float:
    """This process's resident memory now (Linux /proc), else its peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def sweep_file(folder: Path, trials: int) -> Path:
    """A grid of exactly ``trials`` trials (depth x shortcut x c x seed), a multiple of 20."""
    seeds = 10
    if trials % (2 * seeds):
        raise SystemExit(f"{trials} trials: the benchmark's grids hold multiples of 20")
    cells = trials // (2 * seeds)
    depths = [d for d in range(1, cells + 1) if cells % d == 0 and d <= 50][-1]
    cs = cells // depths
    path = folder / f"scale{trials}.yaml"
    path.write_text(
        GRID.format(
            depths=json.dumps(list(range(1, depths + 1))),
            cs=json.dumps([round(0.1 + 0.01 * i, 4) for i in range(cs)]),
            seeds=json.dumps(list(range(seeds))),
        )
    )
    return path


def planning(folder: Path, trials: int) -> tuple[int, float, float]:
    """(trials planned, seconds importing what planning needs, seconds planning)."""
    start = time.perf_counter()
    from resablate import (
        make_plan,
        models,  # noqa: F401 (torch: the models are checked)
    )

    imported = time.perf_counter()
    plan = make_plan(sweep_file(folder, trials))
    return len(plan.trials), imported - start, time.perf_counter() - imported


def memory(folder: Path, trials: int) -> tuple[list[tuple[float, int, float]], list[int]]:
    """(seconds, trials ended, driver RSS in MiB) as each trial ends, and the number of trials
    ended when each Ray Tune run's last trial ended."""
    from resablate import Options, make_plan, run_sweep
    from resablate.results import TrialRecord
    from resablate.spec.grid import Trial
    from resablate.sweep import capacity, stacking

    plan = make_plan(sweep_file(folder, trials))
    # what the runner will do on this machine's local Ray (one CPU a trial, seeds unstacked)
    runs = capacity.runs_of(stacking.stacks(plan), os.cpu_count() or 1, scheduled=False)
    ends = list(itertools.accumulate(len(run) for run in runs))
    samples: list[tuple[float, int, float]] = []
    start = time.perf_counter()

    class Sample:
        def trial_started(self, trial: Trial) -> None: ...

        def trial_result(self, trial: Trial, result: dict) -> None: ...

        def trial_retried(self, trial: Trial, error: str | None) -> None: ...

        def trial_finished(self, record: TrialRecord) -> None:
            samples.append((time.perf_counter() - start, len(samples) + 1, rss_mib()))

    options = Options(
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
        results_dir=folder / "runs",
        quiet=True,
        listeners=[Sample()],
    )
    run_sweep(plan, options, say=lambda line: None)
    return samples, ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="smaller sizes (CI)")
    parser.add_argument(
        "--units-per-run",
        type=int,
        default=None,
        help="trials per Ray Tune run (default: resablate's own; --smoke: 20)",
    )
    args = parser.parse_args()
    plan_size, run_size = (1000, 60) if args.smoke else (10_000, 5000)
    per_run = args.units_per_run or (20 if args.smoke else None)
    if per_run is not None:
        from resablate.sweep import capacity

        capacity.STACKS_PER_RUN, capacity.STACKS_PER_SLOT = per_run, 0  # exactly per_run
    with tempfile.TemporaryDirectory(prefix="resablate-scale-") as tmp:
        folder = Path(tmp)
        count, imports, seconds = planning(folder, plan_size)
        print(
            f"planning  {count} trials  {imports + seconds:.2f} s  (imports {imports:.2f} s,"
            f" planning {seconds:.2f} s; target < 5 s for 10,000)"
        )
        samples, ends = memory(folder, run_size)
    if len(samples) != run_size:
        raise SystemExit(f"{len(samples)} of {run_size} trials ended")
    print(
        f"memory    {run_size} trials on {os.cpu_count()} cores as {len(ends)} Ray Tune runs,"
        " driver RSS as each run's last trial ended:"
    )
    for k, end in enumerate(ends, 1):
        at = samples[end - 1]
        line = f"  run {k:2d}  {at[1]:5d} trials ended  {at[2]:7.1f} MiB  at {at[0]:6.1f} s"
        if k > 1:
            before = samples[ends[k - 2] - 1]
            since = (at[2] - before[2]) * 1024 / (at[1] - before[1])
            line += f"  ({since:+.1f} KiB per trial since run {k - 1})"
        print(line)
    first, last = samples[ends[0] - 1], samples[-1]
    if len(ends) > 1:
        growth = (last[2] - first[2]) / (last[1] - first[1])
        print(f"growth    {growth * 1024:.1f} KiB per finished trial after the first run")
    else:
        quarter = samples[run_size // 4]
        growth = (last[2] - quarter[2]) / max(1, last[1] - quarter[1])
        print(f"growth    {growth * 1024:.1f} KiB per finished trial after the first quarter")


if __name__ == "__main__":
    main()
