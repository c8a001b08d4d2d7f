"""The MLflow store: the only module that imports mlflow (lazily, so commands that do not record
never pay for it).

:class:`Store` is an MlflowClient cut down to the calls resablate makes, each typed and each
answering in plain Python (:class:`Run`, :class:`Experiment`), never in MLflow objects. Every call
waits out sqlite's "database is locked" and turns any other failure into one :class:`StoreError`
line. Beside it: where a sweep's store is (:func:`resolve_uri`) and the checks made before
anything starts (:func:`check_store`, :func:`check_cluster_store`, :func:`open_store`). The
default store is ``sqlite:///mlflow.db`` in the working directory; ``--tracking-uri`` or
MLFLOW_TRACKING_URI choose another.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from resablate.errors import StoreError, UserError

DEFAULT_DB = "mlflow.db"
# Lands MLflow 3's UI on the training-runs table instead of its GenAI (traces) view.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
MAX_BATCH = 1000  # metrics per log_batch call (MLflow's limit)
# MLflow's run states (its RunStatus names), as runs carry them
RUN_RUNNING, RUN_FINISHED, RUN_FAILED, RUN_KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"


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


def open_store(uri: str) -> Store:
    """A store that :func:`check_store` passed, its schema in place (created on a new sqlite
    file): the slow part of opening a store, which the driver overlaps with Ray's start."""
    with _opening(uri):
        store = Store(uri)
        store.search_experiments(max_results=1)
    return store


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


class Metric(NamedTuple):
    """One value of a metric, as a run's history holds it (a tuple: a trial buffers many)."""

    key: str
    value: float
    timestamp: int  # ms since the epoch
    step: int


@dataclass(frozen=True)
class Run:
    """A run as the store holds it: plain Python, no MLflow objects."""

    run_id: str
    experiment_id: str
    status: str  # MLflow's run state: RUN_RUNNING, RUN_FINISHED, RUN_FAILED, RUN_KILLED
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # the last value of each metric


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    deleted: bool


def _run(run: Any) -> Run:
    info, data = run.info, run.data
    return Run(
        info.run_id,
        info.experiment_id,
        info.status,
        dict(data.tags),
        dict(data.params),
        dict(data.metrics),
    )


class Store:
    """An MlflowClient for ``uri`` whose calls wait out sqlite's "database is locked" instead of
    failing, and turn any other store failure into one :class:`StoreError` line.

    Our own writes are serialized in the driver, but another process (a second sweep on the same
    store, ``resablate ui``) may hold the file's write lock for longer than sqlite's busy timeout.
    After a failure the store is *broken*: later calls are refused (closing runs, summaries), so
    that the one line the user sees is the first failure, and what was written stays.
    """

    def __init__(self, uri: str, patience_s: float = 120.0) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # an http store prints "View run ... at: URL" for every run it closes; we print one link
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow.tracking import MlflowClient

        # after the import: mlflow configures its own loggers when it is first imported
        for name in ("mlflow", "alembic", "sqlalchemy", "urllib3"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # it logs each database error with a traceback; a StoreError reports it in one line
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.uri, self.patience_s = uri, patience_s
        self.client: Any = MlflowClient(tracking_uri=uri)
        self.broken: StoreError | None = None

    def _call(self, name: str, *args: Any, breaks: bool = True, **kwargs: Any) -> Any:
        """``client.name(*args, **kwargs)``, waiting out a locked database; ``breaks``: a
        failure breaks the store (else it is only raised: a missing artifact is an answer)."""
        if self.broken is not None:
            raise self.broken
        method = getattr(self.client, name)
        deadline, pause = time.monotonic() + self.patience_s, 0.1
        while True:
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                if "database is locked" not in str(exc) or time.monotonic() > deadline:
                    error = _store_error(self.uri, exc)
                    if breaks:
                        self.broken = error
                    raise error from None
            time.sleep(pause)
            pause = min(2.0, pause * 2)

    # -- experiments ------------------------------------------------------------------------

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        found = self._call("get_experiment_by_name", name)
        if found is None:
            return None
        return Experiment(found.experiment_id, found.name, found.lifecycle_stage == "deleted")

    def create_experiment(
        self, name: str, artifact_location: str | None, tags: Mapping[str, str]
    ) -> str:
        return str(
            self._call(
                "create_experiment", name, artifact_location=artifact_location, tags=dict(tags)
            )
        )

    def search_experiments(
        self, order_by: Sequence[str] = (), max_results: int | None = None
    ) -> list[Experiment]:
        """The active experiments (all of them unless ``max_results``)."""
        kwargs: dict[str, Any] = {"order_by": list(order_by) or None}
        if max_results is not None:
            kwargs["max_results"] = max_results
        found = self._call("search_experiments", **kwargs)
        return [Experiment(e.experiment_id, e.name, e.lifecycle_stage == "deleted") for e in found]

    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created if missing (its artifacts beside a sqlite
        store, tagged for MLflow 3's UI); a deleted one is refused in one line."""
        with _opening(self.uri):
            found = self.get_experiment_by_name(name)
            if found is None:
                location = artifact_location(self.uri, name)
                return self.create_experiment(name, location, EXPERIMENT_KIND)
        if found.deleted:
            raise UserError(
                f"MLflow experiment '{name}' is deleted in {self.uri}; restore it in"
                " the UI, or set tracking.experiment to another name"
            )
        return found.experiment_id

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, experiment_id: str, tags: Mapping[str, str]) -> str:
        """A new run, RUNNING; its id."""
        return str(self._call("create_run", experiment_id, tags=dict(tags)).info.run_id)

    def get_run(self, run_id: str) -> Run:
        return _run(self._call("get_run", run_id))

    def search_runs(
        self,
        experiment_id: str,
        filter_string: str,
        order_by: Sequence[str] = (),
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> tuple[list[Run], str | None]:
        """One page of the runs that match ``filter_string``, and the next page's token."""
        page = self._call(
            "search_runs",
            [experiment_id],
            filter_string,
            order_by=list(order_by) or None,
            max_results=max_results,
            page_token=page_token,
        )
        return [_run(run) for run in page], page.token or None

    def get_metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every (step, value) of metric ``key`` in the order the store returns them."""
        return [(p.step, p.value) for p in self._call("get_metric_history", run_id, key)]

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Params in one call; metrics in calls of at most MAX_BATCH (MLflow's limit), the
        ``tags`` with the last of them (a tag that says what the metrics reach is set with
        them, or not at all)."""
        from mlflow.entities import Metric as MlflowMetric
        from mlflow.entities import Param, RunTag

        if params:
            found = [Param(k, v) for k, v in params.items()]
            self._call("log_batch", run_id, params=found)
        chunks = [metrics[i : i + MAX_BATCH] for i in range(0, len(metrics), MAX_BATCH)] or [[]]
        for k, chunk in enumerate(chunks):
            last = k == len(chunks) - 1
            marks = [RunTag(key, value) for key, value in (tags or {}).items()] if last else []
            if chunk or marks:
                batch = [MlflowMetric(*m) for m in chunk]
                self._call("log_batch", run_id, metrics=batch, tags=marks)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._call("set_tag", run_id, key, value)

    def update_run(self, run_id: str, status: str) -> None:
        self._call("update_run", run_id, status=status)

    def set_terminated(self, run_id: str, status: str) -> None:
        self._call("set_terminated", run_id, status)

    # -- artifacts --------------------------------------------------------------------------

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self._call("log_text", run_id, text, path)

    def log_dict(self, run_id: str, data: Any, path: str) -> None:
        """``data`` as the JSON artifact ``path`` of the run."""
        self._call("log_dict", run_id, data, path)

    def log_artifacts(self, run_id: str, folder: Path, path: str) -> None:
        """The files of ``folder`` as artifacts ``path/...`` of the run."""
        self._call("log_artifacts", run_id, str(folder), path)

    def list_artifacts(self, run_id: str, folder: str) -> list[str]:
        """The paths of the artifacts in ``folder`` of the run (none when it has none); a
        failure does not break the store."""
        try:
            return [
                entry.path for entry in self._call("list_artifacts", run_id, folder, breaks=False)
            ]
        except StoreError:
            return []

    def read_artifact(self, run_id: str, path: str) -> str | None:
        """The text of artifact ``path`` of the run (None when it has none there); a failure
        does not break the store."""
        with tempfile.TemporaryDirectory() as folder:
            try:
                local = self._call("download_artifacts", run_id, path, folder, breaks=False)
            except StoreError:
                return None
            return Path(local).read_text(encoding="utf-8")
