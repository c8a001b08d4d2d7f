"""The validation set (data.validation, science.md §5): a seeded share of the training set held
out, reported each epoch as val_loss / val_acc, and the only metric searches and schedulers may
choose by: nothing is ever chosen on the test set."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from resablate.results import FINISHED
from resablate.spec.catalog import trial_config
from resablate.spec.schema import DataSpec
from resablate.sweep.driver import Options, Outcome, run_sweep
from resablate.sweep.plan import make_plan
from resablate.trial import data
from resablate.trial.batched import EVAL_BATCH, build
from resablate.trial.compute import Compute
from resablate.trial.optim import stack_loss
from resablate.trial.train import evaluate, run_stack, run_trial
from tests.conftest import STEP_REL, TRAINED_ACC, TRAINED_REL, trial_runs, write

SYNTHETIC = {"name": "synthetic", "samples": 400, "features": 6, "validation": 0.2}


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    data.load.cache_clear()
    yield
    data.load.cache_clear()


def rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r) for r in x.flatten(1).tolist()}


# --- the split -----------------------------------------------------------------------------------


def test_the_validation_set_is_a_seeded_share_of_the_training_set_apart_from_train_and_test() -> (
    None
):
    whole = data.load(DataSpec.model_validate({**SYNTHETIC, "validation": None}))
    t = data.load(DataSpec.model_validate(SYNTHETIC))
    assert t.x_val is not None and t.y_val is not None
    # 400 examples: 100 test; of the 300 training examples 60 held out, 240 trained on
    assert (len(t.x_train), len(t.x_val), len(t.x_test)) == (240, 60, 100)
    assert data.DATASETS["synthetic"].sizes(DataSpec.model_validate(SYNTHETIC)) == (240, 60, 100)
    # Gaussian inputs: every example is its own row (the same affine map normalizes them all)
    train, val, test = rows(t.x_train), rows(t.x_val), rows(t.x_test)
    assert len(train) == 240 and len(val) == 60 and len(test) == 100
    assert not train & val and not val & test and not train & test
    assert torch.equal(t.y_test, whole.y_test)  # the test set stays whole
    # the training part and the validation part are the training set, nothing else
    assert sorted(t.y_train.tolist() + t.y_val.tolist()) == sorted(whole.y_train.tolist())
    data.load.cache_clear()
    again = data.load(DataSpec.model_validate(SYNTHETIC))
    assert again.x_val is not None and torch.equal(again.x_val, t.x_val)
    other = data.load(DataSpec.model_validate({**SYNTHETIC, "split_seed": 1}))
    assert other.x_val is not None and not torch.equal(other.y_val, t.y_val)


def test_a_trials_seed_does_not_choose_the_validation_set_only_the_split_seed_does() -> None:
    held = []
    for seed in (0, 7):
        torch.manual_seed(seed + 100)  # whatever the generators' state
        np.random.seed(seed + 100)
        data.load.cache_clear()
        config = trial_config({"seed": seed, "data": {"validation": 0.2}})
        held.append(data.load(config.data))
    assert held[0].y_val is not None and held[1].y_val is not None
    assert torch.equal(held[0].x_val, held[1].x_val) and torch.equal(held[0].y_val, held[1].y_val)
    assert torch.equal(held[0].x_train, held[1].x_train)


def test_digits_split_by_hand_validation_first_then_subset_from_the_rest() -> None:
    """The order (data.load): the validation set is the last 10% of a split_seed permutation of
    the training split, a subset the first examples of the same permutation."""
    digits = load_digits()
    order = np.random.default_rng(0).permutation(1797)
    train = order[449:]  # data.test_fraction's split, as without validation
    within = np.random.default_rng(0).permutation(1348)
    val = train[within[1348 - 135 :]]
    t = data.load(DataSpec(validation=0.1))
    assert t.y_val is not None and t.y_val.tolist() == digits.target[val].tolist()
    assert t.y_train.tolist() == digits.target[train[np.sort(within[:1213])]].tolist()
    # standardized with the statistics of the 1213 training examples only, never the held out
    kept = digits.data[train[np.sort(within[:1213])]]
    mean, std = kept.mean(0), kept.std(0)
    std[std < 1e-8] = 1.0
    expected = (digits.data[val] - mean) / std
    assert t.x_val is not None
    assert torch.allclose(t.x_val.reshape(135, 64).double(), torch.from_numpy(expected), atol=1e-5)
    assert t.x_train.mean(0).abs().max().item() < 1e-5
    assert t.x_val.mean(0).abs().max().item() > 1e-2  # not fitted on the validation set


def test_subsets_nest_and_never_reach_the_validation_set() -> None:
    big = data.load(DataSpec(validation=0.1, subset=300))
    small = data.load(DataSpec(validation=0.1, subset=100))
    alone = data.load(DataSpec(validation=0.1))
    bare = data.load(DataSpec(subset=300))
    assert big.y_val is not None and small.y_val is not None and alone.y_val is not None
    # the validation set is the same whatever the subset, and a smaller subset part of a larger
    assert torch.equal(big.y_val, alone.y_val) and torch.equal(small.y_val, alone.y_val)
    assert torch.equal(small.y_train, big.y_train[:100])
    # a subset trains on the same examples with a validation set as without one
    assert torch.equal(big.y_train, bare.y_train) and torch.equal(big.x_train, bare.x_train)
    assert big.x_val is not None and not rows(big.x_train) & rows(big.x_val)


def test_whitening_is_fitted_on_the_training_part_only() -> None:
    t = data.load(DataSpec(whiten=10, validation=0.25))
    assert t.x_val is not None and t.x_train.shape == (1011, 10) and t.x_val.shape == (337, 10)
    cov = t.x_train.T.double() @ t.x_train.double() / len(t.x_train)
    assert torch.allclose(cov, torch.eye(10, dtype=torch.float64), atol=1e-4)
    # by hand: the principal components of the training part, applied to the held-out part
    digits = load_digits()
    train = np.random.default_rng(0).permutation(1797)[449:]
    within = np.random.default_rng(0).permutation(1348)
    kept, val = digits.data[train[np.sort(within[:1011])]], digits.data[train[within[1011:]]]
    values, vectors = np.linalg.eigh(np.cov(kept - kept.mean(0), rowvar=False, bias=True))
    top = np.argsort(values)[::-1][:10]
    expected = (val - kept.mean(0)) @ (vectors[:, top] / np.sqrt(values[top]))
    # an eigenvector's sign is the solver's: compare up to each component's sign
    signs = np.sign((t.x_val.double().numpy() * expected).sum(0))
    assert np.allclose(t.x_val.double().numpy(), expected * signs, atol=1e-4)


# --- training: val_loss / val_acc each epoch -----------------------------------------------------

TRIAL = {
    "model": {"depth": 4, "width": 32},
    "init": {"c": 0.5},
    "data": {"validation": 0.2},
    "train": {"epochs": 3, "batch_size": 64, "lr": 0.02},
}


def test_each_epoch_reports_the_validation_metrics_and_none_without_a_validation_set() -> None:
    reports: list[dict] = []
    run_trial(TRIAL, report=reports.append)
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    for r in reports:
        assert r["val_loss"] > 0 and 0.5 < r["val_acc"] <= 1  # chance is 0.1
        assert r["val_loss"] != r["test_loss"] and r["val_acc"] != r["test_acc"]
    assert reports[-1]["val_loss"] < reports[0]["val_loss"]
    plain: list[dict] = []
    run_trial({**TRIAL, "data": {}}, report=plain.append)
    assert not any("val_loss" in r or "val_acc" in r for r in plain)


def test_the_validation_set_is_evaluated_as_it_is_never_augmented() -> None:
    """Augmentation is for training batches: with a step too small to move the weights, the
    reported validation loss is the initial network's on the validation images as they are."""
    raw = {**TRIAL, "data": {"validation": 0.2, "augment": True}}
    raw["train"] = {**TRIAL["train"], "lr": 1e-12, "momentum": 0.0, "max_iterations": 1}
    report = run_trial(raw)
    cfg = trial_config(raw)
    tensors = data.load(cfg.data)
    assert tensors.augment and tensors.x_val is not None and tensors.y_val is not None
    stack = build([cfg], tensors.shape, Compute(cfg.train, torch.device("cpu")))
    losses = stack_loss(cfg.train.loss, tensors.shape.classes)
    [(val_loss, val_acc)] = evaluate(stack, tensors.x_val, tensors.y_val, losses, EVAL_BATCH)
    assert report["val_loss"] == pytest.approx(val_loss, rel=STEP_REL)
    assert report["val_acc"] == pytest.approx(val_acc, abs=0.01)
    flipped = tensors.x_val.flip(3)  # what an augmented evaluation could see: far off
    [(other, _)] = evaluate(stack, flipped, tensors.y_val, losses, EVAL_BATCH)
    assert abs(other - val_loss) > 100 * STEP_REL * val_loss


def test_a_stacks_validation_metrics_are_its_separate_runs() -> None:
    configs = [{**TRIAL, "seed": seed} for seed in (0, 1, 5)]
    one_step = [{**c, "train": {**c["train"], "max_iterations": 1}} for c in configs]
    for runs, close in ((one_step, STEP_REL), (configs, TRAINED_REL)):
        alone: list[list[dict]] = []
        for config in runs:
            alone.append([])
            run_trial(config, report=alone[-1].append)
        together: list[list[dict]] = [[] for _ in runs]
        run_stack(runs, [r.append for r in together])
        for a, b in zip(alone, together, strict=True):
            assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
            for x, y in zip(a, b, strict=True):
                assert y["val_loss"] == pytest.approx(x["val_loss"], rel=close)
                assert y["val_acc"] == pytest.approx(x["val_acc"], abs=TRAINED_ACC)
        losses = [s[0]["val_loss"] for s in alone]  # the seeds differ: a mix-up would show
        assert min(abs(x - y) / x for x in losses for y in losses if x != y) > 100 * STEP_REL


def in_process(tmp_path: Path, text: str, name: str) -> Outcome:
    plan = make_plan(write(tmp_path / f"{name}.yaml", text))
    options = Options(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        results_dir=tmp_path / "runs",
        inline=True,
        quiet=True,
    )
    return run_sweep(plan, options, say=lambda line: None)


def test_mlflow_records_the_validation_metrics_at_every_epoch(tmp_path: Path) -> None:
    sweep = """
name: validated
model: {depth: 2, width: 16}
data: {validation: 0.2}
train: {epochs: 3, batch_size: 128, lr: 0.05}
grid: {data.validation: [0.2, null]}
"""
    in_process(tmp_path, sweep, "validated")
    client, runs = trial_runs(tmp_path, "validated")
    by = {r.data.params.get("data.validation"): r for r in runs}  # null: not a param
    run = by["0.2"]
    val = client.get_metric_history(run.info.run_id, "val_acc")
    loss = client.get_metric_history(run.info.run_id, "val_loss")
    test = client.get_metric_history(run.info.run_id, "test_acc")
    assert [m.step for m in val] == [m.step for m in loss] == [1, 2, 3]
    assert [m.value for m in val] != [m.value for m in test]
    assert run.data.metrics["val_acc"] == val[-1].value and 0.5 < val[-1].value <= 1
    assert len(by) == 2 and "test_acc" in by[None].data.metrics
    assert "val_acc" not in by[None].data.metrics  # none held out


# --- searches and schedulers choose on the validation set ---------------------------------------

SEARCH = """
name: valsearch
model: {depth: 4, width: 16}
data: {validation: 0.2}
train: {epochs: 2, batch_size: 128, lr: 0.05}
search: {param: init.c, log_uniform: [0.01, 3.0], n_trials: 4, sampler: random, seed: 2,
         objective: {metric: val_acc}}
grid: {seed: [0, 1]}
resources: {trials_per_stack: 1}
"""


def test_a_search_scores_and_chooses_candidates_by_their_mean_validation_accuracy(
    tmp_path: Path,
) -> None:
    outcome = in_process(tmp_path, SEARCH, "valsearch")
    [cell] = outcome.search.values()
    _, runs = trial_runs(tmp_path, "valsearch")
    assert len(runs) == 4 * 2 and all(r.data.tags["resablate.status"] == FINISHED for r in runs)
    by_c: dict[float, list] = {}
    for r in runs:
        by_c.setdefault(float(r.data.tags["c"]), []).append(r)
    val = {c: statistics.fmean(r.data.metrics["val_acc"] for r in s) for c, s in by_c.items()}
    test = {c: statistics.fmean(r.data.metrics["test_acc"] for r in s) for c, s in by_c.items()}
    assert len(val) == 4 and val != test  # scoring by test_acc would be told other values
    best = max(val, key=val.__getitem__)
    assert cell["best"] == best and cell["mean"] == pytest.approx(val[best])
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    [journal] = (tmp_path / "runs" / "valsearch" / "optuna").glob("*.journal")
    storage = JournalStorage(JournalFileBackend(str(journal)))
    [summary] = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert {t.params["init.c"]: t.value for t in study.trials} == pytest.approx(val)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "search: {uniform: [0.1, 1], objective: {metric: test_acc}}",
            "search.objective.metric: test_acc chooses on the test set; set data.validation"
            " (e.g. 0.1) and use val_acc (search.objective.metric: val_acc)",
        ),
        (
            "search: {uniform: [0.1, 1], objective: {metric: test_acc}}\ndata: {validation: 0.1}",
            "search.objective.metric: test_acc chooses on the test set; use val_acc",
        ),
        (
            "search: {uniform: [0.1, 1]}",
            "search.objective.metric: val_acc (the default) reads the validation set, but"
            " data.validation is null; set data.validation",
        ),
        (
            "search: {uniform: [0.1, 1], objective: {metric: test_loss, direction: min}}",
            "chooses on the test set; set data.validation (e.g. 0.1) and use val_loss",
        ),
        (
            "search: {uniform: [0.1, 1], objective: {metric: val_acc}}",
            "search.objective.metric: val_acc reads the validation set, but data.validation is"
            " null; set data.validation (e.g. 0.1",
        ),
        (
            "search: {uniform: [0.1, 1], objective: {metric: val_acc}}\n"
            "grid: {data.validation: [0.1, null]}",
            "but a value of grid axis data.validation is null",
        ),
        (
            "scheduler: {kind: asha}",
            "scheduler.metric: val_acc (the default) reads the validation set, but"
            " data.validation is null; set data.validation",
        ),
        (
            "scheduler: {kind: median, metric: val_loss}",
            "scheduler.metric: val_loss reads the validation set, but data.validation is null",
        ),
    ],
)
def test_choosing_on_the_test_set_is_refused_in_one_line_with_the_fix(
    tmp_path: Path, cli, section: str, message: str
) -> None:
    ran = cli("plan", str(write(tmp_path / "s.yaml", f"name: x\n{section}\n")))
    assert ran.code == 2 and len(ran.err.strip().splitlines()) == 1, ran.err
    assert message in ran.err, ran.err
    assert "Traceback" not in ran.err


def test_the_fix_the_refusal_names_is_accepted(tmp_path: Path, cli) -> None:
    sweep = write(tmp_path / "s.yaml", "name: x\nsearch: {uniform: [0.1, 1]}\n")
    fix = ["--set", "data.validation=0.1", "--set", "search.objective.metric=val_acc"]
    assert cli("plan", str(sweep), *fix).code == 0
    scheduled = write(tmp_path / "a.yaml", "name: y\nscheduler: {kind: asha}\n")
    fix = ["--set", "data.validation=0.1", "--set", "scheduler.metric=val_acc"]
    assert cli("plan", str(scheduled), *fix).code == 0
    # a scheduler under a val_* objective reads that metric by default
    both = "name: z\ndata: {validation: 0.1}\nscheduler: {kind: median}\n"
    both += "search: {uniform: [0.1, 1], objective: {metric: val_loss, direction: min}}\n"
    plan = make_plan(write(tmp_path / "b.yaml", both))
    assert plan.spec.scheduler.resolved(plan.spec.search) == ("val_loss", "min")
