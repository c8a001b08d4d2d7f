"""sweep/ray/tuning.py and compat.py without a Tune run: what Tune reads of a report, how often a
trial checkpoints under each scheduler, and the Ray workarounds' own contracts. (Tune runs:
test_runner.py, test_scheduler.py, test_preemption.py, test_resume.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from resablate.sweep.plan import make_plan
from resablate.sweep.ray import compat
from resablate.trial.checkpoint import default_every
from tests.conftest import write

SWEEP = """\
name: tuned
model: {family: mlp, width: 8, norm: none}
data: {name: digits, validation: 0.1}
train: {epochs: 30, batch_size: 64}
grid: {seed: [0, 1, 2]}
"""


@pytest.fixture(scope="module")
def tuning():
    """tuning.py, imported when a test here runs: importing Ray in the test process at collection
    would pin its network address for every later in-process Ray (compat.single_machine)."""
    from resablate.sweep.ray import tuning

    return tuning


def plan_of(tmp_path: Path, extra: str = ""):
    return make_plan(write(tmp_path / "s.yaml", SWEEP + extra))


def test_tune_reads_the_epoch_and_a_schedulers_metric_only(tmp_path: Path, tuning) -> None:
    assert tuning._tune_keys(plan_of(tmp_path)) == ("epoch",)
    asha = plan_of(tmp_path, "scheduler: {kind: asha, metric: val_loss}\n")
    assert tuning._tune_keys(asha) == ("epoch", "val_loss")
    assert tuning._scheduler(plan_of(tmp_path)) is None  # FIFO


def test_median_stopping_checkpoints_often_enough_to_resume_a_paused_trial(
    tmp_path: Path, tuning
) -> None:
    fifo = plan_of(tmp_path)
    assert tuning._every(fifo) is None  # the default cadence (time-based)
    median = plan_of(tmp_path, "scheduler: {kind: median, metric: val_acc}\n")
    assert tuning._every(median) == tuning.interval(median) == default_every(30)
    set_every = make_plan(write(tmp_path / "e.yaml", SWEEP), ("train.checkpoint_every=4",))
    assert tuning._every(set_every) == tuning.interval(set_every) == 4


@pytest.mark.parametrize(
    ("storage", "folder", "where"),
    [
        ("/results/runs", "/results/runs/grid/t1", "/results/runs/grid/t1"),
        ("s3://bucket/runs", "bucket/runs/grid/t1", "s3://bucket/runs/grid/t1"),
        ("gs://b/r", "b/r/grid/t1", "gs://b/r/grid/t1"),
    ],
)
def test_a_tune_trials_checkpoints_are_named_in_their_storages_scheme(
    storage: str, folder: str, where: str
) -> None:
    trial = SimpleNamespace(storage=SimpleNamespace(trial_fs_path=folder))  # Tune's Trial's field
    assert compat.trial_folder(trial, storage) == where


def test_a_failed_attempts_error_is_its_error_file_or_none(tmp_path: Path) -> None:
    error = tmp_path / "error.txt"
    error.write_text("Traceback ...\nValueError: x\n")
    assert compat.trial_error(SimpleNamespace(error_file=str(error))) == error.read_text()
    assert compat.trial_error(SimpleNamespace(error_file=str(tmp_path / "gone"))) is None
    assert compat.trial_error(SimpleNamespace(error_file=None)) is None


def test_the_single_machine_switch_is_set_before_ray_is_imported_and_cleared_after() -> None:
    probe = (
        "import os, sys\n"
        "from resablate.sweep.ray.compat import single_machine\n"
        "key = 'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'\n"
        "with single_machine(True):\n"
        "    inside = os.environ.get(key)\n"
        "    import ray\n"
        "after = os.environ.get(key)\n"
        "with single_machine(True):\n"  # ray imported now: too late to take effect, not set
        "    late = os.environ.get(key)\n"
        "print(inside, after, late)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["0", "None", "None"]
