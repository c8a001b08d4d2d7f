"""The zoo through the real command line: a torchvision data set on disk, a conv family on Ray."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.conftest import run_process, run_terminal, trial_runs, write
from tests.test_data import fake_mnist

SWEEP = """
name: mnist-zoo
model: {family: mnist, depth: 2, channels: 4}
data: {name: mnist}
train: {epochs: 1, batch_size: 10, optimizer: adam, lr: 0.01}
grid:
  model.shortcut: [identity, gate]
"""


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_mnist_family_on_mnist_files_in_the_working_folder_runs_on_ray(tmp_path: Path) -> None:
    fake_mnist(tmp_path / "data", "MNIST")  # ./data, relative to where the user runs the sweep
    sweep = write(tmp_path / "zoo.yaml", SWEEP)
    env = {
        k: v for k, v in os.environ.items() if k not in ("RESABLATE_DATA", "MLFLOW_TRACKING_URI")
    }
    ran = run_terminal("sweep", str(sweep), cwd=tmp_path, env=env)  # the progress bar on
    assert ran.code == 0, ran.out[-3000:]
    _, runs = trial_runs(tmp_path, "mnist-zoo")
    assert sorted(r.data.params["model.shortcut"] for r in runs) == ["gate", "identity"]
    for run in runs:
        assert run.data.tags["resablate.status"] == "finished"
        assert 0.0 <= run.data.metrics["test_acc"] <= 1.0
        assert run.data.params["data.name"] == "mnist"


def test_missing_data_offline_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    sweep = write(tmp_path / "zoo.yaml", SWEEP)
    with socket.socket() as probe:  # a closed port as the proxy: no network at all
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        k: v for k, v in os.environ.items() if k not in ("RESABLATE_DATA", "MLFLOW_TRACKING_URI")
    }
    env.update(http_proxy=f"http://127.0.0.1:{port}", https_proxy=f"http://127.0.0.1:{port}")
    ran = run_process("sweep", str(sweep), cwd=tmp_path, env=env, timeout=120)
    assert ran.code == 2
    [line] = ran.err.strip().splitlines()
    assert "mnist" in line and str(tmp_path / "data" / "MNIST" / "raw") in line
    assert "train-images-idx3-ubyte" in line
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "resablate-runs").exists()
