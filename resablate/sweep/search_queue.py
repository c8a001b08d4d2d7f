"""A search run as its trials end: every cell's Optuna candidates (search.py) handed out as stacks
while slots free up, each told the mean over its seeds once they all ended, in one run of the
session (one Ray Tune run, or inline)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from resablate.results import DIVERGED, RUNNING, TrialRecord
from resablate.spec.grid import Trial
from resablate.sweep.capacity import in_flight
from resablate.sweep.plan import Plan
from resablate.sweep.search import Candidate, CellSearch
from resablate.sweep.search_grid import search_size


class Runs(Protocol):
    def search(
        self,
        listeners: Sequence[Any],
        queue: CandidateQueue,
        name: str,
        history_of: tuple[str, ...] = (),
    ) -> list[TrialRecord]: ...

    def slots(self) -> int | None: ...

    def running_at_once(self) -> int: ...

    def budget(self) -> int | None: ...


Done = Callable[[list[Trial]], list[TrialRecord]]


class CandidateQueue:
    """The stacks of every cell's candidates, handed out as trials end (runner.Queue).

    Each cell keeps up to ``per_cell`` candidates in flight; a candidate is told the mean over
    its seeds as soon as all of them ended, and the cell then asks the next. Trials an earlier
    invocation finished (``done``) are not run again; the candidates it left untold come first.
    """

    def __init__(
        self,
        plan: Plan,
        search: CellSearch,
        done: Done,
        per_cell: int,
        slots: int | None,
        budget: int | None = None,
    ) -> None:
        self.plan, self.search, self.done, self.per_cell = plan, search, done, per_cell
        self.slots = slots  # trials the session runs at once (None: inline, a cluster)
        self.budget = budget  # bytes a stack may take (None: not known)
        self.flying: list[Candidate] = search.pending()
        self.known: dict[str, TrialRecord] = {}
        self.queued: list[list[Trial]] = []
        self._queue(self.flying)

    def _queue(self, candidates: list[Candidate]) -> None:
        from resablate.sweep.stacking import stacks

        wanted = [t for c in candidates for t in c.trials]
        self.known.update({r.trial.id: r for r in self.done(wanted)})
        todo = [t for t in wanted if t.id not in self.known]
        if todo:  # a candidate's seeds stack like a grid's
            some = dataclasses.replace(self.plan, trials=todo)
            self.queued += stacks(some, self.slots, self.budget)

    def settle(self, records: dict[str, TrialRecord]) -> None:
        """Tell every candidate whose seeds all ended; ask new ones where a cell has room."""
        by_id = {**self.known, **records}

        def ended(candidate: Candidate) -> bool:
            twin = candidate.twin
            if twin is not None:
                return twin not in self.flying
            return all(
                (r := by_id.get(t.id)) is not None and r.status != RUNNING
                for t in candidate.trials
            )

        # candidates without a diverged seed first: a diverged one is scored as the worst value
        # the cell has seen; a twin after the candidate it repeats
        while ready := [c for c in self.flying if ended(c)]:
            ready.sort(
                key=lambda c: any(
                    (r := by_id.get(t.id)) is not None and r.status == DIVERGED for t in c.trials
                )
            )
            for candidate in ready:
                self.search.tell(candidate, by_id)
                self.flying.remove(candidate)
        for cell in self.search.cells:
            inflight = sum(c.cell == cell for c in self.flying)
            room = min(self.per_cell, self.search.remaining(cell)) - inflight
            if room > 0:
                asked = self.search.ask_cell(cell, room, self.flying)
                self.flying += asked
                self._queue([c for c in asked if c.twin is None])

    def next(self, records: dict[str, TrialRecord]) -> list[Trial] | None:
        if not self.queued:
            self.settle(records)
        return self.queued.pop(0) if self.queued else None

    def finished(self, records: dict[str, TrialRecord]) -> bool:
        self.settle(records)
        return not self.queued and not self.flying

    def records(self) -> list[TrialRecord]:
        """What earlier invocations finished of this search's candidates."""
        return list(self.known.values())


def run_search(
    plan: Plan,
    session: Runs,
    listeners: Sequence[Any],
    journal: Path,
    done: Done = lambda trials: [],
    tag: str = "",
) -> tuple[list[TrialRecord], CellSearch]:
    """Search every cell until each study has ``n_trials`` finished candidates: one run of the
    session (one Ray Tune run) through a :class:`CandidateQueue`.

    ``done`` returns the records of the trials an earlier invocation finished (a resumed sweep):
    they are not run again. The candidates that invocation left untold are finished first.
    ``tag`` keeps the Tune run names of one invocation apart from another's.
    """
    search = CellSearch(plan, journal)
    seeds = search_size(plan)["seeds"]
    per_cell = in_flight(session.running_at_once(), seeds, len(search.cells))
    records: list[TrialRecord] = done(search.told_trials())
    queue = CandidateQueue(plan, search, done, per_cell, session.slots(), session.budget())
    metric = (search.search.objective.metric,)  # scored at its last or best epoch
    found = session.search(listeners, queue, f"{plan.spec.name}-search{tag}", history_of=metric)
    queue.settle({r.trial.id: r for r in found})  # what ended after the last hand-out
    return records + queue.records() + found, search
