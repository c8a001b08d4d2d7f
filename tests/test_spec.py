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

# (sweep file text, extra args, text the one-line error must contain)
BAD_FILES = [
    ("name: x\nmodel: {depth: [\n", [], "invalid YAML"),
    ("name: x\nmodel: !!python/object/apply:os.system [ls]\n", [], "invalid YAML"),
    ("- just\n- a list\n", [], "YAML mapping"),
    ("description: no name\n", [], "name: this field is required"),
    ("name: bad/name\n", [], "name: 'bad/name' is not a valid name"),
    (
        "name: x\ntracking: {experiment: ../up}\n",
        [],
        "tracking.experiment: '../up' is not a valid",
    ),
    ("name: x\nmodle: {depth: 2}\n", [], "unknown field 'modle'; did you mean 'model'?"),
    ("name: x\nmodel: {dpth: 2}\n", [], "model.dpth: unknown field 'dpth'; did you mean 'depth'?"),
    ("name: x\nmodel: {depth: two}\n", [], "model.depth: 'two'"),
    ("name: x\nmodel: {depth: 0}\n", [], "model.depth: 0"),
    ("name: x\nmodel: {depth: 3}\n", [], "legal depths are 2, 4, 6"),
    ("name: x\nmodel: {family: resnet}\n", [], "unknown model family 'resnet'"),
    ("name: x\nmodel: {shortcut: identiy}\n", [], "did you mean 'identity'?"),
    ("name: x\nmodel: {norm: batchnorm}\n", [], "model.norm: 'batchnorm'"),
    ("name: x\nmodel: {act: rleu}\n", [], "did you mean 'relu'?"),
    ("name: x\nmodel: {activation: mdi}\n", [], "unknown activation placement 'mdi'"),
    ("name: x\nmodel: {activation: mid+mid}\n", [], "names a position twice"),
    ("name: x\nmodel: {downsample: C}\n", [], "use 'A' or 'B'"),
    ("name: x\ninit: {scheme: looks_linear}\n", [], "init.scheme: looks_linear mirrors"),
    ("name: x\nmodel: {family: cifar, depth: 21}\n", [], "legal depths are 8, 14, 20, 38"),
    ("name: x\nmodel: {family: imagenet, depth: 19}\n", [], "legal depths are 18, 34, 50"),
    ("name: x\nmodel: {family: cifar}\ndata: {whiten: 10}\n", [], "the cifar family needs images"),
    (
        "name: x\nmodel: {family: cifar}\ngrid: {model.depth: [20, 22]}\n",
        [],
        "grid.model.depth: 22",
    ),
    ("name: x\nmodel: {act: crelu, activation: post}\n", [], "model.act: crelu doubles"),
    ("name: x\nmodel: {norm: batch}\ninit: {scheme: fixup}\n", [], "replaces normalization"),
    ("name: x\nmodel: {norm: none}\ninit: {scheme: zero_last}\n", [], "it needs a norm"),
    ("name: x\nmodel: {shortcut: scalr}\n", [], "did you mean 'scalar'?"),
    ("name: x\nmodel: {p: 1.5}\n", [], "model.p: 1.5"),
    ("name: x\nmodel: {lamda: 0.5}\n", [], "unknown field 'lamda'; did you mean 'lambda'?"),
    ("name: x\nmodel: {norm: group, groups: 3}\n", [], "model.groups: the network cannot"),
    ("name: x\ninit: {scheme: kaiming}\n", [], "unknown init scheme 'kaiming'"),
    ("name: x\ninit: {c: -1}\n", [], "init.c: -1"),
    ("name: x\ninit: {eps: .nan}\n", [], "init.eps"),
    ("name: x\ndata: {name: imagenet}\n", [], "unknown data set 'imagenet'"),
    ("name: x\ndata: {whiten: 100}\n", [], "data.whiten: 100 components asked"),
    ("name: x\ntrain: {loss: mse}\n", [], "set data.target: onehot"),
    ("name: x\ntrain: {loss: l1}\n", [], "train.loss: 'l1' is not allowed"),
    ("name: x\ntrain: {optimizer: adamm}\n", [], "did you mean 'adam'?"),
    ("name: x\ntrain: {lr: 0}\n", [], "train.lr: 0"),
    ("name: x\ntrain: {batch_size: fulll}\n", [], "positive integer or 'full'"),
    ("name: x\ntrain: {epochs: 1.5}\n", [], "train.epochs: 1.5"),
    ("name: x\nmodel: {norm: batch}\ntrain: {batch_size: 1}\n", [], "batch norm needs 2"),
    ("name: x\ntrain: {recipe: he_cifr}\n", [], "train.recipe: 'he_cifr': unknown recipe"),
    ("name: x\ntrain: {nesterov: true, momentum: 0}\n", [], "train.nesterov: Nesterov"),
    (
        "name: x\ntrain: {schedule: step, milestones: [48, 32]}\n",
        [],
        "train.milestones: [48, 32] must be strictly increasing",
    ),
    ("name: x\nresources: {cpu: 0}\n", [], "resources.cpu: 0"),
    ("name: x\nprobes: {hesian: {}}\n", [], "unknown field 'hesian'; did you mean 'hessian'?"),
    ("name: x\nprobes: {spp: {input: nois}}\n", [], "probes.spp.input: 'nois' is not allowed"),
    ("name: x\nprobes: {lesion: {at: [start]}}\n", [], "probes.lesion.at[0]: 'start'"),
    ("name: x\nsearch: {param: init.c}\n", [], "search: give exactly one distribution"),
    ("name: x\nsearch: {log_uniform: [2, 1]}\n", [], "`low <= high` must hold, but got (low=2.0"),
    ("name: x\nsearch: {log_uniform: [0, 1]}\n", [], "a log scale needs low > 0"),
    ("name: x\nsearch: {uniform: [0, 1], param: model.shortcut}\n", [], "not a numeric field"),
    ("name: x\nsearch: {uniform: [0, 1], objective: {metric: acc}}\n", [], "not a reported"),
    ("name: x\nsearch: {uniform: [0, 1], sampler: bayes}\n", [], "use 'tpe', 'gp', 'cmaes'"),
    (
        "name: x\nsearch: {uniform: [0, 1]}\ngrid: {init.c: [1, 2]}\n",
        [],
        "grid.init.c: is searched",
    ),
    ("name: x\ngrid: [1, 2]\n", [], "grid: must be a mapping"),
    ("name: x\ngrid: {model.dept: [2]}\n", [], "grid.model.dept: not a field"),
    ("name: x\ngrid: {seed: 3}\n", [], "grid.seed: 3 is not a list"),
    ("name: x\ngrid: {seed: []}\n", [], "grid.seed: an empty list"),
    ("name: x\ngrid: {seed: [0, 0]}\n", [], "grid.seed: value 0 is listed twice"),
    ("name: x\ngrid: {model.depth: [2, 5]}\n", [], "grid.model.depth: 5 does not fit"),
    ("name: x\ngrid: {init.c: [1, 1.0]}\n", [], "resolve to the same trial"),
    (
        "name: x\ngrid: {zip: [{train.lr: [0.1, 0.2], init.c: [1]}]}\n",
        [],
        "grid.zip[0]: zipped lists must have one length",
    ),
    (
        "name: x\ngrid: {seed: [0], zip: [{seed: [1]}]}\n",
        [],
        "grid.zip[0].seed: this axis is already in the grid",
    ),
    (
        "name: x\ngrid: {seed: [0, 1], exclude: [{model.depth: 2}]}\n",
        [],
        "grid.exclude[0].model.depth: not a grid axis",
    ),
    (
        "name: x\ngrid: {seed: [0, 1], exclude: [{seed: 7}]}\n",
        [],
        "grid.exclude[0]: this rule matches no grid point",
    ),
    (
        "name: x\ngrid: {seed: [0, 1], exclude: [{seed: [0, 1]}]}\n",
        [],
        "every grid point is excluded",
    ),
    (GOOD, ["--set", "model.dpth=3"], "--set model.dpth=3: model.dpth: unknown field"),
    (GOOD, ["--set", "train.lr=-1"], "--set train.lr=-1: train.lr: -1"),
    (
        GOOD,
        ["--set", "grid.model.depth=[2,3]"],
        "--set grid.model.depth=[2,3]: grid.model.depth: 3",
    ),
    (GOOD, ["--set", "model.depth"], "expected FIELD=VALUE"),
    (GOOD, ["--set", "model.depth="], "empty value"),
    (GOOD, ["--set", "train.lr=[1"], "cannot read '[1' as a YAML value"),
    (GOOD, ["--set", "probes.hessian.method=exakt"], "probes.hessian.method: 'exakt'"),
]


@pytest.mark.parametrize("text,args,expected", BAD_FILES, ids=[e for _, _, e in BAD_FILES])
def test_bad_sweep_exits_2_with_one_line_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, text: str, args: list[str], expected: str
) -> None:
    sweep = write(tmp_path / "bad.yaml", text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ran = cli("sweep", str(sweep), *args)
    assert ran.code == 2, ran.err
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    assert "Traceback" not in ran.err
    assert expected in lines[0], lines[0]
    source = args[1] if args else str(sweep)
    assert lines[0].startswith(f"resablate: error: {'--set ' + source if args else source}")
    assert sorted(os.listdir(tmp_path)) == ["bad.yaml"]  # no mlflow.db, no mlruns, no results


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
