"""Shared fixtures: run the real command line, in-process (fast) or as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resablate.cli import main

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
