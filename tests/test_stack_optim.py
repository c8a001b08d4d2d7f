"""Issue 21, stacks by shape: trials with one network shape and one data stream train as one
stack whatever their seed, init scheme and c, optimizer, learning rate, momentum, weight decay and
lr schedule, each member as its own run would (per field that may differ); a member that
diverges leaves the stack without changing the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from resablate.results import DIVERGED, FINISHED
from resablate.spec.schema import TrainSpec
from resablate.sweep.plan import make_plan
from resablate.sweep.stacking import stacks
from resablate.trial.batched import stack_key
from resablate.trial.optim import Clock
from resablate.trial.stack_optim import StackOptimizer, order
from resablate.trial.train import run_stack
from tests.conftest import write
from tests.test_batched import BASE, assert_alike, separately, stacked


def member(seed: int, train: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    """BASE with ``train`` fields changed and other sections (init, ...) replaced."""
    return {**BASE, **sections, "train": {**BASE["train"], **(train or {})}, "seed": seed}


# each: three trials that differ in one field (and their seeds)
FIELDS: dict[str, list[dict[str, Any]]] = {
    "lr": [member(0, {"lr": 0.01}), member(1, {"lr": 0.02}), member(2, {"lr": 0.05})],
    "momentum": [member(0, {"momentum": m}) for m in (0.0, 0.5, 0.9)],
    "weight_decay": [member(s, {"weight_decay": w}) for s, w in enumerate((0.0, 1e-3, 1e-2))],
    "nesterov": [member(0, {"nesterov": False}), member(1, {"nesterov": True})],
    "optimizer": [
        member(0, {"optimizer": "sgd"}),
        member(1, {"optimizer": "adam", "lr": 0.003, "weight_decay": 1e-3}),
        member(2, {"optimizer": "adamw", "lr": 0.003, "weight_decay": 1e-2}),
    ],
    "schedule": [
        member(0, {"schedule": "constant"}),
        member(1, {"schedule": "step", "milestones": [2], "gamma": 0.5}),
        member(2, {"schedule": "cosine", "warmup_iterations": 10}),
    ],
    "init scheme and c": [
        member(0, init={"scheme": "he", "c": 0.5}),
        member(0, init={"scheme": "xavier", "c": 2.0}),
        member(0, init={"scheme": "orthogonal"}),
        member(0, init={"scheme": "taki", "c": 0.5}),
    ],
}


@pytest.mark.parametrize("field", list(FIELDS), ids=list(FIELDS))
def test_members_that_differ_in_a_field_train_like_separate_runs(field: str) -> None:
    configs = FIELDS[field]
    assert len({stack_key(c) for c in configs}) == 1
    apart, together = separately(configs), stacked(configs)
    assert_alike(apart, together)
    finals = [run[-1]["test_loss"] for run in apart]  # the field matters: a member trained
    assert len(set(finals)) == len(finals)  # with another's recipe would fail assert_alike


def test_a_stack_of_interleaved_recipes_reports_each_trial_as_its_own_run() -> None:
    # one recipe's members are not next to each other in the given order; the stack puts them
    # together (one optimizer) and hands every report to the trial it belongs to
    adam = {"optimizer": "adam", "lr": 0.003}
    configs = [
        member(0, adam),
        member(1, {"lr": 0.05, "schedule": "cosine"}),
        member(2, adam),
        member(3, init={"scheme": "xavier"}),
        member(4, {"lr": 0.05, "schedule": "cosine"}),
    ]
    assert order([TrainSpec.model_validate(c["train"]) for c in configs]) == [0, 2, 1, 4, 3]
    assert_alike(separately(configs), stacked(configs))


def test_a_diverging_member_leaves_the_stack_and_the_others_are_unchanged() -> None:
    # lr 0.1 with momentum 0.9: seed 1 passes 1e6 in epoch 2 (test_batched); a member whose
    # limit is below the first loss (ce ~2.3) ends in epoch 1; adam and sgd at 0.02 train on
    configs = [
        member(1, {"lr": 0.1, "momentum": 0.9}),
        member(4, {"optimizer": "adam", "lr": 0.003}),
        member(5, {"diverge_above": 1.0}),
        member(6, {"lr": 0.02}),
    ]
    apart, together = separately(configs), stacked(configs)
    assert [s[-1]["status"] for s in together] == [DIVERGED, FINISHED, DIVERGED, FINISHED]
    assert [s[-1].get("diverged_epoch") for s in together] == [2, None, 1, None]
    assert_alike(apart, together)


def test_what_a_stack_shares_and_what_its_members_may_differ_in() -> None:
    key = stack_key(BASE)
    same = [
        member(3, {"optimizer": "adamw", "lr": 0.5, "weight_decay": 0.1, "diverge_above": 9.0}),
        member(0, {"schedule": "step", "milestones": [1], "warmup_iterations": 3}),
        member(0, init={"scheme": "zero", "eps": 0.01, "c": 3.0}),
        member(0, init={"scheme": "fixup"}) | {"model": {**BASE["model"], "shortcut_depth": 2}},
    ]
    assert [stack_key(c) == key for c in same] == [True, True, True, False]
    other = [
        member(0, {"batch_size": 32}),  # another data stream
        member(0, {"epochs": 4}),
        member(0, {"loss": "mse"}) | {"data": {"target": "onehot"}},
        member(0, data={"name": "synthetic"}),
        member(0, model={**BASE["model"], "width": 16}),  # other shapes
        member(0, model={**BASE["model"], "activation": "post"}),  # another forward pass
        member(0, init={"scheme": "skipinit"}),  # adds a gain α to every unit
        member(0, {"compile": True}),
    ]
    assert [stack_key(c) == key for c in other] == [False] * len(other)
    nf = {**BASE["model"], "activation": "full_preact"}  # nf reads c in its forward pass
    assert stack_key(member(0, model=nf, init={"scheme": "nf", "c": 0.5})) != stack_key(
        member(0, model=nf, init={"scheme": "nf", "c": 1.0})
    )
    with pytest.raises(ValueError, match="configs differ"):
        run_stack([BASE, member(0, {"batch_size": 32})], [print, print])


def test_each_recipe_is_one_optimizer_over_its_slice_of_the_stacked_weights() -> None:
    weights = [torch.zeros(4, 3, requires_grad=True)]
    sgd, adam = TrainSpec(lr=0.1), TrainSpec(optimizer="adam", lr=0.01)
    with pytest.raises(ValueError, match="next to each other"):
        StackOptimizer(weights, True, [sgd, adam, sgd], Clock(1, 1))
    steps = StackOptimizer(weights, True, [sgd, sgd, adam, TrainSpec(lr=0.2)], Clock(1, 1))
    assert [(p.start, p.stop) for p in steps.parts] == [(0, 2), (2, 3), (3, 4)]
    weights[0].grad = torch.ones(4, 3)
    steps.step()
    # sgd (momentum 0.9, first step: the gradient) moves its rows by lr; adam by its lr
    moved = -weights[0].detach()[:, 0]
    assert moved.tolist() == pytest.approx([0.1, 0.1, 0.01, 0.2])
    assert [steps.lr(i) for i in range(4)] == [0.1, 0.1, 0.01, 0.2]
    whole = StackOptimizer([torch.zeros(2, requires_grad=True)], True, [sgd, sgd], Clock(1, 1))
    assert len(whole.parts) == 1 and whole.parts[0].slices == []  # the weights themselves


GRID = """\
name: shapes
model: {family: mlp, width: 16}
train: {epochs: 2, batch_size: 64}
grid:
  init.scheme: [he, xavier]
  train.optimizer: [sgd, adam]
  train.lr: [0.01, 0.03]
  train.batch_size: [32, 64]
  seed: [0, 1]
resources: {cpu: 1, trials_per_stack: 8}
"""


def test_a_grid_stacks_by_shape_and_data_stream(tmp_path: Path) -> None:
    plan = make_plan(write(tmp_path / "g.yaml", GRID))
    found = stacks(plan)
    # per batch size: 2 schemes x 2 optimizers x 2 lrs x 2 seeds = 16 trials, two stacks of 8
    assert sorted(len(s) for s in found) == [8, 8, 8, 8]
    for stack in found:
        assert len({t.config["train"]["batch_size"] for t in stack}) == 1
    mixed = {(t.config["init"]["scheme"], t.config["train"]["optimizer"]) for t in found[0]}
    assert len(mixed) > 1  # not only seeds


# --- point 2: members that start from one network measure its init probes once --------------

INIT_PROBES = {
    "hessian": {"at": ["init"], "batch": 64, "method": "exact"},
    "weights": {"every": 2},
}


def test_members_of_one_seed_and_init_measure_their_init_probes_once(monkeypatch) -> None:
    """Members that differ only in their recipe start from the same network and probe batch:
    their init probes are measured once and equal a separate run's bit for bit; another seed
    or another init (other weights) is measured on its own."""
    from resablate.probes import measure as probes
    from resablate.spec.schema import ProbesSpec
    from resablate.trial.train import run_trial

    spec = ProbesSpec.model_validate(INIT_PROBES)
    small = {"depth": 4, "width": 8}
    configs = [
        member(0, {"lr": 0.02}, model=small),
        member(1, {"lr": 0.02}, model=small),
        member(0, {"lr": 0.05, "momentum": 0.9}, model=small),
        member(0, model=small, init={"c": 1.0}),  # seed 0, another c: other weights
    ]
    alone = []
    for config in configs:
        reports: list[dict] = []
        run_trial(config, report=reports.append, probes=spec)
        alone.append(reports)
    calls: list[tuple[str, ...]] = []
    real = probes.measure

    def counted(net, data, chosen, seed):  # type: ignore[no-untyped-def]
        calls.append(tuple(chosen))
        return real(net, data, chosen, seed)

    monkeypatch.setattr(probes, "measure", counted)
    together: list[list[dict]] = [[] for _ in configs]
    run_stack(configs, [r.append for r in together], probes=spec)
    at_init = [c for c in calls if "hessian" in c]
    assert len(at_init) == 3  # seed 0 (members 0 and 2), seed 1, seed 0 with c 1.0
    for one, other in zip(alone, together, strict=True):
        assert one[0]["epoch"] == other[0]["epoch"] == 0
        assert one[0]["probes"] == other[0]["probes"]  # bit for bit, each its own run's
    assert together[0][0]["probes"] == together[2][0]["probes"]
    assert together[0][0]["probes"] is not together[2][0]["probes"]  # each its own copy
    assert together[0][0]["hessian.max_abs"] != together[3][0]["hessian.max_abs"]
    assert together[0][0]["hessian.max_abs"] != together[1][0]["hessian.max_abs"]
    # after init the recipes differ: their weight norms part
    assert together[0][-1]["weights.all"] != together[2][-1]["weights.all"]


def test_a_keys_trials_stack_with_their_seed_and_init_together(tmp_path: Path) -> None:
    sweep = write(tmp_path / "t.yaml", SIZED)  # 3 lrs x 4 seeds, one stack key
    found = stacks(make_plan(sweep, ("resources.trials_per_stack=5",)))
    assert [len(s) for s in found] == [4, 4, 4]  # 12 trials, at most 5 a stack
    for stack in found:  # seeds in order, each seed's lrs next to each other
        seeds = [t.config["seed"] for t in stack]
        assert seeds == sorted(seeds) and len(set(seeds)) == 2, seeds


# --- point 4: stacks sized to the machine ----------------------------------------------

CONV = {
    "model": {"family": "cifar", "depth": 8, "norm": "none"},
    "data": {"name": "synthetic", "image": [3, 32, 32], "samples": 1200},
    "train": {"batch_size": 128, "max_iterations": 2, "lr": 0.01},
}
MEASURE = """
import json, sys, torch
from resablate.trial import data
from resablate.spec.schema import TrialConfig
from resablate.trial.train import run_stack


def peak():  # this process's own high-water mark (ru_maxrss keeps a forking parent's across exec)
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    return int(status.split()[0]) * 1024


config, k = json.loads(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)
data.load(TrialConfig.model_validate(config).data)  # the data set: the stack's, not a member's
before = peak()
run_stack([{**config, "seed": s} for s in range(k)], [lambda r: None] * k)
print(peak() - before)
"""


def peak_growth(config: dict[str, Any], k: int) -> int:
    """How much a fresh process's peak memory grows while a stack of ``k`` trains (large
    blocks straight from the OS, so that freed memory leaves the peak as it is)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(config), str(k)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return int(done.stdout.split()[-1])


@pytest.mark.slow  # peak memory measured in subprocesses
def test_a_members_memory_is_estimated_on_the_meta_device() -> None:
    from resablate.trial.batched import member_bytes

    estimate = member_bytes(CONV)
    per_member = (peak_growth(CONV, 6) - peak_growth(CONV, 2)) / 4  # measured: 77 MB
    assert 0.8 < estimate / per_member < 1.5, (estimate, per_member)
    # twice the batch: about twice the activations (the weights stay)
    double = {**CONV, "train": {**CONV["train"], "batch_size": 256}}
    assert 1.6 < member_bytes(double) / estimate < 2.0


SIZED = """\
name: sized
model: {family: mlp, width: 32}
train: {epochs: 1, batch_size: 64}
grid:
  train.lr: [0.01, 0.02, 0.03]
  seed: [0, 1, 2, 3]
resources: {cpu: 1, trials_per_stack: 8}
"""


def test_no_stack_is_larger_than_its_slots_memory_allows(tmp_path: Path) -> None:
    from resablate.sweep.stacking import describe
    from resablate.trial.batched import data_bytes, member_bytes

    plan = make_plan(write(tmp_path / "s.yaml", SIZED))
    member = member_bytes(plan.trials[0].config)
    data = data_bytes(plan.trials[0].config["data"])  # held once by a stack, beside its members
    assert data == 1797 * (64 * 4 + 8)  # digits: 8 x 8 float32 images and int64 labels
    assert sorted(len(s) for s in stacks(plan, 2)) == [6, 6]  # 12 trials: 2 stacks of 6 (max 8)
    assert sorted(len(s) for s in stacks(plan, 2, budget=None)) == [6, 6]
    assert sorted(len(s) for s in stacks(plan, 2, budget=data + int(3.5 * member))) == [3] * 4
    assert sorted(len(s) for s in stacks(plan, 2, budget=int(3.5 * member))) != [3] * 4
    assert [len(s) for s in stacks(plan, 2, budget=data + member)] == [1] * 12
    assert describe(plan, 2, member) == {
        "trial_slots": 2,
        "budget_bytes": member,
        "tune_trials": 12,
        "stacks": {},
        "alone": {"two of its networks do not fit in a slot's memory": 12},
    }


def test_plan_says_how_the_trials_stack_and_why_some_train_alone(tmp_path: Path, cli) -> None:
    import json

    sweep = write(tmp_path / "p.yaml", SIZED.replace("{cpu: 1, ", "{cpu: 1, ") + "")
    extra = "  model.norm: [none, batch]\n"
    sweep.write_text(SIZED.replace("  seed:", extra + "  seed:"))
    found = json.loads(cli("plan", str(sweep), "--json").out)["stacks"]
    assert found["alone"] == {"model.norm batch keeps running statistics per network": 12}
    assert sum(int(k) * n for k, n in found["stacks"].items()) == 12  # the norm-free trials
    text = cli("plan", str(sweep)).out
    assert "12: model.norm batch keeps running statistics per network" in text
    assert f"{found['tune_trials']} Ray Tune trials" in text


def test_a_stack_trains_on_its_trials_cpus_as_threads_and_gives_them_back(tmp_path: Path) -> None:
    # both backends train through train_stack with trial_threads(plan): a Ray worker and
    # --inline compute with resources.cpu threads (not torch's default of one per core)
    from resablate.sweep.worker import train_stack, trial_threads

    sweep = "name: t\nmodel: {depth: 2, width: 8}\ntrain: {epochs: 2}\n"
    for cpu, threads in ((1, 1), (2.5, 2), (0.5, 1)):
        path = write(tmp_path / f"{cpu}.yaml", sweep + f"resources: {{cpu: {cpu}}}\n")
        assert trial_threads(make_plan(str(path))) == threads
    before = torch.get_num_threads()
    other = 3 if before != 3 else 2
    seen: list[int] = []
    train_stack(
        [member(0), member(1)],
        [lambda r: seen.append(torch.get_num_threads())] * 2,
        "cpu",
        None,
        other,
    )
    assert seen and set(seen) == {other}  # every epoch of both members
    assert torch.get_num_threads() == before
