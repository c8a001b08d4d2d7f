"""The sweep driver: a plan run on a backend, recorded in MLflow, resumable after any stop.

``resablate sweep`` is this module's :func:`run_sweep`. One driver at a time owns a sweep's
results folder (an OS file lock, released even when the driver is killed). MLflow is the ledger
(see :class:`~resablate.tracking.ledger.Previous`): ``--resume`` reopens the sweep's latest parent
run, closes the child runs a killed driver left RUNNING, and runs only the trials without a
finished child run; a search continues its Optuna studies from their journal.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from resablate.analysis.summary import CellStats, markdown, summarize, to_csv
from resablate.errors import UserError
from resablate.results import RUNNING, Listener, TrialRecord
from resablate.sweep import stop
from resablate.sweep.plan import Plan
from resablate.sweep.search_grid import carried, search_size, unsearched, with_value
from resablate.tracking.ledger import Ledger, Previous
from resablate.tracking.runlog import RunLog
from resablate.tracking.store import (
    Store,
    check_cluster_store,
    check_store,
    open_store,
    resolve_uri,
)

LOCK = ".driver.lock"


@dataclass
class Options:
    tracking_uri: str | None = None
    results_dir: Path = Path("resablate-runs")
    inline: bool = False
    dashboard: bool = False
    quiet: bool = False
    resume: bool = False
    force: bool = False
    new: bool = False  # a new parent run even though the last one of this sweep ran to its end
    address: str | None = None  # a running Ray cluster to join ("auto", "HOST:PORT")
    # Ray Tune's storage: trial folders and checkpoints (a shared folder, s3://, gs://);
    # None: results_dir
    storage: str | None = None
    # told of every trial event beside the tracker and the progress bar (notebooks, benchmarks)
    listeners: list[Listener] = field(default_factory=list)


@dataclass
class Outcome:
    tracker: RunLog
    total: int  # trials the sweep holds (a search: cells × candidates × seeds)
    records: list[TrialRecord] = field(default_factory=list)  # ended, this and resumed runs
    cells: list[CellStats] = field(default_factory=list)
    search: dict[str, Any] = field(default_factory=dict)  # cell -> best value, mean, std
    resumed: Previous | None = None
    journal: Path | None = None
    interrupted: bool = True  # until every trial (every study's budget) has ended
    crashed: str | None = None  # the driver's own error, if it raised one

    @property
    def ended(self) -> int:
        return sum(r.status != RUNNING for r in self.records)


def check_results_dir(folder: Path) -> None:
    """Fail in one line, before anything is created, if ``folder`` cannot be made or written:
    its nearest existing ancestor must be a writable folder."""
    found = folder.absolute()
    while not found.exists() and found != found.parent:
        found = found.parent
    if not found.is_dir() or not os.access(found, os.W_OK | os.X_OK):
        why = "is not a folder" if not found.is_dir() else "is not writable"
        raise UserError(
            f"results folder {folder}: {found} {why}; pass --results-dir <writable folder>"
        )


@contextlib.contextmanager
def driver_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold ``folder/.driver.lock`` while the sweep runs: a second driver of the same sweep and
    results folder is refused instead of racing the first (the lock dies with its process)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle: IO[str] = open(folder / LOCK, "a+")  # noqa: SIM115 (held until the end)
    except OSError as exc:
        raise UserError(
            f"results folder {folder}: {exc.strerror or exc}; pass --results-dir <writable folder>"
        ) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(
                f"sweep '{name}' is already running from {folder} (driver pid {holder}); wait"
                " for it to end, or stop it and continue it with --resume"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def check_storage(storage: str) -> None:
    """A --storage that cannot hold checkpoints is one line before anything starts."""
    from resablate.trial.checkpoint import filesystem

    try:
        fs, path = filesystem(storage)
        fs.create_dir(path, recursive=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"--storage {storage}: cannot write there ({first}); give a folder every node can"
            " write, or an s3:// / gs:// URI this machine's credentials reach"
        ) from None


def check_resume(plan: Plan, previous: Previous | None, options: Options) -> Previous | None:
    """The invocation to continue (None: start a new one), or a one-line refusal."""
    if not options.resume:
        return None
    if previous is None:
        return None  # nothing recorded yet (killed before its first write): start afresh
    if previous.spec_hash != plan.spec.hash() and not options.force:
        raise UserError(
            f"{plan.source}: the sweep changed since parent run {previous.run_id} was started"
            f" (spec hash {previous.spec_hash} -> {plan.spec.hash()}); pass --force to resume"
            " it anyway (the change is recorded on the parent run), or drop --resume to start"
            " a new run"
        )
    return previous


def already_ran(plan: Plan, previous: Previous) -> str:
    """The one-line refusal of a sweep whose last parent run ended: a rerun would record every
    trial a second time, so it takes --new."""
    name, source = plan.spec.name, plan.source
    where = f"{source}: sweep '{name}' ran to its end as parent run {previous.run_id}"
    report = f"`resablate report {source}` reads it"
    if previous.spec_hash != plan.spec.hash():
        return (
            f"{where} with another grid (spec hash {previous.spec_hash} -> {plan.spec.hash()});"
            " --new starts a new parent run for this one (report reads the latest), --resume"
            " --force adds its new trials to that run"
        )
    left = previous.n_trials - len(previous.done)
    again = f", --resume runs the {left} trial(s) that did not finish" if left > 0 else ""
    done = f"{len(previous.done)} trial(s) finished"
    return f"{where} ({done}); {report}{again}, --new runs it all again"


def _silent(line: str) -> None:
    return None


def refuse_a_rerun(plan: Plan, previous: Previous | None, options: Options) -> None:
    """Refuse to run again a sweep whose last parent run ended, unless --new or --resume."""
    if previous is not None and not previous.unfinished and not (options.new or options.resume):
        raise UserError(already_ran(plan, previous))


def check_rerun(plan: Plan, uri: str, options: Options) -> None:
    """:func:`refuse_a_rerun` against the store at ``uri`` before anything starts (a Ray Job's
    submission: the refusal here, not in the job's log); creates nothing."""
    store = open_store(uri)
    found = store.get_experiment_by_name(plan.spec.tracking.experiment or plan.spec.name)
    if found is not None:
        previous = Ledger(store, found.experiment_id).find_previous(plan.spec.name)
        refuse_a_rerun(plan, previous, options)


def run_sweep(plan: Plan, options: Options, say: Callable[[str], Any] = _silent) -> Outcome:
    """Run (or resume) every trial of ``plan``; ``say`` prints a line for the user (the CLI's
    console; by default nothing: the outcome and MLflow hold what happened).

    Stop signals become a stop request for the whole run (stop.py); one that arrives before the
    parent run is opened raises :class:`~resablate.sweep.stop.Stopped` (nothing was recorded)."""
    from resablate.sweep import runner
    from resablate.sweep.ray import cluster

    uri = resolve_uri(options.tracking_uri, plan.spec.tracking.uri)
    backend = "inline" if options.inline else "ray"
    # before anything starts or is created: nothing left behind
    if options.address is not None:
        cluster.check_address(options.address)
        check_cluster_store(uri)  # a server every node reaches (checked like any store)
    else:
        check_store(uri)
    check_results_dir(options.results_dir)
    if options.storage is not None:
        check_storage(options.storage)
    session = runner.Session(
        plan, backend, options.results_dir, options.dashboard, options.address, options.storage
    )
    session.check()  # whatever can be refused before Ray starts is refused here
    with stop.handling(), concurrent.futures.ThreadPoolExecutor(1) as pool:
        # the store opens (mlflow's import, a new sqlite file's schema) while Ray starts
        store = pool.submit(open_store, uri)
        with session:
            if session.dashboard_url:
                say(f"Ray dashboard: {session.dashboard_url}")
            for note in session.notes:
                say(note)
            client = store.result()
            stop.REQUEST.check()  # stopped while Ray started: nothing recorded yet
            return _sweep(plan, options, session, client, say)


def _sweep(
    plan: Plan,
    options: Options,
    session: Any,
    store: Store,
    say: Callable[[str], Any],
) -> Outcome:
    """The sweep once Ray and the store are up: lock, parent run, trials, summary."""
    folder = options.results_dir / plan.spec.name
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # a Ray Job's driver (resablate submit)
        # Ray may unpack the job's working directory again under a running driver: leave it
        # for a folder that stays (the sweep file was read; its path is absolute now)
        plan = dataclasses.replace(plan, source=str(Path(plan.source).absolute()))
        folder.mkdir(parents=True, exist_ok=True)
        os.chdir(folder)
    with driver_lock(folder, plan.spec.name):
        experiment = plan.spec.tracking.experiment or plan.spec.name
        experiment_id = store.experiment(experiment)
        ledger, tracker = Ledger(store, experiment_id), RunLog(store, experiment_id)
        outcome = Outcome(tracker, 0)
        _open(plan, options, ledger, tracker, outcome, say)
        tracker.keep_checkpoint = plan.spec.train.keep_checkpoint
        session.trial_points = tracker.resume_points()
        if outcome.resumed is not None:  # its Tune runs get folders of their own
            session.tag = f"-resume{outcome.resumed.resumes + 1}"
        try:
            _run(plan, options, session, ledger, tracker, outcome)
        except Exception as exc:  # a bug: the parent run ends FAILED (never FINISHED), resumable
            outcome.crashed = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            _close(tracker, outcome, [t.cell for t in plan.trials])
    return outcome


def _open(
    plan: Plan,
    options: Options,
    ledger: Ledger,
    tracker: RunLog,
    outcome: Outcome,
    say: Callable,
) -> None:
    """Start the sweep's parent run, or reopen the one that --resume continues."""
    spec, source = plan.spec, Path(plan.source)
    outcome.total = search_size(plan)["total_trials"] if spec.search else len(plan.trials)
    previous = ledger.find_previous(spec.name)
    outcome.resumed = check_resume(plan, previous, options)
    if outcome.resumed is not None:
        tracker.resume_sweep(outcome.resumed, spec.hash(), source, plan.trials)
        say(
            f"resuming parent run {outcome.resumed.run_id}: {len(outcome.resumed.done)}"
            f" trial(s) already finished, {len(tracker.resumable)} continue from their"
            f" checkpoints, {tracker.closed} stale run(s) closed"
        )
        return
    refuse_a_rerun(plan, previous, options)
    if previous is not None and previous.unfinished:
        say(
            f"note: the last run of sweep '{spec.name}' ({previous.run_id},"
            f" {len(previous.done)} trial(s) finished) did not finish; --resume continues it."
            " Starting a new run."
        )
    tracker.start_sweep(spec.name, spec.model_dump(mode="json"), spec.hash(), source, plan.trials)


def _run(
    plan: Plan,
    options: Options,
    session: Any,
    ledger: Ledger,
    tracker: RunLog,
    outcome: Outcome,
) -> None:
    from resablate.sweep.progress import SweepProgress
    from resablate.sweep.search_queue import run_search

    spec = plan.spec
    err = Console(stderr=True, quiet=options.quiet)
    done = len(outcome.resumed.done) if outcome.resumed else 0
    progress = SweepProgress(spec.name, outcome.total, err, done=done)
    listeners: list[Listener] = [tracker, *([] if options.quiet else [progress])]
    listeners += options.listeners
    with contextlib.nullcontext() if options.quiet else progress:
        # grid trials: the whole grid, or a search's trials outside search.where
        fixed = unsearched(plan) if spec.search else plan.trials
        kept = ledger.records(outcome.resumed, fixed)
        finished = {r.trial.id for r in kept}
        todo = [t for t in fixed if t.id not in finished]
        outcome.records = kept + (session.run(listeners, todo) if todo else [])
        outcome.interrupted = outcome.ended < len(fixed)
        if spec.search and not outcome.interrupted:
            outcome.journal = _journal(tracker, outcome.resumed, options.results_dir / spec.name)
            history = (spec.search.objective.metric,)
            # what the resumed invocation finished of the candidates (its grid trials: kept above)
            candidates = [
                i for i in (outcome.resumed.done if outcome.resumed else ()) if i not in finished
            ]
            assert tracker.parent_id is not None
            records, studies = run_search(
                plan,
                session,
                listeners,
                outcome.journal,
                done=ledger.earlier(outcome.resumed, history, candidates),
                tag=f"-{tracker.parent_id[:8]}",
            )
            outcome.records += records
            outcome.search = studies.summary()
            outcome.interrupted = any(studies.remaining(c) for c in studies.cells)
            if not outcome.interrupted and spec.search.carry:
                _carry(plan, session, ledger, listeners, outcome)


def _carry(
    plan: Plan, session: Any, ledger: Ledger, listeners: list[Listener], outcome: Outcome
) -> None:
    """``search.carry``: each searched cell's best value at the carried axes' other values."""
    assert plan.spec.search is not None and outcome.search is not None
    param = plan.spec.search.param
    trials = [
        with_value(t, param, float(outcome.search[cell]["best"]), cell)
        for cell, targets in carried(plan).items()
        if outcome.search[cell]["best"] is not None
        for t in targets
    ]
    kept = ledger.records(outcome.resumed, trials)
    finished = {r.trial.id for r in kept}
    todo = [t for t in trials if t.id not in finished]
    outcome.records += kept + (session.run(listeners, todo) if todo else [])
    ended = {r.trial.id for r in outcome.records if r.status != RUNNING}
    outcome.interrupted = any(t.id not in ended for t in trials)


def _journal(tracker: RunLog, resumed: Previous | None, folder: Path) -> Path:
    """Each invocation's studies live in their own journal file (a resumed one reuses its
    parent run's), named on the parent run so that the studies can be found from MLflow."""
    assert tracker.parent_id is not None
    key = "resablate.optuna_journal"
    recorded = resumed.tags.get(key) if resumed else None
    journal = Path(recorded) if recorded else (folder / "optuna" / f"{tracker.parent_id}.journal")
    if not recorded:
        tracker.store.set_tag(tracker.parent_id, key, str(journal.resolve()))
    return journal


def _close(tracker: RunLog, outcome: Outcome, order: list[str]) -> None:
    """The parent run's summary artifacts and metrics, then its end (killed if interrupted);
    the cells in the grid's ``order``."""
    if tracker.store.broken is not None:
        return  # the store failed: what it holds stays as it is, --resume closes the rest
    outcome.cells = summarize(outcome.records, order)
    artifacts = {"summary.md": markdown(outcome.cells), "summary.csv": to_csv(outcome.cells)}
    if outcome.search:
        artifacts["search.json"] = json.dumps(outcome.search, indent=1)
        tracker.log_sweep_metrics(
            {
                f"{key}.{cell}": value[key]
                for cell, value in outcome.search.items()
                for key in ("best", "mean", "std")
                if value[key] is not None
            }
        )
    tracker.end_sweep(artifacts, outcome.interrupted, outcome.crashed)
