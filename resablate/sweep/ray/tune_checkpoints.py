"""Ray Tune's side of a trial's reports and checkpoints: how they travel, are found again, go.

A trial sends its epoch reports in batches (:class:`Outbox`), reports each checkpoint as a Ray
Tune ``Checkpoint`` (:class:`Reported`; Tune copies it into the run's storage), starts an
attempt from the last one (:func:`resume_state`), reads the driver's stop request from a
:class:`StopFlag` at the end of an epoch, and a finished trial's checkpoints are deleted
(:func:`delete`). The runner's side is tuning.py; the trial's state and the files,
checkpoint.py.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from resablate.trial import checkpoint

# The key of a Tune result that carries our report whole. Ray Tune keeps running statistics
# (max, min, averages over the last 5 and 10 steps) of every numeric key of every trial's results
# for the whole run; the report travels wrapped in a list, which Tune leaves alone, beside the
# few keys Tune reads itself (the epoch, a scheduler's metric): ~2 KiB less per key and trial.
REPORT = "resablate_report"
# The key of a report that carries a checkpoint: [{"epoch", "bytes"}]; and of the report an
# attempt sends first when it continues from one: the epoch it resumes from (0: from the start)
CHECKPOINT, RESUMED = "resablate_checkpoint", "resablate_resumed"
POLL_S = 1.0  # a trial reads the stop flag at the end of an epoch, at most this often
REPORT_EVERY_S = 1.0  # a trial sends its epoch reports to the driver at most this often

Point = tuple[str, int]  # (where a trial's checkpoints are, the newest epoch to resume from)


@ray.remote(num_cpus=0)
class StopFlag:
    """Whether the driver was asked to stop: each trial reads it at the end of an epoch, saves
    a checkpoint when it is set, and is stopped there (:class:`StopRequested`)."""

    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def requested(self) -> bool:
        return self.value


def polled(flag: Any) -> Callable[[], bool]:
    """Reads ``flag`` (a StopFlag) at most every POLL_S seconds; once set it stays set."""
    seen = {"at": 0.0, "set": False}

    def stopping() -> bool:
        if not seen["set"] and time.monotonic() - seen["at"] >= POLL_S:
            seen["at"] = time.monotonic()
            # the driver gone or busy: its own stop reaches the trial
            with contextlib.suppress(Exception):
                seen["set"] = bool(ray.get(flag.requested.remote(), timeout=30))
        return bool(seen["set"])

    return stopping


class Outbox:
    """A trial's epoch reports on their way to the driver: several in one ``tune.report`` (the
    list under REPORT), at most every REPORT_EVERY_S seconds, and what is left before a
    checkpoint and at the end (:meth:`flush`). Tune's ``report`` waits until the driver has
    taken the result: once per epoch, a trial of short epochs waited on the driver more than
    it trained. ``each``: every report on its own (a scheduler decides at every epoch).
    ``keys``: what Tune reads itself, taken from the last report of a batch."""

    def __init__(self, keys: tuple[str, ...], each: bool) -> None:
        self.keys, self.each = keys, each
        self.pending: list[dict[str, Any]] = []
        self.sent = time.monotonic()

    def add(self, result: dict[str, Any]) -> None:
        self.pending.append(result)
        if self.each or time.monotonic() - self.sent >= REPORT_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        last = batch[-1]
        tune.report({**{k: last[k] for k in self.keys if k in last}, REPORT: batch})
        self.sent = time.monotonic()


@dataclass(kw_only=True)
class Reported(checkpoint.Cadence):
    """Checkpoints through Ray Tune: each written to a temporary folder and reported as a Tune
    ``Checkpoint`` (Tune copies it into the run's storage before ``report`` returns), after the
    epoch reports ``outbox`` still holds (the driver logs them before the checkpoint)."""

    outbox: Outbox | None = None

    def save(self, state: dict[str, Any]) -> None:
        if self.outbox is not None:
            self.outbox.flush()
        epoch = state["epoch"]
        with tempfile.TemporaryDirectory(prefix="resablate-checkpoint-") as folder:
            path = Path(folder) / checkpoint.name(epoch)
            checkpoint.write(path, state)
            mark = {"epoch": epoch, CHECKPOINT: [{"epoch": epoch, "bytes": path.stat().st_size}]}
            tune.report({**mark, REPORT: []}, checkpoint=tune.Checkpoint.from_directory(folder))
        self.saved(epoch)


def resume_state(point: Point | None) -> dict[str, Any] | None:
    """The checkpoint an attempt starts from: its trial's last one in this Tune run (a retry,
    a paused trial), else the one ``--resume`` named (``point``), else None (epoch 0). A
    checkpoint that does not read back whole falls back to the one before it (a warning)."""
    found = tune.get_checkpoint()
    if found is not None:
        mine = checkpoint.listing(found.path, found.filesystem)
        folder = found.path.rstrip("/").rpartition("/")[0]
        upto = mine[0][0] if mine else None  # never one Tune has not registered
        state = checkpoint.find(folder, upto, found.filesystem)
        if state is not None:
            return state
    if point is not None:
        return checkpoint.find(point[0], point[1])
    return None


def delete(locations: list[str]) -> None:
    """Delete a finished trial's checkpoints (each location's); one that cannot be deleted is
    said, not raised: the trial's result stands."""
    for location in locations:
        try:
            checkpoint.remove(location)
        except OSError as exc:
            warnings.warn(f"{location}: checkpoints not deleted ({exc})", stacklevel=2)
