"""The network arms as science.md defines them: projections in pre-activation units read the
unit's σ(N(x)) once (§1.2 ``conv``), zero_last only where its branch can train (§3), ResNet-164
with projections where dimensions grow (§2, §7.2), plain units lesioned by bypass (§1.7)."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resablate import models
from resablate.errors import ConfigError
from resablate.probes.spp import noise_batch, signal_propagation
from resablate.spec.schema import InitSpec, ModelSpec
from resablate.trial.data import DataShape

IMAGES = DataShape((3, 8, 8), 10)


def spec(**raw: Any) -> ModelSpec:
    family = raw.setdefault("family", "mlp")
    return ModelSpec(**{**models.FAMILIES[family].defaults(raw), **raw})


def build(shape: DataShape, init: dict | None = None, seed: int = 0, **raw: Any) -> nn.Module:
    model, init_spec = spec(**raw), InitSpec(**(init or {}))
    models.check(model, init_spec, shape)
    return models.build(model, init_spec, shape, torch.Generator().manual_seed(seed))


def dense(units: int, scheme: str, shortcut: str, activation: str, seed: int, inputs: int = 64):
    """An unnormalized dense net of ``units`` two-layer units of width 64."""
    raw = {"depth": 2 * units, "width": 64, "norm": "none", "shortcut": shortcut}
    return build(DataShape((inputs,), 10), {"scheme": scheme}, seed, activation=activation, **raw)


def spp(net: nn.Module, inputs: int, seed: int) -> tuple[dict[str, Any], Tensor]:
    """The spp probe on a white-noise batch of 256 (Brock et al.), and the batch."""
    g = torch.Generator().manual_seed(1000 + seed)
    x, y = noise_batch((inputs,), 256, g), torch.randint(0, 10, (256,), generator=g)
    return signal_propagation(net, x, y, F.cross_entropy), x


# -- §1.2: a projection in a pre-activation unit reads the unit's σ(N(x)) -----------------------


@pytest.mark.parametrize("activation", ["relu_preact", "full_preact"])
def test_he_conv_shortcuts_double_the_second_moment_as_identity_ones_do(activation: str) -> None:
    # science.md §4: He units without norm double the second moment per unit, a law of the
    # expectation (one seed lands in 2 ± 0.3): the mean over 8 seeds is within ±0.2 of 2.
    # Measured: identity 1.946, conv 1.913; a projection reading raw x with gain 2: 3.02
    growth = {
        shortcut: statistics.mean(
            spp(dense(32, "he", shortcut, activation, seed), 64, seed)[0]["moment_growth"]
            for seed in range(8)
        )
        for shortcut in ("identity", "conv")
    }
    assert growth["identity"] == pytest.approx(2.0, abs=0.2), growth
    assert growth["conv"] == pytest.approx(2.0, abs=0.2), growth


def test_taki_conv_shortcuts_keep_the_last_variance_bounded_as_units_grow() -> None:
    # Taki's c/(nL): (1 + c/(2L))^L -> e^{c/2}, so 2·e^{c/2} times the stem's variance bounds
    # the last unit's (c = 1). Measured last/stem: identity 1.3 at 8, 32, 64 units; conv 0.01
    # to 0.4 (each projection turns part of the variance into channel means); a projection
    # reading raw x: 2.5e2, 4e9, 2e19
    bound = 2 * math.exp(0.5)
    for shortcut in ("identity", "conv"):
        for units in (8, 32, 64):
            for seed in range(3):
                net = dense(units, "taki", shortcut, "full_preact", seed, inputs=32)
                found, x = spp(net, 32, seed)
                with torch.no_grad():
                    stem = float(net.stem(x).var(dim=0).mean())
                assert found["fwd_last"] < bound * stem, (shortcut, units, seed, found)


def count_calls(module: nn.Module) -> list[int]:
    calls = [0]

    def hook(m: nn.Module, args: object, out: object) -> None:
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("shortcut,downsample", [("identity", "B"), ("conv", "A")])
def test_a_full_preact_projection_shares_the_branch_s_one_batch_norm(
    shortcut: str, downsample: str
) -> None:
    net = build(
        IMAGES,
        family="cifar",
        depth=8,
        channels=4,
        activation="full_preact",
        shortcut=shortcut,
        downsample=downsample,
    )
    projecting = [u for u in net.units if u.projects]
    assert len(projecting) == (2 if shortcut == "identity" else 3)  # B at stages 2, 3
    seen: dict[int, list[Tensor]] = {}
    calls = {}
    for i, unit in enumerate(projecting):
        calls[i] = count_calls(unit.norms[0])
        for layer in (unit.weights[0], unit.shortcut.h[0]):
            layer.register_forward_pre_hook(
                lambda m, args, i=i: seen.setdefault(i, []).append(args[0])
            )
    net(torch.randn(2, 3, 8, 8))
    for i, unit in enumerate(projecting):
        assert calls[i] == [1]  # once per forward: one running-statistics update
        assert int(unit.norms[0].num_batches_tracked) == 1
        branch_reads, h_reads = seen[i]
        assert h_reads is branch_reads  # the one tensor σ(N(x))
        assert bool((h_reads >= 0).all())
    assert "h reads F's N σ," in repr(projecting[0])


def test_a_projection_in_a_pre_unit_reads_sigma_of_x() -> None:
    # Demystifying ResNet's pre: F = σ W N W N, and the projection reads σ(x) too
    net = build(DataShape((6,), 10), depth=2, width=6, activation="pre", shortcut="conv")
    unit = net.units[0].eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        h = F.relu(x) @ unit.shortcut.h[0].weight.T
        assert torch.allclose(unit(x), h + unit.branch(x), atol=1e-6)


# -- §3: zero_last where the zeroed γ reaches the sum ---------------------------------------------


@pytest.mark.parametrize(
    "activation", ["bn_after_add", "relu_before_add", "full_preact", "pre+post_branch"]
)
def test_zero_last_is_refused_where_its_norm_feeds_a_relu(activation: str) -> None:
    with pytest.raises(ConfigError, match="feeds a relu at 0 whose derivative is 0") as refused:
        models.check(
            spec(activation=activation, norm="batch"), InitSpec(scheme="zero_last"), IMAGES
        )
    assert refused.value.field == "init.scheme"


@pytest.mark.parametrize(
    "activation,act",
    [("post", "relu"), ("relu_preact", "relu"), ("mid", "relu"), ("full_preact", "tanh")],
)
def test_zero_last_is_allowed_where_its_norm_reaches_the_sum_or_sigma_passes_zero(
    activation: str, act: str
) -> None:
    models.check(
        spec(activation=activation, norm="batch", act=act), InitSpec(scheme="zero_last"), IMAGES
    )


def first_weight_change(activation: str, steps: int) -> float:
    """|ΔW1| of unit 0 after ``steps`` SGD steps, built without the check."""
    shape = DataShape((8,), 4)
    model = spec(depth=4, width=8, activation=activation, norm="batch")
    net = models.build(model, InitSpec(scheme="zero_last"), shape, torch.Generator())
    w1 = net.units[0].weights[0].weight
    before = w1.detach().clone()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 8, generator=g), torch.randint(0, 4, (32,), generator=g)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    return float((w1.detach() - before).abs().max())


def test_zero_last_branches_train_where_allowed_and_never_where_refused() -> None:
    # allowed: γ gets a gradient at step 1, W1 from step 2; refused: σ'(0) = 0 stops all of it
    assert first_weight_change("post", 5) > 1e-4
    assert first_weight_change("relu_preact", 5) > 1e-4
    assert first_weight_change("full_preact", 50) == 0.0
    assert first_weight_change("bn_after_add", 50) == 0.0


# -- §2, §7.2: ResNet-164 and the basic CIFAR nets ----------------------------------------------


@pytest.mark.parametrize("activation", ["post", "full_preact"])
def test_resnet_164_projects_where_dimensions_grow_with_1_7m_parameters(activation: str) -> None:
    shape = DataShape((3, 32, 32), 10)
    model = spec(family="cifar", block="bottleneck", depth=164, activation=activation)
    assert model.downsample == "B"  # the bottleneck family's default
    count = models.count_params(model, InitSpec(), shape)
    assert count == pytest.approx(1.7e6, rel=0.03)  # He et al. 2016: 1.7M; measured 1,704,154
    option_a = models.count_params(model.model_copy(update={"downsample": "A"}), InitSpec(), shape)
    assert option_a == 1_661_274 and count - option_a == 16 * 64 + 64 * 128 + 128 * 256 + 896
    with torch.device("meta"):
        net = models.FAMILIES["cifar"].build(model, InitSpec(), shape)
    growing = [i for i, u in enumerate(net.units) if u.changes_shape]
    assert growing == [0, 18, 36] and all(net.units[i].projects for i in growing)
    assert sum(u.projects for u in net.units) == 3  # identity elsewhere
    # He et al.'s pre-act code: the stride on the bottleneck's first 1×1
    assert net.units[18].weights[0].stride == (2, 2) and net.units[18].weights[1].stride == (1, 1)


@pytest.mark.parametrize("depth,millions", [(20, 0.27), (110, 1.7)])
def test_basic_cifar_nets_keep_option_a(depth: int, millions: float) -> None:
    model = spec(family="cifar", depth=depth)
    assert model.downsample == "A"
    count = models.count_params(model, InitSpec(), DataShape((3, 32, 32), 10))
    assert count == pytest.approx(millions * 1e6, rel=0.03)  # 269,722 and 1,727,962


# -- §1.7: a plain unit is lesioned by bypass -----------------------------------------------------


def without(net: nn.Module, removed: int, x: Tensor) -> Tensor:
    """The net's output with unit ``removed`` taken out of its sequence."""
    z = net.stem(x)
    for i, unit in enumerate(net.units):
        if i != removed:
            z = unit(z)
    return net.head(z)


@pytest.mark.parametrize(
    "raw,shape",
    [
        ({"family": "mnist", "depth": 4, "channels": 4}, DataShape((1, 6, 6), 10)),
        ({"family": "mlp", "depth": 8, "width": 8, "activation": "mid"}, DataShape((8,), 10)),
    ],
)
def test_a_plain_unit_lesioned_is_the_net_without_it(raw: dict, shape: DataShape) -> None:
    net = build(shape, shortcut="none", **raw).eval()
    x = torch.randn(3, *shape.input_shape)
    with torch.no_grad():
        whole = net(x)
        for removed in range(len(net.units)):
            with net.lesioned([removed]):
                assert torch.equal(net(x), without(net, removed, x))
            assert not torch.equal(without(net, removed, x), whole)
        assert torch.equal(net(x), whole)


def test_a_plain_unit_that_changes_shape_is_bypassed_by_option_a() -> None:
    net = build(IMAGES, family="cifar", depth=8, channels=4, shortcut="none").eval()
    unit = net.units[1]  # 4 -> 8 channels, stride 2
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad(), net.lesioned([1]):
        out = unit(x)
    assert out.shape == (2, 8, 4, 4)
    assert torch.equal(out[:, :4], x[:, :, ::2, ::2]) and not out[:, 4:].any()


def test_a_residual_unit_lesioned_keeps_h_and_what_follows_the_sum() -> None:
    net = build(DataShape((6,), 10), depth=4, width=6, activation="post", norm="batch").eval()
    x = torch.randn(5, 6)
    with torch.no_grad(), net.lesioned([0]):
        assert torch.equal(net.units[0](x), F.relu(x))  # σ(x + 0), not a bypass
