"""Bad sweep files and overrides: exit 2, one line naming the field, nothing created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from resablate.errors import SpecError
from resablate.spec.fields import trial_paths
from resablate.spec.loader import load_sweep, read_yaml
from resablate.sweep.plan import make_plan
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


DUPLICATES = [
    (
        "name: x\nmodel: {depth: 2}\nseed: 1\nmodel: {depth: 4}\n",
        "model",
        "'model'",
        "lines 2 and 4",
    ),
    (
        "name: x\nmodel:\n  family: mlp\n  depth: 4\n  width: 8\n  depth: 7\n",
        "model.depth",
        "'depth'",
        "lines 4 and 6",
    ),
    (
        "name: x\ngrid:\n  model.depth: [2, 4]\n  seed: [0]\n  model.depth: [6]\n",
        "grid.model.depth",
        "'model.depth'",
        "lines 3 and 5",
    ),
    (
        "name: x\nprofiles:\n  cpu:\n    train.epochs: 1\n  gpu: {}\n  cpu: {}\n",
        "profiles.cpu",
        "'cpu'",
        "lines 3 and 6",
    ),
    (
        "name: x\nprofiles:\n  cpu: {train.epochs: 1, train.epochs: 2}\n",
        "profiles.cpu.train.epochs",
        "'train.epochs'",
        "line 3",
    ),
]


@pytest.mark.parametrize("text,field,key,lines", DUPLICATES, ids=[d[1] for d in DUPLICATES])
def test_a_key_given_twice_is_refused_naming_both_lines(
    tmp_path: Path, text: str, field: str, key: str, lines: str
) -> None:
    """PyYAML keeps the last of two equal keys; a sweep that ran with the other would mislead."""
    sweep = write(tmp_path / "sweep.yaml", text)
    with pytest.raises(SpecError) as error:
        load_sweep(sweep)
    assert str(error.value) == f"{sweep}: {field}: key {key} is given twice ({lines}); keep one"


def test_a_key_given_twice_in_an_override_names_the_override(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as error:
        load_sweep(write(tmp_path / "s.yaml", GOOD), ["model={depth: 2, depth: 4}"])
    assert str(error.value) == (
        "--set model={depth: 2, depth: 4}: model.depth: key 'depth' is given twice (line 1);"
        " keep one"
    )


def test_keys_that_differ_and_merge_keys_are_still_read(tmp_path: Path) -> None:
    text = "name: x\nbase: &net {depth: 4, width: 8}\nmodel:\n  <<: *net\n  depth: 6\n"
    raw = read_yaml(write(tmp_path / "s.yaml", text))
    assert raw["model"] == {"depth": 6, "width": 8} and raw["base"] == {"depth": 4, "width": 8}


def test_an_unknown_field_of_the_objective_lists_the_objectives_fields(tmp_path: Path) -> None:
    sweep = write(
        tmp_path / "s.yaml", "name: x\nsearch: {uniform: [0, 1], objective: {metrc: a}}\n"
    )
    with pytest.raises(SpecError) as error:
        load_sweep(sweep)
    assert str(error.value) == (
        f"{sweep}: search.objective.metrc: unknown field 'metrc'; did you mean 'metric'?"
        " (fields here: metric, direction, at, diverged)"
    )


def test_an_unknown_field_of_a_trial_config_lists_a_trials_fields() -> None:
    # a trial's config (the Python API: run_trial, trial_config) has fewer fields than a sweep:
    # a sweep's own field is unknown there, and the hint lists the trial's fields, not the sweep's
    from resablate.errors import ConfigError
    from resablate.spec.catalog import trial_config

    with pytest.raises(ConfigError) as error:
        trial_config({"name": "x"})
    assert (error.value.field, error.value.problem) == (
        "name",
        "unknown field 'name' (fields here: seed, model, init, data, train)",
    )
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        trial_config({"modle": {}})


def test_an_error_names_the_override_that_set_the_field_last(tmp_path: Path) -> None:
    sweep = write(tmp_path / "s.yaml", GOOD + "profiles:\n  cpu: {model.width: 0}\n")
    with pytest.raises(SpecError, match=r"^--set model.width=0: model.width: 0: "):
        load_sweep(sweep, ["model.width=0"], profile="cpu")
    with pytest.raises(SpecError, match=r"\(profile cpu\): model.width: 0: "):
        load_sweep(sweep, profile="cpu")
    # a later override of the whole section replaces what the earlier one set
    with pytest.raises(SpecError, match=r"^--set model={width: 0}: model.width: 0: "):
        load_sweep(sweep, ["model.width=3", "model={width: 0}"])
    # the file's own value, once a field elsewhere is overridden
    mistaken = write(tmp_path / "e.yaml", GOOD.replace("epochs: 1", "epochs: 0"))
    with pytest.raises(SpecError, match=rf"^{mistaken}: train.epochs: 0: "):
        load_sweep(mistaken, ["seed=1"])


def test_a_grid_point_set_by_a_profile_names_the_profile(tmp_path: Path) -> None:
    sweep = write(tmp_path / "s.yaml", GOOD + "profiles:\n  odd: {grid.model.depth: [3]}\n")
    with pytest.raises(SpecError) as error:
        make_plan(sweep, profile="odd")
    assert str(error.value).startswith(f"{sweep} (profile odd): grid.model.depth: 3 does not fit")


@pytest.mark.parametrize("chosen", [None, "cpu"])
def test_a_profile_key_in_the_file_is_refused_with_did_you_mean(
    tmp_path: Path, chosen: str | None
) -> None:
    """`profile:` (singular) would be taken as the record of --profile and then ignored."""
    sweep = write(tmp_path / "s.yaml", GOOD + "profile:\n  cpu: {train.epochs: 1}\n")
    with pytest.raises(SpecError) as error:
        load_sweep(sweep, profile=chosen)
    assert str(error.value) == (
        f"{sweep}: profile: unknown top-level key; did you mean 'profiles:' (a mapping of"
        " profile names to fields, chosen with --profile NAME)?"
    )
