"""Capacity: what this machine (or the Ray it runs on) holds, counted once for the whole sweep.

Trial slots (how many trials run at once at each trial's resources.cpu and resources.gpu, in
Ray's own fixed point), the bytes one stack may take, the candidates a search keeps in flight to
fill the slots, how many stacks one Ray Tune run holds, and what the trials' checkpoints take on
disk. ``resablate plan`` prints these numbers and the runner and the search act on the same ones.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from resablate.spec.grid import Trial, canonical
from resablate.sweep.plan import Plan
from resablate.sweep.search_grid import search_size


def checkpoint_bytes(trial: Trial, params: int) -> int:
    """About how large one checkpoint of ``trial`` is: its float32 weights and the optimizer's
    state (a network's buffers, the generators and the reports add little: a CIFAR ResNet-110's
    is 13.5 MB measured, 13.7 MB by this count)."""
    from resablate.trial.optim import state_slots

    train = trial.config["train"]
    return 4 * params * (1 + state_slots(train["optimizer"], train["momentum"]))


def checkpoint_disk(plan: Plan, params: list[int]) -> dict[str, Any]:
    """What a sweep's checkpoints take on disk (estimates): per trial, at once while the trials
    that run together on this machine each keep their last KEEP, and in MLflow artifacts when
    ``train.keep_checkpoint`` keeps each finished trial's last one."""
    from resablate.trial.checkpoint import KEEP

    sizes = [checkpoint_bytes(t, n) for t, n in zip(plan.trials, params, strict=True)]
    slots = slots_in(plan, local_resources())
    largest = sorted(sizes, reverse=True)[:slots]
    # a search runs each searched grid trial once per candidate
    runs = search_size(plan)["total_trials"] / len(sizes) if plan.spec.search and sizes else 1
    return {
        "bytes_per_trial": max(sizes, default=0),
        "kept_per_trial": KEEP,
        "trials_at_once": slots,
        "peak_bytes": KEEP * sum(largest),
        "artifact_bytes": round(sum(sizes) * runs) if plan.spec.train.keep_checkpoint else 0,
    }


def local_resources() -> dict[str, float]:
    """This machine's CPUs and GPUs, as Ray counts them."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


RAY_UNIT = 10_000  # Ray counts resources in fixed point, to 1/10,000 of a unit


def fit(have: float, each: float) -> int:
    """How many shares of ``each`` Ray fits in ``have``, in Ray's fixed point: 10 of 0.1 GPU
    in 1 (float division says 1.0 // 0.1 == 9)."""
    return round(have * RAY_UNIT) // max(1, round(each * RAY_UNIT))


def slots_in(plan: Plan, have: dict[str, float]) -> int:
    """How many of the plan's trials ``have`` (Ray's resources: CPU, GPU) runs at once."""
    wanted = plan.spec.resources
    fits = [fit(have.get("CPU", 0.0), wanted.cpu)]
    if wanted.gpu > 0:
        fits.append(fit(have.get("GPU", 0.0), wanted.gpu))
    if wanted.max_concurrent_trials is not None:
        fits.append(wanted.max_concurrent_trials)
    return max(1, min(fits))


def disk_text(disk: dict[str, Any]) -> str:
    """`resablate plan`'s line: the estimate of :func:`checkpoint_disk`."""
    line = (
        f"checkpoints: about {size_text(disk['bytes_per_trial'])} per trial (weights and"
        f" optimizer state); each running trial keeps its last {disk['kept_per_trial']}: about"
        f" {size_text(disk['peak_bytes'])} at once with {disk['trials_at_once']} running here;"
        " deleted when a trial finishes"
    )
    if disk["artifact_bytes"]:
        line += (
            f", but for its last, logged to MLflow (train.keep_checkpoint): about"
            f" {size_text(disk['artifact_bytes'])} in all"
        )
    return line


def size_text(n: float) -> str:
    """Bytes as a short human number: 13.5 MB, 2.1 GB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


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
    return max(1, left // trial_bytes(group[0], slots))


def trial_bytes(trial: Trial, slots: int | None = None) -> int:
    """batched.member_bytes of ``trial`` (``slots`` tensors of optimizer state), cached."""
    config = trial.config
    key = canonical({k: config[k] for k in ("model", "init", "data", "train")})
    return _member_config_bytes(key, slots)


@functools.lru_cache(maxsize=1024)
def _member_config_bytes(config: str, slots: int | None) -> int:
    from resablate.trial.batched import member_bytes

    return member_bytes(json.loads(config), slots)


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


def in_flight(slots: int, seeds: int, cells: int) -> int:
    """Candidates each cell's study has out at once: enough to fill the ``slots`` the trials
    run in (each candidate runs ``seeds`` trials), and at least two (the constant liar keeps
    them apart)."""
    return max(2, slots // (seeds * cells))
