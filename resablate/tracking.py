"""MLflow tracking: one parent run per sweep invocation, one nested child run per trial.

The only module that imports mlflow. All writes happen in the driver process, in the order the
runner's events arrive, so concurrent trials never write to the store at once (sqlite rejects
concurrent writers with "database is locked"). The default store is ``sqlite:///mlflow.db`` in the
working directory; ``--tracking-uri`` or MLFLOW_TRACKING_URI choose another.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from resablate.errors import StoreError, UserError
from resablate.grid import Trial
from resablate.results import (
    DIVERGED,
    FAILED,
    FINISHED,
    PRUNED,
    RESULTS,
    TrialRecord,
    epoch_metrics,
)

DEFAULT_DB = "mlflow.db"
# Lands MLflow 3's UI on the training-runs table instead of its GenAI (traces) view.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PACKAGES = ("resablate", "torch", "ray", "mlflow", "optuna", "pydantic", "numpy", "scikit-learn")
_STATUS = {FINISHED: "FINISHED", DIVERGED: "FINISHED", PRUNED: "FINISHED", FAILED: "FAILED"}
RETRIED, KILLED = "retried", "killed"  # child-run states of an attempt that did not end the trial
# A running trial's epoch metrics are written at most this often (and when it ends): a killed
# driver loses at most these seconds of an unfinished trial's curve, which --resume reruns.
FLUSH_EVERY_S = 2.0
MAX_BATCH = 1000  # metrics per log_batch call (MLflow's limit)


def resolve_uri(cli_uri: str | None = None, spec_uri: str | None = None) -> str:
    """--tracking-uri, then MLFLOW_TRACKING_URI, then the sweep's ``tracking.uri``, then the
    sqlite file ``mlflow.db`` in the working directory."""
    uri = cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or spec_uri
    return uri or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a sqlite store live beside it (``<db folder>/mlruns/<experiment>``), not in
    whatever folder the sweep was started from; other stores choose their own."""
    path = sqlite_path(uri)
    return (path.resolve().parent / "mlruns" / experiment).as_uri() if path else None


def check_store(uri: str) -> None:
    """Fail with one line if the store cannot be written (sqlite) or reached (http)."""
    path = sqlite_path(uri)
    if path is not None:
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UserError(
                f"tracking store {uri}: folder {folder} does not exist or is not writable;"
                " pass --tracking-uri sqlite:///<writable path>/mlflow.db"
            )
        return
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(
                f"tracking server {uri} is unreachable ({reason}); start it (mlflow server) or"
                " check --tracking-uri / MLFLOW_TRACKING_URI"
            ) from None


@contextlib.contextmanager
def _creating(uri: str) -> Iterator[None]:
    """Serialize the first use of a sqlite store across processes: MLflow creates and migrates
    its schema on first use, and two sweeps doing it at once fail ("duplicate column name").
    The lock is an flock on the database file itself (sqlite's own locks are fcntl locks, which
    do not interact with it), held only while the store is opened."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_cluster_store(uri: str) -> None:
    """A sweep on a cluster records to a server every node and the user can reach; a sqlite
    file lives on one machine (the head's disk, for a submitted job) and is refused."""
    if sqlite_path(uri) is not None:
        raise UserError(
            f"tracking store {uri} is a sqlite file on one machine; a sweep on a Ray cluster"
            " records to an MLflow server that every node can reach: pass --tracking-uri"
            " http://HOST:5000 or set MLFLOW_TRACKING_URI (clusters/README.md shows how to run"
            " one)"
        )
    check_store(uri)


_holding = False  # an _uninterrupted block is open (the outermost one holds Ctrl-C)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT; SIGTERM arrives as one) until the block ends, then deliver it.

    A KeyboardInterrupt raised inside a store call can leave sqlite's write lock held by a
    connection that never commits, and every later write (closing the runs as killed) then
    waits on it. A second Ctrl-C is not held: it interrupts at once, as the user asks. Blocks
    nest (a tracker method's store calls): only the outermost one holds.
    """
    global _holding
    previous = signal.getsignal(signal.SIGINT)
    # signals reach only the main thread; a handler set outside Python is left alone
    if _holding or previous is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, Any]] = []

    def hold(signum: int, frame: Any) -> None:
        held.append((signum, frame))
        signal.signal(signal.SIGINT, previous)  # the next Ctrl-C goes straight through

    signal.signal(signal.SIGINT, hold)
    _holding = True
    try:
        yield
    finally:  # a held Ctrl-C is delivered even when the call failed: the user asked to stop
        _holding = False
        signal.signal(signal.SIGINT, previous)
        if held and callable(previous):  # Python's KeyboardInterrupt, or Tune's graceful stop
            previous(*held[0])
        elif held and previous == signal.SIG_DFL:
            raise KeyboardInterrupt


def _atomic(method: Callable[..., Any]) -> Callable[..., Any]:
    """A tracker method whose store calls and bookkeeping a Ctrl-C does not split: a run created
    in the store is also known to the tracker (so that closing the sweep closes it too)."""

    @functools.wraps(method)
    def atomic(*args: Any, **kwargs: Any) -> Any:
        with _uninterrupted():
            return method(*args, **kwargs)

    return atomic


class _Retrying:
    """An MlflowClient whose calls wait out sqlite's "database is locked" instead of failing,
    and turn any other store failure into one :class:`StoreError` line. A Ctrl-C during a
    call is delivered when the call has ended (:func:`_uninterrupted`).

    Our own writes are serialized in the driver, but another process (a second sweep on the same
    store, ``resablate ui``) may hold the file's write lock for longer than sqlite's busy timeout.
    After a failure the client is *broken*: later writes are skipped (closing runs, summaries),
    so that the one line the user sees is the first failure, and what was written stays.
    """

    def __init__(self, client: Any, uri: str, patience_s: float = 120.0) -> None:
        self._client, self._uri, self._patience = client, uri, patience_s
        self.broken: StoreError | None = None

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.broken is not None:
                raise self.broken
            deadline, pause = time.monotonic() + self._patience, 0.1
            while True:
                try:
                    with _uninterrupted():
                        return method(*args, **kwargs)
                except Exception as exc:
                    if "database is locked" not in str(exc) or time.monotonic() > deadline:
                        self.broken = _store_error(self._uri, exc)
                        raise self.broken from None
                time.sleep(pause)
                pause = min(2.0, pause * 2)

        return call


def _store_error(uri: str, exc: BaseException) -> StoreError:
    root = exc
    while root.__cause__ is not None:  # the database's or the network's own words
        root = root.__cause__
    lines = [line for line in str(root).splitlines() if line.strip()]
    first = lines[0] if lines else root.__class__.__name__
    if first.startswith("(") and ") " in first:  # "(sqlite3.OperationalError) database ..."
        first = first.split(") ", 1)[1]
    error = StoreError(
        f"tracking store {uri} failed: {first[:300]}; the trials recorded before this are kept;"
        " fix the store (free disk space, restart the server) and continue with --resume"
    )
    error.reason = first[:300]
    return error


def _client(uri: str) -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # an http store prints "View run ... at: URL" for every run it closes; we print one link
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow.tracking import MlflowClient

    # after the import: mlflow configures its own loggers when it is first imported
    for name in ("mlflow", "alembic", "sqlalchemy", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # it logs each database error with a traceback; _Retrying reports it in one line instead
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    return _Retrying(MlflowClient(tracking_uri=uri), uri)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(folder: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"depth": 4}}`` -> ``{"model.depth": "4"}``: params named by their YAML path,
    so that the MLflow UI's compare views group by ablation axis."""
    out: dict[str, str] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = json.dumps(value) if not isinstance(value, str) else value
    return out


def probe_artifact(probe: str, epoch: int) -> str:
    """Where a probe's result at an epoch lives among a trial run's artifacts."""
    return f"probes/{probe}/epoch_{epoch:04d}.json"


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"


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
    done: dict[str, Any] = field(default_factory=dict)  # trial id -> its finished child run
    stale: list[str] = field(default_factory=list)  # child runs left RUNNING by a killed driver

    @property
    def unfinished(self) -> bool:
        return self.status != "FINISHED"


@contextlib.contextmanager
def _opening(uri: str) -> Iterator[None]:
    """:func:`_creating`, with any failure of the store as one line (nothing has started)."""
    try:
        with _creating(uri):
            yield
    except StoreError as exc:
        raise UserError(f"tracking store {uri}: {exc.reason}") from None
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"tracking store {uri}: {exc.__class__.__name__}: {exc}") from None


def open_store(uri: str) -> Any:
    """A client of a store that :func:`check_store` passed, its schema in place (created on a
    new sqlite file): the slow part of opening a store, which the driver overlaps with Ray's
    start."""
    with _opening(uri):
        client = _client(uri)
        client.search_experiments(max_results=1)
    return client


class SweepTracker:
    """Records one sweep invocation; a :class:`~resablate.results.Listener` for its trials."""

    def __init__(self, uri: str, experiment: str, client: Any = None) -> None:
        """``client``: one :func:`open_store` made for ``uri`` (else the store is checked and
        a client made here)."""
        if client is None:
            check_store(uri)
        self.uri = uri
        with _opening(uri):
            self.client = client or _client(uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                self.experiment_id = self.client.create_experiment(
                    experiment,
                    artifact_location=artifact_location(uri, experiment),
                    tags=EXPERIMENT_KIND,
                )
            elif found.lifecycle_stage == "deleted":
                raise UserError(
                    f"MLflow experiment '{experiment}' is deleted in {uri}; restore it in"
                    " the UI, or set tracking.experiment to another name"
                )
            else:
                self.experiment_id = found.experiment_id
        self.parent_id: str | None = None
        # trial id -> its child run, while open: what the driver keeps per trial is dropped when
        # the trial ends (a 10,000-trial sweep must not grow the driver with every trial)
        self.runs: dict[str, str] = {}
        self.counts = {FINISHED: 0, DIVERGED: 0, PRUNED: 0, FAILED: 0}
        self.previous: Previous | None = None  # the invocation this one resumes
        self.nodes: set[str] = set()  # trials whose run names its Ray node
        self.pending: dict[str, list[Any]] = {}  # trial id -> epoch metrics not written yet
        self.flushed: dict[str, float] = {}  # trial id -> when its metrics were last written

    # -- the ledger: what an earlier invocation of a sweep finished -----------------------------

    def find_previous(self, name: str) -> Previous | None:
        """The latest invocation of sweep ``name`` in this experiment, with its children."""
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`resablate.kind` = 'sweep' and tags.`resablate.sweep` = '{name}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            return None
        parent = found[0]
        tags = parent.data.tags
        previous = Previous(
            parent.info.run_id,
            parent.info.status,
            tags.get("resablate.spec_hash", ""),
            int(tags.get("resablate.n_trials", "0")),
            int(tags.get("resablate.resumes", "0")),
            dict(tags),
        )
        for run in self._children(parent.info.run_id):
            trial_id = run.data.tags.get("trial_id")
            status = run.data.tags.get("resablate.status")
            if run.info.status == "RUNNING":
                previous.stale.append(run.info.run_id)
            elif run.info.status == "FINISHED" and status in RESULTS and trial_id:
                previous.done.setdefault(trial_id, run)
        return previous

    def _children(self, parent_id: str) -> Iterable[Any]:
        return children(self.client, self.experiment_id, parent_id)

    def records(
        self, trials: Iterable[Trial], history_of: tuple[str, ...] = ()
    ) -> list[TrialRecord]:
        """The records of ``trials`` that the resumed invocation finished: status and final
        metrics from MLflow, and the per-epoch history of the ``history_of`` metrics."""
        if self.previous is None:
            return []
        out = []
        for trial in trials:
            run = self.previous.done.get(trial.id)
            if run is None:
                continue
            metrics = dict(run.data.metrics)
            record = TrialRecord(trial, run.data.tags["resablate.status"], metrics=metrics)
            steps: dict[int, dict[str, float]] = {}
            for metric in history_of:
                for point in self.client.get_metric_history(run.info.run_id, metric):
                    steps.setdefault(point.step, {})[metric] = point.value
            record.history = [steps[k] for k in sorted(steps)]
            record.epoch = max(steps, default=0)
            out.append(record)
        return out

    @_atomic
    def resume_sweep(
        self, previous: Previous, spec_hash: str, source: Path, trials: list[Trial]
    ) -> str:
        """Continue ``previous``: close its stale child runs as killed, reopen its parent run,
        and count what it finished. A changed spec (allowed by --force) is recorded on it."""
        for run_id in previous.stale:
            self.client.set_tag(run_id, "resablate.status", KILLED)
            self.client.set_terminated(run_id, "KILLED")
        resumes = previous.resumes + 1
        parent = previous.run_id
        self.client.update_run(parent, status="RUNNING")
        self.client.set_tag(parent, "resablate.resumes", str(resumes))
        if previous.spec_hash != spec_hash:
            self.client.set_tag(
                parent, f"resablate.spec_hash.before_resume_{resumes}", previous.spec_hash
            )
            self.client.set_tag(parent, "resablate.spec_hash", spec_hash)
            self.client.set_tag(parent, "resablate.n_trials", str(len(trials)))
            try:
                text = source.read_text(encoding="utf-8")
            except OSError:
                text = ""
            self.client.log_text(parent, text, f"sweep.resume_{resumes}.yaml")
            plan = [{"id": t.id, "cell": t.cell, "grid": t.assignment} for t in trials]
            self.client.log_dict(parent, plan, f"plan.resume_{resumes}.json")
        self.parent_id, self.previous = parent, previous
        for run in previous.done.values():
            status = run.data.tags["resablate.status"]
            self.counts[status] = self.counts.get(status, 0) + 1
        return parent

    # -- the sweep ----------------------------------------------------------------------------

    @_atomic
    def start_sweep(
        self, name: str, spec: dict[str, Any], spec_hash: str, source: Path, trials: list[Trial]
    ) -> str:
        tags = {
            "mlflow.runName": f"{name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "mlflow.source.name": str(source),
            "resablate.kind": "sweep",
            "resablate.sweep": name,
            "resablate.spec_hash": spec_hash,
            "resablate.n_trials": str(len(trials)),
            **{f"resablate.version.{k}": v for k, v in versions().items()},
        }
        try:
            commit = git_commit(source.resolve().parent)
        except OSError:  # no working directory any more (a Ray Job's, unpacked again)
            commit = None
        if commit:
            tags["mlflow.source.git.commit"] = commit
        run = self.client.create_run(self.experiment_id, tags=tags)
        self.parent_id = run.info.run_id
        try:
            text = source.read_text(encoding="utf-8")
        except OSError:
            text = ""
        self.client.log_text(self.parent_id, text, "sweep.yaml")
        self.client.log_dict(self.parent_id, spec, "sweep.resolved.json")
        plan = [{"id": t.id, "cell": t.cell, "grid": t.assignment} for t in trials]
        self.client.log_dict(self.parent_id, plan, "plan.json")
        return self.parent_id

    @_atomic
    def log_sweep_metrics(self, metrics: dict[str, float]) -> None:
        """Numbers about the whole sweep (e.g. each cell's best c) on the parent run."""
        from mlflow.entities import Metric

        if self.parent_id is None or not metrics:
            return
        now = int(time.time() * 1000)
        found = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        self.client.log_batch(self.parent_id, metrics=found)

    @_atomic
    def end_sweep(self, summary: dict[str, str] | None = None, interrupted: bool = False) -> None:
        """Close the parent run and any child run still open (a killed or crashed sweep)."""
        if self.parent_id is None:
            return
        for trial_id in list(self.pending):  # what the stopped trials reported last
            self._flush(trial_id)
        for run_id in set(self.runs.values()):
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_tag(run_id, "resablate.status", "killed")
                self.client.set_terminated(run_id, "KILLED")
        for artifact, text in (summary or {}).items():
            self.client.log_text(self.parent_id, text, artifact)
        tags = {f"resablate.{k}": str(v) for k, v in self.counts.items()}
        for key, value in tags.items():
            self.client.set_tag(self.parent_id, key, value)
        status = "KILLED" if interrupted else ("FAILED" if self.counts[FAILED] else "FINISHED")
        self.client.set_terminated(self.parent_id, status)

    # -- listener -----------------------------------------------------------------------------

    @_atomic
    def trial_started(self, trial: Trial) -> None:
        from mlflow.entities import Param

        tags = {
            "mlflow.parentRunId": self.parent_id or "",
            "mlflow.runName": trial.label() or trial.id,
            "trial_id": trial.id,
            "cell": trial.cell,
            "resablate.status": "running",
            **trial.tags,
        }
        run = self.client.create_run(self.experiment_id, tags=tags)
        self.runs[trial.id] = run.info.run_id
        params = [Param(k, v) for k, v in flatten(trial.config).items()]
        self.client.log_batch(run.info.run_id, params=params)

    @_atomic
    def trial_result(self, trial: Trial, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        run_id = self.runs.get(trial.id)
        if run_id is None:
            return
        node = result.get("ray_node_id")
        if node and trial.id not in self.nodes:  # the Ray node that runs this attempt
            self.nodes.add(trial.id)
            self.client.set_tag(run_id, "ray.node_id", str(node))
        step = int(result.get("epoch", 0))
        now = int(time.time() * 1000)
        self.pending.setdefault(trial.id, []).extend(
            Metric(k, v, now, step) for k, v in epoch_metrics(result).items()
        )
        if time.monotonic() - self.flushed.get(trial.id, 0.0) >= FLUSH_EVERY_S:
            self._flush(trial.id)
        for name, found in (result.get("probes") or {}).items():
            # per-unit curves and the full result: probes/<probe>/epoch_<k>.json
            self.client.log_dict(run_id, {"epoch": step, **found}, probe_artifact(name, step))

    def _flush(self, trial_id: str) -> None:
        """Write a trial's buffered epoch metrics: one call per trial every FLUSH_EVERY_S (and
        at its end), not one per epoch; short epochs would otherwise keep the store busy."""
        self.flushed[trial_id] = time.monotonic()
        metrics = self.pending.pop(trial_id, [])
        run_id = self.runs.get(trial_id)
        for i in range(0, len(metrics) if run_id else 0, MAX_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i : i + MAX_BATCH])

    @_atomic
    def trial_retried(self, trial: Trial, error: str | None) -> None:
        """Tune restarts a failed attempt (max_failures): its run ends failed, with the error,
        and the next attempt gets a run of its own (it trains from the start again)."""
        self._flush(trial.id)
        self.flushed.pop(trial.id, None)
        run_id = self.runs.pop(trial.id, None)
        self.nodes.discard(trial.id)
        if run_id is None:
            return
        self.client.set_tag(run_id, "resablate.status", RETRIED)
        if error:
            self.client.log_text(run_id, error, "error.txt")
        self.client.set_terminated(run_id, "FAILED")

    @_atomic
    def trial_finished(self, record: TrialRecord) -> None:
        run_id = self.runs.get(record.trial.id)
        if run_id is None:
            self.trial_started(record.trial)
            run_id = self.runs[record.trial.id]
        self._flush(record.trial.id)
        self.counts[record.status] = self.counts.get(record.status, 0) + 1
        self.client.set_tag(run_id, "resablate.status", record.status)
        if record.error:
            self.client.log_text(run_id, record.error, "error.txt")
        self.client.set_terminated(run_id, _STATUS.get(record.status, "FAILED"))
        del self.runs[record.trial.id]
        self.flushed.pop(record.trial.id, None)
        self.nodes.discard(record.trial.id)


# -- reading a recorded sweep back (resablate report) ------------------------------------------


def children(client: Any, experiment_id: str, parent_id: str) -> Iterable[Any]:
    """Every child run of a parent run, page by page."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            f"tags.mlflow.parentRunId = '{parent_id}'",
            max_results=1000,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


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
    client: Any = field(repr=False, default=None)

    def artifact(self, run_id: str, path: str) -> Any | None:
        """A JSON artifact of a run (None when it has none at ``path``)."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            try:
                local = self.client.download_artifacts(run_id, path, folder)
            except Exception:
                return None
            return json.loads(Path(local).read_text(encoding="utf-8"))

    def probe(self, run_id: str, probe: str) -> dict[int, dict[str, Any]]:
        """Every recorded result of ``probe`` in a run: epoch -> the probe's JSON."""
        try:
            files = self.client.list_artifacts(run_id, f"probes/{probe}")
        except Exception:
            return {}
        out = {}
        for entry in files:
            found = self.artifact(run_id, entry.path)
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
    with _creating(uri):
        client = _client(uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except StoreError as exc:
        raise UserError(f"tracking store {uri}: {exc.reason}") from None
    if found is None:
        raise UserError(
            f"no experiment '{experiment}' in {uri}; `resablate ui` lists the experiments"
        )
    if parent_id is None:
        parents = client.search_runs(
            [found.experiment_id],
            "tags.`resablate.kind` = 'sweep'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not parents:
            raise UserError(f"experiment '{experiment}' in {uri} holds no sweep run")
        parent = parents[0]
    else:
        try:
            parent = client.get_run(parent_id)
        except StoreError:
            raise UserError(f"--run {parent_id}: no such run in {uri}") from None
        if parent.info.experiment_id != found.experiment_id:
            raise UserError(f"--run {parent_id}: not a run of experiment '{experiment}'")
    runs = []
    for run in children(client, found.experiment_id, parent.info.run_id):
        if run.info.status == "RUNNING" or "trial_id" not in run.data.tags:
            continue
        if run.data.tags.get("resablate.status") in ("killed", "retried"):
            continue  # an attempt that did not end its trial
        data = _run_data(run)
        wanted = [m for m in run.data.metrics if m in histories or m.startswith(history_prefixes)]
        for metric in wanted:
            points = client.get_metric_history(run.info.run_id, metric)
            data.history[metric] = sorted((p.step, p.value) for p in points)
        runs.append(data)
    # artifacts are read with the plain client: a missing one is an answer, not a broken store
    plain = client._client
    return SweepRuns(uri, experiment, found.experiment_id, _run_data(parent), runs, plain)


def _run_data(run: Any) -> RunData:
    return RunData(
        run.info.run_id,
        run.data.tags.get("resablate.status", run.info.status.lower()),
        dict(run.data.params),
        dict(run.data.tags),
        dict(run.data.metrics),
    )


def log_report(sweep: SweepRuns, folder: Path) -> None:
    """The report's files as artifacts ``report/...`` of the sweep's parent run."""
    sweep.client.log_artifacts(sweep.parent.run_id, str(folder), "report")


def experiments(uri: str) -> list[tuple[str, str]]:
    """(name, id) of the store's active experiments that hold runs, newest first."""
    client = _client(uri)
    found = client.search_experiments(order_by=["creation_time DESC"])
    return [(e.name, e.experiment_id) for e in found if e.name != "Default"]


def serve_ui(uri: str, host: str, port: int, say: Callable[[str], Any]) -> int:
    """Run ``mlflow server`` on ``uri`` at ``host:port`` until Ctrl-C; print where to look."""
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise UserError(
            f"no MLflow store at {path}; run a sweep here first, or pass --tracking-uri"
        )
    check_store(uri)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # MLflow's GenAI job runner (LLM judges; resablate records none) keeps its queue in a
    # folder under /dev/shm (memory) that mlflow server never removes: off unless asked for
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    server = subprocess.Popen(command, stdout=sys.stderr, env=env)  # our stdout: addresses only
    base = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise UserError(
                    f"mlflow server exited with code {server.returncode};"
                    f" is port {port} free? Try --port {port + 1}"
                )
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise UserError(
                        f"mlflow server did not answer on {base} within 120 s"
                    ) from None
                time.sleep(0.5)
        say(f"MLflow UI: {base}")
        for name, experiment_id in experiments(uri):
            say(f"  {name}: {experiment_url(base, experiment_id)}")
        say("Stop with Ctrl-C.")
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
