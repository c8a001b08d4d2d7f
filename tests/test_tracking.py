"""MLflow tracking against a real sqlite store: locks from other processes are waited out."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from resablate.grid import Trial
from resablate.results import FINISHED, TrialRecord
from resablate.tracking import SweepTracker, _uninterrupted, flatten


def test_a_locked_sqlite_store_is_waited_out_not_an_error(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    tracker = SweepTracker(uri, "locks")
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: locks\n")
    trial = Trial("abc", {"seed": 0, "model": {"depth": 2}}, {"seed": 0}, "cell")
    tracker.start_sweep("locks", {"name": "locks"}, "hash", sweep, [trial])

    other = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock ...
    release = threading.Timer(7.0, lambda: other.execute("COMMIT"))  # ... beyond the busy timeout
    release.start()
    started = time.monotonic()
    try:
        tracker.trial_started(trial)
        tracker.trial_result(trial, {"epoch": 1, "status": "running", "train_loss": 0.5})
        tracker.trial_finished(TrialRecord(trial, FINISHED, 1, {"train_loss": 0.5}))
        tracker.end_sweep({"summary.md": "| x |\n"})
    finally:
        release.join()
        other.close()
    assert time.monotonic() - started > 5.0  # it really waited for the lock

    client = MlflowClient(tracking_uri=uri)
    [child] = client.search_runs([tracker.experiment_id], "tags.trial_id = 'abc'")
    assert child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == tracker.parent_id
    assert [m.value for m in client.get_metric_history(child.info.run_id, "train_loss")] == [0.5]
    assert client.get_run(tracker.parent_id).info.status == "FINISHED"


class CtrlCMidWrite(MlflowClient):
    """A real client; the user presses Ctrl-C (``presses`` times) while a tag is written."""

    presses = 1
    fails = False  # the write fails after the Ctrl-C (a full disk, a server gone)

    def set_tag(self, *args: object, **kwargs: object) -> None:
        for _ in range(self.presses):
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # a KeyboardInterrupt raised mid-call lands here
        if self.fails:
            raise OSError("disk I/O error")
        super().set_tag(*args, **kwargs)

    def create_run(self, *args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        return super().create_run(*args, **kwargs)  # a Ctrl-C held until here loses the id


def test_a_ctrl_c_during_a_store_write_lands_after_the_write(tmp_path: Path, monkeypatch) -> None:
    # Python's own Ctrl-C (an earlier test's ray.init may have left Ray's handler installed)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(CtrlCMidWrite, "presses", 1)
    monkeypatch.setattr(CtrlCMidWrite, "fails", False)
    try:
        ctrl_c_mid_write(tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)


def ctrl_c_mid_write(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "ctrl")
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: ctrl\n")
    trial = Trial("abc", {"seed": 0}, {"seed": 0}, "cell")
    tracker.start_sweep("ctrl", {"name": "ctrl"}, "hash", sweep, [trial])
    tracker.trial_started(trial)
    run_id = tracker.runs["abc"]
    real = tracker.client._client
    tracker.client._client = CtrlCMidWrite(tracking_uri=uri)
    with pytest.raises(KeyboardInterrupt):
        tracker.client.set_tag(run_id, "written", "yes")
    assert real.get_run(run_id).data.tags["written"] == "yes"  # the write ended first

    CtrlCMidWrite.fails = True  # the held Ctrl-C still stops the sweep when the write failed
    with pytest.raises(KeyboardInterrupt):
        tracker.client.set_tag(run_id, "failed", "yes")
    assert tracker.client.broken is None  # the interrupt, not a store failure, ends the sweep
    CtrlCMidWrite.fails = False

    CtrlCMidWrite.presses = 2  # a second Ctrl-C is not held
    with pytest.raises(KeyboardInterrupt):
        tracker.client.set_tag(run_id, "second", "yes")
    assert "second" not in real.get_run(run_id).data.tags
    with pytest.raises(KeyboardInterrupt), _uninterrupted():  # inside a tracker method too
        tracker.client.set_tag(run_id, "nested", "yes")
    assert "nested" not in real.get_run(run_id).data.tags
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    CtrlCMidWrite.presses = 1  # a trial's run created, then the Ctrl-C: the tracker knows it
    later = Trial("def", {"seed": 1}, {"seed": 1}, "cell")
    with pytest.raises(KeyboardInterrupt):
        tracker.trial_started(later)
    assert "def" in tracker.runs

    tracker.client._client = real  # the store is not left locked: closing is immediate
    started = time.monotonic()
    tracker.end_sweep({}, interrupted=True)
    assert time.monotonic() - started < 10
    assert real.get_run(run_id).info.status == "KILLED"
    assert real.get_run(tracker.runs["def"]).info.status == "KILLED"


def test_params_are_flattened_yaml_paths() -> None:
    assert flatten(
        {"seed": 1, "model": {"depth": 4, "shortcut": "none"}, "data": {"whiten": None}}
    ) == {"seed": "1", "model.depth": "4", "model.shortcut": "none", "data.whiten": "null"}
