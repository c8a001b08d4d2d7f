"""Each study measures what its paper measures (science.md §3, §6, §7): the deep nets' warm-up,
Taki's depth-aware rule, Demystifying ResNet's Hessian at the exact zero point and the variants
it refuses."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

from resablate import models
from resablate.errors import ConfigError, SpecError
from resablate.probes.hessian import hessian_spectrum
from resablate.spec.catalog import trial_config
from resablate.spec.schema import DataSpec, InitSpec, ModelSpec
from resablate.sweep.plan import make_plan
from resablate.trial import data
from resablate.trial.data import DataShape
from resablate.trial.optim import loss_fn
from tests.conftest import SWEEPS, write

# -- He et al.'s warm-up for 110 layers and more -------------------------------------------------


def resolved_train(tmp_path: Path, depth: int, **train: Any) -> dict[str, Any]:
    recipe = json.dumps({"recipe": "he_cifar", **train})
    text = f"name: deep\nmodel: {{family: cifar, depth: {depth}}}\ndata: {{name: cifar10}}\n"
    text += f"train: {recipe}\n"
    [trial] = make_plan(write(tmp_path / "s.yaml", text)).trials
    return trial.config["train"]


@pytest.mark.parametrize("depth", [110, 164, 1202])
def test_he_cifar_turns_on_the_warm_up_from_110_layers(depth: int) -> None:
    block = {"model": {"family": "cifar", "depth": depth}}
    if depth == 164:
        block["model"]["block"] = "bottleneck"
    train = trial_config(
        {**block, "data": {"name": "cifar10"}, "train": {"recipe": "he_cifar"}}
    ).train
    assert (train.warmup_lr, train.warmup_until_error, train.lr) == (0.01, 0.8, 0.1)


def test_he_cifar_leaves_shallower_nets_and_a_chosen_warm_up_alone(
    tmp_path: Path, cli: Any
) -> None:
    assert resolved_train(tmp_path, 56)["warmup_lr"] is None
    assert resolved_train(tmp_path, 110)["warmup_lr"] == 0.01
    linear = resolved_train(tmp_path, 110, warmup_iterations=400)
    assert (linear["warmup_lr"], linear["warmup_iterations"]) == (None, 400)
    assert resolved_train(tmp_path, 110, warmup_lr=0.02, warmup_until_error=0.5)["warmup_lr"] == (
        0.02
    )
    # what `resablate plan --json` shows (CIFAR-10 itself is not on this machine)
    ran = cli("plan", str(tmp_path / "s.yaml"), "--json", "--no-data-check")
    assert ran.code == 0, ran.err
    [trial] = json.loads(ran.out)["trials"]
    assert trial["config"]["train"]["warmup_lr"] == 0.02


def test_identity_mappings_warms_up_its_110_and_164_layer_nets() -> None:
    trials = make_plan(SWEEPS / "identity_mappings.yaml").trials
    assert {t.config["model"]["depth"] for t in trials} == {110, 164}
    assert all(t.config["train"]["warmup_lr"] == 0.01 for t in trials)
    assert all(t.config["train"]["warmup_until_error"] == 0.8 for t in trials)


# -- Taki's rule: the branch's last layer only ---------------------------------------------------


def branch_gain(m: int, units: int, c: float, activation: str, seed: int = 0) -> float:
    """Var(F(x)) / Var(x), x ~ N(0, 1), of unit 0 of an unnormalized net of ``units`` units of
    m layers at init, σ where ``activation`` puts it (relu_preact: σ before every weight;
    Taki's x + W σ(x) for m = 1)."""
    width = 512
    model = ModelSpec(
        depth=m * units, width=width, shortcut_depth=m, activation=activation, norm="none"
    )
    shape = DataShape((width,), 10)
    net = models.build(
        model, InitSpec(scheme="taki", c=c), shape, torch.Generator().manual_seed(seed)
    )
    unit = net.units[0]
    x = torch.randn(4096, width, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        fx = unit.branch(x)
    # over every entry (batch and channels): each channel of W σ(x) has its own mean over the
    # batch, as σ(x) has a mean; Taki's variance is the weights' expectation, which counts it
    return float(fx.var() / x.var())


def test_taki_scales_only_the_last_branch_layer() -> None:
    # mid: F = W σ W σ W, so the first weight reads x and the second a ReLU's output
    model = ModelSpec(depth=12, width=256, shortcut_depth=3, norm="none", activation="mid")
    net = models.build(
        model, InitSpec(scheme="taki", c=0.5), DataShape((256,), 10), torch.Generator()
    )
    for unit in net.units:  # L = 4 units
        first, middle, last = (w.weight.var().item() for w in unit.weights)
        assert first == pytest.approx(1 / 256, rel=0.03)  # reads no σ: 1/fan_in, c = 1
        assert middle == pytest.approx(2 / 256, rel=0.03)  # reads a ReLU: 2/fan_in
        assert last == pytest.approx(0.5 / (256 * 4), rel=0.03)  # c/(fan_in·L)


# the last weight reads a ReLU's output (E[σ(z)²] = Var(z)/2) or, in pre for m ≥ 2 and in
# linear, a weight's (E[z²] = Var(z)): the earlier layers preserve the variance, so
# Var(F)/Var(x) = (c/L)·that half or one whatever m
TAKI_GAINS = {
    "relu_preact": {1: 0.5, 2: 0.5, 3: 0.5},
    "mid": {2: 0.5, 3: 0.5},
    "pre": {1: 0.5, 2: 1.0, 3: 1.0},
    "linear": {1: 1.0, 2: 1.0, 3: 1.0},
}


def taki_gain(m: int, units: int, c: float, activation: str) -> float:
    """``branch_gain`` averaged over 4 draws (one is within ±10%)."""
    return statistics.mean(branch_gain(m, units, c, activation, seed) for seed in range(4))


@pytest.mark.parametrize("activation", list(TAKI_GAINS))
def test_taki_branch_gain_is_c_over_l_times_what_the_last_layer_reads_whatever_m(
    activation: str,
) -> None:
    # measured (c = 1, L = 8, ×L): relu_preact 0.50 0.50 0.50; mid 0.50 0.49; pre 0.50 1.00
    # 1.00; linear 1.00 1.00 0.99. He's 2/fan_in on a weight that reads no σ doubles it per
    # such weight: mid 1.00 0.98, pre 0.50 1.00 2.01, linear 1.00 2.00 3.98
    for m, half_or_one in TAKI_GAINS[activation].items():
        gain = taki_gain(m, 8, 1.0, activation)
        assert gain == pytest.approx(half_or_one / 8, rel=0.1), (m, gain)
    # every layer at c/(fan_in·L) would give (c/L)^m: 1/16, 1/128, 1/1024 for m = 1, 2, 3


@pytest.mark.slow
@pytest.mark.parametrize("activation", list(TAKI_GAINS))
def test_taki_branch_gain_is_proportional_to_c_over_l_whatever_the_branch_length(
    activation: str,
) -> None:
    for m in TAKI_GAINS[activation]:
        base = taki_gain(m, 8, 1.0, activation)
        assert taki_gain(m, 8, 2.0, activation) / base == pytest.approx(2.0, rel=0.1)  # 2c
        assert taki_gain(m, 4, 1.0, activation) / base == pytest.approx(2.0, rel=0.1)  # L/2


# -- Demystifying ResNet at the exact zero point -------------------------------------------------


def zero_point(n: int, units: int, act: str, activation: str) -> dict[str, Any]:
    spec = DataSpec(whiten=10, target="onehot")
    whitened = data.load(spec)
    model = ModelSpec(
        depth=n * units, width=10, shortcut_depth=n, activation=activation, act=act, norm="none"
    )
    init = InitSpec(scheme="zero", eps=0.0)
    models.check(model, init, whitened.shape)
    net = models.build(model, init, whitened.shape, torch.Generator().manual_seed(0))
    x, y = whitened.x_train[:300], whitened.y_train[:300]
    return hessian_spectrum(net, loss_fn("mse", 10), x, y)


def test_the_hessian_theorems_hold_at_the_zero_point_of_mid_tanh_nets() -> None:
    """tanh(0) = 0, tanh'(0) = 1: Assumption 3 holds and the linear net's numbers come back."""
    two = [zero_point(2, units, "tanh", "mid")["cond"] for units in (1, 2, 4)]
    assert all(math.isfinite(c) and c > 1 for c in two)
    assert max(two) == pytest.approx(min(two), rel=1e-6)  # n = 2: depth-invariant
    linear = zero_point(2, 2, "identity", "linear")
    assert zero_point(2, 2, "tanh", "mid")["max_abs"] == pytest.approx(linear["max_abs"], rel=1e-9)
    three = zero_point(3, 2, "tanh", "mid")
    assert three["zero"] and three["max_abs"] == 0.0  # n = 3: a zero Hessian, a flat saddle
    one = [zero_point(1, units, "identity", "linear")["cond"] for units in (2, 4, 8)]
    assert one[0] < one[1] < one[2]  # n = 1: grows with depth


def test_a_relu_net_at_the_exact_zero_point_has_a_degenerate_hessian_and_is_refused(
    tmp_path: Path, cli: Any
) -> None:
    # why: ReLU'(0) = 0 stops every branch gradient, so an n = 2 Hessian comes out zero
    degenerate = zero_point(2, 2, "relu", "mid")
    assert degenerate["max_abs"] == 0.0 and zero_point(2, 2, "tanh", "mid")["max_abs"] > 0.1
    sweep = write(
        tmp_path / "s.yaml",
        "name: z\nmodel: {width: 10, activation: mid, act: relu}\n"
        "init: {scheme: zero, eps: 0}\nprobes: {hessian: {at: [init]}}\n"
        "grid: {model.depth: [4, 8]}\n",
    )
    ran = cli("plan", str(sweep))
    assert ran.code == 2 and ran.out == ""
    [line] = ran.err.strip().splitlines()
    assert f"{sweep}: probes.hessian:" in line
    assert "relu'(0) = 0" in line and "use act tanh or identity, or init.eps above 0" in line
    assert "grid point model.depth=4" in line
    for fix in ("act: tanh", "eps: 0.001"):
        fixed = sweep.read_text().replace("act: relu" if "act" in fix else "eps: 0", fix)
        assert make_plan(write(tmp_path / "ok.yaml", fixed)).trials
    without_probe = sweep.read_text().replace("probes: {hessian: {at: [init]}}\n", "")
    assert make_plan(write(tmp_path / "train.yaml", without_probe)).trials


@pytest.mark.parametrize("activation", ["mid", "pre+mid"])
def test_mid_on_a_one_layer_branch_is_refused_not_built_linear(activation: str) -> None:
    with pytest.raises(ConfigError, match=r"one-layer branch .*has none"):
        trial_config({"model": {"shortcut_depth": 1, "activation": activation}})
    # what the same pattern means layer by layer stays legal on one layer
    for named in ("post", "relu_preact", "pre"):
        trial_config({"model": {"shortcut_depth": 1, "activation": named}})


def test_mid_on_a_one_layer_branch_in_a_sweep_exits_2_naming_the_field(
    tmp_path: Path, cli: Any
) -> None:
    sweep = write(
        tmp_path / "s.yaml",
        "name: m\nmodel: {activation: mid}\ngrid: {model.shortcut_depth: [1]}\n",
    )
    ran = cli("plan", str(sweep))
    assert ran.code == 2
    assert "model.activation" in ran.err and "shortcut_depth 2 or more" in ran.err
    with pytest.raises(SpecError):
        make_plan(sweep)


# -- Taki's networks: one-layer units in the cifar family ----------------------------------------


def test_the_cifar_family_builds_one_layer_units_in_three_stages_or_one() -> None:
    shape = DataShape((3, 32, 32), 10)
    for stages, depth, units, widths in ((3, 101, 99, {16, 32, 64}), (1, 102, 100, {16})):
        model = ModelSpec(
            family="cifar", depth=depth, stages=stages, shortcut_depth=1, activation="post"
        )
        models.check(model, InitSpec(scheme="taki"), shape)
        net = models.build(model, InitSpec(scheme="taki"), shape, torch.Generator())
        assert len(net.units) == units and all(len(u.weights) == 1 for u in net.units)
        assert {u.plan.widths[-1] for u in net.units} == widths
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(
        ConfigError, match=r"1 stage\(s\): depth = 1·n·k \+ 2; nearest legal depths 100, 102, 98"
    ):
        models.check(ModelSpec(family="cifar", depth=101, stages=1), InitSpec(), shape)
    # the field came later: a config that leaves it at 3 keeps its trial id
    assert "stages" not in trial_config({"model": {"family": "cifar"}}).model_dump()["model"]


# -- the studies' arms, as their papers define them ----------------------------------------------


def arms(sweep: str, *paths: str) -> set[tuple[Any, ...]]:
    def get(config: dict[str, Any], path: str) -> Any:
        for part in path.split("."):
            config = config[part]
        return config

    return {tuple(get(t.config, p) for p in paths) for t in make_plan(SWEEPS / sweep).trials}


def test_shortcut_depth_measures_the_hessian_at_the_exact_zero_and_sweeps_lr_for_relu() -> None:
    plan = make_plan(SWEEPS / "shortcut_depth.yaml")
    assert plan.spec.probes.hessian is not None and plan.spec.probes.hessian.every
    zero = [t.config for t in plan.trials if t.config["init"]["scheme"] == "zero"]
    theorem = {
        (c["model"]["activation"], c["model"]["act"]) for c in zero if c["init"]["eps"] == 0
    }
    assert theorem == {("linear", "identity"), ("mid", "tanh")}
    relu = [c for c in zero if c["model"]["act"] == "relu"]
    assert {c["init"]["eps"] for c in relu} == {0.001}
    assert {c["train"]["lr"] for c in relu} == {0.001, 0.01, 0.1}  # a log-scale lr sweep
    assert {c["model"]["shortcut_depth"] for c in relu} == {2}  # Fig. 8: n = 2 and plain
    assert {c["model"]["shortcut"] for c in relu} == {"identity", "none"}
    ns = {(c["model"]["act"], c["model"]["shortcut_depth"]) for c in zero}
    assert ("identity", 1) in ns and ("identity", 3) in ns and ("tanh", 3) in ns
    assert not any(
        c["model"]["activation"] == "mid" and c["model"]["shortcut_depth"] == 1 for c in zero
    )


def test_identity_mappings_runs_every_row_of_tables_1_and_2_with_five_seeds() -> None:
    table1 = arms(
        "identity_mappings.yaml",
        "model.shortcut",
        "model.lambda",
        "model.branch_scale",
        "model.gate_bias",
        "model.activation",
        "model.depth",
    )
    for row in [
        ("identity", 0.5, 1.0, -6.0, "post", 110),
        ("scale", 0.0, 1.0, -6.0, "post", 110),  # λ = 0: the plain net
        ("scale", 0.5, 1.0, -6.0, "post", 110),
        ("scale", 0.5, 0.5, -6.0, "post", 110),
        *(("gate", 0.5, 1.0, b, "post", 110) for b in (0.0, -6.0, -7.0)),
        *(("shortcut_gate", 0.5, 1.0, b, "post", 110) for b in (0.0, -6.0)),
        ("conv", 0.5, 1.0, -6.0, "post", 110),
        ("dropout", 0.5, 1.0, -6.0, "post", 110),
    ]:
        assert row in table1, row
    placements = ("post", "bn_after_add", "relu_before_add", "relu_preact", "full_preact")
    table2 = arms("identity_mappings.yaml", "model.activation", "model.depth", "model.block")
    for placement in placements:
        assert (placement, 110, "basic") in table2 and (placement, 164, "bottleneck") in table2
    assert len(table1) == 20 and arms("identity_mappings.yaml", "seed") == {(s,) for s in range(5)}


def test_init_scale_is_taki_s_experiment() -> None:
    # science.md §7.3: several depths L with c fixed once, chosen at one L on the validation
    # split, against He given one global gain tuned at that same L
    plan = make_plan(SWEEPS / "init_scale.yaml")
    shape = DataShape((3, 32, 32), 10)
    units = set()
    for depth in {t.config["model"]["depth"] for t in plan.trials}:
        config = next(t.config for t in plan.trials if t.config["model"]["depth"] == depth)
        model = ModelSpec.model_validate(config["model"])
        with torch.device("meta"):
            net = models.FAMILIES["cifar"].build(model, InitSpec(), shape)
        assert all(len(u.weights) == 1 for u in net.units)
        units.add(len(net.units))
    assert units == {10, 30, 100}
    assert arms("init_scale.yaml", "init.scheme", "model.norm") == {
        ("he", "none"),
        ("taki", "none"),
        ("he", "batch"),
    }
    he = [t for t in plan.trials if t.config["init"]["scheme"] == "he"]
    assert len({t.config["seed"] for t in he if t.config["model"]["norm"] == "none"}) == 9
    search = plan.spec.search
    assert search is not None and search.param == "init.c"
    assert search.where == {"model.norm": "none", "model.depth": 32}  # one L, both inits
    assert search.carry == ("model.depth",)  # kept at every depth
    assert all(t.config["init"]["c"] == 1.0 for t in he)  # as written; searched ones apart
    cpu = make_plan(SWEEPS / "init_scale.yaml", profile="cpu").trials
    assert {(c.config["model"]["family"], c.config["model"]["shortcut_depth"]) for c in cpu} == {
        ("mlp", 1)
    }
    assert {c.config["model"]["depth"] for c in cpu} == {10, 30, 100}  # units of one layer
