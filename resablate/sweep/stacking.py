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
import functools
import gc
import json
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from resablate.spec.grid import Trial, canonical
from resablate.sweep.plan import Plan

AUTO_STACK_MAX = 8  # seeds_per_trial: auto stacks at most this many trials in one worker
STACKED = "resablate.stack_size"  # the MLflow tag of a trial trained in a stack: its size


def stacks(plan: Plan, slots: int | None = None, budget: int | None = None) -> list[list[Trial]]:
    """The plan's trials in stacks: trials with one stack key together where their configuration
    allows it (:func:`resablate.trial.batched.why_not`), every other trial alone.

    ``resources.seeds_per_trial`` caps a stack; ``auto`` (:func:`stack_size`) stacks only when
    the trials run on a local Ray that runs ``slots`` trials at once, and no more than leaves
    every slot a stack. ``budget`` (bytes, :func:`stack_budget`; None: not known, e.g. on a
    cluster) caps a stack at as many members as fit in it
    (:func:`resablate.trial.batched.member_bytes`).
    A key's trials are split into stacks of near-equal size, those of one seed and init next
    to each other (their networks start the same: their init probes are measured once).
    """
    chosen = plan.spec.resources.seeds_per_trial
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
    """Whether the plan's trials stack at all: not with ``seeds_per_trial: 1``, and ``auto``
    only on a local Ray (``slots`` known) without a scheduler (it stops trials one by one)."""
    chosen = plan.spec.resources.seeds_per_trial
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


HEADROOM = 0.5  # a stack may fill this share of the memory free for its slot


def free_bytes(gpu: bool) -> int:
    """Memory free on this machine now: the current GPU's (``gpu``, asked in this process:
    it opens a CUDA context here), or main memory."""
    if gpu:
        import torch

        return int(torch.cuda.mem_get_info()[0])
    import psutil

    return int(psutil.virtual_memory().available)


# The free memory of the GPU a trial would get, asked in a child process that exits: a CUDA
# context in the driver holds ~0.5 GB of GPU 0 for the whole sweep, and under the
# exclusive-process compute mode no trial could then use that GPU.
FREE_GPU = "import torch; print(torch.cuda.mem_get_info()[0])"


def gpu_free_bytes(timeout: float = 120) -> int | None:
    """The free bytes of the first visible GPU, asked in a child process (None: it could not
    tell, e.g. no GPU, or one held in exclusive mode)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", FREE_GPU], capture_output=True, text=True, timeout=timeout
        )
        return int(done.stdout.strip()) if done.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, OSError):
        return None


def stack_budget(plan: Plan, slots: int) -> int | None:
    """Bytes one stack may take on this machine while ``slots`` stacks run at once: HEADROOM
    of the free memory of a GPU times a trial's share of it (``resources.gpu``), or without
    GPUs of the free main memory over the slots (None: not known). Opens no CUDA context in
    this process (:func:`gpu_free_bytes`)."""
    import torch

    share = plan.spec.resources.gpu
    if share > 0 and torch.cuda.is_available():
        free = gpu_free_bytes()
        return None if free is None else int(free * min(share, 1.0) * HEADROOM)
    return int(free_bytes(False) / max(slots, 1) * HEADROOM)


def fits(group: Sequence[Trial], budget: int) -> int:
    """How many members of ``group`` (one stack key) fit in ``budget`` bytes beside the one copy
    of the data set the stack holds, at least 1."""
    from resablate.trial.batched import data_bytes
    from resablate.trial.optim import state_slots

    train = [t.config["train"] for t in group]
    slots = max(state_slots(t["optimizer"], t["momentum"]) for t in train)
    left = budget - data_bytes(group[0].config["data"])
    return max(1, left // _member(group[0], slots))


def _member(trial: Trial, slots: int | None = None) -> int:
    """batched.member_bytes of ``trial`` (``slots`` tensors of optimizer state), cached."""
    config = trial.config
    key = canonical({k: config[k] for k in ("model", "init", "data", "train")})
    return _member_bytes(key, slots)


@functools.lru_cache(maxsize=1024)
def _member_bytes(config: str, slots: int | None) -> int:
    from resablate.trial.batched import member_bytes

    return member_bytes(json.loads(config), slots)


def describe(plan: Plan, slots: int, budget: int | None) -> dict[str, Any]:
    """How the plan's trials stack on a local Ray with ``slots`` trial slots and ``budget``
    bytes a stack (``resablate plan``): how many Ray Tune trials, how many stacks of each size,
    and why the trials that train alone do (reason -> count)."""
    found = stacks(plan, slots, budget)
    alone: dict[str, int] = {}
    why = None
    if plan.spec.resources.seeds_per_trial == 1:
        why = "resources.seeds_per_trial is 1"
    elif not stacking(plan, slots):
        why = "a scheduler stops trials one by one (seeds_per_trial auto stacks none)"
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
    if budget is not None and 2 * _member(trial) > budget:  # fits() would give 1
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
) -> None:
    """Train a stack: one trial, or several stacked (probes run on each member's network), saving
    checkpoints where ``checkpoints`` (a checkpoint.Cadence) says, from ``resume`` if given.

    It computes on ``threads`` intra-op threads (:func:`trial_threads`), restored afterwards:
    in a Ray worker and inline alike, so a trial rounds its sums the same way under Ray Tune
    and ``--inline``, and two sweeps in one machine do not each spin a thread per core (two
    ``--inline`` sweeps at once on 2 cores took 71 s with torch's default of 2 threads each,
    12 s with one)."""
    import torch

    from resablate.trial.train import run_stack

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
