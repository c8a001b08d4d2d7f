"""A real two-node Ray cluster on this machine (token authentication on, as our clusters run it)
and a real `mlflow server` on 127.0.0.1: `resablate sweep --address` runs trials on both nodes,
records each once on the server, and survives losing the worker node."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from resablate.sweep.plan import make_plan
from tests.conftest import run_process, write

SWEEP = """
name: clustered
model: {depth: 8, width: 48}
init: {c: 0.25}
train: {epochs: 4, batch_size: 32, lr: 0.02}
resources: {cpu: 1, max_concurrent_trials: 2, max_failures: 2}
grid:
  seed: [0, 1, 2, 3]
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    address: str
    tracking: str
    env: dict[str, str]
    worker: subprocess.Popen
    folder: Path
    jobs: str  # the Jobs API (the head's dashboard, on 127.0.0.1)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A head and a worker node, 1 CPU each. Each node has its own temp folder (where it unpacks
    a Ray Job's working directory), as on a real cluster where every node has its own disk."""
    with start_cluster(tmp_path) as found:
        yield found


@contextlib.contextmanager
def start_cluster(tmp_path: Path, worker_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """The fixture's cluster; ``worker_env``: set in the worker node's environment alone."""
    port = free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    common += ["--num-cpus=1"]
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    dashboard = free_port()
    head = [*ray, "start", "--head", f"--port={port}", "--include-dashboard=true", *common]
    head += ["--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}"]
    # --block keeps each node's processes in its own process group, so that the test stops
    # exactly this cluster (`ray stop` would stop every Ray on the machine)
    head_node = subprocess.Popen(
        [*head, "--block"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:  # the head's GCS answers: a worker can join
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the head node did not start"
            time.sleep(0.5)
    worker_temp = Path(f"/tmp/rw{port}")  # short: Ray's socket paths live under it
    worker = subprocess.Popen(  # its own process group: the "node" a test can kill
        [
            *ray,
            "start",
            f"--address={address}",
            f"--temp-dir={worker_temp}",
            "--block",
            *common,
        ],
        env={**env, **(worker_env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    mlflow_port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
            *("--port", str(mlflow_port), "--workers", "1"),
            *("--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"),
            *("--default-artifact-root", str(tmp_path / "artifacts")),
        ],
        env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no /dev/shm queue left
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    tracking = f"http://127.0.0.1:{mlflow_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{tracking}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        nodes = [*ray, "status", f"--address={address}"]
        while (
            subprocess.run(nodes, env=env, capture_output=True, text=True).stdout.count(" node_")
            < 2
        ):
            assert time.monotonic() < deadline, "the worker node did not join"
            time.sleep(0.5)
        project = tmp_path / "project"  # what a job uploads: the sweep files, not the server's
        project.mkdir()
        yield Cluster(address, tracking, env, worker, project, f"http://127.0.0.1:{dashboard}")
    finally:
        for proc in (worker, head_node, server):
            kill_node(proc.pid)
        shutil.rmtree(worker_temp, ignore_errors=True)


def kill_node(session: int) -> None:
    """SIGKILL a node: every process of its session. Ray puts each trial's worker process in a
    process group of its own, so killing the node's process group left its trials running."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            # pid (comm) state ppid pgrp session ...: comm may hold spaces, so split after ")"
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session:
                os.kill(int(stat.parent.name), signal.SIGKILL)


def runs_of(cluster: Cluster, experiment: str) -> list:
    client = MlflowClient(tracking_uri=cluster.tracking)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], "tags.trial_id != ''", max_results=1000)


@pytest.mark.slow
def test_a_sweep_on_a_two_node_cluster_records_every_trial_once_on_the_server(
    cluster: Cluster,
) -> None:
    sweep = write(cluster.folder / "c.yaml", SWEEP)
    args = ["--address", cluster.address, "--tracking-uri", cluster.tracking, "-q"]
    args += ["--storage", str(cluster.folder / "shared")]  # one disk: shared by both nodes
    ran = run_process("sweep", str(sweep), *args, cwd=cluster.folder, env=cluster.env)
    assert ran.code == 0, ran.err[-3000:]
    assert ran.out == ""  # -q: nothing on stdout (MLflow's own "View run" lines suppressed)
    runs = runs_of(cluster, "clustered")
    ids = sorted(t.id for t in make_plan(sweep).trials)
    assert sorted(r.data.tags["trial_id"] for r in runs) == ids
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["ray.node_id"] for r in runs}) == 2  # both nodes ran trials
    for run in runs:
        assert len(run.data.metrics) >= 4 and run.data.params["seed"] in {"0", "1", "2", "3"}


@pytest.mark.slow
def test_losing_the_worker_node_resumes_its_trial_on_the_head_from_its_checkpoint(
    cluster: Cluster,
) -> None:
    # long enough that the worker's trial is still training, past a checkpoint, when its node
    # is killed; checkpoints go to storage both nodes reach (here: one disk, as NFS would be)
    text = SWEEP.replace("epochs: 4,", "epochs: 40, checkpoint_every: 2,")
    sweep = write(cluster.folder / "c.yaml", text)
    storage = cluster.folder / "shared"
    args = ["--address", cluster.address, "--tracking-uri", cluster.tracking, "-q"]
    args += ["--storage", str(storage)]
    env = {**cluster.env}
    driver = subprocess.Popen(
        [sys.executable, "-m", "resablate.cli", "sweep", str(sweep), *args],
        cwd=cluster.folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = MlflowClient(tracking_uri=cluster.tracking)
    deadline = time.monotonic() + 180
    while True:  # until both nodes run a trial that has saved a checkpoint
        if driver.poll() is not None:
            pytest.fail(f"the sweep ended early: {driver.communicate()[1].decode()[-3000:]}")
        assert time.monotonic() < deadline, "the two nodes never ran trials at once"
        found = client.get_experiment_by_name("clustered")
        if found is not None:
            running = client.search_runs(
                [found.experiment_id],
                "tags.trial_id != '' and tags.`resablate.checkpoint_epoch` != ''"
                " and attributes.status = 'RUNNING'",
            )
            nodes = {r.data.tags.get("ray.node_id"): r for r in running}
            if len(set(nodes) - {None}) == 2:
                break
        time.sleep(0.2)
    kill_node(cluster.worker.pid)
    _, err = driver.communicate(timeout=400)
    assert driver.returncode == 0, err.decode()[-3000:]
    runs = runs_of(cluster, "clustered")
    ids = sorted(t.id for t in make_plan(sweep).trials)
    assert sorted(r.data.tags["trial_id"] for r in runs) == ids  # one run per trial
    assert {r.info.status for r in runs} == {"FINISHED"}
    # the trial of the lost node: its run went on, on the node that was left
    [again] = [r for r in runs if r.data.tags.get("resablate.attempts") == "2"]
    [lost] = [r for r in nodes.values() if r.info.run_id == again.info.run_id]
    head = next(node for node in nodes if node != lost.data.tags["ray.node_id"])
    assert again.data.tags["ray.node_id"] == head
    resumed = int(again.data.tags["resablate.resumed_from_epoch"])
    assert resumed >= int(lost.data.tags["resablate.checkpoint_epoch"]) > 0
    steps = [m.step for m in client.get_metric_history(again.info.run_id, "test_acc")]
    assert steps == list(range(1, 41))  # every epoch once
    assert not list(storage.rglob("epoch_*.pt"))  # finished: its checkpoints deleted


@pytest.mark.slow
def test_a_sweep_submitted_as_a_ray_job_runs_on_the_cluster_and_can_be_followed(
    cluster: Cluster,
) -> None:
    write(cluster.folder / "c.yaml", SWEEP)
    jobs = ["--address", cluster.jobs]
    shared = ["--storage", str(cluster.folder.parent / "shared")]  # as the head names it
    ran = run_process(
        "submit",
        "c.yaml",
        *jobs,
        "--tracking-uri",
        cluster.tracking,
        *shared,
        cwd=cluster.folder,
        env=cluster.env,
    )
    assert ran.code == 0, ran.err[-3000:]
    job = ran.out.strip()
    assert job.startswith("resablate-clustered-") and f"resablate logs {job}" in ran.err
    listed = run_process("jobs", *jobs, cwd=cluster.folder, env=cluster.env)
    assert listed.code == 0 and job in listed.out
    followed = run_process("logs", job, *jobs, "--follow", cwd=cluster.folder, env=cluster.env)
    assert followed.code == 0, followed.out[-3000:]
    assert f"job {job}: SUCCEEDED" in followed.err and "parent run" in followed.out
    runs = runs_of(cluster, "clustered")
    ids = sorted(t.id for t in make_plan(cluster.folder / "c.yaml").trials)
    assert sorted(r.data.tags["trial_id"] for r in runs) == ids
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["ray.node_id"] for r in runs}) == 2  # both nodes ran trials

    # the same sweep again is refused at submission, in one line, before any job exists
    again = run_process(
        "submit", "c.yaml", *jobs, "--tracking-uri", cluster.tracking, *shared,
        cwd=cluster.folder, env=cluster.env,
    )  # fmt: skip
    assert again.code == 2 and again.err.count("\n") == 1, again.err
    assert "'clustered' ran to its end as parent run" in again.err and "--new" in again.err
    long = write(cluster.folder / "l.yaml", SWEEP.replace("epochs: 4", "epochs: 200"))
    ran = run_process(
        "submit",
        long.name,
        *jobs,
        "--tracking-uri",
        cluster.tracking,
        *shared,
        "--new",  # another grid of the same sweep, on purpose
        cwd=cluster.folder,
        env=cluster.env,
    )
    assert ran.code == 0, ran.err[-3000:]
    second = ran.out.strip()
    client = MlflowClient(tracking_uri=cluster.tracking)
    [experiment] = {r.info.experiment_id for r in runs}
    deadline = time.monotonic() + 180
    # until the job's sweep trains (the first sweep's trials have all finished): the stop
    # reaches a running sweep, not a job still starting
    while not client.search_runs(
        [experiment], "tags.trial_id != '' and attributes.status = 'RUNNING'", max_results=1
    ):
        if time.monotonic() > deadline:
            found = run_process("logs", second, *jobs, cwd=cluster.folder, env=cluster.env)
            pytest.fail(f"job {second} started no trial: {(found.err + found.out)[-3000:]}")
        time.sleep(0.2)
    stopped = run_process("stop", second, *jobs, cwd=cluster.folder, env=cluster.env)
    assert stopped.code == 0 and f"job {second}: stopping" in stopped.out
    deadline = time.monotonic() + 120
    while status := run_process("logs", second, *jobs, cwd=cluster.folder, env=cluster.env):
        if f"job {second}: STOPPED" in status.err:
            break
        assert time.monotonic() < deadline, status.err
        time.sleep(1)
    unknown = run_process("logs", "nope", *jobs, cwd=cluster.folder, env=cluster.env)
    assert unknown.code == 2 and "no job nope at" in unknown.err


@pytest.mark.parametrize(
    "command,expected",
    [
        (["jobs", "--address", "127.0.0.1:8265"], "the Jobs API is the dashboard's http address"),
        (["jobs", "--address", "http://127.0.0.1:1"], "no Ray Jobs API answers"),
        (
            ["submit", "c.yaml", "--address", "http://127.0.0.1:1"],
            "is a sqlite file on one machine",
        ),
    ],
)
def test_bad_jobs_arguments_are_one_line(
    tmp_path: Path, command: list[str], expected: str
) -> None:
    write(tmp_path / "c.yaml", SWEEP)
    ran = run_process(*command, cwd=tmp_path)
    assert ran.code == 2, ran.err
    assert ran.err.count("\n") == 1 and expected in ran.err, ran.err


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--address", "127.0.0.1:1"], "--address 127.0.0.1:1: no Ray cluster answers"),
        (["--address", "nonsense"], "--address nonsense: expected auto or HOST:PORT"),
        (
            ["--address", "auto", "--tracking-uri", "sqlite:///x.db"],
            "is a sqlite file on one machine",
        ),
        (["--address", "auto", "--inline"], "drop it to use --address"),
    ],
)
def test_bad_cluster_arguments_are_one_line(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    sweep = write(tmp_path / "c.yaml", SWEEP)
    uri = (
        []
        if "--tracking-uri" in args or "--inline" in args
        else ["--tracking-uri", "http://127.0.0.1:9"]
    )
    ran = run_process("sweep", str(sweep), *args, *uri, cwd=tmp_path)
    assert ran.code == 2, ran.err
    assert ran.err.count("\n") == 1 and expected in ran.err, ran.err
    assert sorted(os.listdir(tmp_path)) == ["c.yaml"]
