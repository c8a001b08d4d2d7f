"""Seeds of one configuration trained stacked (resources.trials_per_stack) give the results of
separate runs, seed by seed and epoch by epoch, and are recorded as separate trials."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pytest
import torch

from resablate.errors import SpecError
from resablate.results import DIVERGED, FINISHED
from resablate.spec.schema import ProbesSpec, TrainSpec, TrialConfig
from resablate.sweep.plan import make_plan
from resablate.sweep.runner import Session
from resablate.sweep.stacking import AUTO_STACK_MAX, STACKED, stack_size, stacks
from resablate.tracking.runlog import RunLog
from resablate.trial import data
from resablate.trial.batched import Single, Vmapped, build, why_not
from resablate.trial.compute import Compute
from resablate.trial.train import run_stack, run_trial
from tests.conftest import STEP_REL, assert_trained_alike, write

# every test records in its tmp_path's mlflow.db, a copy of an empty store (conftest.store_uri):
# MLflow takes seconds to create one, which the tests that create theirs still do
pytestmark = pytest.mark.usefixtures("store_uri")

BASE = {
    "model": {"depth": 4, "width": 32},
    "init": {"c": 0.5},
    "train": {"epochs": 3, "batch_size": 64, "lr": 0.02},
}
KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")
PROBES = ProbesSpec.model_validate({"weights": {}})


def separately(configs: list[dict]) -> list[list[dict]]:
    out = []
    for config in configs:
        reports: list[dict] = []
        run_trial(config, report=reports.append)
        out.append(reports)
    return out


def stacked(configs: list[dict]) -> list[list[dict]]:
    out: list[list[dict]] = [[] for _ in configs]
    run_stack(configs, [r.append for r in out])
    return out


def assert_same_step(a: list[list[dict]], b: list[list[dict]]) -> None:
    """Reports of a one-step run: the step's loss (a forward pass) and the test loss after its
    update (the backward pass and optimizer) agree to float32 rounding, seed by seed."""
    for [x], [y] in zip(a, b, strict=True):
        assert (x["epoch"], x["status"], x["lr"]) == (y["epoch"], y["status"], y["lr"])
        for key in ("train_loss", "test_loss"):
            assert y[key] == pytest.approx(x[key], rel=STEP_REL), key
        for key in ("train_acc", "test_acc"):  # a near-tie may tip one sample the other way
            assert y[key] == pytest.approx(x[key], abs=0.01), key


def assert_alike(a: list[list[dict]], b: list[list[dict]]) -> None:
    """Reports of whole runs: the same epochs, statuses and lr schedule; every epoch's metrics
    alike up to training's rounding noise."""
    assert [[r["epoch"] for r in s] for s in a] == [[r["epoch"] for r in s] for s in b]
    for one, other in zip(a, b, strict=True):
        for x, y in zip(one, other, strict=True):
            assert (x["status"], x.keys()) == (y["status"], y.keys())
            assert x.get("diverged_epoch") == y.get("diverged_epoch")
            if x["status"] != DIVERGED:
                assert y["lr"] == pytest.approx(x["lr"], rel=1e-12)
                assert_trained_alike(y, x)


CHANGES = [
    {},
    {"model": {"depth": 4, "width": 32, "shortcut": "scalar"}, "data": {"whiten": 32}},
    {
        "train": {
            **BASE["train"],
            "optimizer": "adam",
            "lr": 0.005,
            "loss": "mse",
            "schedule": "step",
            "milestones": [2],
            "weight_decay": 1e-4,
        },
        "data": {"target": "onehot"},
    },
]
IDS = ["identity-sgd", "scalar-whitened", "adam-mse-step"]


@pytest.mark.parametrize("changes", CHANGES, ids=IDS)
def test_stacked_seeds_compute_each_seeds_own_step(changes: dict) -> None:
    configs = [{**BASE, **changes, "seed": seed} for seed in (0, 1, 5)]
    for config in configs:
        config["train"] = {**config["train"], "max_iterations": 1}
    a, b = separately(configs), stacked(configs)
    assert_same_step(a, b)
    losses = [s[0]["train_loss"] for s in a]  # the seeds differ far beyond the tolerance,
    assert min(abs(x - y) / x for x in losses for y in losses if x != y) > 100 * STEP_REL
    assert len(set(losses)) == 3  # so a seed given another's weights or batches fails


@pytest.mark.parametrize("changes", CHANGES, ids=IDS)
def test_stacked_seeds_train_like_separate_runs(changes: dict) -> None:
    configs = [{**BASE, **changes, "seed": seed} for seed in (0, 1, 5)]
    assert_alike(separately(configs), stacked(configs))


def test_a_seed_that_diverges_leaves_the_stack_and_the_others_train_on() -> None:
    # lr 0.1 with momentum: seed 1 blows up in epoch 2 (its loss passes 1e6 on its way to 1e32),
    # seeds 4 and 6 train (their losses stay below 4): no rounding can change who diverges
    train = {**BASE["train"], "epochs": 2, "lr": 0.1, "momentum": 0.9}
    configs = [{**BASE, "train": train, "seed": seed} for seed in (1, 4, 6)]
    a, b = separately(configs), stacked(configs)
    assert [s[-1]["status"] for s in b] == [DIVERGED, FINISHED, FINISHED]
    assert b[0][-1]["diverged_epoch"] == 2
    assert_alike(a, b)
    for run in (a, b):
        assert math.isfinite(run[0][-1]["last_finite_loss"])
        assert run[0][-1]["last_finite_loss"] <= TrainSpec().diverge_above
        assert max(r["train_loss"] for s in run[1:] for r in s) < 4


def test_reading_a_stacks_losses_in_groups_changes_no_result() -> None:
    train = {**BASE["train"], "epochs": 2, "lr": 0.1, "momentum": 0.9}  # seed 1 diverges
    configs = [{**BASE, "train": train, "seed": seed} for seed in (1, 4, 6)]
    runs: dict[int, list[list[dict]]] = {}
    for group in (1, 7):  # 7 does not divide an epoch's steps
        runs[group] = [[] for _ in configs]
        run_stack(configs, [r.append for r in runs[group]], sync_every=group)
    timeless = [
        [[{k: v for k, v in r.items() if k != "epoch_time"} for r in s] for s in runs[group]]
        for group in (1, 7)
    ]
    assert timeless[0] == timeless[1]
    assert [s[-1]["status"] for s in runs[7]] == [DIVERGED, FINISHED, FINISHED]


def test_a_stack_of_one_is_the_plain_network_and_more_are_vmapped() -> None:
    cfgs = [TrialConfig.model_validate({**BASE, "seed": seed}) for seed in (0, 1)]
    shape = data.load(cfgs[0].data).shape
    compute = Compute(cfgs[0].train, torch.device("cpu"))
    assert isinstance(build(cfgs[:1], shape, compute), Single)  # no vmap: it may round otherwise
    assert isinstance(build(cfgs, shape, compute), Vmapped)


def test_what_cannot_be_stacked_is_named() -> None:
    assert why_not(BASE) is None
    assert "norm" in str(why_not({**BASE, "model": {**BASE["model"], "norm": "batch"}}))
    assert "drop_path" in str(why_not({**BASE, "model": {**BASE["model"], "drop_path": 0.1}}))
    assert "precision" in str(why_not({**BASE, "train": {**BASE["train"], "precision": "bf16"}}))
    with pytest.raises(ValueError, match="configs differ"):  # another width: other shapes
        run_stack([BASE, {**BASE, "model": {**BASE["model"], "width": 16}}], [print, print])


# every probe, at init and at the end (a lesion probe of at most 2 units: it draws per member)
EVERY_PROBE = ProbesSpec.model_validate(
    {
        "spp": {"at": ["init", "end"], "batch": 64},
        "hessian": {"at": ["init", "end"], "batch": 64, "method": "exact"},
        "weights": {},
        "shattered": {"at": ["init", "end"], "points": 32},
        "lesion": {"at": ["end"], "k": 2, "draws": 2},
    }
)


def probe_numbers(reports: list[dict]) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if "." in k} for r in reports]


def test_stacked_seeds_run_their_probes_each_on_its_own_network() -> None:
    """Issue 21 (probes on stacks): a stack's probes run per member, on the member's own
    network and probe batch; they equal the probes of separate runs, exactly at init (the same
    weights) and to training's rounding after it."""
    configs = [{**BASE, "model": {"depth": 4, "width": 8}, "seed": seed} for seed in (0, 1, 2)]
    alone = []
    for config in configs:
        reports: list[dict] = []
        run_trial(config, report=reports.append, probes=EVERY_PROBE)
        alone.append(reports)
    together: list[list[dict]] = [[] for _ in configs]
    run_stack(configs, [r.append for r in together], probes=EVERY_PROBE)
    for one, other in zip(alone, together, strict=True):
        assert [r["epoch"] for r in one] == [r["epoch"] for r in other] == [0, 1, 2, 3]
        assert one[0]["probes"] == other[0]["probes"]  # at init: bit for bit
        last, stacked_last = probe_numbers(one)[-1], probe_numbers(other)[-1]
        assert last.keys() == stacked_last.keys() and any(k.startswith("hessian") for k in last)
        for key, value in last.items():
            if key.startswith("lesion."):  # accuracies: a near-tie may tip one sample
                assert stacked_last[key] == pytest.approx(value, abs=0.02), key
            else:
                assert stacked_last[key] == pytest.approx(value, rel=1e-3, abs=1e-6), key
    seeds = [probe_numbers(r)[0]["spp.fwd_last"] for r in together]
    assert len(set(seeds)) == 3  # each member measured its own network, not member 0's


SWEEP = """\
name: stacked
model: {family: mlp, width: 16}
init: {c: 0.5}
train: {epochs: 2, batch_size: 64, lr: 0.02}
grid:
  model.norm: [none, batch]
  seed: [0, 1, 2]
resources: {cpu: 1, trials_per_stack: 2}
"""


def test_units_stack_seeds_of_a_stackable_cell_only(tmp_path: Path) -> None:
    plan = make_plan(write(tmp_path / "s.yaml", SWEEP))
    sizes = sorted(
        (len(u), u[0].config["model"]["norm"]) for u in stacks(plan)
    )  # norm none: 2 + 1 seeds stacked; norm batch: each alone
    assert sizes == [(1, "batch"), (1, "batch"), (1, "batch"), (1, "none"), (2, "none")]
    for unit in stacks(plan):
        assert len({t.cell for t in unit}) == 1


def test_units_split_a_configurations_seeds_into_stacks_of_near_equal_size(
    tmp_path: Path,
) -> None:
    text = SWEEP.replace("seed: [0, 1, 2]", "seed: [0, 1, 2, 3, 4]").replace(
        "trials_per_stack: 2", "trials_per_stack: 4"
    )
    plan = make_plan(write(tmp_path / "s.yaml", text.replace("[none, batch]", "[none]")))
    found = stacks(plan)
    assert [len(u) for u in found] == [2, 3]  # not 4 + 1
    assert [t.id for u in found for t in u] == [t.id for t in plan.trials]
    assert [t.tags[STACKED] for u in found for t in u] == ["2", "2", "3", "3", "3"]


@pytest.mark.parametrize(
    ("groups", "slots", "size"),
    [
        ([16], 2, AUTO_STACK_MAX),  # 2 stacks of 8 keep both cores busy
        ([16], 4, 5),  # 4 stacks (of 4 seeds each: stacks() splits evenly)
        ([16], 5, 3),  # 6 stacks of 2-3 seeds
        ([16], 16, 1),  # stacking would leave cores idle
        ([16], 64, 1),
        ([3, 1, 1, 1], 2, AUTO_STACK_MAX),  # 1 stack + 3 trials that run alone
        ([3, 1, 1, 1], 5, 2),
        ([3, 1, 1, 1], 6, 1),
    ],
)
def test_auto_stack_size_keeps_every_slot_busy(groups: list[int], slots: int, size: int) -> None:
    assert stack_size(groups, slots) == size


def test_auto_stacks_only_on_a_local_ray_and_never_under_a_scheduler(tmp_path: Path) -> None:
    text = SWEEP.replace("trials_per_stack: 2", "trials_per_stack: auto")
    plan = make_plan(write(tmp_path / "s.yaml", text))
    assert plan.spec.resources.trials_per_stack == "auto"
    alone = sorted((t.id,) for t in plan.trials)
    assert sorted(tuple(t.id for t in u) for u in stacks(plan)) == alone  # inline, cluster
    assert sorted(len(u) for u in stacks(plan, slots=2)) == [1, 1, 1, 3]  # 3 seeds of norm none
    assert len(stacks(plan, slots=6)) == 6
    # a scheduler chooses on the validation set, never on the test set
    scheduled = text + "data: {validation: 0.1}\nscheduler: {kind: asha, metric: val_acc}\n"
    asha = make_plan(write(tmp_path / "a.yaml", scheduled))
    assert len(stacks(asha, slots=2)) == 6  # the scheduler stops seeds one by one


def test_how_trials_stack_changes_no_spec_hash_so_a_sweep_resumes_whatever_its_grouping(
    tmp_path: Path,
) -> None:
    def spec_hash(value: str) -> str:
        text = SWEEP.replace("trials_per_stack: 2", f"trials_per_stack: {value}")
        return make_plan(write(tmp_path / f"{value}.yaml", text)).spec.hash()

    assert spec_hash("1") == spec_hash("auto") == spec_hash("2") == spec_hash("8")
    cpu = SWEEP.replace("cpu: 1", "cpu: 2")  # how much a trial gets is still the spec's
    assert make_plan(write(tmp_path / "cpu.yaml", cpu)).spec.hash() != spec_hash("2")


def test_seeds_per_trial_the_former_name_is_read_as_trials_per_stack(tmp_path: Path) -> None:
    old = make_plan(
        write(tmp_path / "old.yaml", SWEEP.replace("trials_per_stack", "seeds_per_trial"))
    )
    new = make_plan(write(tmp_path / "new.yaml", SWEEP))
    assert old.spec.resources.trials_per_stack == 2
    assert [[t.id for t in s] for s in stacks(old)] == [[t.id for t in s] for s in stacks(new)]
    assert old.spec.hash() == new.spec.hash()
    both = SWEEP.replace("trials_per_stack: 2", "trials_per_stack: 2, seeds_per_trial: 2")
    with pytest.raises(SpecError, match=r"resources: .*both set; keep trials_per_stack"):
        make_plan(write(tmp_path / "both.yaml", both))


@pytest.mark.parametrize("value", ["0", "-1", "many", "2.5", "true", "[2]"])
def test_a_bad_trials_per_stack_is_refused_with_the_fix(tmp_path: Path, value: str) -> None:
    text = SWEEP.replace("trials_per_stack: 2", f"trials_per_stack: {value}")
    with pytest.raises(
        SpecError, match=r"resources\.trials_per_stack: .*expected auto .* 1 or more"
    ):
        make_plan(write(tmp_path / "s.yaml", text))


def test_trials_per_stack_and_a_scheduler_are_refused_together(tmp_path: Path) -> None:
    text = SWEEP + "scheduler: {kind: asha}\n"
    with pytest.raises(SpecError, match=r"resources\.trials_per_stack.*scheduler"):
        make_plan(write(tmp_path / "s.yaml", text))


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "stack"), [("ray", "2"), ("inline", "2"), ("ray", "auto")])
def test_a_stacked_sweep_records_one_run_per_trial_with_the_separate_metrics(
    tmp_path: Path, backend: str, stack: str
) -> None:
    path = write(
        tmp_path / "s.yaml", SWEEP.replace("trials_per_stack: 2", f"trials_per_stack: {stack}")
    )
    plan = make_plan(path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = RunLog.open(uri, "stacked")
    tracker.start_sweep("stacked", {}, plan.spec.hash(), path, plan.trials)
    with Session(plan, backend, tmp_path / "runs") as session:
        slots = session.slots()
        records = session.run([tracker])
    stacked = {t.id: t.tags.get(STACKED) for u in stacks(plan, slots) for t in u}
    if stack == "auto":  # 3 seeds of norm none + 3 trials alone: stacked where <= 4 cores
        assert slots is not None and (slots > 4 or sorted(stacked.values(), key=str)[0] == "3")
    tracker.end_sweep()
    assert sorted(r.trial.id for r in records) == sorted(t.id for t in plan.trials)
    assert {r.status for r in records} == {FINISHED}
    runs = mlflow.MlflowClient(uri).search_runs(
        [tracker.experiment_id], "tags.mlflow.parentRunId != ''"
    )
    assert len(runs) == len(plan.trials)  # one child run per trial, stacked or not
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    alone = {trial.id: run_trial(trial.config) for trial in plan.trials}
    for trial in plan.trials:
        logged = by_trial[trial.id].data.metrics
        assert by_trial[trial.id].info.status == "FINISHED"
        assert by_trial[trial.id].data.tags.get(STACKED) == stacked[trial.id]
        # trained alike (Ray's workers run other thread counts than this process) ...
        assert_trained_alike(logged, alone[trial.id])
        # ... and it is this trial's result, not another seed's of its configuration
        cell = [t.id for t in plan.trials if t.cell == trial.cell]
        gap = {i: abs(alone[i]["train_loss"] - logged["train_loss"]) for i in cell}
        assert min(gap, key=gap.__getitem__) == trial.id, (trial.assignment, gap)


def test_trials_that_differ_in_seed_and_init_scale_train_as_one_stack() -> None:
    """Issue 21 (search candidates stack): trials that differ only in their seed and init.c
    (a cell's Optuna candidates x seeds) train as one stack, each as its own run would."""
    configs = [
        {**BASE, "init": {"c": c}, "seed": seed} for c, seed in ((0.5, 0), (0.25, 0), (1.0, 1))
    ]
    assert_alike(separately(configs), stacked(configs))
    preact = {**BASE["model"], "activation": "full_preact"}
    nf = [{**BASE, "model": preact, "init": {"scheme": "nf", "c": c}} for c in (0.5, 0.25)]
    with pytest.raises(ValueError, match="differ"):  # c is in the nf forward pass (alpha, beta)
        run_stack(nf, [print, print])


CELLS = """\
name: cstack
model: {family: mlp, width: 16, activation: full_preact}
train: {epochs: 2, batch_size: 64, lr: 0.02}
grid:
  init.c: [0.25, 0.5, 1.0]
  init.scheme: [he, nf]
  seed: [0, 1]
resources: {cpu: 1, trials_per_stack: 8}
"""


def test_stacks_gather_the_init_scales_of_a_cell_unless_c_is_in_the_forward_pass(
    tmp_path: Path,
) -> None:
    plan = make_plan(write(tmp_path / "c.yaml", CELLS))
    found = sorted(
        (len(s), s[0].config["init"]["scheme"], len({t.config["init"]["c"] for t in s}))
        for s in stacks(plan)
    )
    # he: 3 scales x 2 seeds in one stack; nf: each scale's 2 seeds apart
    assert found == [(2, "nf", 1), (2, "nf", 1), (2, "nf", 1), (6, "he", 3)]


def test_a_stacks_mode_is_every_modules_mode_as_train_sets_it() -> None:
    from torch import nn

    from resablate.trial.batched import Modes

    config = TrialConfig.model_validate({**BASE, "model": {**BASE["model"], "norm": "batch"}})
    shape = data.load(config.data).shape
    stack = build([config], shape, Compute(config.train, torch.device("cpu")))
    net = stack.network()
    assert any(isinstance(m, nn.BatchNorm1d) for m in net.modules())
    for mode in (False, True, False):
        stack.train(mode)
        assert {m.training for m in net.modules()} == {mode}

    class Frozen(nn.Module):  # a module with its own train(): Modes leaves it to it
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(3)

        def train(self, mode: bool = True) -> Frozen:
            super().train(mode)
            self.bn.training = False
            return self

    frozen = Frozen()
    modes = Modes(frozen)
    assert not modes.direct
    modes(True)
    assert frozen.training and not frozen.bn.training
