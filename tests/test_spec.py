"""Bad sweep files and overrides: exit 2, one line naming the field, nothing created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from resablate.spec import load_sweep, trial_paths
from tests.conftest import SWEEPS, run_process, write

GOOD = """
name: tiny
model: {family: mlp, depth: 2, width: 8}
train: {epochs: 1}
grid:
  model.depth: [2, 4]
  seed: [0, 1]
"""


def test_missing_file_names_the_path(tmp_path: Path, cli) -> None:
    ran = cli("plan", str(tmp_path / "nope.yaml"))
    assert ran.code == 2
    assert (
        ran.err.strip() == f"resablate: error: {tmp_path / 'nope.yaml'}: no such file; check the"
        " path (ready sweeps are in sweeps/)"
    )


def test_real_process_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    sweep = write(tmp_path / "bad.yaml", "name: x\nmodel: {shortcut: identiy}\n")
    ran = run_process("sweep", str(sweep), cwd=tmp_path)
    assert ran.code == 2
    assert ran.err.strip().splitlines() == [
        f"resablate: error: {sweep}: model.shortcut: 'identiy': unknown shortcut 'identiy';"
        " did you mean 'identity'? (choices: identity, none, scale, gate, shortcut_gate,"
        " conv, dropout, scalar)"
    ]
    assert ran.out == ""
    assert sorted(os.listdir(tmp_path)) == ["bad.yaml"]


def test_overrides_are_yaml_typed_and_replace_grid_axes(tmp_path: Path) -> None:
    sweep = write(tmp_path / "s.yaml", GOOD)
    spec = load_sweep(
        sweep, ["train.lr=0.5", "model.depth=4", "grid.init.c=[0.5, 1]", "train.batch_size=full"]
    )
    assert spec.train.lr == 0.5 and isinstance(spec.train.lr, float)
    assert spec.model.depth == 4
    assert "model.depth" not in spec.grid.axes  # fixed by the override
    assert spec.grid.axes["init.c"] == [0.5, 1]
    assert spec.train.batch_size == "full"


def test_spec_is_frozen(tmp_path: Path) -> None:
    spec = load_sweep(write(tmp_path / "s.yaml", GOOD))
    with pytest.raises(ValidationError):
        spec.model.depth = 8  # type: ignore[misc]


def test_every_trial_path_is_a_grid_axis(tmp_path: Path) -> None:
    paths = trial_paths()
    for needed in (
        "seed",
        "model.family",
        "model.depth",
        "model.width",
        "model.shortcut",
        "model.shortcut_depth",
        "model.activation",
        "model.norm",
        "model.act",
        "model.downsample",
        "init.scheme",
        "init.c",
        "init.eps",
        "data.name",
        "data.whiten",
        "data.target",
        "train.loss",
        "train.optimizer",
        "train.lr",
        "train.epochs",
        "train.batch_size",
    ):
        assert needed in paths


def test_yaml_is_read_with_safe_load(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    sweep = write(
        tmp_path / "evil.yaml",
        f"name: x\nmodel: !!python/object/apply:os.system ['touch {marker}']\n",
    )
    with pytest.raises(Exception, match="invalid YAML"):
        load_sweep(sweep)
    assert not marker.exists()


def test_ready_sweeps_dir_exists() -> None:
    assert (SWEEPS / "smoke.yaml").is_file()
