"""Writing a sweep invocation to the store: one parent run, one nested child run per trial.

A trial's attempts share its run: an attempt that Ray Tune retries, that a scheduler paused, or
that ``--resume`` continues after a killed driver goes on in the same run from its checkpoint
(resablate.checkpoint), and an epoch it reports again is not logged twice. So each trial that
ends has exactly one run, whose history holds every epoch once; where it resumed is its tag
``resablate.resumed_from_epoch``, its attempts' errors ``errors/attempt_<n>.txt``.

:class:`RunLog` starts (or reopens, for ``--resume``) the parent run, is the sweep's results
:class:`~resablate.results.Listener`, and closes every run at the end. All writes happen in the
driver process, in the order the runner's events arrive, so concurrent trials never write to the
store at once (sqlite rejects concurrent writers with "database is locked").
"""

from __future__ import annotations

import json
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from resablate.results import (
    DIVERGED,
    FAILED,
    FINISHED,
    KILLED,
    PRUNED,
    RESULT_STATUSES,
    RUNNING,
    TrialRecord,
    epoch_metrics,
)
from resablate.spec.grid import Trial
from resablate.tracking.ledger import Previous
from resablate.tracking.store import (
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
EPOCH_TAG = "resablate.checkpoint_epoch"  # the epoch of the checkpoint a run's tag names


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


def killed_text(names: list[str], shown: int = 10) -> str:
    """One line naming the trials an interrupted sweep left killed (the first ``shown``)."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    listed = "; ".join(names[:shown])
    return f"killed, --resume continues them: {len(names)} trial(s): {listed}{more}"


@dataclass(slots=True)
class OpenRun:
    """A trial attempt's child run while it is open (dropped when the attempt ends: a
    10,000-trial sweep must not grow the driver with every trial)."""

    run_id: str
    pending: list[Metric] = field(default_factory=list)  # epoch metrics not written yet
    flushed: float = 0.0  # when its metrics were last written (time.monotonic)
    node_tagged: bool = False  # its run names the Ray node that runs the attempt
    logged: int = -1  # the last epoch whose metrics are written or pending
    attempts: int = 1
    checkpoint: str | None = None  # where its checkpoints are (the latest attempt's)


class RunLog:
    """Records one sweep invocation; a :class:`~resablate.results.Listener` for its trials."""

    def __init__(self, store: Store, experiment_id: str) -> None:
        self.store, self.uri, self.experiment_id = store, store.uri, experiment_id
        self.parent_id: str | None = None
        self.attempts: dict[str, OpenRun] = {}  # trial id -> its open attempt
        self.counts = {FINISHED: 0, DIVERGED: 0, PRUNED: 0, FAILED: 0}
        # trial id -> (run, checkpoint location, epoch) of an unfinished trial that --resume
        # continues in its run, from its checkpoint
        self.resumable: dict[str, tuple[str, str, int]] = {}
        self.keep_checkpoint = False  # train.keep_checkpoint: a finished trial's is an artifact
        self.saved = {"checkpoints": 0, "largest": 0}  # checkpoints written, the largest's bytes
        self.closed = 0  # stale runs of a resumed invocation closed as killed
        self.killed: list[str] = []  # the runs an interrupted invocation closed as killed

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
        and count what it finished. A changed spec (allowed by --force) is recorded on it. An
        unfinished trial with a checkpoint is continued in its run (:attr:`resumable`)."""
        for trial_id, run in previous.resumable.items():
            location = run.tags["resablate.checkpoint"]
            self.resumable[trial_id] = (run.run_id, location, int(run.tags[EPOCH_TAG]))
        continued = {run_id for run_id, _, _ in self.resumable.values()}
        for run_id in previous.stale:
            if run_id not in continued:
                self.store.set_tag(run_id, "resablate.status", KILLED)
                self.store.set_terminated(run_id, RUN_KILLED)
                self.closed += 1
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

    def resume_points(self) -> dict[str, tuple[str, int]]:
        """trial id -> (checkpoint location, epoch) of the trials --resume continues."""
        return {trial: (where, epoch) for trial, (_, where, epoch) in self.resumable.items()}

    def saved_text(self, interrupted: bool) -> str:
        """What the sweep's checkpoints took on disk, said at its end."""
        from resablate.sweep.capacity import size_text
        from resablate.trial.checkpoint import KEEP

        written, largest = self.saved["checkpoints"], self.saved["largest"]
        kept = (
            "the last of each finished trial logged to MLflow (artifact checkpoint/), the rest"
            " deleted"
            if self.keep_checkpoint
            else "finished trials' deleted"
        )
        left = f"; unfinished trials keep their last {KEEP} for --resume" if interrupted else ""
        return f"checkpoints: {written} written, the largest {size_text(largest)}; {kept}{left}"

    def log_sweep_metrics(self, metrics: dict[str, float]) -> None:
        """Numbers about the whole sweep (e.g. each cell's best c) on the parent run."""
        if self.parent_id is None or not metrics:
            return
        now = int(time.time() * 1000)
        found = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        self.store.log_batch(self.parent_id, metrics=found)

    def end_sweep(
        self,
        summary: dict[str, str] | None = None,
        interrupted: bool = False,
        crashed: str | None = None,
    ) -> None:
        """Close the parent run and any child run still open (a killed or crashed sweep): FAILED
        with the driver's error as tag ``resablate.crash`` when it ``crashed``, KILLED when
        ``interrupted``; --resume continues either."""
        if self.parent_id is None:
            return
        for run in self.attempts.values():  # what the stopped trials reported last
            self._flush(run)
        left = [run.run_id for run in self.attempts.values()]
        left += [run_id for run_id, _, _ in self.resumable.values()]  # not continued this time
        for run_id in left:
            found = self.store.get_run(run_id)
            if found.status == RUN_RUNNING:
                self.store.set_tag(run_id, "resablate.status", KILLED)
                self.store.set_terminated(run_id, RUN_KILLED)
                self.killed.append(found.tags.get("mlflow.runName", run_id))
        summary = dict(summary or {})
        if self.killed and "summary.md" in summary:
            summary["summary.md"] += f"\n{killed_text(self.killed)}\n"
        for artifact, text in summary.items():
            self.store.log_text(self.parent_id, text, artifact)
        for key, value in self.counts.items():
            self.store.set_tag(self.parent_id, f"resablate.{key}", str(value))
        failed = RUN_FAILED if self.counts[FAILED] else RUN_FINISHED
        state = RUN_KILLED if interrupted else failed
        if crashed is not None:
            self.store.set_tag(self.parent_id, "resablate.crash", crashed[:5000])
            state = RUN_FAILED
        self.store.set_terminated(self.parent_id, state)

    # -- listener -----------------------------------------------------------------------------

    def trial_started(self, trial: Trial) -> None:
        if trial.id in self.attempts:
            return  # a retried or paused attempt goes on in its trial's run
        if trial.id in self.resumable:  # a trial the killed invocation left unfinished
            run_id, location, _ = self.resumable.pop(trial.id)
            history = self.store.get_metric_history(run_id, "epoch_time")
            logged = max((step for step, _ in history), default=-1)
            self.store.update_run(run_id, RUN_RUNNING)
            self.store.set_tag(run_id, "resablate.status", RUNNING)
            self.attempts[trial.id] = OpenRun(run_id, logged=logged, checkpoint=location)
            return
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
        if step <= run.logged:
            return  # a resumed attempt reports again the epochs after its checkpoint: once
        run.logged = step
        now = int(time.time() * 1000)
        run.pending += [Metric(k, v, now, step) for k, v in epoch_metrics(result).items()]
        if time.monotonic() - run.flushed >= FLUSH_EVERY_S:
            self._flush(run)
        for name, found in (result.get("probes") or {}).items():
            # per-unit curves and the full result: probes/<probe>/epoch_<k>.json
            self.store.log_dict(run.run_id, {"epoch": step, **found}, probe_artifact(name, step))

    def trial_checkpointed(self, trial: Trial, location: str, epoch: int, size: int) -> None:
        """The trial's state up to ``epoch`` is saved under ``location``: its metrics so far
        are written with the tags that name the checkpoint, in one call, so that a run's
        checkpoint tag never names an epoch its history lacks (what --resume relies on)."""
        run = self.attempts.get(trial.id)
        if run is None:
            return
        self.saved["checkpoints"] += 1
        self.saved["largest"] = max(self.saved["largest"], size)
        run.checkpoint = location
        run.flushed = time.monotonic()
        metrics, run.pending = run.pending, []
        tags = {"resablate.checkpoint": location, EPOCH_TAG: str(epoch)}
        self.store.log_batch(run.run_id, metrics=metrics, tags=tags)

    def trial_resumed(self, trial: Trial, epoch: int) -> None:
        run = self.attempts.get(trial.id)
        if run is not None:
            self.store.set_tag(run.run_id, "resablate.resumed_from_epoch", str(epoch))

    def _flush(self, run: OpenRun) -> None:
        """Write a trial's buffered epoch metrics: one call per trial every FLUSH_EVERY_S (and
        at its end), not one per epoch; short epochs would otherwise keep the store busy."""
        run.flushed = time.monotonic()
        metrics, run.pending = run.pending, []
        if metrics:
            self.store.log_batch(run.run_id, metrics=metrics)

    def trial_retried(self, trial: Trial, error: str | None) -> None:
        """Tune (or the inline runner) retries a failed attempt (max_failures): the error is
        kept as ``errors/attempt_<n>.txt`` of the trial's run, and the next attempt goes on in
        the same run, from the trial's last checkpoint."""
        run = self.attempts.get(trial.id)
        if run is None:
            return
        self._flush(run)
        if error:
            self.store.log_text(run.run_id, error, f"errors/attempt_{run.attempts}.txt")
        run.attempts += 1
        run.node_tagged = False  # the next attempt may run on another node
        self.store.set_tag(run.run_id, "resablate.attempts", str(run.attempts))

    def trial_finished(self, record: TrialRecord) -> None:
        if record.trial.id not in self.attempts:
            self.trial_started(record.trial)
        run = self.attempts[record.trial.id]
        self._flush(run)
        self.counts[record.status] = self.counts.get(record.status, 0) + 1
        if self.keep_checkpoint and run.checkpoint and record.status in RESULT_STATUSES:
            self._keep(run)
        self.store.set_tag(run.run_id, "resablate.status", record.status)
        if record.error:
            self.store.log_text(run.run_id, record.error, "error.txt")
        self.store.set_terminated(run.run_id, _STATE.get(record.status, RUN_FAILED))
        del self.attempts[record.trial.id]

    def _keep(self, run: OpenRun) -> None:
        """The trial's last checkpoint as its run's artifact ``checkpoint/epoch_<k>.pt``
        (train.keep_checkpoint): the trained network, reloadable with checkpoint.read."""
        from resablate.trial import checkpoint

        assert run.checkpoint is not None
        found = checkpoint.listing(run.checkpoint)
        if not found:
            return
        _, path, _ = found[0]
        fs, _ = checkpoint.filesystem(run.checkpoint)
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / path.rpartition("/")[2]
            with fs.open_input_file(path) as source:
                local.write_bytes(source.read())
            self.store.log_artifacts(run.run_id, Path(folder), "checkpoint")
