"""Issue 17, each probe measures what its paper measures: shattered gradients on batch-normalized
nets normalize with the probe batch (Balduzzi et al.), the lesion probe gives Veit et al.'s error
against the number of units removed, and the mnist family's conv0 is followed by σ (science.md
§2, §4)."""

from __future__ import annotations

import copy
import itertools
import statistics
from typing import Any

import pytest
import torch

from resablate import models
from resablate.probes.lesion import lesion
from resablate.probes.measure import PROBES, ProbeData, scalars
from resablate.probes.shattered import (
    autocorrelation,
    batch_statistics,
    line_gradients,
    shattered_gradients,
)
from resablate.spec.options import LesionProbe
from resablate.spec.schema import DataSpec, InitSpec, ModelSpec, ProbesSpec
from resablate.trial import data
from resablate.trial.data import DataShape
from resablate.trial.optim import loss_fn
from resablate.trial.train import probe_trial

IMAGES = DataShape((1, 8, 8), 10)
VECTORS = DataShape((16,), 10)


def net_of(shape: DataShape, init: dict | None = None, seed: int = 0, **raw: Any) -> Any:
    family = raw.setdefault("family", "mlp")
    model = ModelSpec(**{**models.FAMILIES[family].defaults(raw), **raw})
    return models.build(
        model, InitSpec(**(init or {})), shape, torch.Generator().manual_seed(seed)
    )


def eval_mode_autocorr(net: Any, shape: tuple[int, ...], seed: int) -> list[float]:
    """What the probe measured before issue 17: the whole net in eval mode (the same draws)."""
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(shape, generator=g) for _ in range(2))
    t = torch.linspace(0.0, 1.0, 256).view(-1, *([1] * len(shape)))
    line = (a + t * (b - a)).requires_grad_(True)
    out = net.eval()(line)
    r = torch.randn(out.shape[1], generator=g)
    (grad,) = torch.autograd.grad((out @ r).sum(), line)
    return autocorrelation((grad.flatten(1) @ (b - a).flatten()).detach(), 32)


def buffers(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in net.named_buffers()}


# -- shattered gradients ----------------------------------------------------------------------


def test_shattered_gradients_normalize_with_the_probe_batch_and_keep_running_stats() -> None:
    net = net_of(IMAGES, family="mnist", depth=6, channels=8, shortcut="none")
    with torch.no_grad():  # running statistics that are not the identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    before = buffers(net.train())
    found = shattered_gradients(net, (1, 8, 8), torch.Generator().manual_seed(1))["autocorr"]
    assert net.training  # the probe leaves the mode as it found it
    after = dict(net.named_buffers())
    assert all(torch.equal(before[name], after[name]) for name in before)  # bit-identical
    old = eval_mode_autocorr(copy.deepcopy(net), (1, 8, 8), 1)
    assert abs(found[1] - old[1]) > 0.1, (found[1], old[1])
    # the normalization is training mode's: the same outputs as a copy in training mode
    line = torch.randn(256, 1, 8, 8)
    with torch.no_grad(), batch_statistics(net):
        probed = net(line)
    trained = copy.deepcopy(net).train()(line).detach()
    assert torch.allclose(probed, trained, atol=1e-5)
    assert not torch.allclose(probed, copy.deepcopy(net).eval()(line).detach(), atol=1e-2)


def test_shattered_gradients_at_init_against_eval_mode_on_a_bn_net() -> None:
    """At init eval-mode batch norm is the identity, so eval mode measured the net without its
    normalization (lag 1: 0.84); with the line's batch statistics the gradient shatters more."""
    net = net_of(IMAGES, family="mnist", depth=6, channels=8, shortcut="none")
    found = shattered_gradients(net, (1, 8, 8), torch.Generator().manual_seed(1))["autocorr"]
    old = eval_mode_autocorr(net, (1, 8, 8), 1)
    assert found[1] == pytest.approx(0.72, abs=0.05) and old[1] == pytest.approx(0.84, abs=0.05)


def test_each_points_gradient_is_the_per_point_derivative() -> None:
    """g(t) holds the batch statistics constant: within a few % of the exact derivative of point
    t's own output (its 1/256 share in the statistics included), unlike the gradient of the
    batch's summed output, which adds the other points' responses through the statistics."""
    net = net_of(IMAGES, family="mnist", depth=3, channels=8, shortcut="none")
    g = line_gradients(net, (1, 8, 8), torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(2)
    a, b = (torch.randn(1, 8, 8, generator=gen) for _ in range(2))
    line = (a + torch.linspace(0.0, 1.0, 256).view(-1, 1, 1, 1) * (b - a)).requires_grad_(True)
    trained = copy.deepcopy(net).train()
    out = trained(line)
    r = torch.randn(out.shape[1], generator=gen)
    s = out @ r
    picks = [0, 64, 128, 255]
    exact = torch.stack(
        [
            torch.autograd.grad(s[i], line, retain_graph=True)[0][i].flatten() @ (b - a).flatten()
            for i in picks
        ]
    )
    (summed,) = torch.autograd.grad(s.sum(), line)
    summed_g = (summed.flatten(1) @ (b - a).flatten())[picks]
    assert torch.allclose(
        g[picks], exact.detach(), rtol=0.05, atol=0.05 * float(exact.abs().max())
    )
    assert float((summed_g - exact).norm()) > 0.3 * float(exact.norm())


def test_shattered_gradients_draw_nothing_and_match_eval_mode_without_batch_norm() -> None:
    # stochastic depth and a dropout shortcut: eval mode, nothing drawn from the global generator
    for raw in ({"norm": "none", "drop_path": 0.5}, {"norm": "batch", "shortcut": "dropout"}):
        net = net_of(VECTORS, depth=8, width=32, activation="post", **raw)
        state = torch.get_rng_state()
        first = shattered_gradients(net, (16,), torch.Generator().manual_seed(3))
        assert torch.equal(torch.get_rng_state(), state)
        torch.manual_seed(123)
        assert shattered_gradients(net, (16,), torch.Generator().manual_seed(3)) == first
        if raw["norm"] == "none":  # no norm: exactly what eval mode measured before
            assert first["autocorr"] == eval_mode_autocorr(net, (16,), 3)


def test_shattered_gradients_of_linear_nets_are_constant_with_batch_norm_too() -> None:
    for norm in ("none", "batch"):
        linear = net_of(VECTORS, depth=8, width=64, act="identity", norm=norm)
        found = shattered_gradients(linear, (16,), torch.Generator().manual_seed(1))
        assert found["autocorr"] == [1.0] * 33, norm


# -- lesion -----------------------------------------------------------------------------------

TRAINED = {
    "model": {"family": "mlp", "depth": 12, "width": 16, "norm": "batch", "activation": "mid"},
    "train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "epochs": 4, "batch_size": 64},
}


def lesioned_after_training(shortcut: str) -> dict[str, Any]:
    config = {**TRAINED, "model": {**TRAINED["model"], "shortcut": shortcut}}
    probes = ProbesSpec.model_validate({"lesion": {"draws": 10}})
    return probe_trial(config, probes, epochs=4)["lesion"]


def test_lesion_error_grows_with_k_in_a_resnet_and_a_plain_net_collapses_at_k1() -> None:
    resnet, plain = lesioned_after_training("identity"), lesioned_after_training("none")
    for found in (resnet, plain):  # 6 units: k = 1 ... 3
        assert len(found["error_by_k"]) == 3 and found["kmax"] == 3
        assert found["error_k1"] == found["error_by_k"][0]
        assert found["error_kmax"] == found["error_by_k"][-1]
        assert found["error_k1"] == pytest.approx(1 - statistics.fmean(found["single"]))
    # measured: resnet whole 0.955, error 0.062, 0.073, 0.093; plain whole 0.81, error 0.89-0.90
    assert resnet["whole"] > 0.9 and resnet["error_k1"] < 0.2  # chance is 0.9
    assert resnet["error_by_k"] == sorted(resnet["error_by_k"])
    assert resnet["error_kmax"] > resnet["error_k1"]
    assert plain["whole"] > 0.6 and plain["error_k1"] >= 0.8


def test_lesion_draws_repeat_and_small_k_enumerates_every_set() -> None:
    digits = data.load(DataSpec())
    x, y = digits.x_test, digits.y_test
    net = net_of(digits.shape, depth=16, width=16)  # 8 units
    seeded = [lesion(net, x, y, torch.Generator().manual_seed(s), draws=5) for s in (0, 0, 1)]
    assert seeded[0] == seeded[1] and len(seeded[0]["error_by_k"]) == 4
    assert seeded[0]["error_by_k"][1:] != seeded[2]["error_by_k"][1:]  # C(8, k) > 5: drawn
    # C(4, 2) = 6 sets <= 10 draws: every pair is removed once, whatever the generator
    small = net_of(digits.shape, depth=8, width=16)
    a = lesion(small, x, y, torch.Generator().manual_seed(0), draws=10)
    b = lesion(small, x, y, torch.Generator().manual_seed(9), draws=10)
    assert a == b and a["kmax"] == 2
    pairs = []
    for pair in itertools.combinations(range(4), 2):
        with small.lesioned(pair):
            pairs.append(float((small.eval()(x).argmax(1) != y).float().mean()))
    assert a["error_by_k"][1] == pytest.approx(statistics.fmean(pairs))


def test_lesion_probe_options_and_metrics() -> None:
    assert LesionProbe().k is None and LesionProbe().draws == 10
    digits = data.load(DataSpec())
    net = net_of(digits.shape, depth=8, width=16)
    probe_data = ProbeData.of(digits, loss_fn("ce", 10))
    options = LesionProbe(k=3, draws=2).model_dump()
    found = PROBES["lesion"](net, probe_data, options, torch.Generator().manual_seed(0))
    assert len(found["error_by_k"]) == 3
    metrics = scalars({"lesion": found})
    assert set(metrics) == {
        "lesion.whole",
        "lesion.error_k1",
        "lesion.error_kmax",
        "lesion.kmax",
        "lesion.error_increase_k1",
        "lesion.error_increase_kmax",
    }
    unlesioned = 1 - metrics["lesion.whole"]  # the increase is over the same net's own error
    for k in ("k1", "kmax"):
        increase = metrics[f"lesion.error_increase_{k}"]
        assert increase == pytest.approx(metrics[f"lesion.error_{k}"] - unlesioned)


# -- the mnist family's conv0 -------------------------------------------------------------------


def test_mnist_conv0_is_followed_by_relu() -> None:
    net = net_of(DataShape((1, 28, 28), 10), family="mnist")  # 25 units, 16 channels
    assert sum(p.numel() for p in net.parameters()) == 117_802
    assert isinstance(net.stem.conv0, torch.nn.Conv2d)
    assert isinstance(net.stem.act, torch.nn.ReLU)
    assert list(net.stem) == [net.stem.conv0, net.stem.act]
    with torch.no_grad():  # conv0's outputs all negative: the first unit sees zeros
        net.stem.conv0.weight.zero_()
        net.stem.conv0.bias.fill_(-1.0)
    seen: list[torch.Tensor] = []
    hook = net.units[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        net.eval()(torch.randn(2, 1, 28, 28))
    finally:
        hook.remove()
    assert torch.equal(seen[0], torch.zeros(2, 16, 28, 28))


def test_mnist_full_preact_stem_is_conv0_alone_and_looks_linear_stays_linear() -> None:
    raw = {"family": "mnist", "depth": 3, "channels": 4, "activation": "full_preact"}
    net = net_of(IMAGES, {"scheme": "looks_linear"}, act="crelu", norm="none", **raw).eval()
    assert list(net.stem) == [net.stem.conv0]  # its units start with σ(N(x)) themselves
    a, b = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        bias = net(torch.zeros(1, 1, 8, 8))
        combined = net(2 * a - 3 * b) - bias
        assert torch.allclose(combined, 2 * (net(a) - bias) - 3 * (net(b) - bias), atol=1e-4)


def test_mnist_full_preact_ends_with_norm_and_relu_before_pooling_and_trains() -> None:
    """He et al. 2016: pre-activation units leave their sum unnormalized; the net ends with N, σ.
    Without them the pooled sum went through σ alone and the relu arm stayed at 30% accuracy."""
    shape = DataShape((1, 8, 8), 10)
    preact = net_of(shape, family="mnist", depth=4, channels=8, activation="full_preact")
    kinds = [type(m).__name__ for m in preact.head]
    assert kinds == ["BatchNorm2d", "ReLU", "AdaptiveAvgPool2d", "Flatten", "Linear"]
    post = net_of(shape, family="mnist", depth=4, channels=8)
    assert [type(m).__name__ for m in post.head] == [
        "AdaptiveAvgPool2d",
        "Flatten",
        "ReLU",
        "Linear",
    ]
    from resablate.spec.catalog import trial_config
    from resablate.trial.train import run_trial

    config = {
        "model": {"family": "mnist", "depth": 8, "channels": 8, "activation": "full_preact"},
        "train": {"epochs": 6, "batch_size": 32, "lr": 0.05},
    }
    trained = trial_config(config)
    assert run_trial(trained)["train_acc"] > 0.8  # 0.93 here; 0.38 without the ending N, σ
