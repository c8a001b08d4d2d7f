"""How a trial's arithmetic runs: bf16 autocast, channels-last, torch.compile, determinism, and
fractional GPUs; none of these may change a default trial's id (resume across versions)."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import Tensor

from resablate import models
from resablate.errors import SpecError
from resablate.spec.catalog import trial_config
from resablate.spec.grid import config_id
from resablate.spec.schema import TrainSpec, TrialConfig
from resablate.sweep.plan import make_plan
from resablate.trial import data
from resablate.trial.compute import Compute
from resablate.trial.optim import loss_fn
from resablate.trial.train import run_trial
from tests.conftest import STEP_REL, assert_trained_alike, relative_error, write

MLP = {
    "model": {"depth": 4, "width": 32},
    "init": {"c": 0.5},
    "train": {"epochs": 3, "batch_size": 64, "lr": 0.02},
}
CIFAR = {
    "model": {"family": "cifar", "depth": 8, "channels": 8},
    "train": {"lr": 0.05, "epochs": 2, "batch_size": 64},
}
KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")


def with_train(config: dict, **train: object) -> dict:
    return {**config, "train": {**config["train"], **train}}


def one_step(config: dict) -> dict[str, Tensor]:
    """The output, loss and every gradient of a trial's first training step, computed the way
    run_trial computes it (the network and forward pass that Compute makes, its batch layout)."""
    cfg = trial_config(config)
    tensors = data.load(cfg.data)
    compute = Compute(cfg.train, torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    net, forward = compute.model(models.build(cfg.model, cfg.init, tensors.shape, generator))
    net.train()
    x, y = tensors.x_train[: cfg.train.batch_size], tensors.y_train[: cfg.train.batch_size]
    with compute.autocast():
        out = forward(compute.batch(x))
    loss = loss_fn(cfg.train.loss, tensors.shape.classes)(out.float(), y)
    loss.backward()
    grads = {f"grad of {n}": p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert len(grads) == len(list(net.parameters()))  # every weight takes part in the step
    return {"output": out.detach(), "loss": loss.detach(), **grads}


def assert_same_step(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    errors = {key: relative_error(a[key], b[key]) for key in b}
    assert max(errors.values()) < STEP_REL, errors


def test_compute_fields_at_their_defaults_leave_the_config_and_its_id_unchanged() -> None:
    plain = trial_config(MLP).model_dump(mode="json")
    assert not {"precision", "channels_last", "compile", "deterministic"} & set(plain["train"])
    spelled = trial_config(with_train(MLP, precision="fp32", channels_last=False, compile=False))
    assert config_id(spelled.model_dump(mode="json")) == config_id(plain)
    bf16 = trial_config(with_train(MLP, precision="bf16")).model_dump(mode="json")
    assert bf16["train"]["precision"] == "bf16" and config_id(bf16) != config_id(plain)
    assert TrialConfig.model_validate(bf16).train.precision == "bf16"  # and it round-trips


def test_bf16_autocast_trains_close_to_fp32_but_not_identically() -> None:
    fp32 = run_trial(MLP)
    bf16 = run_trial(with_train(MLP, precision="bf16"))
    assert bf16["status"] == "finished"
    assert bf16["train_loss"] != fp32["train_loss"]  # the forward passes really ran in bf16
    assert bf16["test_acc"] == pytest.approx(fp32["test_acc"], abs=0.05)
    assert bf16["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.1)


def test_autocast_runs_linear_layers_in_bf16_and_leaves_weights_fp32() -> None:
    compute = Compute(TrainSpec(precision="bf16"), torch.device("cpu"))
    layer = torch.nn.Linear(4, 3)
    with compute.autocast():
        out = layer(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    with Compute(TrainSpec(), torch.device("cpu")).autocast():
        assert layer(torch.ones(2, 4)).dtype == torch.float32


def test_channels_last_computes_the_same_step_as_the_default_layout() -> None:
    plain = one_step(CIFAR)
    assert_same_step(one_step(with_train(CIFAR, channels_last=True)), plain)
    # the comparison catches a layout bug that changes a step's results by 1%
    assert relative_error(1.01 * plain["output"], plain["output"]) > 10 * STEP_REL
    compute = Compute(TrainSpec(channels_last=True), torch.device("cpu"))
    net, _ = compute.model(torch.nn.Conv2d(3, 4, 3))
    assert net.weight.is_contiguous(memory_format=torch.channels_last)
    assert compute.batch(torch.ones(2, 3, 5, 5)).is_contiguous(memory_format=torch.channels_last)


def test_channels_last_trains_to_the_same_loss_as_the_default_layout() -> None:
    plain = run_trial(trial_config(CIFAR))
    assert_trained_alike(run_trial(trial_config(with_train(CIFAR, channels_last=True))), plain)
    assert plain["train_loss"] < 0.8  # it trained (chance: ln 10 = 2.3), so alike means something


def test_deterministic_sets_torch_flag_per_trial_and_repeats_exactly() -> None:
    config = trial_config(with_train(CIFAR, deterministic=True))
    a = run_trial(config)
    assert torch.are_deterministic_algorithms_enabled()
    b = run_trial(config)
    assert [a[k] for k in KEYS] == [b[k] for k in KEYS]
    run_trial(trial_config(CIFAR))  # a reused worker's next trial gets its own setting back
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile on CPU needs a C compiler")
def test_compiled_forward_computes_the_same_step_and_trains_like_eager() -> None:
    assert_same_step(one_step(with_train(MLP, compile=True)), one_step(MLP))
    assert_trained_alike(run_trial(with_train(MLP, compile=True)), run_trial(MLP))


def test_fractional_gpus_validate_and_more_than_one_must_be_whole(tmp_path) -> None:
    base = "name: gpus\ngrid: {seed: [0]}\n"
    plan = make_plan(write(tmp_path / "quarter.yaml", base + "resources: {gpu: 0.25}\n"))
    assert plan.spec.resources.gpu == 0.25
    assert make_plan(write(tmp_path / "two.yaml", base + "resources: {gpu: 2}\n"))
    with pytest.raises(SpecError, match=r"resources\.gpu: 1\.5: .*whole number"):
        make_plan(write(tmp_path / "bad.yaml", base + "resources: {gpu: 1.5}\n"))


def test_fields_added_later_leave_a_sweeps_spec_hash_unchanged() -> None:
    from resablate.spec.loader import load_sweep
    from tests.conftest import ROOT

    # the hash smoke.yaml (then with seeds 0 and 1) had before train.precision, data.image,
    # resources.trials_per_stack, ... existed: a sweep started then still resumes without --force
    smoke = load_sweep(str(ROOT / "sweeps" / "smoke.yaml"), ["grid.seed=[0,1]"])
    assert smoke.hash() == "30959078ba1d1282"
