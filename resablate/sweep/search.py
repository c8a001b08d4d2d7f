"""Optuna over one continuous parameter (usually init.c) inside every grid cell, seeds averaged.

Ray Tune's OptunaSearch refuses grid axes, so the grid stays ours: a *cell* is a grid point without
its seed and without the searched parameter. Each cell has its own Optuna study, named by the
cell's id, in a journal file beside the sweep's results (several writers are safe, and any study
opens with ``optuna.load_study(study_name=cell, storage=JournalStorage(...))`` or
optuna-dashboard). A search is one Ray Tune run whose searcher (tuning.Candidates) hands out
the candidates of a search_queue.CandidateQueue: each cell keeps a few candidates in flight (the
constant-liar TPE keeps them apart), a candidate's seeds run as Tune trials, and the candidate is
told the mean over its seeds as soon as they all ended; the cell then asks its next.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from resablate.results import DIVERGED, FINISHED, PRUNED, RUNNING, TrialRecord
from resablate.spec.grid import Trial
from resablate.spec.schema import SearchSpec
from resablate.sweep.plan import Plan
from resablate.sweep.search_grid import search_cells, with_value

SAMPLERS = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed),
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


@dataclass
class Candidate:
    """One asked value of the parameter in one cell, and the trials (one per seed) scoring it."""

    cell: str
    trial: optuna.Trial
    value: float
    trials: list[Trial] = field(default_factory=list)
    # an in-flight candidate of the same cell with the same value (an int distribution, or a
    # sampler repeating itself): this one runs nothing and is told what its twin is told
    twin: Candidate | None = None


@dataclass
class CellResult:
    cell: str
    label: str
    best_value: float | None
    mean: float | None
    std: float | None
    complete: int


class CellSearch:
    """The studies of a plan's cells: ask candidates, turn them into trials, tell their scores."""

    def __init__(self, plan: Plan, journal: Path) -> None:
        assert plan.spec.search is not None
        self.search: SearchSpec = plan.spec.search
        self.cells = search_cells(plan)
        journal.parent.mkdir(parents=True, exist_ok=True)
        self.storage = JournalStorage(JournalFileBackend(str(journal)))
        direction = (
            optuna.study.StudyDirection.MAXIMIZE
            if self.search.objective.direction == "max"
            else optuna.study.StudyDirection.MINIMIZE
        )
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.studies = {
            cell: optuna.create_study(
                study_name=cell, storage=self.storage, direction=direction, load_if_exists=True
            )
            for cell in self.cells
        }
        for cell, study in self.studies.items():
            # seeded per cell; a resumed study also by the trials it holds, so that a sampler
            # does not replay the random draws it made before the interruption
            seed = self.search.seed + int(cell[:7], 16) + 7919 * len(study.trials)
            study.sampler = SAMPLERS[self.search.sampler](seed)

    def remaining(self, cell: str) -> int:
        done = [t for t in self.studies[cell].trials if t.state.is_finished()]
        return self.search.n_trials - len(done)

    def pending(self) -> list[Candidate]:
        """The candidates an interrupted invocation asked but never told (RUNNING in their
        study), to be finished first: their value stays, their seeds that finished are kept."""
        out: list[Candidate] = []
        running = (optuna.trial.TrialState.RUNNING,)
        for cell, study in self.studies.items():
            study_id = self.storage.get_study_id_from_name(cell)
            for frozen in study.get_trials(deepcopy=False, states=running):
                value = frozen.params[self.search.param]
                # a handle on a trial the study already holds, as Study.ask builds one (Optuna
                # has no public call that returns it): its id from the storage, by its number
                number = frozen.number
                trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
                trial = optuna.Trial(study, trial_id)
                twin = next((c for c in out if c.cell == cell and c.value == value), None)
                if twin is not None:
                    out.append(Candidate(cell, trial, value, twin=twin))
                else:
                    out.append(self._candidate(cell, trial, value))
        return out

    def told_trials(self) -> list[Trial]:
        """The trials of every candidate already told (an earlier invocation's results)."""
        return [
            t
            for cell, study in self.studies.items()
            for frozen in study.trials
            if frozen.state.is_finished() and self.search.param in frozen.params
            for t in self._candidate(cell, None, frozen.params[self.search.param]).trials
        ]

    def ask_cell(self, cell: str, count: int, flying: Sequence[Candidate] = ()) -> list[Candidate]:
        """Up to ``count`` new candidates of ``cell`` (fewer when its budget runs out).

        A value the cell has already scored is told that score again without running anything
        (it still spends one of ``n_trials``, so a small int range cannot loop forever); a value
        already in flight becomes that candidate's twin.
        """
        kind, low, high = self.search.distribution()
        out: list[Candidate] = []
        inflight = sum(c.cell == cell for c in flying)
        while len(out) < count and self.remaining(cell) > inflight + len(out):
            trial = self.studies[cell].ask()
            if kind == "int":
                value: float = trial.suggest_int(self.search.param, int(low), int(high))
            else:
                value = trial.suggest_float(
                    self.search.param, low, high, log=kind == "log_uniform"
                )
            if self._repeat(cell, trial, value):
                continue  # told at once: the budget shrank
            twin = next((c for c in [*flying, *out] if c.cell == cell and c.value == value), None)
            if twin is not None:
                out.append(Candidate(cell, trial, value, twin=twin))
            else:
                out.append(self._candidate(cell, trial, value))
        return out

    def _repeat(self, cell: str, trial: optuna.Trial, value: float) -> bool:
        """Tell ``trial`` the score of an earlier complete trial with the same value, if any."""
        study = self.studies[cell]
        complete = (optuna.trial.TrialState.COMPLETE,)
        for frozen in study.get_trials(deepcopy=False, states=complete):
            if frozen.params.get(self.search.param) == value:
                for key in ("seed_scores", "diverged_seeds"):
                    trial.set_user_attr(key, frozen.user_attrs.get(key))
                trial.set_user_attr("repeat_of", frozen.number)
                study.tell(trial, frozen.value)
                return True
        return False

    def _candidate(self, cell: str, trial: Any, value: float) -> Candidate:
        candidate = Candidate(cell, trial, value)
        candidate.trials = [self._at(t, cell, value) for t in self.cells[cell]]
        return candidate

    def _at(self, grid_trial: Trial, cell: str, value: float) -> Trial:
        return with_value(grid_trial, self.search.param, value, cell)

    def score(self, record: TrialRecord) -> float | None:
        """A seed's score: the objective at the last (or best) epoch; None if it has none."""
        objective = self.search.objective
        values = [h[objective.metric] for h in record.history if objective.metric in h]
        if record.status not in (FINISHED, DIVERGED) or not values:
            return None
        if record.status == DIVERGED:
            return None if objective.diverged == "worst" else float(objective.diverged)
        if objective.at == "best":
            return max(values) if objective.direction == "max" else min(values)
        return values[-1]

    def tell(self, candidate: Candidate, records: dict[str, TrialRecord]) -> float | None:
        """Tell the study the mean over the candidate's seeds (diverged seeds scored as the worst
        value the cell has seen, or the stated penalty); FAIL if a seed failed or none scored.

        A candidate with a seed that did not end (an interrupted sweep) is not told: it stays
        RUNNING in its study, and a resumed sweep finishes it.
        """
        study = self.studies[candidate.cell]
        ended = [records.get(t.id) for t in candidate.trials]
        if any(r is None or r.status == RUNNING for r in ended):
            return None
        if candidate.twin is not None:
            twin = study.trials[candidate.twin.trial.number]
            if twin.state == optuna.trial.TrialState.RUNNING:
                return None
            candidate.trial.set_user_attr("repeat_of", twin.number)
            if twin.state != optuna.trial.TrialState.COMPLETE:
                study.tell(candidate.trial, state=twin.state)
                return None
            for key in ("seed_scores", "diverged_seeds"):
                candidate.trial.set_user_attr(key, twin.user_attrs.get(key))
            study.tell(candidate.trial, twin.value)
            return twin.value
        if any(r is not None and r.status == PRUNED for r in ended):
            # the scheduler stopped a seed early: the candidate is pruned, as Optuna means it
            study.tell(candidate.trial, state=optuna.trial.TrialState.PRUNED)
            return None
        scores = []
        for trial in candidate.trials:
            record = records.get(trial.id)
            if record is None or record.status not in (FINISHED, DIVERGED):
                study.tell(candidate.trial, state=optuna.trial.TrialState.FAIL)
                return None
            found = self.score(record)
            if found is None and record.status == DIVERGED:
                found = self._worst(candidate.cell, records)
            if found is None:
                study.tell(candidate.trial, state=optuna.trial.TrialState.FAIL)
                return None
            scores.append(found)
        value = statistics.fmean(scores)
        candidate.trial.set_user_attr("seed_scores", scores)
        diverged = sum(records[t.id].status == DIVERGED for t in candidate.trials)
        candidate.trial.set_user_attr("diverged_seeds", diverged)
        study.tell(candidate.trial, value)
        return value

    def _worst(self, cell: str, records: dict[str, TrialRecord]) -> float | None:
        seen = [v for t in self.studies[cell].trials if t.values for v in t.values]
        seen += [
            s
            for r in records.values()
            if r.status == FINISHED
            for s in [self.score(r)]
            if s is not None and math.isfinite(s)
        ]
        if not seen:
            return None
        return min(seen) if self.search.objective.direction == "max" else max(seen)

    def results(self) -> list[CellResult]:
        out = []
        for cell, grid_trials in self.cells.items():
            study = self.studies[cell]
            complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            label = grid_trials[0].label(skip=("seed",)) or "(all)"
            if not complete:
                out.append(CellResult(cell, label, None, None, None, 0))
                continue
            best = best_trial(study)
            scores = best.user_attrs.get("seed_scores", [best.value])
            out.append(
                CellResult(
                    cell,
                    label,
                    best.params[self.search.param],
                    statistics.fmean(scores),
                    statistics.stdev(scores) if len(scores) > 1 else 0.0,
                    len(complete),
                )
            )
        return out

    def summary(self) -> dict[str, Any]:
        return {
            r.cell: {
                "label": r.label,
                "best": r.best_value,
                "mean": r.mean,
                "std": r.std,
                "complete": r.complete,
            }
            for r in self.results()
        }


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The study's best candidate; of those tied at the best value, the one with the fewest
    diverged seeds (then the first). A diverged seed scores the worst value its cell has seen,
    which equals the best while only one candidate has finished: Optuna's own best_trial, the
    first of the tie, could then name a diverging value as the cell's best."""
    best = study.best_value
    tied = [t for t in study.trials if t.state.name == "COMPLETE" and t.value == best]
    return min(tied, key=lambda t: (t.user_attrs.get("diverged_seeds") or 0, t.number))
