"""How a trial's arithmetic runs: bf16 autocast, channels-last, torch.compile, determinism, and
fractional GPUs; none of these may change a default trial's id (resume across versions)."""

from __future__ import annotations

import shutil

import pytest
import torch

from resablate.grid import config_id
from resablate.plan import make_plan
from resablate.spec import SpecError, TrainSpec, TrialConfig
from resablate.train import Compute, run_trial
from tests.conftest import write

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


def test_compute_fields_at_their_defaults_leave_the_config_and_its_id_unchanged() -> None:
    plain = TrialConfig.model_validate(MLP).model_dump(mode="json")
    assert not {"precision", "channels_last", "compile", "deterministic"} & set(plain["train"])
    spelled = TrialConfig.model_validate(
        with_train(MLP, precision="fp32", channels_last=False, compile=False)
    )
    assert config_id(spelled.model_dump(mode="json")) == config_id(plain)
    bf16 = TrialConfig.model_validate(with_train(MLP, precision="bf16")).model_dump(mode="json")
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


def test_channels_last_gives_the_same_training_as_the_default_layout() -> None:
    plain = run_trial(CIFAR)
    last = run_trial(with_train(CIFAR, channels_last=True))
    for key in KEYS:
        assert last[key] == pytest.approx(plain[key], rel=1e-3, abs=1e-4)
    net, _ = Compute(TrainSpec(channels_last=True), torch.device("cpu")).model(
        torch.nn.Conv2d(3, 4, 3)
    )
    assert net.weight.is_contiguous(memory_format=torch.channels_last)


def test_deterministic_sets_torch_flag_per_trial_and_repeats_exactly() -> None:
    config = with_train(CIFAR, deterministic=True)
    a = run_trial(config)
    assert torch.are_deterministic_algorithms_enabled()
    b = run_trial(config)
    assert [a[k] for k in KEYS] == [b[k] for k in KEYS]
    run_trial(CIFAR)  # a reused worker's next trial gets its own setting back
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile on CPU needs a C compiler")
def test_compiled_forward_trains_like_eager() -> None:
    eager = run_trial(MLP)
    compiled = run_trial(with_train(MLP, compile=True))
    for key in KEYS:
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-5)


def test_fractional_gpus_validate_and_more_than_one_must_be_whole(tmp_path) -> None:
    base = "name: gpus\ngrid: {seed: [0]}\n"
    plan = make_plan(write(tmp_path / "quarter.yaml", base + "resources: {gpu: 0.25}\n"))
    assert plan.spec.resources.gpu == 0.25
    assert make_plan(write(tmp_path / "two.yaml", base + "resources: {gpu: 2}\n"))
    with pytest.raises(SpecError, match=r"resources\.gpu: 1\.5: .*whole number"):
        make_plan(write(tmp_path / "bad.yaml", base + "resources: {gpu: 1.5}\n"))


def test_fields_added_later_leave_a_sweeps_spec_hash_unchanged() -> None:
    from resablate.spec import load_sweep
    from tests.conftest import ROOT

    # the hash smoke.yaml had before train.precision, data.image, resources.seeds_per_trial, ...
    # existed: a sweep started then still resumes without --force
    assert load_sweep(str(ROOT / "sweeps" / "smoke.yaml")).hash() == "30959078ba1d1282"
