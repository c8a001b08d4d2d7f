"""Writing a sweep invocation to the store: one parent run, one nested child run per trial attempt.

:class:`RunLog` starts (or reopens, for ``--resume``) the parent run, is the sweep's results
:class:`~resablate.results.Listener`, and closes every run at the end. All writes happen in the
driver process, in the order the runner's events arrive, so concurrent trials never write to the
store at once (sqlite rejects concurrent writers with "database is locked").
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from resablate.grid import Trial
from resablate.ledger import Previous
from resablate.results import (
    DIVERGED,
    FAILED,
    FINISHED,
    KILLED,
    PRUNED,
    RETRIED,
    RUNNING,
    TrialRecord,
    epoch_metrics,
)
from resablate.store import (
    RUN_FAILED,
    RUN_FINISHED,
    RUN_KILLED,
    RUN_RUNNING,
    Metric,
    Store,
    check_store,
    open_store,
)

PACKAGES = ("resablate", "torch", "ray", "mlflow", "optuna", "pydantic", "numpy", "scikit-learn")
# the MLflow run state of a trial's run, by how the trial ended
_STATE = {FINISHED: RUN_FINISHED, DIVERGED: RUN_FINISHED, PRUNED: RUN_FINISHED, FAILED: RUN_FAILED}
# A running trial's epoch metrics are written at most this often (and when it ends): a killed
# driver loses at most these seconds of an unfinished trial's curve, which --resume reruns.
FLUSH_EVERY_S = 2.0


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


def _text(source: Path) -> str:
    try:
        return source.read_text(encoding="utf-8")
    except OSError:
        return ""


def _plan(trials: list[Trial]) -> list[dict[str, Any]]:
    return [{"id": t.id, "cell": t.cell, "grid": t.assignment} for t in trials]


@dataclass(slots=True)
class OpenRun:
    """A trial attempt's child run while it is open (dropped when the attempt ends: a
    10,000-trial sweep must not grow the driver with every trial)."""

    run_id: str
    pending: list[Metric] = field(default_factory=list)  # epoch metrics not written yet
    flushed: float = 0.0  # when its metrics were last written (time.monotonic)
    node_tagged: bool = False  # its run names the Ray node that runs the attempt


class RunLog:
    """Records one sweep invocation; a :class:`~resablate.results.Listener` for its trials."""

    def __init__(self, store: Store, experiment_id: str) -> None:
        self.store, self.uri, self.experiment_id = store, store.uri, experiment_id
        self.parent_id: str | None = None
        self.attempts: dict[str, OpenRun] = {}  # trial id -> its open attempt
        self.counts = {FINISHED: 0, DIVERGED: 0, PRUNED: 0, FAILED: 0}

    @classmethod
    def open(cls, uri: str, experiment: str) -> RunLog:
        """A run log of ``experiment`` (created if missing) in the store at ``uri``, checked
        and opened here (the driver opens its store while Ray starts)."""
        check_store(uri)
        store = open_store(uri)
        return cls(store, store.experiment(experiment))

    # -- the sweep ----------------------------------------------------------------------------

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
        self.parent_id = parent = self.store.create_run(self.experiment_id, tags)
        self.store.log_text(parent, _text(source), "sweep.yaml")
        self.store.log_dict(parent, spec, "sweep.resolved.json")
        self.store.log_dict(parent, _plan(trials), "plan.json")
        return parent

    def resume_sweep(
        self, previous: Previous, spec_hash: str, source: Path, trials: list[Trial]
    ) -> str:
        """Continue ``previous``: close its stale child runs as killed, reopen its parent run,
        and count what it finished. A changed spec (allowed by --force) is recorded on it."""
        for run_id in previous.stale:
            self.store.set_tag(run_id, "resablate.status", KILLED)
            self.store.set_terminated(run_id, RUN_KILLED)
        resumes = previous.resumes + 1
        parent = previous.run_id
        self.store.update_run(parent, RUN_RUNNING)
        self.store.set_tag(parent, "resablate.resumes", str(resumes))
        if previous.spec_hash != spec_hash:
            self.store.set_tag(
                parent, f"resablate.spec_hash.before_resume_{resumes}", previous.spec_hash
            )
            self.store.set_tag(parent, "resablate.spec_hash", spec_hash)
            self.store.set_tag(parent, "resablate.n_trials", str(len(trials)))
            self.store.log_text(parent, _text(source), f"sweep.resume_{resumes}.yaml")
            self.store.log_dict(parent, _plan(trials), f"plan.resume_{resumes}.json")
        self.parent_id = parent
        for run in previous.done.values():
            status = run.tags["resablate.status"]
            self.counts[status] = self.counts.get(status, 0) + 1
        return parent

    def log_sweep_metrics(self, metrics: dict[str, float]) -> None:
        """Numbers about the whole sweep (e.g. each cell's best c) on the parent run."""
        if self.parent_id is None or not metrics:
            return
        now = int(time.time() * 1000)
        found = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        self.store.log_batch(self.parent_id, metrics=found)

    def end_sweep(self, summary: dict[str, str] | None = None, interrupted: bool = False) -> None:
        """Close the parent run and any child run still open (a killed or crashed sweep)."""
        if self.parent_id is None:
            return
        for run in self.attempts.values():  # what the stopped trials reported last
            self._flush(run)
        for run in self.attempts.values():
            if self.store.get_run(run.run_id).status == RUN_RUNNING:
                self.store.set_tag(run.run_id, "resablate.status", KILLED)
                self.store.set_terminated(run.run_id, RUN_KILLED)
        for artifact, text in (summary or {}).items():
            self.store.log_text(self.parent_id, text, artifact)
        for key, value in self.counts.items():
            self.store.set_tag(self.parent_id, f"resablate.{key}", str(value))
        failed = RUN_FAILED if self.counts[FAILED] else RUN_FINISHED
        state = RUN_KILLED if interrupted else failed
        self.store.set_terminated(self.parent_id, state)

    # -- listener -----------------------------------------------------------------------------

    def trial_started(self, trial: Trial) -> None:
        tags = {
            "mlflow.parentRunId": self.parent_id or "",
            "mlflow.runName": trial.label() or trial.id,
            "trial_id": trial.id,
            "cell": trial.cell,
            "resablate.status": RUNNING,
            **trial.tags,
        }
        run_id = self.store.create_run(self.experiment_id, tags)
        self.attempts[trial.id] = OpenRun(run_id)
        self.store.log_batch(run_id, params=flatten(trial.config))

    def trial_result(self, trial: Trial, result: dict[str, Any]) -> None:
        run = self.attempts.get(trial.id)
        if run is None:
            return
        node = result.get("ray_node_id")
        if node and not run.node_tagged:  # the Ray node that runs this attempt
            run.node_tagged = True
            self.store.set_tag(run.run_id, "ray.node_id", str(node))
        step = int(result.get("epoch", 0))
        now = int(time.time() * 1000)
        run.pending += [Metric(k, v, now, step) for k, v in epoch_metrics(result).items()]
        if time.monotonic() - run.flushed >= FLUSH_EVERY_S:
            self._flush(run)
        for name, found in (result.get("probes") or {}).items():
            # per-unit curves and the full result: probes/<probe>/epoch_<k>.json
            self.store.log_dict(run.run_id, {"epoch": step, **found}, probe_artifact(name, step))

    def _flush(self, run: OpenRun) -> None:
        """Write a trial's buffered epoch metrics: one call per trial every FLUSH_EVERY_S (and
        at its end), not one per epoch; short epochs would otherwise keep the store busy."""
        run.flushed = time.monotonic()
        metrics, run.pending = run.pending, []
        if metrics:
            self.store.log_batch(run.run_id, metrics=metrics)

    def trial_retried(self, trial: Trial, error: str | None) -> None:
        """Tune restarts a failed attempt (max_failures): its run ends failed, with the error,
        and the next attempt gets a run of its own (it trains from the start again)."""
        run = self.attempts.get(trial.id)
        if run is None:
            return
        self._flush(run)
        del self.attempts[trial.id]
        self.store.set_tag(run.run_id, "resablate.status", RETRIED)
        if error:
            self.store.log_text(run.run_id, error, "error.txt")
        self.store.set_terminated(run.run_id, RUN_FAILED)

    def trial_finished(self, record: TrialRecord) -> None:
        if record.trial.id not in self.attempts:
            self.trial_started(record.trial)
        run = self.attempts[record.trial.id]
        self._flush(run)
        self.counts[record.status] = self.counts.get(record.status, 0) + 1
        self.store.set_tag(run.run_id, "resablate.status", record.status)
        if record.error:
            self.store.log_text(run.run_id, record.error, "error.txt")
        self.store.set_terminated(run.run_id, _STATE.get(record.status, RUN_FAILED))
        del self.attempts[record.trial.id]
