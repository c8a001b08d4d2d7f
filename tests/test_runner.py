"""The runner on a real local Ray (and in-process): events, failures, resources."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from resablate.errors import SpecError
from resablate.plan import make_plan
from resablate.results import FAILED, FINISHED
from resablate.runner import Session
from resablate.tracking import SweepTracker
from tests.conftest import write

SWEEP = "name: runner\nmodel: {depth: 2, width: 8}\ntrain: {epochs: 2}\ngrid: {seed: [0, 1]}\n"


@pytest.mark.parametrize("backend", ["ray", "inline"])
def test_a_failing_trial_is_recorded_and_the_others_finish(tmp_path: Path, backend: str) -> None:
    path = write(tmp_path / "runner.yaml", SWEEP)
    plan = make_plan(path)
    good, bad = plan.trials
    # a trial that raises inside the worker (its config no longer fits the family)
    broken_config = {**bad.config, "model": {**bad.config["model"], "depth": 3}}
    plan = dataclasses.replace(plan, trials=[good, dataclasses.replace(bad, config=broken_config)])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "runner")
    tracker.start_sweep("runner", {}, plan.spec.hash(), path, plan.trials)
    with Session(plan, backend, tmp_path / "runs") as session:
        if backend == "ray":
            import ray

            assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
            # the single-machine switch went to our Ray only: a cluster this process starts
            # later (ray start, tests/test_cluster.py) must be able to take more nodes
            assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
        before = signal.getsignal(signal.SIGINT)
        records = {r.trial.id: r for r in session.run([tracker])}
        # Ray Tune's Ctrl-C handler went with its run: a Ctrl-C after it is not swallowed
        assert signal.getsignal(signal.SIGINT) is before
    tracker.end_sweep()

    assert records[good.id].status == FINISHED and records[good.id].epoch == 2
    assert records[bad.id].status == FAILED
    assert "does not fit family mlp" in (records[bad.id].error or "")
    client = MlflowClient(tracking_uri=uri)
    [failed] = client.search_runs([tracker.experiment_id], f"tags.trial_id = '{bad.id}'")
    assert failed.info.status == "FAILED" and failed.data.tags["resablate.status"] == "failed"
    error = Path(client.download_artifacts(failed.info.run_id, "error.txt", str(tmp_path)))
    assert "does not fit family mlp" in error.read_text()
    [ok] = client.search_runs([tracker.experiment_id], f"tags.trial_id = '{good.id}'")
    assert ok.info.status == "FINISHED"
    assert len(client.get_metric_history(ok.info.run_id, "test_acc")) == 2
    assert client.get_run(tracker.parent_id).info.status == "FAILED"
    if backend == "ray":
        assert (tmp_path / "runs" / "runner" / good.id).is_dir()  # Tune's trial folders


def test_a_gpu_request_on_a_machine_without_gpus_fails_before_anything_runs(
    tmp_path: Path,
) -> None:
    plan = make_plan(write(tmp_path / "g.yaml", SWEEP), ["resources.gpu=0.25"])
    with (
        pytest.raises(SpecError, match=r"resources\.gpu: each trial asks for 0\.25 GPU"),
        Session(plan, "inline"),
    ):
        pass


def test_ray_tune_keeps_statistics_of_the_epoch_only_and_mlflow_gets_every_metric(
    tmp_path: Path,
) -> None:
    """Tune's per-trial running statistics of every numeric result key grow the driver with
    every trial: our report travels wrapped, beside the keys Tune reads itself."""
    import json

    plan = make_plan(write(tmp_path / "runner.yaml", SWEEP))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "runner")
    tracker.start_sweep("runner", {}, plan.spec.hash(), tmp_path / "runner.yaml", plan.trials)
    with Session(plan, "ray", tmp_path / "runs") as session:
        records = session.run([tracker])
    tracker.end_sweep()
    assert {r.status for r in records} == {FINISHED}
    assert all(r.history == [] for r in records)  # no per-epoch history unless asked for
    [state] = (tmp_path / "runs" / "runner").glob("experiment_state-*.json")
    tracked = set()
    for _, metadata in json.loads(state.read_text())["trial_data"]:
        tracked |= set(json.loads(metadata)["metric_analysis"])
    assert "epoch" in tracked and not tracked & {"train_loss", "test_acc", "lr"}, tracked
    client = MlflowClient(tracking_uri=uri)
    for record in records:
        [run] = client.search_runs([tracker.experiment_id], f"tags.trial_id = '{record.trial.id}'")
        assert run.data.metrics["test_acc"] == pytest.approx(record.metrics["test_acc"])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert steps == [1, 2]
