"""Study 5, ``mnist_lecture`` (science.md §7.5), has the lecture's arms at full scale and with
``--profile cpu``: Balduzzi et al.'s shattered-gradient nets, the lesion study's ResNet against a
plain net of the same depth, Looks-Linear against its He + CReLU control, one factor per arm."""

from __future__ import annotations

from typing import Any

import pytest

from resablate.sweep.plan import make_plan
from tests.conftest import SWEEPS

SWEEP = SWEEPS / "mnist_lecture.yaml"
MODEL = ("shortcut", "depth", "shortcut_depth", "drop_path", "activation", "act")
# the ResNet's units: 25 at full scale (the lecture net), 16 in the cpu profile, where the plain
# net of 25 units does not train and its collapse under lesions could not be seen
UNITS = {None: 25, "cpu": 16}
RESNET = {
    "shortcut": "identity",
    "depth": 25,
    "shortcut_depth": 2,
    "drop_path": 0.0,
    "activation": "post",
    "act": "relu",
    "scheme": "he",
}


def arms(profile: str | None) -> list[dict[str, Any]]:
    """The distinct arms of the plan (seeds folded), each as its model fields and init scheme;
    ``layers`` counts the weight layers of its units."""
    plan = make_plan(SWEEP, profile=profile)
    assert plan.spec.probes is not None
    assert plan.spec.probes.shattered and plan.spec.probes.shattered.at == ["init"]
    assert plan.spec.probes.lesion and plan.spec.probes.lesion.at == ["end"]
    found: list[dict[str, Any]] = []
    for trial in plan.trials:
        model = trial.config["model"]
        arm = {**{k: model[k] for k in MODEL}, "scheme": trial.config["init"]["scheme"]}
        if arm not in found:
            found.append(arm)
    return found


def resnet(profile: str | None) -> dict[str, Any]:
    return {**RESNET, "depth": UNITS[profile]}


def changed(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    """The factors two arms differ in; depth and shortcut depth together are one: the layers."""
    keys = {k for k in a if a[k] != b[k]}
    if keys & {"depth", "shortcut_depth"}:
        keys = (keys - {"depth", "shortcut_depth"}) | {"layers"}
    return keys


@pytest.mark.parametrize("profile", [None, "cpu"])
def test_shattered_gradient_arms_are_balduzzis_figure_1(profile: str | None) -> None:
    found = arms(profile)
    layers = {(a["shortcut"], a["depth"] * a["shortcut_depth"]) for a in found}
    resnet_layers = 2 * UNITS[profile]  # 50 at full scale: the lecture net
    assert {("none", 1), ("none", 24), ("identity", resnet_layers)} <= layers
    assert resnet(profile) in found


@pytest.mark.parametrize("profile", [None, "cpu"])
def test_lesion_compares_the_resnet_with_a_plain_net_of_the_same_depth(
    profile: str | None,
) -> None:
    found = arms(profile)
    assert {**resnet(profile), "shortcut": "none"} in found


@pytest.mark.parametrize("profile", [None, "cpu"])
def test_looks_linear_has_he_crelu_as_its_control_one_factor_per_arm(
    profile: str | None,
) -> None:
    """Balduzzi et al.'s claim is trainability: plain CReLU nets across depth, Looks-Linear
    against He + CReLU, each one factor from the plain pre-activation net."""
    found = arms(profile)
    base = resnet(profile)
    plain = {**base, "shortcut": "none"}
    preact = {**plain, "activation": "full_preact"}
    control = {**preact, "act": "crelu"}  # He + CReLU
    looks_linear = {**control, "scheme": "looks_linear"}
    shallow = [{**arm, "depth": 4} for arm in (control, looks_linear)]
    assert all(arm in found for arm in (plain, preact, control, looks_linear, *shallow))
    assert changed(looks_linear, control) == {"scheme"}
    assert changed(control, preact) == {"act"}
    assert changed(preact, plain) == {"activation"}
    assert changed(shallow[0], control) == {"layers"}  # the depth, in weight layers
    for arm in found:  # every arm is one step from another: the resnet, or a chain to it
        assert arm == base or any(len(changed(arm, other)) == 1 for other in found), arm
    assert {**base, "shortcut": "gate"} in found and {**base, "drop_path": 0.5} in found


def test_cpu_profile_keeps_the_arms_and_shrinks_the_rest() -> None:
    full, cpu = make_plan(SWEEP), make_plan(SWEEP, profile="cpu")
    fewer_units = [{**a, "depth": 16 if a["depth"] == 25 else a["depth"]} for a in arms(None)]
    assert fewer_units == arms("cpu") and len(arms(None)) == 11
    assert len(full.trials) == 33  # 3 seeds
    # 3 seeds for the arms the lesion and shattered-gradient claims compare, 1 for the rest
    seeds: dict[str, int] = {}
    for trial in cpu.trials:
        model = trial.config["model"]
        key = "-".join(str(model[k]) for k in MODEL) + trial.config["init"]["scheme"]
        seeds[key] = seeds.get(key, 0) + 1
    # 3 for resnet, plain, the four CReLU arms, plain24, plain1; 1 for gate, sd, plainpre
    assert sorted(seeds.values()) == [1, 1, 1] + [3] * 8
    assert {t.config["data"]["name"] for t in cpu.trials} == {"digits"}
    assert {t.config["model"]["channels"] for t in full.trials + cpu.trials} == {16}
