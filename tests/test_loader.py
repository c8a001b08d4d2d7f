"""spec/loader.py: a sweep file read, its profile and ``--set`` overrides applied in order, each
error naming where its value came from, and the spec hash that a resume compares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from resablate.errors import SpecError
from resablate.spec.loader import Origins, apply_overrides, load, parse_grid, read_yaml
from resablate.spec.schema import GridSpec
from tests.conftest import SWEEPS, write

GOOD = """
name: tiny
model: {family: mlp, depth: 2, width: 8}
data: {validation: 0.1}
train: {epochs: 1}
grid:
  seed: [0, 1]
profiles:
  cpu: {train.epochs: 3, model.width: 16}
  fast: {}
"""


def refused(call, *args, **kwargs) -> str:
    with pytest.raises(SpecError) as error:
        call(*args, **kwargs)
    return str(error.value)


def test_a_profile_applies_first_then_set_and_each_field_knows_who_set_it(tmp_path: Path) -> None:
    sweep = write(tmp_path / "s.yaml", GOOD)
    loaded = load(sweep, ["train.epochs=5"], profile="cpu")
    assert (loaded.spec.train.epochs, loaded.spec.model.width) == (5, 16)  # --set wins
    assert loaded.spec.profile == "cpu"  # recorded: it is part of what ran
    assert loaded.origins.of("train.epochs") == "--set train.epochs=5"
    assert loaded.origins.of("model.width") == f"{sweep} (profile cpu)"
    assert loaded.origins.of("model.depth") == str(sweep)
    plain = load(sweep)
    assert (plain.spec.train.epochs, plain.spec.model.width, plain.spec.profile) == (1, 8, None)


def test_an_unknown_profile_lists_the_files_profiles_and_a_bad_entry_names_the_profile(
    tmp_path: Path,
) -> None:
    sweep = write(tmp_path / "s.yaml", GOOD + "  bad: {model.dpth: 3}\n")
    assert refused(load, sweep, profile="gpu") == (
        f"{sweep}: --profile: no profile 'gpu'; choose from cpu, fast, bad"
    )
    assert refused(load, sweep, profile="bad") == (
        f"{sweep} (profile bad): model.dpth: unknown field; did you mean 'model.depth'?"
    )
    bare = write(tmp_path / "bare.yaml", "name: x\n")
    assert refused(load, bare, profile="cpu") == (
        f"{bare}: --profile: no profile 'cpu'; choose from none: the file has no profiles: section"
    )
    listed = write(tmp_path / "listed.yaml", "name: x\nprofiles: [cpu]\n")
    assert refused(load, listed) == (
        f"{listed}: profiles: must map each profile name to fields, e.g. {{cpu: {{train.epochs:"
        " 2}}"
    )


def test_a_fields_origin_is_the_override_of_it_or_of_a_section_above_it() -> None:
    origins = Origins("s.yaml", {"model": "--set model={depth: 2}", "grid.zip": "--set grid.zip"})
    assert origins.of("model.depth") == "--set model={depth: 2}"
    assert origins.of("model") == "--set model={depth: 2}"
    assert origins.of("grid.zip[0].seed") == "--set grid.zip"
    assert origins.of("modelx.depth") == "s.yaml"  # a prefix only up to a '.' or '['
    assert origins.of("grid.seed") == "s.yaml" and origins.of("") == "s.yaml"


def test_overrides_copy_the_file_fix_a_grid_axis_and_add_no_grid_of_their_own() -> None:
    file = {"name": "x", "model": {"depth": 2}, "grid": {"model.depth": [2, 4], "seed": [0]}}
    raw = json.loads(json.dumps(file))
    out, set_by = apply_overrides(raw, ["grid.model.depth=[6]", " model.depth = 4", "seed=3"])
    assert out == {"name": "x", "model": {"depth": 4}, "seed": 3, "grid": {}}
    # the axis the first override set is gone: an error about it must not name that override
    assert set_by == {"model.depth": "--set  model.depth = 4", "seed": "--set seed=3"}
    assert raw == file
    bare, _ = apply_overrides({"name": "x"}, ["train.lr=0.5"])
    assert bare == {"name": "x", "train": {"lr": 0.5}}
    assert apply_overrides(raw, [])[0] is raw  # nothing to apply: nothing copied


def test_an_override_into_a_zip_group_or_below_a_plain_value_is_refused_with_the_fix() -> None:
    zipped = {"name": "x", "grid": {"zip": [{"model.depth": [2, 4], "seed": [0, 1]}]}}
    assert refused(apply_overrides, zipped, ["model.depth=4"]) == (
        "--set model.depth=4: model.depth: is part of a zip group; override it with"
        " --set grid.zip=..."
    )
    assert refused(apply_overrides, {"name": "x", "model": 3}, ["model.depth=4"]) == (
        "--set model.depth=4: model: is not a section in the sweep file"
    )
    assert refused(apply_overrides, {"name": "x"}, ["grid=[1]"]) == (
        "--set grid=[1]: grid: name a grid axis, e.g. --set grid.model.depth=[2,4]"
    )


def test_an_override_may_set_a_field_to_null_but_not_leave_it_empty(tmp_path: Path) -> None:
    sweep = write(tmp_path / "s.yaml", GOOD)
    assert load(sweep, ["data.validation=null"]).spec.data.validation is None
    assert load(sweep, ["data.validation=~"]).spec.data.validation is None
    assert refused(load, sweep, ["data.validation= "]) == (
        "--set data.validation= : data.validation: empty value; write e.g. --set model.depth=8"
    )


def test_a_file_that_is_not_a_mapping_of_named_fields_is_one_line_saying_so(
    tmp_path: Path,
) -> None:
    listed = write(tmp_path / "list.yaml", "- a\n- b\n")
    assert refused(read_yaml, listed) == (
        f"{listed}: a sweep file is a YAML mapping with at least 'name', got ['a', 'b']"
    )
    empty = write(tmp_path / "empty.yaml", "")
    assert refused(read_yaml, empty).endswith("with at least 'name', got None")
    numbered = write(tmp_path / "n.yaml", "1: x\nname: y\n")
    assert refused(read_yaml, numbered) == f"{numbered}: 1: field names must be strings"
    unclosed = write(tmp_path / "u.yaml", "name: x\nmodel: {depth: [\n")
    assert refused(read_yaml, unclosed) == (
        f"{unclosed}: line 3, column 1: invalid YAML (expected the node content, but found"
        " '<stream end>'); fix the syntax there"
    )
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"name: \xff\n")
    assert refused(read_yaml, binary).startswith(f"{binary}: cannot read the file (UnicodeDecode")
    assert refused(read_yaml, tmp_path).startswith(f"{tmp_path}: cannot read the file (IsADir")


def test_zipped_lists_may_repeat_a_value_but_not_a_whole_entry() -> None:
    grid = parse_grid({"zip": [{"model.depth": [2, 2], "init.c": [0.5, 1.0]}]}, "s.yaml")
    assert grid.zip == [{"model.depth": [2, 2], "init.c": [0.5, 1.0]}] and grid.axes == {}
    twice = {"zip": [{"model.depth": [2, 4, 2], "init.c": [0.5, 1.0, 0.5]}]}
    assert refused(parse_grid, twice, "s.yaml") == "s.yaml: grid.zip[0]: entry 2 repeats entry 0"
    assert parse_grid(None, "s.yaml") == GridSpec()
    assert refused(parse_grid, [1], "s.yaml") == (
        "s.yaml: grid: must be a mapping of axis -> list of values"
    )
    assert refused(parse_grid, {"seed": [0], "exclude": {"seed": 0}}, "s.yaml") == (
        "s.yaml: grid.exclude: must be a list of mappings axis -> value or list of values"
    )


def test_the_spec_hash_follows_what_runs_not_how_the_file_is_written(tmp_path: Path) -> None:
    smoke = SWEEPS / "smoke.yaml"
    base = load(smoke).spec.hash()
    assert len(base) == 16 and int(base, 16) >= 0
    raw = yaml.safe_load(smoke.read_text())
    # another layout and key order, no comments; what to compare and expect changes no result
    raw["report"] = {"reference": {"model.shortcut": "none"}}
    raw["claims"] = [
        {
            "id": "deep",
            "says": "an identity shortcut trains deeper",
            "metric": "test_acc",
            "compare": {
                "better": "higher",
                "a": {"model.shortcut": "identity"},
                "b": {"model.shortcut": "none"},
            },
        }
    ]
    text = yaml.safe_dump(dict(reversed(list(raw.items()))), default_flow_style=True)
    assert load(write(tmp_path / "same.yaml", text)).spec.hash() == base
    assert load(smoke, ["train.epochs=10"]).spec.hash() == base  # the file's own value
    assert load(smoke, ["train.epochs=11"]).spec.hash() != base
    assert load(smoke, ["grid.seed=[0, 1]"]).spec.hash() != base
