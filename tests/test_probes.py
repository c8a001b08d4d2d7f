"""Each probe proved on a case with a known answer before it is trusted (science.md §4)."""

from __future__ import annotations

import itertools
import math
import statistics
import typing
from typing import Any

import pytest
import torch

from resablate import models
from resablate.probes.hessian import hessian_spectrum
from resablate.probes.lesion import lesion
from resablate.probes.shattered import autocorrelation, shattered_gradients
from resablate.probes.spp import laws, noise_batch, signal_propagation
from resablate.probes.weights import weight_norms
from resablate.spec.schema import DataSpec, InitSpec, ModelSpec
from resablate.trial import data
from resablate.trial.data import DataShape
from resablate.trial.optim import loss_fn

CE = loss_fn("ce", 10)


def net_of(shape: DataShape, init: dict | None = None, seed: int = 0, **raw: Any) -> Any:
    family = raw.setdefault("family", "mlp")
    model = ModelSpec(**{**models.FAMILIES[family].defaults(raw), **raw})
    return models.build(
        model, InitSpec(**(init or {})), shape, torch.Generator().manual_seed(seed)
    )


# -- Hessian ---------------------------------------------------------------------------------


class Quadratic(torch.nn.Module):
    """loss = ½ wᵀAw through a fake 'network' whose output is the loss itself."""

    def __init__(self, w: torch.Tensor, a: torch.Tensor) -> None:
        super().__init__()
        self.w, self.a = torch.nn.Parameter(w), a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.w @ self.a @ self.w + 0 * x.sum()


def test_hessian_of_a_known_quadratic() -> None:
    q, _ = torch.linalg.qr(
        torch.randn(20, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    )
    eig = torch.tensor([-3.0, -1.0] + [0.5 + i for i in range(18)], dtype=torch.float64)
    a = q @ torch.diag(eig) @ q.T
    found = hessian_spectrum(
        Quadratic(torch.randn(20, dtype=torch.float64), a),
        lambda out, y: out,
        torch.zeros(1),
        torch.zeros(1),
    )
    magnitudes = eig.abs()
    assert found["max_abs"] == pytest.approx(17.5, rel=1e-9)
    assert found["p10_abs"] == pytest.approx(float(torch.quantile(magnitudes, 0.1)), rel=1e-9)
    assert found["cond"] == pytest.approx(found["max_abs"] / found["p10_abs"])
    assert found["index"] == pytest.approx(2 / 20)
    assert (found["n_params"], found["method"], found["zero"]) == (20, "exact", False)


@pytest.mark.slow  # 4,000 Hessian-vector products
def test_exact_and_lanczos_agree_on_a_network_of_four_thousand_parameters() -> None:
    digits = data.load(DataSpec())
    net = net_of(digits.shape, depth=4, width=24)
    x, y = digits.x_train[:256], digits.y_train[:256]
    before = [p.detach().clone() for p in net.parameters()]
    exact = hessian_spectrum(net, CE, x, y, method="exact")
    slq = hessian_spectrum(
        net, CE, x, y, method="lanczos", generator=torch.Generator().manual_seed(0)
    )
    assert exact["n_params"] == slq["n_params"] == 4 * 24 * 24 + 64 * 24 + 24 * 10
    assert slq["max_abs"] == pytest.approx(exact["max_abs"], rel=1e-3)
    assert 0.0 <= slq["index"] <= 1.0 and 0.0 < exact["index"] < 1.0
    assert net.training and all(
        torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True)
    )


def zero_point_condition(n: int, units: int) -> dict[str, Any]:
    """Demystifying ResNet's setting: a linear n-shortcut net of width 10 at the exact zero point,
    whitened digits (10 components), one-hot targets, squared loss."""
    spec = DataSpec(whiten=10, target="onehot")
    whitened = data.load(spec)
    net = net_of(
        whitened.shape,
        init={"scheme": "zero", "eps": 0.0},
        depth=n * units,
        width=10,
        shortcut_depth=n,
        activation="linear",
        act="identity",
    )
    return hessian_spectrum(
        net, loss_fn("mse", 10), whitened.x_train[:300], whitened.y_train[:300]
    )


def test_demystifying_resnet_theorem_2_at_the_zero_point() -> None:
    one = [zero_point_condition(1, units)["cond"] for units in (1, 2, 4)]
    assert one[0] < one[1] < one[2] and one[2] > 5 * one[0]  # n = 1: grows with depth
    two = [zero_point_condition(2, units)["cond"] for units in (1, 2, 4)]
    assert max(two) == pytest.approx(min(two), rel=1e-6)  # n = 2: depth-invariant
    three = zero_point_condition(3, 2)
    assert three["zero"] and three["max_abs"] == 0.0 and math.isinf(three["cond"])  # n ≥ 3


# -- signal propagation ---------------------------------------------------------------------------


WIDE = DataShape((256,), 10)


def batch(n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 256, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_unnormalized_identity_resnet_doubles_the_second_moment_per_unit() -> None:
    # branch W2 σ(W1 σ(x)) with He weights preserves the second moment: x + F(x) doubles it
    net = net_of(WIDE, depth=16, width=256, activation="pre+mid", norm="none")
    found = signal_propagation(net, *batch(), CE)
    moment = [v + m for v, m in zip(found["fwd_var"], found["chan_sq_mean"], strict=True)]
    ratios = [b / a for a, b in itertools.pairwise(moment)]
    assert statistics.mean(ratios) == pytest.approx(2.0, rel=0.08)
    assert all(1.6 < r < 2.4 for r in ratios)
    assert len(found["bwd_var"]) == len(found["branch_var"]) == 8
    # the recorded summary is the geometric mean of those ratios, first unit to last
    assert found["moment_growth"] == pytest.approx(math.prod(ratios) ** (1 / len(ratios)))
    assert found["moment_growth"] == pytest.approx(2.0, rel=0.08)
    assert found["fwd_last"] == found["fwd_var"][-1]
    assert "nf_ratio" not in found  # not a normalizer-free net


def test_normalized_preactivation_variance_grows_linearly() -> None:
    net = net_of(WIDE, depth=16, width=256, activation="full_preact", norm="batch")
    found = signal_propagation(net, *batch(), CE)
    var = found["fwd_var"]
    steps = [b - a for a, b in itertools.pairwise(var)]
    assert min(steps) > 0 and max(steps) < 1.3 * min(steps)  # about constant increments
    assert var[-1] / var[0] < 8  # far from 2^7 exponential growth
    assert found["var_linearity"] > 0.99  # R² of a straight line through the variances
    assert found["var_linearity_all"] == found["var_linearity"]  # one stage: the same line
    # each He branch after batch norm and ReLU adds 2·Var(relu(z)) = 1 − 1/π to the variance
    assert found["var_slope"] == pytest.approx(statistics.mean(steps), rel=0.05)
    assert found["var_slope"] == pytest.approx(1 - 1 / math.pi, abs=0.05)
    assert found["stage"] == [0] * 8
    assert found["var_growth"] == pytest.approx((var[-1] / var[0]) ** (1 / 7))


def test_normalized_preactivation_variance_is_linear_within_each_stage_not_across() -> None:
    # De & Smith: x + F(x) adds its branch's variance each unit; the projection shortcuts that
    # open stages 2 and 3 (downsample B) read the normalized input and set it anew
    images = DataShape((3, 8, 8), 10)
    raw = {"depth": 32, "channels": 8, "activation": "full_preact", "norm": "batch"}
    net = net_of(images, family="cifar", stages=3, downsample="B", **raw)
    g = torch.Generator().manual_seed(0)
    x, y = noise_batch((3, 8, 8), 256, g), torch.randint(0, 10, (256,), generator=g)
    found = signal_propagation(net, x, y, CE)
    assert found["stage"] == [0] * 5 + [1] * 5 + [2] * 5
    assert [u.projects for u in net.units].count(True) == 2
    var = found["fwd_var"]
    assert var[5] < var[4] and var[10] < var[9]  # reset at each stage's first unit
    assert found["var_linearity"] > 0.95  # the worst stage's line
    assert found["var_linearity_all"] < 0.5  # one line across the resets fits badly


def test_linearity_skips_stages_of_fewer_than_three_units() -> None:
    # stage 0 is a perfect line; stage 1's two units say nothing about linearity
    found = laws([1.0, 2.0, 3.0, 0.5, 9.0], [0.0] * 5, stage=[0, 0, 0, 1, 1])
    assert found["var_linearity"] == pytest.approx(1.0)
    assert found["var_linearity_all"] < 0.5
    assert found["var_slope"] == pytest.approx(1.0)  # stage 1 adds no line
    assert "var_linearity" not in laws([1.0, 2.0, 3.0], [0.0] * 3, stage=[0, 1, 1])


def test_a_norm_after_the_addition_adds_no_variance_per_unit() -> None:
    # the mutant of De & Smith's law: N(x + F(x)) resets the variance each unit, so its line is
    # flat (slope near 0) although a small drift can still fit it with a high R²
    net = net_of(WIDE, depth=16, width=256, activation="bn_after_add", norm="batch")
    found = signal_propagation(net, *batch(), CE)
    assert abs(found["var_slope"]) < 0.05
    pre = signal_propagation(
        net_of(WIDE, depth=16, width=256, activation="full_preact", norm="batch"), *batch(), CE
    )
    assert pre["var_slope"] > 20 * abs(found["var_slope"])


def test_each_probe_records_the_numbers_its_spec_declares() -> None:
    # a claim's metric is checked against ProbesSpec's `records` before a sweep runs: they must
    # be exactly the numbers the probes return
    from resablate.probes.measure import ProbeData, measure, scalars
    from resablate.spec.options import ProbesSpec

    # name -> its Probe class (the field's type is `SppProbe | None`)
    specs = {n: typing.get_args(f.annotation)[0] for n, f in ProbesSpec.model_fields.items()}

    # small: the default Hessian probe is the exact spectrum
    net = net_of(WIDE, {"scheme": "nf"}, depth=8, width=8, activation="full_preact", norm="none")
    x, y = batch(64)
    probe_data = ProbeData(x, y, x, y, x, y, CE, 10)
    chosen = {name: {**cls().model_dump(), "batch": 64} for name, cls in specs.items()}
    found = scalars(measure(net, probe_data, chosen, seed=0))
    for name, cls in specs.items():
        keys = {k.split(".", 1)[1] for k in found if k.startswith(f"{name}.")}
        assert keys == set(cls.records), name


def test_spp_leaves_no_hooks_grads_or_inplace_changes() -> None:
    net = net_of(WIDE, depth=4, width=256, activation="post", norm="batch")
    relu = torch.nn.ReLU(inplace=True)
    net.units[0].act = relu
    signal_propagation(net, *batch(64), CE)
    assert all(not m._forward_hooks for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
    assert relu.inplace


# -- weight norms, shattered gradients, lesion ----------------------------------------------------


def test_weight_norms_by_hand() -> None:
    net = net_of(DataShape((8,), 3), depth=4, width=6)
    found = weight_norms(net)
    branch = [float(w.weight.detach().norm()) for u in net.units for w in u.weights]
    assert found["branch"] == pytest.approx(sum(branch) / 4)
    assert found["stem"] == pytest.approx(float(net.stem[1].weight.norm()))
    assert found["head"] == pytest.approx(float(net.head.weight.norm()))
    assert found["shortcut"] == 0.0
    assert found["all"] == pytest.approx((sum(branch) + found["stem"] + found["head"]) / 6)


def test_shattered_gradients_linear_smooth_plain_white_resnet_brown() -> None:
    shape = DataShape((16,), 10)
    linear = net_of(shape, depth=8, width=64, act="identity")
    assert shattered_gradients(linear, (16,), torch.Generator().manual_seed(1))["autocorr"] == (
        [1.0] * 33
    )  # a linear net's gradient is constant along the line
    # Balduzzi et al.: a deep plain net's gradients look like white noise, a ResNet's like brown
    images = DataShape((1, 8, 8), 10)
    plain = shattered_gradients(
        net_of(images, family="mnist", depth=24, shortcut="none"),
        (1, 8, 8),
        torch.Generator().manual_seed(1),
    )
    resnet = shattered_gradients(
        net_of(images, family="mnist", depth=24), (1, 8, 8), torch.Generator().manual_seed(1)
    )
    assert abs(plain["autocorr"][1]) < 0.3 and abs(plain["white"][1]) < 0.3
    # batch norm on the line's batch statistics (measured lag 1: 0.88 here; eval mode gave 0.94)
    assert resnet["autocorr"][1] > 0.7 and resnet["brown"][1] > 0.9
    for lag in (1, 2, 3):
        assert plain["autocorr"][lag] < resnet["autocorr"][lag]
    assert autocorrelation(torch.tensor([1.0, -1.0] * 8), 2)[1] == pytest.approx(-15 / 16)


def test_lesion_of_untrained_networks() -> None:
    digits = data.load(DataSpec())
    x, y = digits.x_test, digits.y_test
    zero = net_of(digits.shape, init={"scheme": "zero", "eps": 0.0}, depth=6, width=16)
    found = lesion(zero, x, y, torch.Generator().manual_seed(0), draws=5, k=2)
    assert found["single"] == [found["whole"]] * 3  # zero branches: removing one changes nothing
    assert found["error_by_k"] == pytest.approx([1 - found["whole"]] * 2) and found["kmax"] == 2
    # nothing removed costs anything: the increase over the unlesioned error is zero
    assert found["error_increase_k1"] == pytest.approx(0.0, abs=1e-12)
    assert found["error_increase_kmax"] == pytest.approx(0.0, abs=1e-12)
    plain = net_of(digits.shape, depth=6, width=16, shortcut="none")
    lesioned = lesion(plain, x, y, torch.Generator().manual_seed(0))
    counts = torch.bincount(y)
    assert all(acc <= float(counts.max()) / len(y) + 1e-9 for acc in lesioned["single"])
    again = lesion(plain, x, y, torch.Generator().manual_seed(0))
    assert again["error_by_k"] == lesioned["error_by_k"]
    unlesioned = 1 - lesioned["whole"]
    assert lesioned["error_increase_k1"] == pytest.approx(lesioned["error_k1"] - unlesioned)
    assert lesioned["error_increase_kmax"] == pytest.approx(lesioned["error_kmax"] - unlesioned)
