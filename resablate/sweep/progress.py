"""The driver's progress bar: done / running / failed / diverged, elapsed time and ETA (rich)."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from resablate.results import DIVERGED, FAILED, PRUNED, RUNNING, TrialRecord
from resablate.spec.grid import Trial


class _TwoLines(Progress):
    """rich's bar on the first line, each task's ``state`` field on the line below it."""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            yield Text("  " + task.fields.get("state", ""), overflow="ellipsis", no_wrap=True)


class SweepProgress:
    """A :class:`~resablate.results.Listener` that draws one bar for the whole sweep."""

    def __init__(self, name: str, total: int, console: Console, done: int = 0) -> None:
        self.counts = {RUNNING: 0, FAILED: 0, DIVERGED: 0, PRUNED: 0}

        # the counts and times are never cut on an 80-column terminal: the name gives way first
        # (an ellipsis past 24 characters), the bar takes the width that is left, and the trials'
        # states have a line of their own below
        def fixed(width: int) -> Column:
            return Column(min_width=width, no_wrap=True)

        label = Column(max_width=24, no_wrap=True)
        self.bar = _TwoLines(
            TextColumn("[bold]{task.description}", table_column=label),
            BarColumn(bar_width=None, table_column=Column(ratio=1)),
            MofNCompleteColumn(table_column=fixed(2 * len(str(total)) + 1)),
            TimeElapsedColumn(table_column=fixed(7)),
            TextColumn("ETA", table_column=fixed(3)),
            TimeRemainingColumn(table_column=fixed(7)),
            console=console,
            transient=False,
            expand=True,
        )
        # ``done``: trials an earlier invocation finished (a resumed sweep)
        self.task = self.bar.add_task(name, total=total, completed=done, state=self._state())

    def _state(self) -> str:
        """``running N``, then the failed, diverged and pruned trials, each once there is one."""
        c = self.counts
        shown = [f"{c[s]} {s}" for s in (FAILED, DIVERGED, PRUNED) if c[s]]
        return " · ".join([f"running {c[RUNNING]}", *shown])

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
