"""Trials that survive preemption (issue 20): a killed worker, a killed driver, a stop request,
a damaged checkpoint. Each trial ends with one FINISHED run whose history has every epoch once,
resumed from its last checkpoint (tag resablate.resumed_from_epoch), with the final metrics of the
uninterrupted trial (bit for bit on the CPU), and its checkpoints deleted once it finished.
Real Ray, real MLflow (sqlite), real training on digits."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from resablate.sweep.plan import make_plan
from resablate.trial import checkpoint
from resablate.trial.train import run_stack, run_trial
from tests.conftest import ray_script, run_process, trial_runs, write
from tests.test_resume import kill_hard, query, start, wait_until, workers

EPOCHS = 16
SWEEP = f"""
name: preempted
model: {{depth: 8, width: 48}}
init: {{c: 0.25}}
train: {{epochs: {EPOCHS}, batch_size: 32, lr: 0.02, checkpoint_every: 3}}
resources: {{max_concurrent_trials: 1, trials_per_stack: 1, max_failures: 1}}
grid:
  seed: [0, 1]
"""

LOGGED = (  # the last epoch of each trial's run written to the store, and its checkpoint's epoch
    "select t.value, r.status, (select max(step) from metrics m where m.run_uuid = r.run_uuid"
    " and m.key = 'test_acc'), (select value from tags c where c.run_uuid = r.run_uuid and"
    " c.key = 'resablate.checkpoint_epoch') from runs r join tags t on t.run_uuid = r.run_uuid"
    " and t.key = 'trial_id'"
)


def uninterrupted(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's last report, trained in one go here with the threads it had: one (its
    resources.cpu), in a Ray worker and inline alike (another count rounds sums differently)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_trial(config)
    finally:
        torch.set_num_threads(threads)


def checkpoint_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("epoch_*.pt") if checkpoint.epoch_of(p.name) is not None]


def check_runs(folder: Path, sweep: Path, epochs: int = EPOCHS) -> dict[str, Any]:
    """Every trial: one run, FINISHED, each epoch once, the uninterrupted trial's final metrics;
    returns the runs by trial id."""
    client, runs = trial_runs(folder, "preempted")
    plan = make_plan(sweep)
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(t.id for t in plan.trials)
    assert {r.info.status for r in runs} == {"FINISHED"}
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    for trial in plan.trials:
        run = by_trial[trial.id]
        for key in ("test_acc", "train_loss"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == list(range(1, epochs + 1)), (key, steps)
        last = uninterrupted(trial.config)
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert run.data.metrics[key] == last[key], key  # bit for bit
    return by_trial


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_a_killed_worker_is_retried_from_its_last_checkpoint(tmp_path: Path) -> None:
    sweep = write(tmp_path / "p.yaml", SWEEP)
    db = tmp_path / "mlflow.db"
    at = random.randint(4, 10)  # the epoch the worker is killed after (at least)

    def reached() -> bool:
        rows = query(db)(LOGGED) if db.exists() else []
        return any(status == "RUNNING" and (step or 0) >= at for _, status, step, _ in rows)

    proc = start(tmp_path, str(sweep))
    try:
        wait_until(proc, reached)
        [(trial, _, logged, saved)] = [r for r in query(db)(LOGGED) if r[1] == "RUNNING"]
        [worker] = workers(proc.pid)
        signal_sent = int(saved or 0)
        os.kill(worker, signal.SIGKILL)  # the node (here: its worker) running the trial is lost
        _, err = proc.communicate(timeout=300)
    finally:
        kill_hard(proc)
    assert proc.returncode == 0, err.decode()[-3000:]
    runs = check_runs(tmp_path, sweep)
    run = runs[trial]
    resumed = int(run.data.tags["resablate.resumed_from_epoch"])
    # the retry started from the checkpoint the run named when its worker died (or a later one
    # the dying worker had just reported), not from epoch 0
    assert resumed % 3 == 0 and signal_sent <= resumed <= logged, (at, logged, saved, resumed)
    assert run.data.tags["resablate.attempts"] == "2"
    client, _ = trial_runs(tmp_path, "preempted")
    error = client.download_artifacts(run.info.run_id, "errors/attempt_1.txt", str(tmp_path))
    assert "died" in Path(error).read_text().lower() or "actor" in Path(error).read_text().lower()
    other = next(r for t, r in runs.items() if t != trial)
    assert "resablate.resumed_from_epoch" not in other.data.tags  # never interrupted
    assert checkpoint_files(tmp_path / "resablate-runs") == []  # finished: deleted


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ray", "inline"])
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_a_killed_driver_resumes_the_partial_trial_from_its_checkpoint(
    tmp_path: Path, backend: str
) -> None:
    sweep = write(tmp_path / "p.yaml", SWEEP)
    db = tmp_path / "mlflow.db"
    flags = ["--inline"] if backend == "inline" else []

    def saved_twice() -> bool:
        rows = query(db)(LOGGED) if db.exists() else []
        return any(status == "RUNNING" and int(saved or 0) >= 6 for _, status, _, saved in rows)

    proc = start(tmp_path, str(sweep), *flags)
    try:
        wait_until(proc, saved_twice)
    finally:
        kill_hard(proc)  # the driver and its Ray: a machine losing power
    [(trial, _, logged, saved)] = [r for r in query(db)(LOGGED) if r[1] == "RUNNING"]
    _, before = trial_runs(tmp_path, "preempted")
    [partial] = [r.info.run_id for r in before if r.data.tags["trial_id"] == trial]
    assert checkpoint_files(tmp_path / "resablate-runs")  # the partial trial's, on disk

    ran = run_process("sweep", str(sweep), "--resume", *flags, cwd=tmp_path, timeout=300)
    assert ran.code == 0, ran.err[-3000:]
    assert "1 continue from their checkpoints" in " ".join(ran.err.split())
    said = " ".join(ran.out.split())  # what the checkpoints took, at the end
    assert "checkpoints: " in said and "written" in said and "finished trials' deleted" in said
    runs = check_runs(tmp_path, sweep)
    assert runs[trial].info.run_id == partial  # the same run, continued
    assert runs[trial].data.tags["resablate.resumed_from_epoch"] == saved
    assert int(saved) <= logged  # its history held every epoch up to the checkpoint
    assert checkpoint_files(tmp_path / "resablate-runs") == []


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_a_damaged_checkpoint_is_skipped_for_the_one_before_it(tmp_path: Path) -> None:
    sweep = write(tmp_path / "p.yaml", SWEEP)
    db = tmp_path / "mlflow.db"

    def saved_twice() -> bool:
        rows = query(db)(LOGGED) if db.exists() else []
        return any(status == "RUNNING" and int(saved or 0) >= 6 for _, status, _, saved in rows)

    proc = start(tmp_path, str(sweep), "--inline")
    try:
        wait_until(proc, saved_twice)
    finally:
        kill_hard(proc)
    [(trial, _, _, saved)] = [r for r in query(db)(LOGGED) if r[1] == "RUNNING"]
    files = {checkpoint.epoch_of(p.name): p for p in checkpoint_files(tmp_path / "resablate-runs")}
    newest = files[int(saved)]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated (a full disk, a lost node)

    ran = run_process("sweep", str(sweep), "--resume", "-q", "--inline", cwd=tmp_path)
    assert ran.code == 0, ran.err[-3000:]
    assert "unreadable checkpoint" in ran.err and "resuming from the checkpoint before" in ran.err
    runs = check_runs(tmp_path, sweep)
    assert runs[trial].data.tags["resablate.resumed_from_epoch"] == str(int(saved) - 3)


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_a_stop_saves_the_running_epoch_and_resume_continues_it(tmp_path: Path) -> None:
    # long enough that the stop lands mid-trial, and no regular checkpoint is due before it
    text = SWEEP.replace("checkpoint_every: 3", "checkpoint_every: 500").replace("[0, 1]", "[0]")
    sweep = write(tmp_path / "p.yaml", text.replace(f"epochs: {EPOCHS}", "epochs: 150"))
    db = tmp_path / "mlflow.db"

    def training() -> bool:
        rows = query(db)(LOGGED) if db.exists() else []
        return any(status == "RUNNING" and (step or 0) >= 2 for _, status, step, _ in rows)

    proc = start(tmp_path, str(sweep))
    try:
        wait_until(proc, training)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        kill_hard(proc)
    assert proc.returncode == 130, err.decode()[-3000:]
    [(trial, status, logged, saved)] = query(db)(LOGGED)
    assert status == "KILLED" and saved is not None
    # no regular checkpoint was due: this one is the stop's, of the last epoch the trial ran
    assert int(saved) == logged

    ran = run_process("sweep", str(sweep), "--resume", "-q", cwd=tmp_path, timeout=300)
    assert ran.code == 0, ran.err[-3000:]
    runs = check_runs(tmp_path, sweep, epochs=150)
    assert runs[trial].data.tags["resablate.resumed_from_epoch"] == saved


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_keep_checkpoint_logs_the_trained_network_and_deletes_the_rest(tmp_path: Path) -> None:
    text = SWEEP.replace("checkpoint_every: 3", "keep_checkpoint: true").replace("16", "3")
    sweep = write(tmp_path / "p.yaml", text.replace("[0, 1]", "[0]"))
    ran = run_process("sweep", str(sweep), "-q", "--inline", cwd=tmp_path)
    assert ran.code == 0, ran.err[-3000:]
    client, [run] = trial_runs(tmp_path, "preempted")
    local = client.download_artifacts(run.info.run_id, "checkpoint/epoch_3.pt", str(tmp_path))
    state = checkpoint.read(Path(local))  # weights_only: plain tensors
    assert state["epoch"] == 3 and state["members"][0]["result"]["status"] == "finished"
    assert state["members"][0]["result"]["test_acc"] == run.data.metrics["test_acc"]
    assert checkpoint_files(tmp_path / "resablate-runs") == []


def test_plan_estimates_the_disk_of_checkpoints(tmp_path: Path, cli) -> None:
    sweep = write(
        tmp_path / "d.yaml",
        """
name: disk
model: {depth: 4, width: 256}
train: {epochs: 2, batch_size: 256, lr: 0.01, keep_checkpoint: true}
grid: {seed: [0, 1, 2]}
""",
    )
    ran = cli("plan", str(sweep), "--json")
    assert ran.code == 0, ran.err
    found = json.loads(ran.out)
    disk, params = found["checkpoints"], found["trials"][0]["params"]
    assert disk["bytes_per_trial"] == 4 * params * 2  # weights + sgd momentum, float32
    assert disk["peak_bytes"] == 2 * disk["bytes_per_trial"] * disk["trials_at_once"]
    assert disk["artifact_bytes"] == 3 * disk["bytes_per_trial"]  # keep_checkpoint: one each
    saved = checkpoint.Checkpoints(tmp_path / "saved", every=2)
    run_stack([make_plan(sweep).trials[0].config], [lambda r: None], checkpoints=saved)
    [(_, _, size)] = checkpoint.listing(str(saved.folder))
    assert abs(size - disk["bytes_per_trial"]) / size < 0.05  # the estimate is the real size
    text = cli("plan", str(sweep))
    assert "checkpoints: about" in text.out and "train.keep_checkpoint" in text.out


def test_a_storage_that_cannot_be_written_is_one_line(tmp_path: Path, cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write(tmp_path / "s.yaml", "name: nostore\ntrain: {epochs: 1}\n")
    (tmp_path / "file").write_text("not a folder")
    ran = cli("sweep", "s.yaml", "--inline", "--storage", str(tmp_path / "file" / "sub"))
    assert ran.code == 2 and ran.err.count("\n") == 1, ran.err
    assert ran.err.startswith("resablate: error: --storage ") and "cannot write there" in ran.err
    assert sorted(os.listdir(tmp_path)) == ["file", "s.yaml"]  # nothing started, nothing made


# one trial at a time (all of this machine's CPUs each), the others pending: Tune creates them all
# at once (max_concurrent_trials would hold them back, and the rule pauses only for a waiting one)
MEDIAN = f"""
name: paused
model: {{depth: 4, width: 32}}
init: {{c: 0.25}}
data: {{validation: 0.2}}
train: {{epochs: 12, batch_size: 64}}  # checkpoints: a tenth of the epochs under median stopping
scheduler: {{kind: median, grace_period: 1, min_samples_required: 2}}
resources: {{cpu: {os.cpu_count()}}}
grid:
  train.lr: [0.05, 0.00001]
  seed: [0, 1]
"""


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_median_stopping_pauses_trials_and_they_resume_from_their_checkpoints(
    tmp_path: Path,
) -> None:
    sweep = write(tmp_path / "m.yaml", MEDIAN)
    ran = run_process("sweep", str(sweep), "-q", cwd=tmp_path, timeout=600)
    assert ran.code == 0, ran.err[-3000:]
    client, runs = trial_runs(tmp_path, "paused")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}  # one run each
    resumed = [r for r in runs if "resablate.resumed_from_epoch" in r.data.tags]
    # with one slot and no trial ended, the rule pauses a trial to let a waiting one run;
    # each paused trial goes on from a checkpoint, never from epoch 0
    assert resumed and all(int(r.data.tags["resablate.resumed_from_epoch"]) > 0 for r in resumed)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")]
        assert steps == list(range(1, len(steps) + 1))  # every epoch once, paused or not
        status = run.data.tags["resablate.status"]
        assert status == "pruned" or (status == "finished" and len(steps) == 12)
    assert checkpoint_files(tmp_path / "resablate-runs") == []


# Forward's order against Ray Tune's own: a worker dies after the driver saw a checkpoint's
# report and before Tune's save task took it (Tune then retries from the one before)
KILLED_BEFORE_SAVE = """
import json, os, signal, sys, tempfile
import ray
from ray import tune
from resablate.results import Events
from resablate.spec.grid import Trial
from resablate.sweep.ray.callbacks import Forward
from resablate.sweep.ray.tune_checkpoints import CHECKPOINT, REPORT


def trainable(config):
    found = tune.get_checkpoint()
    start = int(open(os.path.join(found.path, "epoch")).read()) if found else 0
    for epoch in range(start + 1, 7):
        tune.report({REPORT: [{"epoch": epoch, "start": start}]})
        if epoch % 2 == 0:  # a checkpoint every second epoch, reported as tune_checkpoints does
            folder = tempfile.mkdtemp()
            with open(os.path.join(folder, "epoch"), "w") as handle:
                handle.write(str(epoch))
            mark = {"epoch": epoch, "pid": os.getpid(), CHECKPOINT: [{"epoch": epoch, "bytes": 1}]}
            tune.report(mark, checkpoint=tune.Checkpoint.from_directory(folder))


class Seen:
    # a listener: the order in which the checkpoints' tags and the retry are written

    def __init__(self):
        self.order = []

    def trial_started(self, trial):
        pass

    def trial_finished(self, record):
        pass

    def trial_result(self, trial, result):
        self.order.append(["result", result["epoch"], result["start"]])

    def trial_retried(self, trial, error):
        self.order.append(["retried"])

    def trial_checkpointed(self, trial, location, epoch, size):
        self.order.append(["checkpointed", epoch])


class KillAtFour(tune.Callback):
    # after Forward has seen the epoch-4 checkpoint's report, before Tune's save task for it
    # reaches the worker: the worker dies (a node lost at that moment)

    killed = False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if CHECKPOINT in result and result["epoch"] == 4 and not self.killed:
            self.killed = True
            os.kill(result["pid"], signal.SIGKILL)


seen = Seen()
events = Events([seen])
forward = Forward(events, {"t0": [Trial("t0", {})]}, sys.argv[1])
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
run = tune.RunConfig(
    storage_path=sys.argv[1],
    callbacks=[forward, KillAtFour()],
    failure_config=tune.FailureConfig(max_failures=1),
    verbose=0,
)
tune.Tuner(trainable, param_space={"trial_id": "t0"}, run_config=run).fit()
ray.shutdown()
print(json.dumps(seen.order))
"""


@pytest.mark.slow  # a real Ray in a process of its own (conftest.ray_script)
def test_a_checkpoint_is_tagged_only_once_tune_has_taken_it(tmp_path: Path) -> None:
    order = ray_script(KILLED_BEFORE_SAVE, str(tmp_path))
    retry = order.index(["retried"])
    tagged = [event[1] for event in order[:retry] if event[0] == "checkpointed"]
    [restart] = {event[2] for event in order[retry:] if event[0] == "result"}
    # the tag a run held when its worker died names the checkpoint its retry started from
    assert tagged[-1] == restart == 2, order
    assert [e[1] for e in order if e[0] == "checkpointed"] == [2, 4, 6], order
