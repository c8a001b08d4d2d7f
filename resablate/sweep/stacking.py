"""Stacks: the trials that one worker trains together as one computation.

A stack is one trial, or trials of one network architecture and data stream that may differ in
seed, init and training recipe (batched.stack_key) and whose networks train stacked (the
training loop's stack of k >= 1 networks): a Ray Tune trial trains one stack, and each of its
trials still gets its own reports, MLflow run and ending. Which configurations can stack is the
training loop's to say; how many trials go together is ``resources.trials_per_stack`` (auto: as
many as keep every trial slot busy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from resablate.spec.grid import Trial, canonical
from resablate.sweep.capacity import fits, trial_bytes
from resablate.sweep.plan import Plan

AUTO_STACK_MAX = 8  # trials_per_stack: auto stacks at most this many trials in one worker
STACKED = "resablate.stack_size"  # the MLflow tag of a trial trained in a stack: its size


def stacks(plan: Plan, slots: int | None = None, budget: int | None = None) -> list[list[Trial]]:
    """The plan's trials in stacks: trials with one stack key together where their configuration
    allows it (:func:`resablate.trial.batched.why_not`), every other trial alone.

    ``resources.trials_per_stack`` caps a stack; ``auto`` (:func:`stack_size`) stacks only when
    the trials run on a local Ray that runs ``slots`` trials at once, and no more than leaves
    every slot a stack. ``budget`` (bytes, :func:`stack_budget`; None: not known, e.g. on a
    cluster) caps a stack at as many members as fit in it
    (:func:`resablate.trial.batched.member_bytes`).
    A key's trials are split into stacks of near-equal size, those of one seed and init next
    to each other (their networks start the same: their init probes are measured once).
    """
    chosen = plan.spec.resources.trials_per_stack
    if not stacking(plan, slots):
        return [[t] for t in plan.trials]
    groups = list(keyed(plan.trials).values())
    size = chosen if chosen != "auto" else stack_size([len(g) for g in groups], slots or 1)
    out: list[list[Trial]] = []
    for group in groups:
        group = sorted(group, key=start)
        most = size if budget is None or len(group) == 1 else min(size, fits(group, budget))
        parts = -(-len(group) // most)  # stacks of near-equal size, none over most
        for k in range(parts):
            stack = group[k * len(group) // parts : (k + 1) * len(group) // parts]
            if len(stack) > 1:
                tag = {STACKED: str(len(stack))}
                stack = [dataclasses.replace(t, tags={**t.tags, **tag}) for t in stack]
            out.append(stack)
    return out


def start(trial: Trial) -> tuple[int, str]:
    """What a trial's network starts from: its seed and init."""
    return trial.config.get("seed", 0), canonical(trial.config.get("init", {}))


def stacking(plan: Plan, slots: int | None) -> bool:
    """Whether the plan's trials stack at all: not with ``trials_per_stack: 1``, and ``auto``
    only on a local Ray (``slots`` known) without a scheduler (it stops trials one by one)."""
    chosen = plan.spec.resources.trials_per_stack
    scheduled = plan.spec.scheduler.kind != "none"
    return not (chosen == 1 or (chosen == "auto" and (slots is None or scheduled)))


def keyed(trials: Sequence[Trial]) -> dict[str, list[Trial]]:
    """The trials by stack key (batched.stack_key); a trial that cannot stack under its id."""
    from resablate.trial.batched import stack_key, why_not

    def alone(config: dict[str, Any]) -> bool:
        try:
            return why_not(config) is not None
        except ValueError:  # a config that does not validate fails in its own worker
            return True

    together: dict[str, list[Trial]] = {}
    for trial in trials:
        key = trial.id if alone(trial.config) else stack_key(trial.config)
        together.setdefault(key, []).append(trial)
    return together


def describe(plan: Plan, slots: int, budget: int | None) -> dict[str, Any]:
    """How the plan's trials stack on a local Ray with ``slots`` trial slots and ``budget``
    bytes a stack (``resablate plan``): how many Ray Tune trials, how many stacks of each size,
    and why the trials that train alone do (reason -> count)."""
    found = stacks(plan, slots, budget)
    alone: dict[str, int] = {}
    why = None
    if plan.spec.resources.trials_per_stack == 1:
        why = "resources.trials_per_stack is 1"
    elif not stacking(plan, slots):
        why = "a scheduler stops trials one by one (trials_per_stack auto stacks none)"
    for stack in found:
        if len(stack) == 1:
            reason = why or _alone(stack[0], budget)
            alone[reason] = alone.get(reason, 0) + 1
    sizes: dict[str, int] = {}
    for stack in found:
        if len(stack) > 1:
            sizes[str(len(stack))] = sizes.get(str(len(stack)), 0) + 1
    return {
        "trial_slots": slots,
        "budget_bytes": budget,
        "tune_trials": len(found),
        "stacks": dict(sorted(sizes.items(), key=lambda kv: -int(kv[0]))),
        "alone": alone,
    }


def _alone(trial: Trial, budget: int | None) -> str:
    from resablate.trial.batched import why_not

    try:
        reason = why_not(trial.config)
    except ValueError as exc:
        return str(exc)
    if reason:
        return reason
    if budget is not None and 2 * trial_bytes(trial) > budget:  # fits() would give 1
        return "two of its networks do not fit in a slot's memory"
    return "no other trial has its network and data stream"


def stacks_text(found: dict[str, Any]) -> str:
    """`resablate plan`'s line about :func:`describe`."""
    stacked = ", ".join(f"{n} stacks of {k}" for k, n in found["stacks"].items())
    alone = sum(found["alone"].values())
    parts = [p for p in (stacked, f"{alone} alone" if alone else "") if p]
    line = (
        f"on this machine's Ray ({found['trial_slots']} trial slots): {found['tune_trials']}"
        f" Ray Tune trials ({'; '.join(parts) or 'none'})"
    )
    reasons = "; ".join(
        f"{n}: {r}" for r, n in sorted(found["alone"].items(), key=lambda x: -x[1])
    )
    return line + (f"; alone because {reasons}" if reasons else "")


def stack_size(groups: Sequence[int], slots: int) -> int:
    """The largest stack (up to AUTO_STACK_MAX trials) that still gives at least ``slots``
    stacks, for groups of ``groups[i]`` stackable trials (1: the trial runs alone); 1 when even
    separate trials leave slots idle. Fewer, fuller workers cost nothing while every slot is
    busy: each stack trains its trials in one computation, one worker start, one Tune trial."""
    for size in range(AUTO_STACK_MAX, 1, -1):
        if sum(-(-n // size) for n in groups) >= slots:
            return size
    return 1


def resume_point(
    stack: list[Trial], trial_points: dict[str, tuple[str, int]]
) -> tuple[str, int] | None:
    """Where a stack starts from: the checkpoint (location, epoch) that --resume found for its
    trials, when all of them name the same one (a checkpoint holds its whole stack); None:
    from the start."""
    found = {trial_points.get(t.id) for t in stack}
    if len(found) != 1:
        return None
    return found.pop()


def stack_id(stack: list[Trial]) -> str:
    """The Ray Tune trial's name for a stack: its trials' ids."""
    return "_".join(t.id for t in stack)
