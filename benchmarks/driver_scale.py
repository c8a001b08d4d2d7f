"""The driver at scale, measured in one run:

planning  `resablate plan`'s work (validate, expand, resolve and hash every trial) for a
          10,000-trial grid (target: under 5 s)
memory    the driver's resident memory while a sweep of many tiny trials runs on a local Ray
          (target: flat as trials finish: no growth per finished trial beyond noise)

  python benchmarks/driver_scale.py            # 10,000-trial plan, 300 tiny trials run
  python benchmarks/driver_scale.py --smoke    # 1,000-trial plan, 20 tiny trials (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

GRID = """\
name: scale
model: {{family: mlp, width: 8, shortcut_depth: 1}}
data: {{name: synthetic, samples: 40, features: 8}}
train: {{epochs: 1, batch_size: full}}
grid:
  model.depth: {depths}
  model.shortcut: [identity, none]
  init.c: {cs}
  seed: {seeds}
resources: {{cpu: 1, seeds_per_trial: 1}}  # one Ray Tune trial per trial: the driver's worst case
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
    from resablate import data, models  # noqa: F401 (torch: the models are checked)
    from resablate.plan import make_plan

    imported = time.perf_counter()
    plan = make_plan(sweep_file(folder, trials))
    return len(plan.trials), imported - start, time.perf_counter() - imported


def memory(folder: Path, trials: int) -> list[tuple[float, int, float]]:
    """(seconds, trials ended, driver RSS in MiB) sampled while the sweep runs."""
    from resablate.driver import Options, run_sweep
    from resablate.grid import Trial
    from resablate.plan import make_plan
    from resablate.results import TrialRecord

    plan = make_plan(sweep_file(folder, trials))
    ended: list[int] = [0]
    samples: list[tuple[float, int, float]] = []
    stop = threading.Event()

    def sample(start: float) -> None:
        while not stop.wait(0.2):
            samples.append((time.perf_counter() - start, ended[0], rss_mib()))

    class Count:
        def trial_started(self, trial: Trial) -> None: ...

        def trial_result(self, trial: Trial, result: dict) -> None: ...

        def trial_retried(self, trial: Trial, error: str | None) -> None: ...

        def trial_finished(self, record: TrialRecord) -> None:
            ended[0] += 1

    thread = threading.Thread(target=sample, args=(time.perf_counter(),), daemon=True)
    thread.start()
    try:
        options = Options(
            tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
            results_dir=folder / "runs",
            quiet=True,
            listeners=[Count()],
        )
        run_sweep(plan, options, say=lambda line: None)
    finally:
        stop.set()
        thread.join()
    samples.append((samples[-1][0] if samples else 0.0, ended[0], rss_mib()))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="smaller sizes (CI)")
    args = parser.parse_args()
    plan_size, run_size = (1000, 20) if args.smoke else (10_000, 300)
    with tempfile.TemporaryDirectory(prefix="resablate-scale-") as tmp:
        folder = Path(tmp)
        count, imports, seconds = planning(folder, plan_size)
        print(
            f"planning  {count} trials  {imports + seconds:.2f} s  (imports {imports:.2f} s,"
            f" planning {seconds:.2f} s; target < 5 s for 10,000)"
        )
        samples = memory(folder, run_size)
    started = [s for s in samples if s[1] >= 1]
    if len(started) < 2:
        raise SystemExit("the sweep ended before memory could be sampled twice")
    quarter = next(s for s in started if s[1] >= max(1, run_size // 4))
    last = started[-1]
    growth = (last[2] - quarter[2]) / max(1, last[1] - quarter[1])
    print(f"memory    {run_size} trials on {os.cpu_count()} cores, driver RSS:")
    for share in (0.25, 0.5, 0.75, 1.0):
        at = next(s for s in started if s[1] >= max(1, int(run_size * share)))
        print(f"  {at[1]:4d} trials ended  {at[2]:7.1f} MiB  at {at[0]:6.1f} s")
    print(f"growth    {growth * 1024:.1f} KiB per finished trial after the first quarter")


if __name__ == "__main__":
    main()
