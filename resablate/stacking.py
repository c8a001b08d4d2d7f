"""Stacks: the trials that one worker trains together as one computation.

A stack is one trial, or trials of one network architecture and data stream that may differ in
seed, init and training recipe (batched.stack_key) and whose networks train stacked (the
training loop's stack of k >= 1 networks): a Ray Tune trial trains one stack, and each of its
trials still gets its own reports, MLflow run and ending. Which configurations can stack is the
training loop's to say; how many trials go together is ``resources.seeds_per_trial`` (auto: as
many as keep every trial slot busy).
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from resablate.grid import Trial
from resablate.plan import Plan

AUTO_STACK_MAX = 8  # seeds_per_trial: auto stacks at most this many trials in one worker
STACKED = "resablate.stack_size"  # the MLflow tag of a trial trained in a stack: its size


def stacks(plan: Plan, slots: int | None = None) -> list[list[Trial]]:
    """The plan's trials in stacks: trials with one stack key together where their configuration
    allows it (:func:`resablate.batched.why_not`), every other trial alone.

    ``resources.seeds_per_trial`` caps a stack; ``auto`` (:func:`stack_size`) stacks only when
    the trials run on a local Ray that runs ``slots`` trials at once, and no more than leaves
    every slot a stack. A key's trials are split into stacks of near-equal size.
    """
    chosen = plan.spec.resources.seeds_per_trial
    scheduled = plan.spec.scheduler.kind != "none"  # it stops trials one by one
    if chosen == 1 or (chosen == "auto" and (slots is None or scheduled)):
        return [[t] for t in plan.trials]
    from resablate.batched import stack_key, why_not

    def alone(config: dict[str, Any]) -> bool:
        try:
            return why_not(config) is not None
        except ValueError:  # a config that does not validate fails in its own worker
            return True

    together: dict[str, list[Trial]] = {}
    for trial in plan.trials:
        key = trial.id if alone(trial.config) else stack_key(trial.config)
        together.setdefault(key, []).append(trial)
    groups = list(together.values())
    size = chosen if chosen != "auto" else stack_size([len(g) for g in groups], slots or 1)
    out: list[list[Trial]] = []
    for group in groups:
        parts = -(-len(group) // size)  # stacks of near-equal size, none over size
        for k in range(parts):
            stack = group[k * len(group) // parts : (k + 1) * len(group) // parts]
            if len(stack) > 1:
                tag = {STACKED: str(len(stack))}
                stack = [dataclasses.replace(t, tags={**t.tags, **tag}) for t in stack]
            out.append(stack)
    return out


def stack_size(groups: Sequence[int], slots: int) -> int:
    """The largest stack (up to AUTO_STACK_MAX trials) that still gives at least ``slots``
    stacks, for groups of ``groups[i]`` stackable trials (1: the trial runs alone); 1 when even
    separate trials leave slots idle. Fewer, fuller workers cost nothing while every slot is
    busy: each stack trains its trials in one computation, one worker start, one Tune trial."""
    for size in range(AUTO_STACK_MAX, 1, -1):
        if sum(-(-n // size) for n in groups) >= slots:
            return size
    return 1


def train_stack(
    configs: list[dict[str, Any]],
    reports: list[Callable[[dict[str, Any]], None]],
    device: str,
    probes: Any,
    checkpoints: Any = None,
    resume: dict[str, Any] | None = None,
) -> None:
    """Train a stack: one trial, or several stacked (probes run on each member's network), saving
    checkpoints where ``checkpoints`` (a checkpoint.Cadence) says, from ``resume`` if given."""
    from resablate.train import run_stack

    run_stack(
        configs, reports, device=device, probes=probes, checkpoints=checkpoints, resume=resume
    )


def resume_point(stack: list[Trial], points: dict[str, tuple[str, int]]) -> tuple[str, int] | None:
    """Where a stack starts from: the checkpoint (location, epoch) that --resume found for its
    trials, when all of them name the same one (a checkpoint holds its whole stack); None:
    from the start."""
    found = {points.get(t.id) for t in stack}
    if len(found) != 1:
        return None
    return found.pop()


def stack_id(stack: list[Trial]) -> str:
    """The Ray Tune trial's name for a stack: its trials' ids."""
    return "_".join(t.id for t in stack)


def failure_text(exc: BaseException) -> str:
    """A failed trial's error.txt: the traceback, after one line that names a GPU running out
    of memory as such (with the fix) instead of leaving it to the traceback's last line."""
    text = "".join(traceback.format_exception(exc))
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return (
            "GPU out of memory: lower train.batch_size, give each trial more of a GPU"
            " (resources.gpu) so that fewer trials share one, or set resources.seeds_per_trial:"
            f" 1 (a stack holds one network per trial)\n{text}"
        )
    return text


# A grid runs as several Ray Tune runs in turn, each of at most max(STACKS_PER_RUN,
# STACKS_PER_SLOT x the trials that run at once) stacks, so that no run waits long on its last
# trials. Tune keeps every trial's bookkeeping (its Trial, the running statistics of its
# automatic result keys, experiment-state snapshots of all its trials) until its run returns, and
# more per trial the longer the run (39 KiB per trial over the first 1,000 of one 3,000-trial
# run): the driver of one run of a 10,000-trial grid would grow by hundreds of MiB. Each run costs
# a Tune start (~5 s on 2 cores: new workers) and the idle tail of its last trials.
STACKS_PER_RUN = 1000
STACKS_PER_SLOT = 50


def runs_of(chosen: list[list[Trial]], slots: int, scheduled: bool) -> list[list[list[Trial]]]:
    """The stacks split into consecutive Tune runs of near-equal size, none over
    max(STACKS_PER_RUN, STACKS_PER_SLOT x slots); one run under a scheduler, which compares
    every trial with the others of its run."""
    if not chosen:
        return []
    if scheduled:
        return [chosen]
    size = max(STACKS_PER_RUN, STACKS_PER_SLOT * slots)
    parts, n = -(-len(chosen) // size), len(chosen)
    return [chosen[k * n // parts : (k + 1) * n // parts] for k in range(parts)]
