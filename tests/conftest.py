"""Shared fixtures: run the real command line, in-process (fast) or as a real process.

Two tiers. Daily: ``python -m pytest -m "not slow"`` (about 3 minutes on a 2-core machine; every
test file keeps its fast tests). CI (``.ci/run``): plain ``python -m pytest``, every test, the
``slow`` ones too (end-to-end sweeps through Ray, clusters, kill and resume, benchmarks). Mark a
test ``@pytest.mark.slow`` when it runs a whole sweep or takes more than about 5 seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resablate.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "sweeps"


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """``cli(*args)`` runs ``resablate ARGS`` in this process: (code, stdout, stderr)."""

    def run(*args: str) -> Ran:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def ray_script(script: str, *args: str) -> Any:
    """Run a Python script that starts a local Ray in a process of its own (importing ray in the
    test process would decide, for every later test, how a local Ray binds: cluster.start_ray's
    single-machine switch); returns the JSON its last line of output prints."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # bind 127.0.0.1
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_process(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None) -> Ran:
    """``resablate ARGS`` as a real process (what a user's shell runs)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None) if env is None else None
    done = subprocess.run(
        [sys.executable, "-m", "resablate.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def run_terminal(
    *args: str, cwd: Path, timeout: float = 600, columns: int = 80, env: dict | None = None
) -> Ran:
    """``resablate ARGS`` as a real process on a pseudo-terminal of ``columns`` columns: what a
    user sees in a shell (the progress bar on, rich's terminal output). stdout and stderr share
    the terminal, so ``out`` holds both (``err`` is empty)."""
    import pty
    import select
    import time

    full_env = {**os.environ, "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm"}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    full_env.update(env or {})
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "resablate.cli", *args],
        cwd=cwd,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=full_env,
        close_fds=True,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed its side of the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            process.kill()
            raise subprocess.TimeoutExpired(process.args, timeout)
        code = process.wait(timeout=60)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return Ran(code, b"".join(chunks).decode(errors="replace"), "")


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty sqlite MLflow store with its schema in place: creating one takes seconds."""
    from resablate.tracking.store import open_store

    path = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    open_store(f"sqlite:///{path}")
    return path


@pytest.fixture
def store_uri(tmp_path: Path, migrated_db: Path) -> str:
    """The uri of an empty sqlite store of this test's own, ``tmp_path / "mlflow.db"``."""
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def trial_runs(folder: Path, experiment: str) -> tuple[Any, list[Any]]:
    """(client, the trials' child runs) of ``experiment`` in ``folder``'s default store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "tags.trial_id != ''", max_results=1000)
    return client, runs


# Tolerances of the tests that compare two computations of the same arithmetic (a memory layout,
# torch.compile, stacked seeds, a Ray worker with another thread count), chosen to hold on any
# x86-64 machine and thread count, and to catch a bug that changes one step's results by 1%.
#
# One step: float32 rounds every sum to ~6e-8 of its size; a kernel that orders the sums of a
# fan-in of k differently (another layout, a compiled or batched kernel, AVX2 against AVX-512,
# 1 thread against 2) moves a result by about sqrt(k) of those per layer: measured 3e-6 of a
# tensor's norm for channels-last through an 8-layer CIFAR net, with 1 thread and with 2. 1e-4
# leaves a margin of 30 and is 100 times smaller than a 1% change.
STEP_REL = 1e-4
# Whole epochs: each step feeds the previous one's rounding back in, and training amplifies it
# (seen: 0.3% in a loss after 2 epochs of an 8-layer CIFAR net on another machine). Trained
# losses agree within 5%, accuracies within 3 points: "trains to a similar loss", nothing finer.
TRAINED_REL = 0.05
TRAINED_ACC = 0.03


def relative_error(a: Any, b: Any) -> float:
    """||a - b|| / ||b|| of two tensors (0 when both are zero)."""
    scale = float(b.norm())
    return float((a - b).norm()) / scale if scale else float(a.norm())


def assert_trained_alike(a: dict, b: dict) -> None:
    """Two runs' final reports: the same losses and accuracies up to training's rounding noise."""
    for key in ("train_loss", "test_loss"):
        assert a[key] == pytest.approx(b[key], rel=TRAINED_REL), key
    for key in ("train_acc", "test_acc"):
        assert a[key] == pytest.approx(b[key], abs=TRAINED_ACC), key


def heavy_imports(*modules: str) -> list[str]:
    """Which of torch, ray and mlflow a fresh Python has imported after importing ``modules``."""
    code = (
        f"import sys, {', '.join(modules)}; "
        "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [name.strip(" '") for name in done.stdout.strip()[1:-1].split(",") if name.strip()]
