"""What trials report and how they end; the events a sweep's listeners receive.

Pure Python, shared by the runner (which emits events), tracking (MLflow), progress (the console)
and the summary. A listener has the three methods of :class:`Listener`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from resablate.errors import UserError
from resablate.spec.grid import Trial

RUNNING, FINISHED, DIVERGED, FAILED = "running", "finished", "diverged", "failed"
PRUNED = "pruned"  # stopped early by the sweep's scheduler (ASHA, median stopping)
# an attempt that did not end its trial: the sweep stopped under it, or Tune restarted it
KILLED, RETRIED = "killed", "retried"
# a trial that ended with one of these is a result: not run again on resume
RESULT_STATUSES = (FINISHED, DIVERGED, PRUNED)
# what every epoch reports; val_* only where data.validation holds a validation set out (what
# searches and schedulers read: nothing is chosen on the test set, science.md §5)
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc")


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The finite scalar metrics of one report (NaN/inf losses are not logged as values)."""
    out = {}
    for key, value in result.items():
        if key in ("epoch", "status") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
    return out


@dataclass(slots=True)  # a sweep keeps one per trial (for its summary): no __dict__ each
class TrialRecord:
    """A trial's end: its status, the metrics of its last report, and the error if it failed."""

    trial: Trial
    status: str = RUNNING
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    # each report's values of the metrics the run was asked to keep (Collector's history_of)
    history: list[dict[str, float]] = field(default_factory=list)
    reported: int = -1  # the last epoch reported (a resumed attempt's repeats are not kept twice)


class Listener(Protocol):
    """What a sweep's listeners receive. Optional, for those that care: ``trial_checkpointed(
    trial, location, epoch, size)`` (the trial's training state up to ``epoch`` is saved under
    ``location``, ``size`` bytes) and ``trial_resumed(trial, epoch)`` (an attempt continues
    from the checkpoint of ``epoch``)."""

    def trial_started(self, trial: Trial) -> None: ...

    def trial_result(self, trial: Trial, result: dict[str, Any]) -> None: ...

    def trial_finished(self, record: TrialRecord) -> None: ...

    def trial_retried(self, trial: Trial, error: str | None) -> None: ...


class Collector:
    """Keeps each trial's latest report and final record (the runner's return value), and the
    per-epoch values of the ``history_of`` metrics only: the driver's memory must not grow
    with every epoch of every trial (MLflow holds the curves)."""

    def __init__(self, history_of: tuple[str, ...] = ()) -> None:
        self.records: dict[str, TrialRecord] = {}
        self.history_of = history_of

    def trial_started(self, trial: Trial) -> None:
        record = self.records.get(trial.id)
        if record is None or record.status != RUNNING:  # a retried attempt continues its record
            self.records[trial.id] = TrialRecord(trial)

    def trial_retried(self, trial: Trial, error: str | None) -> None:
        return None

    def trial_result(self, trial: Trial, result: dict[str, Any]) -> None:
        record = self.records.setdefault(trial.id, TrialRecord(trial))
        record.epoch = int(result.get("epoch", record.epoch))
        found = epoch_metrics(result)
        record.metrics.update(found)
        if self.history_of and record.epoch > record.reported:  # an epoch once, on a resume
            record.history.append({k: found[k] for k in self.history_of if k in found})
        record.reported = max(record.reported, record.epoch)
        record.status = str(result.get("status", RUNNING))

    def finish(
        self, trial: Trial, status: str | None = None, error: str | None = None
    ) -> TrialRecord:
        """Close a trial: its status is the one given, else the one its last report named."""
        record = self.records.setdefault(trial.id, TrialRecord(trial))
        if status is not None:
            record.status = status
        elif record.status == RUNNING:
            record.status = FINISHED
        record.error = error
        return record


class Events:
    """Fans trial events out to listeners; the collector sees each event first.

    A listener's :class:`UserError` (the tracking store failed) is kept in ``failure`` before it
    propagates, so that it reaches the user as itself even where Ray Tune wraps it.
    """

    def __init__(self, listeners: Sequence[Listener], history_of: tuple[str, ...] = ()) -> None:
        self.collector = Collector(history_of)
        self.listeners = list(listeners)
        self.failure: UserError | None = None

    def _each(self, call: Callable[[Listener], object]) -> None:
        try:
            for listener in self.listeners:
                call(listener)
        except UserError as exc:
            self.failure = exc
            raise

    def started(self, trial: Trial) -> None:
        self.collector.trial_started(trial)
        self._each(lambda listener: listener.trial_started(trial))

    def result(self, trial: Trial, result: dict[str, Any]) -> None:
        self.collector.trial_result(trial, result)
        self._each(lambda listener: listener.trial_result(trial, result))

    def finished(self, trial: Trial, status: str | None = None, error: str | None = None) -> None:
        record = self.collector.finish(trial, status, error)
        self._each(lambda listener: listener.trial_finished(record))

    def retried(self, trial: Trial, error: str | None) -> None:
        self.collector.trial_retried(trial, error)
        self._each(lambda listener: listener.trial_retried(trial, error))

    def results(self, stack: Sequence[Trial]) -> bool:
        """Whether every trial of ``stack`` ended with a result (finished, diverged, pruned):
        then its checkpoints can go."""
        found = [self.collector.records.get(t.id) for t in stack]
        return all(r is not None and r.status in RESULT_STATUSES for r in found)

    def checkpointed(self, trial: Trial, location: str, epoch: int, size: int) -> None:
        """The trial's state up to ``epoch`` is saved under ``location`` (``size`` bytes)."""
        self._optional("trial_checkpointed", trial, location, epoch, size)

    def resumed(self, trial: Trial, epoch: int) -> None:
        """An attempt of the trial continues from its checkpoint of ``epoch`` (0: from the
        start, its earlier epochs reported again)."""
        self._optional("trial_resumed", trial, epoch)

    def _optional(self, name: str, *args: Any) -> None:
        self._each(lambda listener: getattr(listener, name, lambda *a: None)(*args))

    def failed(self, stack: Sequence[Trial], error: str | None) -> None:
        """A worker failed: the trials of its stack that had not ended (a stacked seed may have
        diverged) fail."""
        for trial in stack:
            record = self.collector.records.get(trial.id)
            ended = record is not None and record.status not in (RUNNING, FINISHED)
            self.finished(trial, None if ended else FAILED, None if ended else error)
