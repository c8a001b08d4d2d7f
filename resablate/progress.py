"""The driver's progress bar: done / running / failed / diverged, elapsed time and ETA (rich)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from resablate.grid import Trial
from resablate.results import DIVERGED, FAILED, PRUNED, RUNNING, TrialRecord


class SweepProgress:
    """A :class:`~resablate.results.Listener` that draws one bar for the whole sweep."""

    def __init__(self, name: str, total: int, console: Console, done: int = 0) -> None:
        self.counts = {RUNNING: 0, FAILED: 0, DIVERGED: 0, PRUNED: 0}
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[state]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        # ``done``: trials an earlier invocation finished (a resumed sweep)
        self.task = self.bar.add_task(name, total=total, completed=done, state=self._state())

    def _state(self) -> str:
        c = self.counts
        state = f"running {c[RUNNING]} · failed {c[FAILED]} · diverged {c[DIVERGED]}"
        return state + (f" · pruned {c[PRUNED]}" if c[PRUNED] else "")

    def __enter__(self) -> SweepProgress:
        self.bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.bar.stop()

    def trial_started(self, trial: Trial) -> None:
        self.counts[RUNNING] += 1
        self.bar.update(self.task, state=self._state())

    def trial_result(self, trial: Trial, result: dict[str, Any]) -> None:
        return None

    def trial_retried(self, trial: Trial, error: str | None) -> None:
        self.counts[RUNNING] = max(0, self.counts[RUNNING] - 1)  # it starts again

    def trial_finished(self, record: TrialRecord) -> None:
        self.counts[RUNNING] = max(0, self.counts[RUNNING] - 1)
        if record.status in (FAILED, DIVERGED, PRUNED):
            self.counts[record.status] += 1
        self.bar.update(self.task, advance=1, state=self._state())
