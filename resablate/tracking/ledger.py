"""Reading a sweep back from the store: what its last invocation finished; the report's view.

MLflow is the ledger of a sweep. :class:`Ledger` finds a sweep's latest invocation
(:class:`Previous`) and the records of the trials it finished, which ``--resume`` and a search's
studies do not run again; :func:`read_sweep` reads a recorded sweep for ``resablate report``
(:class:`SweepRuns`, one :class:`RunData` per ended trial).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resablate.errors import StoreError, UserError
from resablate.results import KILLED, RESULT_STATUSES, RETRIED, TrialRecord
from resablate.spec.grid import Trial
from resablate.tracking.store import (
    RUN_FINISHED,
    RUN_RUNNING,
    Metric,
    Run,
    Store,
    check_store,
    open_store,
    sqlite_path,
)


@dataclass
class Previous:
    """An earlier invocation of a sweep, as its MLflow parent run and child runs record it.

    MLflow is the ledger of a sweep: a trial is done when a child run of the parent, tagged with
    the trial's id, ended FINISHED with a result status (finished, diverged). Nothing else
    (Tune's folders, a local file) is trusted, so a kill between any two writes loses at most
    the trial being recorded, which then runs again.
    """

    run_id: str
    status: str  # the parent run's MLflow status: RUNNING (killed hard), KILLED, FAILED, ...
    spec_hash: str
    n_trials: int
    resumes: int
    tags: dict[str, str]
    done: dict[str, Run] = field(default_factory=dict)  # trial id -> its finished child run
    stale: list[str] = field(default_factory=list)  # child runs left RUNNING by a killed driver
    # trial id -> the run of an unfinished trial (left running, or closed as killed by a stop)
    # that names a checkpoint: --resume continues it there (runlog.RunLog.resume_sweep)
    resumable: dict[str, Run] = field(default_factory=dict)

    @property
    def unfinished(self) -> bool:
        return self.status != RUN_FINISHED


def children(store: Store, experiment_id: str, parent_id: str) -> Iterator[Run]:
    """Every child run of a parent run, page by page."""
    token = None
    while True:
        page, token = store.search_runs(
            experiment_id, f"tags.mlflow.parentRunId = '{parent_id}'", page_token=token
        )
        yield from page
        if not token:
            return


def _epoch(run: Run) -> int:
    return int(run.tags.get("resablate.checkpoint_epoch", "0"))


class Ledger:
    """What the store holds of the sweeps recorded in one experiment."""

    def __init__(self, store: Store, experiment_id: str) -> None:
        self.store, self.experiment_id = store, experiment_id

    def find_previous(self, name: str) -> Previous | None:
        """The latest invocation of sweep ``name`` in this experiment, with its children."""
        found, _ = self.store.search_runs(
            self.experiment_id,
            f"tags.`resablate.kind` = 'sweep' and tags.`resablate.sweep` = '{name}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            return None
        parent = found[0]
        tags = parent.tags
        previous = Previous(
            parent.run_id,
            parent.status,
            tags.get("resablate.spec_hash", ""),
            int(tags.get("resablate.n_trials", "0")),
            int(tags.get("resablate.resumes", "0")),
            dict(tags),
        )
        for run in children(self.store, self.experiment_id, parent.run_id):
            trial_id = run.tags.get("trial_id")
            status = run.tags.get("resablate.status")
            if run.status == RUN_RUNNING:
                previous.stale.append(run.run_id)
            elif run.status == RUN_FINISHED and status in RESULT_STATUSES and trial_id:
                previous.done.setdefault(trial_id, run)
            if (
                trial_id
                and "resablate.checkpoint" in run.tags
                and (run.status == RUN_RUNNING or status == KILLED)
            ):
                best = previous.resumable.get(trial_id)
                if best is None or _epoch(run) > _epoch(best):
                    previous.resumable[trial_id] = run
        for trial_id in previous.done:
            previous.resumable.pop(trial_id, None)
        return previous

    def records(
        self,
        previous: Previous | None,
        trials: Iterable[Trial],
        history_of: tuple[str, ...] = (),
    ) -> list[TrialRecord]:
        """The records of ``trials`` that ``previous`` (the invocation resumed) finished:
        status and final metrics, and the per-epoch history of the ``history_of`` metrics."""
        return self.earlier(previous, history_of, [t.id for t in trials])(trials)

    def earlier(
        self,
        previous: Previous | None,
        history_of: tuple[str, ...] = (),
        ids: Iterable[str] | None = None,
    ) -> Earlier:
        """What ``previous`` finished (of the trials ``ids``, default all), read once into a
        plain table: a search's queue asks it as candidates come, and Ray Tune pickles the
        searcher that holds the queue, so the table holds no store."""
        if previous is None:
            return Earlier({})
        table: dict[str, Finished] = {}
        for trial_id in previous.done if ids is None else ids:
            run = previous.done.get(trial_id)
            if run is None:
                continue
            steps: dict[int, dict[str, float]] = {}
            for metric in history_of:
                for step, value in self.store.get_metric_history(run.run_id, metric):
                    steps.setdefault(step, {})[metric] = value
            table[trial_id] = Finished(
                run.tags["resablate.status"],
                dict(run.metrics),
                [steps[k] for k in sorted(steps)],
                max(steps, default=0),
            )
        return Earlier(table)


@dataclass(frozen=True)
class Finished:
    """A trial an earlier invocation finished: what its record says, without the trial."""

    status: str
    metrics: dict[str, float]
    history: list[dict[str, float]]
    epoch: int


@dataclass(frozen=True)
class Earlier:
    """The trials an earlier invocation finished, by trial id; called with trials, their
    records (fresh objects each call: a sweep's collector may change them)."""

    table: dict[str, Finished]

    def __call__(self, trials: Iterable[Trial]) -> list[TrialRecord]:
        out = []
        for trial in trials:
            found = self.table.get(trial.id)
            if found is not None:
                out.append(
                    TrialRecord(
                        trial,
                        found.status,
                        epoch=found.epoch,
                        metrics=dict(found.metrics),
                        history=[dict(h) for h in found.history],
                    )
                )
        return out


# -- reading a recorded sweep back (resablate report) ------------------------------------------


@dataclass
class RunData:
    """One child run as the report needs it: plain Python, no MLflow objects."""

    run_id: str
    status: str  # the resablate.status tag: finished, diverged, failed, ...
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]  # the last value of each metric
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # (step, value)


@dataclass
class SweepRuns:
    """A sweep's parent run and its finished-or-ended child runs, read from a store."""

    uri: str
    experiment: str
    experiment_id: str
    parent: RunData
    runs: list[RunData]
    store: Store = field(repr=False)
    _parents: dict[str, Any] = field(default_factory=dict, repr=False)

    def recorded(self, path: str) -> Any | None:
        """A JSON artifact of the parent run (sweep.resolved.json, plan.json, search.json),
        downloaded once however many figures and tables read it."""
        if path not in self._parents:
            self._parents[path] = self.artifact(self.parent.run_id, path)
        return self._parents[path]

    def artifact(self, run_id: str, path: str) -> Any | None:
        """A JSON artifact of a run (None when it has none at ``path``)."""
        text = self.store.read_artifact(run_id, path)
        return None if text is None else json.loads(text)

    def probe(self, run_id: str, probe: str) -> dict[int, dict[str, Any]]:
        """Every recorded result of ``probe`` in a run: epoch -> the probe's JSON."""
        out = {}
        for path in self.store.list_artifacts(run_id, f"probes/{probe}"):
            found = self.artifact(run_id, path)
            if isinstance(found, dict):
                out[int(found.get("epoch", 0))] = found
        return dict(sorted(out.items()))


def read_sweep(
    uri: str,
    experiment: str,
    parent_id: str | None = None,
    histories: tuple[str, ...] = (),
    history_prefixes: tuple[str, ...] = (),
) -> SweepRuns:
    """The sweep recorded in ``experiment`` (its latest parent run unless ``parent_id``), with
    the per-step history of the ``histories`` metrics and of those starting with a prefix."""
    check_store(uri)
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise UserError(f"no MLflow store at {path}; run the sweep first, or pass --tracking-uri")
    store = open_store(uri)
    try:
        found = store.get_experiment_by_name(experiment)
    except StoreError as exc:
        raise UserError(f"tracking store {uri}: {exc.reason}") from None
    if found is None:
        raise UserError(
            f"no experiment '{experiment}' in {uri}; `resablate ui` lists the experiments"
        )
    if parent_id is None:
        parents, _ = store.search_runs(
            found.experiment_id,
            "tags.`resablate.kind` = 'sweep'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not parents:
            raise UserError(f"experiment '{experiment}' in {uri} holds no sweep run")
        parent = parents[0]
    else:
        try:
            parent = store.get_run(parent_id)
        except StoreError:
            raise UserError(f"--run {parent_id}: no such run in {uri}") from None
        if parent.experiment_id != found.experiment_id:
            raise UserError(f"--run {parent_id}: not a run of experiment '{experiment}'")
    runs = []
    for run in children(store, found.experiment_id, parent.run_id):
        if run.status == RUN_RUNNING or "trial_id" not in run.tags:
            continue
        if run.tags.get("resablate.status") in (KILLED, RETRIED):
            continue  # an attempt that did not end its trial
        data = _run_data(run)
        wanted = [m for m in run.metrics if m in histories or m.startswith(history_prefixes)]
        for metric in wanted:
            data.history[metric] = sorted(store.get_metric_history(run.run_id, metric))
        runs.append(data)
    return SweepRuns(uri, experiment, found.experiment_id, _run_data(parent), runs, store)


def _run_data(run: Run) -> RunData:
    return RunData(
        run.run_id,
        run.tags.get("resablate.status", run.status.lower()),
        dict(run.params),
        dict(run.tags),
        dict(run.metrics),
    )


def log_report(
    sweep: SweepRuns,
    folder: Path,
    tags: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
) -> None:
    """The report's files as artifacts ``report/...`` of the sweep's parent run, with what the
    report concluded as the parent's ``tags`` and ``metrics`` (the claims' verdicts)."""
    import time

    parent = sweep.parent.run_id
    sweep.store.log_artifacts(parent, folder, "report")
    for key, text in (tags or {}).items():
        sweep.store.set_tag(parent, key, text)
    now = int(time.time() * 1000)
    found = [Metric(key, v, now, 0) for key, v in (metrics or {}).items()]
    sweep.store.log_batch(parent, metrics=found)
