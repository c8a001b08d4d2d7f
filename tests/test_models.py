"""The residual-network zoo checked against its definitions (science.md §1-§3)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision

from resablate import models
from resablate.errors import ConfigError
from resablate.models.placement import PLACEMENTS, Placement, parse_placement
from resablate.spec.schema import InitSpec, ModelSpec
from resablate.trial.data import DataShape

DIGITS = DataShape((64,), 10)
IMAGES = DataShape((3, 8, 8), 10)


def spec(**raw: Any) -> ModelSpec:
    """A model spec with the family's defaults for what ``raw`` leaves out (as a trial gets)."""
    family = raw.setdefault("family", "mlp")
    return ModelSpec(**{**models.FAMILIES[family].defaults(raw), **raw})


def build(seed: int = 0, shape: DataShape = DIGITS, init: dict | None = None, **raw: Any):
    gen = torch.Generator().manual_seed(seed)
    model, init_spec = spec(**raw), InitSpec(**(init or {}))
    models.check(model, init_spec, shape)
    return models.build(model, init_spec, shape, gen)


def branch_weights(net: torch.nn.Module) -> list[torch.Tensor]:
    return [layer.weight for unit in net.units for layer in unit.weights]


# -- families and parameter counts ---------------------------------------------------------------


@pytest.mark.parametrize("depth,n", [(2, 1), (4, 2), (6, 3), (8, 4)])
def test_mlp_structure_and_param_count(depth: int, n: int) -> None:
    placement = "pre" if n == 1 else "mid"  # a one-layer branch has no mid position
    net = build(depth=depth, shortcut_depth=n, width=16, activation=placement)
    assert len(net.units) == depth // n
    assert all(len(unit.weights) == n for unit in net.units)
    expected = depth * 16 * 16 + 64 * 16 + 16 * 10  # units, stem, head; no biases
    assert (
        models.count_params(
            spec(depth=depth, shortcut_depth=n, width=16, activation=placement), InitSpec(), DIGITS
        )
        == expected
    )
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net(torch.randn(5, 64)).shape == (5, 10)


def test_paper_network_has_no_stem_or_head() -> None:
    # whitened to d = 10 components, 10 one-hot outputs: exactly Demystifying ResNet's network
    count = models.count_params(spec(depth=6, width=10), InitSpec(), DataShape((10,), 10))
    assert count == 6 * 10 * 10


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_imagenet_family_matches_torchvision_exactly(depth: int) -> None:
    reference = getattr(torchvision.models, f"resnet{depth}")()
    ours = models.count_params(
        spec(family="imagenet", depth=depth), InitSpec(), DataShape((3, 224, 224), 1000)
    )
    assert ours == sum(p.numel() for p in reference.parameters())


def test_imagenet_forward_matches_torchvision_shapes_and_cifar_stem() -> None:
    net = build(family="imagenet", depth=18, shape=DataShape((3, 64, 64), 7))
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    small = build(family="imagenet", depth=18, stem="cifar", shape=DataShape((3, 32, 32), 10))
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in small.stem)


@pytest.mark.parametrize(
    "depth,millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)]
)
def test_cifar_option_a_matches_he_2015(depth: int, millions: float) -> None:
    count = models.count_params(
        spec(family="cifar", depth=depth), InitSpec(), DataShape((3, 32, 32), 10)
    )
    digits = 2 if millions < 1 else 1
    assert round(count / 1e6, digits) == millions


def test_cifar_bottleneck_is_9k_plus_2_with_4x_expansion() -> None:
    net = build(family="cifar", block="bottleneck", depth=29, shape=DataShape((3, 16, 16), 10))
    assert len(net.units) == 9 and all(len(u.weights) == 3 for u in net.units)
    assert [u.plan.widths[-1] for u in net.units][::3] == [64, 128, 256]
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_mnist_family_is_the_lecture_network() -> None:
    net = build(family="mnist", depth=3, shape=DataShape((1, 8, 8), 10))
    assert net.stem.conv0.kernel_size == (1, 1) and net.stem.conv0.bias is not None
    assert len(net.units) == 3 and all(w.bias is not None for w in net.units[0].weights)
    # conv0 (1->16) + 3 units of 2 (conv 16·16·9 + bias, BN) + linear 16->10
    expected = (16 + 16) + 3 * 2 * (16 * 16 * 9 + 16 + 2 * 16) + (16 * 10 + 10)
    assert sum(p.numel() for p in net.parameters()) == expected


@pytest.mark.parametrize(
    "family,depth,legal",
    [
        ("mlp", 3, "legal depths are 2, 4, 6"),
        ("cifar", 21, r"nearest legal depths 20, 26, 14 \(all: 8, 14, 20, 26"),
        ("imagenet", 19, "legal depths are 18, 34, 50, 101, 152"),
    ],
)
def test_illegal_depths_name_the_legal_ones(family: str, depth: int, legal: str) -> None:
    shape = DIGITS if family == "mlp" else IMAGES
    with pytest.raises(ConfigError, match=legal) as found:
        models.check(spec(family=family, depth=depth), InitSpec(), shape)
    assert found.value.field == "model.depth"


@pytest.mark.parametrize(
    "raw,init,field,reason",
    [
        ({"act": "relu"}, {"scheme": "looks_linear"}, "init.scheme", "set model.act: crelu"),
        ({"act": "crelu", "activation": "post"}, {}, "model.act", "crelu doubles the width"),
        ({"norm": "batch"}, {"scheme": "fixup"}, "init.scheme", "replaces normalization"),
        (
            {"shortcut_depth": 1, "depth": 4, "activation": "pre"},
            {"scheme": "fixup"},
            "init.scheme",
            "undefined",
        ),
        ({"shortcut_depth": 1, "activation": "mid"}, {}, "model.activation", "one-layer branch"),
        ({"activation": "mid"}, {"scheme": "nf"}, "model.activation", "pre-activation"),
        ({"norm": "none"}, {"scheme": "zero_last"}, "init.scheme", "needs a norm"),
        ({"shortcut": "scalar"}, {"scheme": "skipinit"}, "init.scheme", "SkipInit"),
        ({"norm": "group", "groups": 3, "width": 10}, {}, "model.groups", "cannot be built"),
        ({"family": "imagenet", "depth": 50, "block": "basic"}, {}, "model.block", "bottleneck"),
    ],
)
def test_undefined_combinations_are_errors_with_the_reason(
    raw: dict, init: dict, field: str, reason: str
) -> None:
    shape = IMAGES if raw.get("family", "mlp") != "mlp" else DIGITS
    with pytest.raises(ConfigError, match=reason) as found:
        models.check(spec(**raw), InitSpec(**init), shape)
    assert found.value.field == field


# -- every registered variant builds and trains a step -------------------------------------------

EVERY_PLACEMENT = [*PLACEMENTS, "pre", "mid", "pre+mid+post_branch", "linear"]
FAMILY_SHAPES = {
    "mlp": DIGITS,
    "mnist": DataShape((1, 6, 6), 10),
    "cifar": IMAGES,
    "imagenet": DataShape((3, 16, 16), 10),
}
FAMILY_RAW = {
    "mlp": {"depth": 4, "width": 8},
    "mnist": {"depth": 2, "channels": 4},
    "cifar": {"depth": 8, "channels": 4},
    "imagenet": {"depth": 18, "channels": 4, "stem": "cifar"},
}


def _trains_a_step(shape: DataShape, init: dict, **raw: Any) -> None:
    """Build, run forward and backward: the output and every gradient are finite."""
    net = build(shape=shape, init=init, **raw)
    x = torch.randn(4, *shape.input_shape)
    out = net(x)
    assert out.shape == (4, shape.classes)
    out.square().mean().backward()
    assert bool(torch.isfinite(out).all())
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in net.parameters())


@pytest.mark.parametrize("family", list(FAMILY_SHAPES))
@pytest.mark.parametrize("shortcut", models.SHORTCUTS.names())
def test_every_shortcut_and_placement_builds_in_every_family(family: str, shortcut: str) -> None:
    for placement, downsample in itertools.product(EVERY_PLACEMENT, ("A", "B")):
        raw = dict(FAMILY_RAW[family], family=family, shortcut=shortcut, activation=placement)
        raw.update(downsample=downsample, norm="batch")
        _trains_a_step(FAMILY_SHAPES[family], {}, **raw)  # all legal with relu


def _refusals(placement: str, norm: str, act: str, scheme: str) -> list[str]:
    """Why science.md leaves a combination undefined (§1.6, §3); empty where it is defined."""
    # the zeroed γ of zero_last feeds a ReLU at 0 (σ'(0) = 0) in full_preact's F = N σ W N σ W
    feeds_dead_relu = placement == "full_preact" and act in ("relu", "crelu")
    rules = [
        (scheme in ("fixup", "nf") and norm != "none", "replaces normalization"),
        (scheme == "nf" and placement != "full_preact", "nf units are full pre-activation"),
        (scheme == "zero_last" and norm == "none", "it needs a norm"),
        (scheme == "zero_last" and norm != "none" and feeds_dead_relu, "never trains"),
        (scheme == "looks_linear" and act != "crelu", "looks_linear mirrors weights"),
        # σ on the unit's output (post) or on the stem (post, relu_preact)
        (act == "crelu" and placement in ("post", "relu_preact"), "crelu doubles the width"),
    ]
    return [reason for broken, reason in rules if broken]


@pytest.mark.parametrize("norm", models.NORMS.names())
@pytest.mark.parametrize("act", models.ACTS.names())
@pytest.mark.parametrize("scheme", models.INITS.names())
def test_every_norm_act_and_init_builds(norm: str, act: str, scheme: str) -> None:
    for family, placement in itertools.product(
        ("mlp", "cifar"), ("full_preact", "relu_preact", "post", "pre+mid")
    ):
        raw = dict(FAMILY_RAW[family], family=family, norm=norm, act=act, activation=placement)
        raw.update(groups=2, drop_path=0.2)
        reasons = _refusals(placement, norm, act, scheme)
        if not reasons:
            _trains_a_step(FAMILY_SHAPES[family], {"scheme": scheme}, **raw)
            continue
        with pytest.raises(ConfigError) as refused:
            build(shape=FAMILY_SHAPES[family], init={"scheme": scheme}, **raw)
        assert any(reason in str(refused.value) for reason in reasons), str(refused.value)


# -- the equations -------------------------------------------------------------------------------


def unit_of(**raw: Any) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    net = build(depth=2, width=6, shortcut_depth=2, init={"scheme": "xavier"}, **raw)
    unit = net.units[0].eval()
    return unit, [w.weight for w in unit.weights]


def ln(z: torch.Tensor) -> torch.Tensor:  # norm "layer" at its init (γ = 1, β = 0)
    return F.group_norm(z, 1, eps=1e-5)


X = torch.randn(5, 6)


@pytest.mark.parametrize(
    "placement,formula",
    [
        ("post", lambda x, w1, w2: F.relu(x + ln(F.relu(ln(x @ w1.T)) @ w2.T))),
        ("bn_after_add", lambda x, w1, w2: F.relu(ln(x + F.relu(ln(x @ w1.T)) @ w2.T))),
        ("relu_before_add", lambda x, w1, w2: x + F.relu(ln(F.relu(ln(x @ w1.T)) @ w2.T))),
        ("relu_preact", lambda x, w1, w2: x + ln(F.relu(ln(F.relu(x) @ w1.T)) @ w2.T)),
        ("full_preact", lambda x, w1, w2: x + F.relu(ln(F.relu(ln(x)) @ w1.T)) @ w2.T),
        ("pre+post_branch", lambda x, w1, w2: x + F.relu(ln(ln(F.relu(x) @ w1.T) @ w2.T))),
        ("linear", lambda x, w1, w2: x + ln(ln(x @ w1.T) @ w2.T)),
    ],
)
def test_placements_compute_identity_mappings_equations(placement: str, formula: Any) -> None:
    unit, (w1, w2) = unit_of(activation=placement, norm="layer")
    with torch.no_grad():
        assert torch.allclose(unit(X), formula(X, w1, w2), atol=1e-5)


@pytest.mark.parametrize(
    "placement,n,branch,after",
    [  # science.md §1.4's rows, read from the inside out
        ("post", 2, "W N σ W N", "σ"),
        ("bn_after_add", 2, "W N σ W", "N σ"),
        ("relu_before_add", 2, "W N σ W N σ", ""),
        ("relu_preact", 2, "σ W N σ W N", ""),
        ("full_preact", 2, "N σ W N σ W", ""),
        ("full_preact", 3, "N σ W N σ W N σ W", ""),
        ("pre+post_branch", 1, "σ W N σ", ""),
    ],
)
def test_units_hold_their_rows_in_order(placement: str, n: int, branch: str, after: str) -> None:
    unit = build(depth=2 * n, width=6, shortcut_depth=n, activation=placement).units[0]
    assert str(unit.branch_steps) == branch and f"F = {branch}," in repr(unit)
    assert str(unit.after_steps) == (after or "identity")


@pytest.mark.parametrize(
    "shortcut,extra,formula",
    [
        ("identity", {}, lambda x, f, u: x + f),
        ("none", {}, lambda x, f, u: f),
        ("scale", {"lambda": 0.5, "branch_scale": 0.25}, lambda x, f, u: 0.5 * x + 0.25 * f),
        (
            "gate",
            {"gate_bias": -2.0},
            lambda x, f, u: (
                (g := torch.sigmoid(x @ u.shortcut.gate.weight.T - 2.0)) * f + (1 - g) * x
            ),
        ),
        (
            "shortcut_gate",
            {"gate_bias": -2.0},
            lambda x, f, u: f + (1 - torch.sigmoid(x @ u.shortcut.gate.weight.T - 2.0)) * x,
        ),
        ("conv", {}, lambda x, f, u: x @ u.shortcut.h[0].weight.T + f),
        ("dropout", {"p": 0.2}, lambda x, f, u: 0.8 * x + f),  # eval mode: the expectation
        ("scalar", {"alpha_init": 0.3}, lambda x, f, u: x + 0.3 * f),
    ],
)
def test_shortcuts_compute_their_sums(shortcut: str, extra: dict, formula: Any) -> None:
    unit, (w1, w2) = unit_of(activation="mid", norm="none", shortcut=shortcut, **extra)
    f = F.relu(X @ w1.T) @ w2.T
    with torch.no_grad():
        assert torch.allclose(unit(X), formula(X, f, unit), atol=1e-5)


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_dropout_shortcut_keeps_the_shortcut_unscaled_with_expectation_1_minus_p(p: float) -> None:
    unit, (w1, w2) = unit_of(activation="mid", shortcut="dropout", p=p)
    f = F.relu(X @ w1.T) @ w2.T
    unit.train()
    torch.manual_seed(0)
    with torch.no_grad():
        draws = torch.stack([unit(X) - f for _ in range(400)])
    kept = draws != 0
    assert torch.allclose(draws[kept], X.expand_as(draws)[kept], atol=1e-5)  # m⊙x, no 1/(1−p)
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.01)
    # the shortcut's expected scale is 1 − p (He et al. 2016: 0.5 for p = 0.5) ...
    assert torch.allclose(draws.mean(dim=0), (1 - p) * X, atol=0.1 * float(X.abs().max()))
    unit.eval()
    with torch.no_grad():  # ... and evaluation uses that expectation
        assert torch.allclose(unit(X), (1 - p) * X + f, atol=1e-5)


def test_option_a_subsamples_and_pads_zero_channels() -> None:
    net = build(
        family="cifar",
        depth=8,
        channels=4,
        shape=IMAGES,
        norm="none",
        activation="relu_before_add",
    )
    unit = net.units[1]  # first unit of stage 2: 4 -> 8 channels, stride 2
    x = torch.randn(2, 4, 8, 8)
    h = unit.shortcut.h(x)
    assert h.shape == (2, 8, 4, 4)
    assert torch.equal(h[:, :4], x[:, :, ::2, ::2]) and not h[:, 4:].any()
    assert sum(p.numel() for p in unit.shortcut.parameters()) == 0
    b = build(family="cifar", depth=8, channels=4, shape=IMAGES, downsample="B").units[1]
    assert isinstance(b.shortcut.h[0], torch.nn.Conv2d) and b.shortcut.h[0].stride == (2, 2)


def test_stochastic_depth_decays_linearly_and_scales_at_test() -> None:
    net = build(depth=8, width=6, drop_path=0.5)
    assert [u.plan.survival for u in net.units] == [1 - (i / 4) * 0.5 for i in range(1, 5)]
    unit = net.units[-1].eval()  # survival 0.5
    w1, w2 = (w.weight for w in unit.weights)
    with torch.no_grad():
        assert torch.allclose(unit(X), X + 0.5 * (F.relu(X @ w1.T) @ w2.T), atol=1e-5)
    unit.train()
    outs = {bool(torch.equal(unit(X), X)) for _ in range(40)}
    assert outs == {True, False}  # the whole branch is dropped in some mini-batches


def test_lesion_keeps_the_shortcut_and_drops_the_branch() -> None:
    net = build(family="cifar", depth=8, channels=4, shape=IMAGES).eval()
    x = torch.randn(2, 3, 8, 8)
    unit = net.units[1]
    inner = net.stem(x)
    inner = net.units[0](inner)
    whole = net(x)
    with torch.no_grad(), net.lesioned([1]):
        assert torch.allclose(unit(inner), F.relu(unit.shortcut.h(inner)))
        assert not torch.allclose(net(x), whole)
    assert torch.equal(net(x), whole) and not unit.lesioned  # whole again


# -- initializations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme,c,variance",
    [
        ("he", 1.0, 2 / 256),
        ("he", 0.25, 0.25 * 2 / 256),
        ("xavier", 1.0, 2 / 512),
        ("xavier", 3.0, 3 * 2 / 512),
        ("orthogonal", 2.0, 2.0 / 256),  # an orthogonal square matrix has entry variance 1/d
    ],
)
def test_branch_weight_variance_is_c_times_the_scheme(
    scheme: str, c: float, variance: float
) -> None:
    net = build(depth=4, width=256, init={"scheme": scheme, "c": c})
    weights = torch.cat([w.detach().flatten() for w in branch_weights(net)])
    assert weights.var().item() == pytest.approx(variance, rel=0.03)
    assert abs(weights.mean().item()) < 4 * math.sqrt(variance / weights.numel())
    # the stem stays He with c = 1 whatever the branch scale
    assert net.stem[1].weight.var().item() == pytest.approx(2 / 64, rel=0.1)


def test_orthogonal_branch_weights_are_orthogonal_with_gain_root_c() -> None:
    net = build(depth=2, width=32, init={"scheme": "orthogonal", "c": 4.0})
    w = branch_weights(net)[0].detach()
    assert torch.allclose(w @ w.T, 4.0 * torch.eye(32), atol=1e-4)


def test_zero_init_is_the_exact_zero_point_and_eps_perturbs_it() -> None:
    exact = build(depth=4, width=32, init={"scheme": "zero", "eps": 0.0})
    assert all(bool((w == 0).all()) for w in branch_weights(exact))
    x = torch.randn(7, 32)
    assert torch.equal(exact.units[0](x), x)  # identity shortcut, zero branch: the identity
    plain = build(depth=4, width=32, shortcut="none", init={"scheme": "zero", "eps": 0.0})
    assert torch.equal(plain.units[0](x), torch.zeros_like(x))
    small = build(depth=4, width=128, init={"scheme": "zero", "eps": 1e-3})
    weights = torch.cat([w.detach().flatten() for w in branch_weights(small)])
    assert weights.std().item() == pytest.approx(1e-3 * (2 / 256) ** 0.5, rel=0.05)


def test_looks_linear_network_is_exactly_linear_at_init() -> None:
    for raw in (
        {"activation": "pre+mid"},
        {"family": "cifar", "depth": 8, "channels": 4, "activation": "full_preact"},
    ):
        shape = IMAGES if raw.get("family") == "cifar" else DataShape((16,), 10)
        net = build(
            shape=shape, init={"scheme": "looks_linear"}, act="crelu", norm="none", width=16, **raw
        ).eval()
        a, b = torch.randn(3, *shape.input_shape), torch.randn(3, *shape.input_shape)
        bias = net(torch.zeros(1, *shape.input_shape))  # the classifier's bias (zero at init)
        with torch.no_grad():
            combined = net(2 * a - 3 * b) - bias
            assert torch.allclose(combined, 2 * (net(a) - bias) - 3 * (net(b) - bias), atol=1e-4)
        he = build(shape=shape, act="crelu", norm="none", width=16, **raw).eval()
        with torch.no_grad():
            assert not torch.allclose(he(-a), -he(a), atol=1e-3)  # ReLU nets: only homogeneous


def test_fixup_skipinit_zero_last_start_each_unit_as_its_shortcut() -> None:
    x = torch.randn(5, 6)
    for raw, scheme in (
        ({"norm": "none"}, "fixup"),
        ({}, "skipinit"),
        ({"norm": "batch", "activation": "relu_preact"}, "zero_last"),
    ):
        net = build(depth=4, width=6, init={"scheme": scheme}, **raw).eval()
        with torch.no_grad():
            assert torch.allclose(net.units[0](x), x, atol=1e-6), scheme
    raw = {"norm": "batch", "activation": "bn_after_add"}
    with pytest.raises(ConfigError, match="branch has none"):  # F = W, f = N σ: no N in F
        build(depth=2, shortcut_depth=1, init={"scheme": "zero_last"}, **raw)
    fixup = build(depth=4, width=6, norm="none", init={"scheme": "fixup"})
    assert str(fixup.units[0].branch_steps) == "+a W +b N σ +a W ×s +b N"  # scalars around W
    assert not fixup.head.weight.any()  # the classifier starts at zero
    assert all(not u.weights[-1].weight.any() for u in fixup.units)
    first = fixup.units[0].weights[0].weight.detach()
    assert first.var().item() == pytest.approx(2 / 6 * 2 ** (-1.0), rel=0.6)  # L^(−1/(2m−2))


def test_nf_standardizes_weights_and_keeps_variance_on_its_schedule() -> None:
    net = build(
        family="cifar",
        depth=14,
        channels=16,
        shape=DataShape((3, 16, 16), 10),
        norm="none",
        activation="full_preact",
        init={"scheme": "nf", "alpha": 0.2},
    )
    w = net.units[0].weights[0].weight.detach()  # the standardized weight
    fan_in = w[0].numel()
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.zeros(w.shape[0]), atol=1e-5)
    per_channel = w.var(dim=(1, 2, 3), unbiased=False) * fan_in
    assert torch.allclose(
        per_channel, torch.full_like(per_channel, 2 / (1 - 1 / math.pi)), rtol=1e-2
    )
    betas = [u.plan.nf_beta for u in net.units]
    assert betas[0] == 1.0 and betas[1] == pytest.approx(math.sqrt(1.04))
    assert betas[2] == pytest.approx(math.sqrt(1.08))
    # option A (the cifar default) keeps 16 of x/β's 32 channels at unit 2: 16/32 + α²
    assert betas[3] == pytest.approx(math.sqrt(0.5 + 0.04))


def test_init_is_seeded_and_bit_identical() -> None:
    for raw in ({"depth": 4, "width": 16}, {"family": "cifar", "depth": 8, "channels": 4}):
        shape = IMAGES if "family" in raw else DIGITS
        a, b, c = build(3, shape, **raw), build(3, shape, **raw), build(4, shape, **raw)
        sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_placements_parse() -> None:
    assert parse_placement("linear") == Placement("W N W N")
    # a projection reads σ(x), what the first weight reads, wherever σ comes before it
    assert parse_placement("pre+post_branch") == Placement("σ W N W N σ", preact_shortcut=True)
    assert parse_placement("mid") == Placement("W N σ W N")
    assert parse_placement("full_preact").ops(3) == tuple("NσWNσWNσW")
    with pytest.raises(ValueError, match="two-layer branch"):
        Placement("W N σ")
    with pytest.raises(ValueError, match="did you mean 'mid'"):
        parse_placement("mdi")


def test_registries_refuse_duplicates() -> None:
    with pytest.raises(KeyError, match="registered twice"):
        models.SHORTCUTS.add("identity", lambda g, s: None)
