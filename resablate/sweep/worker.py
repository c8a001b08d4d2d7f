"""The worker's side of a stack, under Ray Tune and inline alike: train it on its share of the
machine's threads, hand its GPU memory back, and write why it failed."""

from __future__ import annotations

import gc
import traceback
from collections.abc import Callable
from typing import Any

from resablate.sweep.plan import Plan


def trial_threads(plan: Plan) -> int:
    """torch's intra-op threads a trial trains with: its ``resources.cpu``, whole (at least 1)."""
    return max(1, int(plan.spec.resources.cpu))


def train_stack(
    configs: list[dict[str, Any]],
    reports: list[Callable[[dict[str, Any]], None]],
    device: str,
    probes: Any,
    threads: int,
    checkpoints: Any = None,
    resume: dict[str, Any] | None = None,
    plugins: tuple[tuple[str, str], ...] = (),
) -> None:
    """Train a stack: one trial, or several stacked (probes run on each member's network), saving
    checkpoints where ``checkpoints`` (a checkpoint.Cadence) says, from ``resume`` if given;
    the sweep's ``plugins`` (Plan.plugins) imported first, as in every process that builds its
    networks.

    It computes on ``threads`` intra-op threads (:func:`trial_threads`), restored afterwards:
    in a Ray worker and inline alike, so a trial rounds its sums the same way under Ray Tune
    and ``--inline``, and two sweeps in one machine do not each spin a thread per core (two
    ``--inline`` sweeps at once on 2 cores took 71 s with torch's default of 2 threads each,
    12 s with one)."""
    import torch

    from resablate.spec import plugins as sweep_plugins
    from resablate.trial.train import run_stack

    sweep_plugins.load(plugins)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run_stack(
            configs, reports, device=device, probes=probes, checkpoints=checkpoints, resume=resume
        )
    finally:
        torch.set_num_threads(before)
        release(device)


def release(device: str) -> None:
    """Hand the GPU memory a finished stack cached back to the device: Ray reuses a worker for
    the next trial (reuse_actors), whose process would otherwise keep this one's cached blocks
    while other trials share the GPU."""
    import torch

    if torch.device(device).type == "cuda" and torch.cuda.is_initialized():
        gc.collect()  # the stack's tensors held in reference cycles go first
        torch.cuda.empty_cache()


def failure_text(exc: BaseException) -> str:
    """A failed trial's error.txt: the traceback, after one line that names a GPU running out
    of memory as such (with the fix) instead of leaving it to the traceback's last line."""
    text = "".join(traceback.format_exception(exc))
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return (
            "GPU out of memory: lower train.batch_size, give each trial more of a GPU"
            " (resources.gpu) so that fewer trials share one, or set resources.trials_per_stack:"
            f" 1 (a stack holds one network per trial)\n{text}"
        )
    return text
