"""Checkpoints: a stack's whole training state at the end of an epoch, and resuming from one.

A checkpoint holds what the next epoch reads: the networks' weights and buffers (the stack's),
the optimizer's state (momentum, Adam's moments), the lr schedule and warm-up state, every
generator (each member's shuffle and augmentation generators, torch's global one that dropout and
stochastic depth draw from, CUDA's where used), each member's last report, last finite loss and
whether it is still training, and the epoch. The data order needs no position of its own: a
checkpoint is taken at the end of an epoch, and the next epoch's order is the shuffle generator's
next draw. Resumed from epoch k, a trial on the CPU ends with the same weights and metrics, bit for
bit, as the trial that was never stopped (tests/test_checkpoint.py).

Files are written atomically (a temporary file in the same folder, flushed, then renamed over the
old one) and read with ``torch.load(weights_only=True)``: plain tensors, numbers, strings, lists
and dicts only. :class:`Checkpoints` keeps the newest two of a trial, so that a checkpoint found
corrupt or truncated falls back to the one before it (or to epoch 0), with a warning, not a crash.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

    from resablate.batched import Stack


class Member(Protocol):
    """What a checkpoint keeps of one network of a stack (train.Member)."""

    shuffle: torch.Generator
    augment: torch.Generator | None
    result: dict[str, Any]
    last_finite: float


M = TypeVar("M", bound=Member)


FORMAT = 1  # the layout of a checkpoint's dict; a file of another format is not resumed from
KEEP = 2  # checkpoints kept per trial: the newest and the one before it
EVERY_SECONDS = 600.0  # a trial loses at most this much work ...
EVERY_FRACTION = 0.1  # ... and at most this share of its epochs


def default_every(epochs: int) -> int:
    """Epochs between checkpoints by default: a tenth of the trial's epochs (at least 1)."""
    return max(1, math.ceil(epochs * EVERY_FRACTION))


def capture(
    epoch: int,
    stack: Stack,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    members: Sequence[Member],
    live: Sequence[Member],
) -> dict[str, Any]:
    """The training state at the end of ``epoch``, as a dict ``torch.save`` writes: views of
    the live tensors, no copies, so it is written before training goes on."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {
        "format": FORMAT,
        "epoch": epoch,
        "stack": {k: v.detach() for k, v in stack.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": cuda,
        "members": [
            {
                "shuffle": m.shuffle.get_state(),
                "augment": None if m.augment is None else m.augment.get_state(),
                "result": m.result,
                "last_finite": m.last_finite,
                "live": m in live,
            }
            for m in members
        ],
    }


def restore(
    saved: dict[str, Any],
    stack: Stack,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    members: Sequence[M],
) -> tuple[int, list[M]]:
    """Put ``saved`` back into a freshly built trial: (its epoch, the members still training)."""
    if saved.get("format") != FORMAT or len(saved["members"]) != len(members):
        raise ValueError("the checkpoint is of another format or another stack")
    stack.load_state_dict(saved["stack"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    for member, state in zip(members, saved["members"], strict=True):
        member.shuffle.set_state(state["shuffle"])
        if member.augment is not None and state["augment"] is not None:
            member.augment.set_state(state["augment"])
        member.result = state["result"]
        member.last_finite = state["last_finite"]
    return int(saved["epoch"]), [
        m for m, s in zip(members, saved["members"], strict=True) if s["live"]
    ]


def write(path: Path, state: dict[str, Any]) -> None:
    """``state`` into ``path`` atomically: a reader sees the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def read(path: Path) -> dict[str, Any]:
    """A checkpoint file back (tensors on the CPU); raises ValueError when it is not one."""
    try:
        found = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupted, or not a torch file at all
        raise ValueError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise ValueError(f"{path}: not a resablate checkpoint of format {FORMAT}")
    return found


@dataclass
class Checkpoints:
    """A trial's checkpoints in ``folder``: ``epoch_<k>.pt``, the newest :data:`KEEP` kept.

    :meth:`due` says whether the end of an epoch is a checkpoint: every ``every`` epochs (default
    :func:`default_every`), the last epoch, when :data:`EVERY_SECONDS` have passed since the last
    one, and when ``stopping()`` (a requested stop) says so."""

    folder: Path
    every: int | None = None
    stopping: Callable[[], bool] | None = None  # a stop was requested
    saved_at: float = field(default_factory=time.monotonic)

    def due(self, epoch: int, last: int) -> bool:
        every = self.every or default_every(last)
        return (
            epoch % every == 0
            or epoch == last
            or time.monotonic() - self.saved_at >= EVERY_SECONDS
            or (self.stopping is not None and self.stopping())
        )

    def save(self, state: dict[str, Any]) -> Path:
        path = self.folder / f"epoch_{state['epoch']}.pt"
        write(path, state)
        self.saved_at = time.monotonic()
        for old in self.files()[KEEP:]:
            old.unlink(missing_ok=True)
        return path

    def files(self) -> list[Path]:
        """The checkpoint files, newest first."""
        found = [p for p in self.folder.glob("epoch_*.pt") if p.stem[6:].isdigit()]
        return sorted(found, key=lambda p: int(p.stem[6:]), reverse=True)

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that reads back whole; one that does not is said and skipped
        (the trial then resumes from the one before it, or starts from epoch 0)."""
        for path in self.files():
            try:
                return read(path)
            except ValueError as exc:
                warnings.warn(f"{exc}; resuming from the checkpoint before it", stacklevel=2)
        return None

    def clear(self) -> None:
        """Delete the trial's checkpoints (a finished trial keeps none)."""
        for path in self.files():
            path.unlink(missing_ok=True)
