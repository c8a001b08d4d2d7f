"""The public Python API: ``resablate.<name>``, imported on first use."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import resablate
from tests.conftest import SWEEPS


def test_import_resablate_loads_no_torch_ray_or_mlflow() -> None:
    code = (
        "import sys, resablate; "
        "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'optuna') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(set(resablate.__all__) - {"__version__"}))
def test_every_public_name_is_the_object_its_module_defines(name: str) -> None:
    module = importlib.import_module(resablate._API[name])
    assert getattr(resablate, name) is getattr(module, name)
    assert name in dir(resablate)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'run_swep'"):
        resablate.run_swep  # noqa: B018


def test_a_sweep_runs_and_reads_back_through_the_api(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plan = resablate.make_plan(SWEEPS / "smoke.yaml", ["train.epochs=1", "grid.seed=[0]"])
    assert len(plan.trials) == 6
    outcome = resablate.run_sweep(plan, resablate.Options(inline=True, quiet=True))
    assert not outcome.interrupted and len(outcome.records) == 6
    runs = resablate.read_sweep(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    assert sorted(r.tags["trial_id"] for r in runs.runs) == sorted(t.id for t in plan.trials)
    assert {r.status for r in runs.runs} == {"finished"}
    with pytest.raises(resablate.SpecError):
        resablate.make_plan(tmp_path / "nope.yaml")
