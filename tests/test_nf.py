"""Normalizer-free ResNets (science.md §3 ``nf``; Brock, De, Smith 2021, arXiv 2101.08692) keep
their forward variance on the analytic schedule β_l², projecting shortcuts included, and the
signal-propagation study compares unnormalized inits under one activation placement (§7.4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resablate import models
from resablate.data import DataShape
from resablate.models.init import ScaledWS
from resablate.plan import make_plan
from resablate.probes.spp import noise_batch, signal_propagation
from resablate.spec import InitSpec, ModelSpec
from tests.conftest import SWEEPS

SHAPE = DataShape((3, 32, 32), 10)
ALPHA = 0.2


def nf_net(depth: int, shortcut: str, activation: str = "full_preact", seed: int = 0) -> nn.Module:
    """ResNet-``depth`` of the imagenet family with a CIFAR stem, init ``nf``, no norm; with
    ``full_preact`` this is Brock et al.'s NF-ResNet: stem conv, x + α·F(x/β), final σ."""
    raw = {
        "family": "imagenet",
        "depth": depth,
        "stem": "cifar",
        "norm": "none",
        "activation": activation,
        "shortcut": shortcut,
        "downsample": "B",
    }
    model = ModelSpec(**{**models.FAMILIES["imagenet"].defaults(raw), **raw})
    init = InitSpec(scheme="nf", alpha=ALPHA)
    models.check(model, init, SHAPE)
    return models.build(model, init, SHAPE, torch.Generator().manual_seed(seed))


def projections(unit: nn.Module) -> list[nn.Conv2d]:
    """The 1×1 convolutions of a unit's shortcut h."""
    return [m for m in unit.shortcut.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("shortcut", ["identity", "conv"])
@pytest.mark.parametrize("depth", [18, 50, 101])
def test_forward_variance_stays_on_the_beta_schedule(depth: int, shortcut: str) -> None:
    # the spp probe with input: noise, as Brock et al. plot it: unit l's output is unit l+1's
    # input, whose expected variance is β_{l+1}²; the last unit adds α² to β_L² (or to 1)
    net = nf_net(depth, shortcut)
    g = torch.Generator().manual_seed(1)
    x, y = noise_batch(SHAPE.input_shape, 8, g), torch.randint(0, SHAPE.classes, (8,), generator=g)
    found = signal_propagation(net, x, y, F.cross_entropy)
    measured = found["fwd_var"]
    betas2 = [unit.plan.nf_beta**2 for unit in net.units]
    last = (1.0 if shortcut == "conv" else betas2[-1]) + ALPHA**2
    expected = [*betas2[1:], last]
    ratios = [m / e for m, e in zip(measured, expected, strict=True)]
    assert all(0.5 < r < 2.0 for r in ratios), [f"{r:.3g}" for r in ratios]
    # the recorded summary: the largest of these factors, either way
    assert found["nf_ratio"] == pytest.approx(max(max(r, 1 / r) for r in ratios))


@pytest.mark.parametrize("depth", [8, 32])
def test_the_dense_family_standardizes_its_stem_and_stays_on_schedule(depth: int) -> None:
    # as the conv families' stems (Brock et al.'s code): a He stem would double the input's
    # variance and put every unit about 2x above its β² (seen in the cpu signal_propagation run)
    shape = DataShape((64,), 10)
    raw = {"family": "mlp", "depth": depth, "width": 32, "activation": "full_preact"}
    model = ModelSpec(**{**models.FAMILIES["mlp"].defaults(raw), **raw})
    net = models.build(model, InitSpec(scheme="nf"), shape, torch.Generator().manual_seed(0))
    assert_standardized(net.stem[1].weight, 1.0)
    g = torch.Generator().manual_seed(1)
    x, y = noise_batch((64,), 256, g), torch.randint(0, 10, (256,), generator=g)
    assert signal_propagation(net, x, y, F.cross_entropy)["nf_ratio"] < 1.25


def assert_standardized(w: Tensor, gamma: float) -> None:
    """Ŵ = γ·(W − mean(W))/(std(W)·√fan_in): per output channel mean 0, fan_in·var = γ²."""
    w = w.detach()
    dims = tuple(range(1, w.dim()))
    assert torch.allclose(w.mean(dim=dims), torch.zeros(w.shape[0]), atol=1e-6)
    per_channel = w.var(dim=dims, unbiased=False) * w[0].numel()
    assert torch.allclose(per_channel, torch.full_like(per_channel, gamma**2), rtol=1e-3)


@pytest.mark.parametrize("activation", ["relu_preact", "full_preact"])
@pytest.mark.parametrize("shortcut", ["identity", "conv"])
def test_projections_are_scaled_weight_standardized(shortcut: str, activation: str) -> None:
    net = nf_net(50, shortcut, activation)
    found = 0
    for unit in net.units:
        for conv in projections(unit):
            assert_standardized(conv.weight, ScaledWS.GAMMA_RELU)  # it reads σ(x/β)
            found += 1
        for layer in unit.weights:  # a ReLU precedes every branch weight of a pre-act unit
            assert_standardized(layer.weight, ScaledWS.GAMMA_RELU)
    # downsample B projects in each stage's first unit, shortcut conv in every unit
    assert found == (len(net.units) if shortcut == "conv" else 4)
    assert_standardized(net.stem[0].weight, 1.0)  # Brock et al.: no σ precedes the stem


def test_nf_init_is_seeded_and_bit_identical() -> None:
    a, b, c = (nf_net(18, "conv", seed=s).state_dict() for s in (3, 3, 4))
    stored = [k for k in a if k.endswith("original")]  # the weights Scaled WS standardizes
    assert any(k.startswith("stem") for k in stored) and any("shortcut" in k for k in stored)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.equal(a[k], c[k]) for k in stored)


def test_relu_gain_is_the_analytic_one() -> None:
    assert ScaledWS.gain(nn.ReLU()) == pytest.approx(math.sqrt(2 / (1 - 1 / math.pi)), rel=1e-6)
    assert ScaledWS.gain(nn.Identity()) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("activation", ["relu_preact", "full_preact"])
@pytest.mark.parametrize("shortcut", ["identity", "conv"])
def test_a_projection_reads_what_the_branch_reads(shortcut: str, activation: str) -> None:
    # Brock et al.'s NF-ResNet: out = σ(x)·(1/β); the projection and conv0 both read it
    net = nf_net(18, shortcut, activation)
    seen: dict[str, Tensor] = {}

    def keep(key: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            seen[key] = args[0].detach()

        return hook

    handles = []
    for i, unit in enumerate(net.units):
        handles.append(unit.register_forward_pre_hook(keep(f"x{i}")))
        handles.append(unit.weights[0].register_forward_pre_hook(keep(f"branch{i}")))
        for conv in projections(unit):
            handles.append(conv.register_forward_pre_hook(keep(f"h{i}")))
    try:
        with torch.no_grad():
            net(noise_batch(SHAPE.input_shape, 2, torch.Generator().manual_seed(2)))
    finally:
        for handle in handles:
            handle.remove()
    projecting = [i for i in range(len(net.units)) if f"h{i}" in seen]
    assert projecting == (list(range(8)) if shortcut == "conv" else [2, 4, 6])
    for i in projecting:
        unit = net.units[i]
        assert torch.equal(seen[f"h{i}"], seen[f"branch{i}"])
        assert torch.allclose(seen[f"h{i}"], torch.relu(seen[f"x{i}"] / unit.plan.nf_beta))


@pytest.mark.parametrize("depth", [18, 50])
def test_conv_shortcuts_reset_beta_after_every_unit(depth: int) -> None:
    for c in (1.0, 2.0):  # c multiplies α²
        init = InitSpec(scheme="nf", alpha=ALPHA, c=c)
        raw = {"family": "imagenet", "depth": depth, "stem": "cifar", "norm": "none"}
        raw |= {"activation": "full_preact", "shortcut": "conv"}
        model = ModelSpec(**{**models.FAMILIES["imagenet"].defaults(raw), **raw})
        net = models.build(model, init, SHAPE, torch.Generator().manual_seed(0))
        betas = [unit.plan.nf_beta for unit in net.units]
        assert betas[0] == 1.0
        assert betas[1:] == pytest.approx([math.sqrt(1 + c * ALPHA**2)] * (len(betas) - 1))


@pytest.mark.parametrize("profile", [None, "cpu"])
def test_signal_propagation_unnormalized_inits_share_one_placement(profile: str | None) -> None:
    # science.md §7.4: arms differ only in what the caption names
    plan = make_plan(SWEEPS / "signal_propagation.yaml", profile=profile)
    unnormalized = [t.config for t in plan.trials if t.config["model"]["norm"] == "none"]
    assert {c["init"]["scheme"] for c in unnormalized} >= {"nf", "taki"}
    assert len({c["model"]["activation"] for c in unnormalized}) == 1
