"""spec/catalog.py: variant names checked against the registries, what a family or recipe fills
in, the metrics a search, a scheduler or a claim may name, and the defaults `fields` shows."""

from __future__ import annotations

import pytest

from resablate.errors import ConfigError
from resablate.results import METRICS
from resablate.spec import catalog
from resablate.spec.catalog import FieldInfo
from resablate.spec.fields import trial_fields, trial_paths
from resablate.spec.options import SchedulerSpec, SearchSpec


def refused(call, *args) -> tuple[str, str]:
    with pytest.raises(ConfigError) as error:
        call(*args)
    return error.value.field, error.value.problem


def test_every_registry_names_a_field_of_the_trial_config() -> None:
    # a registry keyed by a field that no longer exists would never be checked (check_names
    # walks the trial's fields): a misspelt variant would reach the trial
    found = catalog.registries()
    assert set(found) <= set(trial_paths()), set(found) - set(trial_paths())
    assert catalog.PLACEMENT in trial_paths() and catalog.PLACEMENT not in found
    assert all(registry.names() for registry in found.values())


def test_a_family_fills_the_model_fields_left_out_and_the_written_ones_win() -> None:
    raw = {"model": {"family": "cifar", "norm": "none"}}
    model = catalog.resolve(raw)["model"]
    assert model["activation"] == "post" and model["depth"] == 20  # the cifar family's own
    assert model["norm"] == "none"  # written: the family's "batch" does not replace it
    assert raw == {"model": {"family": "cifar", "norm": "none"}}  # the caller's dict unchanged
    config = catalog.trial_config(raw)
    assert (config.model.activation, config.model.norm, config.model.depth) == ("post", "none", 20)
    assert catalog.trial_config({}).model.activation == "mid"  # mlp, the default family


def test_an_unknown_family_is_left_alone_for_the_name_check_to_suggest_the_closest() -> None:
    assert catalog.resolve({"model": {"family": "cifr"}})["model"] == {"family": "cifr"}
    assert refused(catalog.trial_config, {"model": {"family": "cifr"}}) == (
        "model.family",
        "'cifr': unknown model family 'cifr'; did you mean 'cifar'? (choices: mlp, mnist,"
        " cifar, imagenet)",
    )


def test_an_activation_placement_is_read_by_its_parser_not_looked_up_in_a_registry() -> None:
    field, problem = refused(catalog.trial_config, {"model": {"activation": "sideways"}})
    assert field == "model.activation"
    assert problem.startswith("'sideways': unknown activation placement 'sideways' (choices:")
    assert catalog.trial_config({"model": {"activation": "pre+mid"}}).model.activation == "pre+mid"


def test_a_search_objective_is_a_reported_metric_or_a_probes_number() -> None:
    def search(**objective: str) -> SearchSpec:
        return SearchSpec.model_validate({"uniform": [0.1, 1], "objective": objective})

    assert refused(catalog.check_search, search(metric="val_acuracy")) == (
        "search.objective.metric",
        "'val_acuracy' is not a reported metric; did you mean 'val_acc'? (choices: train_loss,"
        " train_acc, test_loss, test_acc, val_loss, val_acc, or a probe's <probe>.<key>)",
    )
    catalog.check_search(search(metric="hessian.cond"))  # a probe's number: accepted
    catalog.check_search(search(metric="val_loss"))


def test_a_scheduler_reads_only_a_metric_that_every_epoch_reports() -> None:
    misspelt = SchedulerSpec(kind="median", metric="val_accuracy")
    assert refused(catalog.check_scheduler, misspelt) == (
        "scheduler.metric",
        "'val_accuracy' is not a per-epoch metric; did you mean 'val_acc'? (choices: train_loss,"
        " train_acc, test_loss, test_acc, val_loss, val_acc)",
    )
    # a probe's number is not reported every epoch, unlike what a search may optimize
    field, _ = refused(catalog.check_scheduler, SchedulerSpec(kind="asha", metric="hessian.cond"))
    assert field == "scheduler.metric"
    catalog.check_scheduler(SchedulerSpec(kind="asha"))  # the default: resolved later
    catalog.check_scheduler(SchedulerSpec(kind="median", metric="val_loss"))


def test_the_numeric_paths_a_search_may_tune_are_numbers_not_flags_nor_the_seed() -> None:
    numeric = catalog.numeric_paths()
    assert {"train.lr", "init.c", "model.depth", "train.momentum"} <= set(numeric)
    defaults = dict(trial_fields())
    flags = [path for path, field in defaults.items() if isinstance(field.default, bool)]
    assert "train.nesterov" in flags and not set(flags) & set(numeric)  # True is an int
    assert "seed" not in numeric and "model.shortcut" not in numeric
    assert all(isinstance(defaults[path].default, (int, float)) for path in numeric)


def test_what_a_sweep_records_at_init_and_at_the_end_follows_when_its_probes_run() -> None:
    spec = catalog.sweep_spec(
        {
            "name": "probed",
            "probes": {"hessian": {"at": ["init"]}, "weights": {"at": ["end"]}, "lesion": {}},
        }
    )
    hessian = [f"hessian.{k}" for k in ("max_abs", "p10_abs", "cond", "index", "n_params", "zero")]
    assert catalog.recorded(spec, "init") == hessian  # the weights probe runs after init only
    last = catalog.recorded(spec, "last")
    assert last[: len(METRICS)] == list(METRICS)
    assert "weights.all" in last and "lesion.error_k1" in last  # every epoch; at the end
    assert not [m for m in last if m.startswith("hessian.")]  # at init only
    assert catalog.recorded(catalog.sweep_spec({"name": "bare"}), "init") == []


def test_a_sweeps_schema_error_is_one_field_and_its_recipe_fills_its_train_section() -> None:
    assert refused(catalog.sweep_spec, {"name": "x", "train": {"lr": "fast"}}) == (
        "train.lr",
        "'fast': input should be a valid number, unable to parse string as a number",
    )
    spec = catalog.sweep_spec({"name": "x", "train": {"recipe": "he_cifar", "lr": 0.05}})
    assert (spec.train.lr, spec.train.momentum, spec.train.weight_decay) == (0.05, 0.9, 1e-4)
    assert spec.train.milestones == [32000, 48000]


def test_a_fields_shown_default_names_each_familys_own_only_where_they_differ() -> None:
    def shown(default: object, by_family: dict[str, object], families: int = 4) -> str:
        return FieldInfo("model.x", default, "", "", by_family, families).shown_default()

    assert shown(4, {"mlp": 4, "cifar": 4}) == "4"
    assert shown(0.1, {}) == "0.1"  # a field no family sets
    assert shown("mid", {"mlp": "mid", "cifar": "post"}, 2) == 'mlp "mid", cifar "post"'
    assert shown(None, {"mnist": 16, "cifar": 16}) == "mnist 16, cifar 16; the others null"
    # the families left out take the schema's default, which is already among those shown
    assert shown("mid", {"mlp": "mid", "cifar": "post"}) == 'mlp "mid", cifar "post"'
