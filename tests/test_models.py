"""The mlp family, its units and the init schemes, checked against their definitions."""

from __future__ import annotations

import pytest
import torch

from resablate import models
from resablate.data import DataShape
from resablate.models.placement import Placement, parse_placement
from resablate.spec import InitSpec, ModelSpec

DIGITS = DataShape((64,), 10)


def build(
    seed: int = 0, shape: DataShape = DIGITS, init: dict | None = None, **model
) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    return models.build(ModelSpec(**model), InitSpec(**(init or {})), shape, gen)


def branch_weights(net: torch.nn.Module) -> list[torch.Tensor]:
    return [layer.weight for unit in net.units for layer in unit.weights]


@pytest.mark.parametrize("depth,n", [(2, 1), (4, 2), (6, 3), (8, 4)])
def test_mlp_structure_and_param_count(depth: int, n: int) -> None:
    spec = ModelSpec(depth=depth, shortcut_depth=n, width=16)
    net = build(depth=depth, shortcut_depth=n, width=16)
    assert len(net.units) == depth // n
    assert all(len(unit.weights) == n for unit in net.units)
    expected = depth * 16 * 16 + 64 * 16 + 16 * 10  # units, stem, head; no biases
    assert models.count_params(spec, DIGITS) == expected
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net(torch.randn(5, 64)).shape == (5, 10)


def test_paper_network_has_no_stem_or_head() -> None:
    # whitened to d = 10 components, 10 one-hot outputs: exactly Demystifying ResNet's network
    spec = ModelSpec(depth=6, shortcut_depth=2, width=10)
    assert models.count_params(spec, DataShape((10,), 10)) == 6 * 10 * 10


@pytest.mark.parametrize(
    "scheme,c,variance",
    [
        ("he", 1.0, 2 / 256),
        ("he", 0.25, 0.25 * 2 / 256),
        ("xavier", 1.0, 2 / 512),
        ("xavier", 3.0, 3 * 2 / 512),
    ],
)
def test_branch_weight_variance_is_c_times_the_scheme(
    scheme: str, c: float, variance: float
) -> None:
    net = build(depth=4, width=256, init={"scheme": scheme, "c": c})
    weights = torch.cat([w.flatten() for w in branch_weights(net)])
    assert weights.var().item() == pytest.approx(variance, rel=0.03)
    assert weights.mean().item() == pytest.approx(
        0.0, abs=4 * variance**0.5 / weights.numel() ** 0.5
    )
    # stem and head stay He with c = 1 whatever the branch scale
    assert net.stem.weight.var().item() == pytest.approx(2 / 64, rel=0.1)


def test_zero_init_is_the_exact_zero_point_and_eps_perturbs_it() -> None:
    exact = build(depth=4, width=32, init={"scheme": "zero", "eps": 0.0})
    assert all(bool((w == 0).all()) for w in branch_weights(exact))
    x = torch.randn(7, 32)
    units = exact.units
    assert torch.equal(units[0](x), x)  # identity shortcut, zero branch: the unit is the identity
    plain = build(depth=4, width=32, shortcut="none", init={"scheme": "zero", "eps": 0.0})
    assert torch.equal(plain.units[0](x), torch.zeros_like(x))
    small = build(depth=4, width=128, init={"scheme": "zero", "eps": 1e-3})
    weights = torch.cat([w.flatten() for w in branch_weights(small)])
    assert weights.std().item() == pytest.approx(1e-3 * (2 / 256) ** 0.5, rel=0.05)


def test_init_is_seeded_and_bit_identical() -> None:
    a, b, c = (
        build(seed=3, depth=4, width=16),
        build(seed=3, depth=4, width=16),
        build(seed=4, depth=4, width=16),
    )
    for (name, pa), pb, _pc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.units[0].weights[0].weight, c.units[0].weights[0].weight)


def test_placements_parse_and_linear_network_is_linear() -> None:
    assert parse_placement("linear") == Placement()
    assert parse_placement("pre+post_branch") == Placement(pre=True, post_branch=True)
    with pytest.raises(ValueError, match="did you mean 'mid'"):
        parse_placement("mdi")
    net = build(depth=6, width=8, shortcut_depth=3, activation="linear")
    x = torch.randn(4, 64)
    assert torch.allclose(net(3 * x), 3 * net(x), atol=1e-5)
    relu = build(depth=6, width=8, shortcut_depth=3, activation="mid")
    assert not torch.allclose(relu(-x), -relu(x), atol=1e-3)


def test_mid_relu_unit_computes_its_equation() -> None:
    net = build(depth=2, width=8, shortcut_depth=2, activation="mid", norm="none")
    unit = net.units[0]
    x = torch.randn(3, 8)
    w1, w2 = unit.weights[0].weight, unit.weights[1].weight
    expected = x + torch.relu(x @ w1.T) @ w2.T
    assert torch.allclose(unit(x), expected, atol=1e-6)


def test_batch_norm_sits_after_each_branch_weight() -> None:
    net = build(depth=4, width=8, norm="batch")
    assert all(isinstance(n, torch.nn.BatchNorm1d) for unit in net.units for n in unit.norms)
    assert models.count_params(ModelSpec(depth=4, width=8, norm="batch"), DIGITS) == (
        4 * 64 + 64 * 8 + 8 * 10 + 4 * 2 * 8
    )


@pytest.mark.parametrize("family", models.FAMILIES.names())
@pytest.mark.parametrize("shortcut", models.SHORTCUTS.names())
@pytest.mark.parametrize("norm", models.NORMS.names())
@pytest.mark.parametrize("act", models.ACTS.names())
def test_every_registered_variant_builds_and_runs(
    family: str, shortcut: str, norm: str, act: str
) -> None:
    for scheme in models.INITS.names():
        net = build(
            family=family,
            depth=4,
            width=8,
            shortcut=shortcut,
            norm=norm,
            act=act,
            init={"scheme": scheme},
        )
        out = net(torch.randn(4, 64))
        assert out.shape == (4, 10) and bool(torch.isfinite(out).all())


def test_registries_refuse_duplicates() -> None:
    with pytest.raises(KeyError, match="registered twice"):
        models.SHORTCUTS.add("identity", lambda f: None)
