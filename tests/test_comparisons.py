"""Comparisons between configurations (resablate/comparisons.py) on hand-checkable cases."""

from __future__ import annotations

import statistics

import pytest
from scipy import stats

from resablate.comparisons import MIN_SEEDS, compare, configurations, holm, reference_of
from resablate.ledger import RunData
from resablate.results import DIVERGED, FINISHED

AXES = ["model.shortcut", "seed"]


def arm(shortcut: str, values: dict[int, float], status: str = FINISHED) -> list[RunData]:
    """One configuration's runs: seed -> final test_acc."""
    return [
        RunData(
            f"{shortcut}-{seed}",
            status,
            {"model.shortcut": shortcut, "seed": str(seed)},
            {},
            {"test_acc": value, "lr": 0.1},
        )
        for seed, value in values.items()
    ]


def test_a_known_shift_over_the_same_seeds_is_a_paired_test_that_finds_it() -> None:
    base = {0: 0.50, 1: 0.61, 2: 0.55, 3: 0.58, 4: 0.52}
    shifted = {s: v + 0.10 + 0.001 * s for s, v in base.items()}  # +0.102 on average
    groups = configurations(arm("identity", base) + arm("scale", shifted), AXES)
    [found] = compare(groups, "shortcut=identity")  # lr is how a run ended: not compared
    assert (found.configuration, found.metric, found.test) == (
        "shortcut=scale",
        "test_acc",
        "paired t",
    )
    assert found.difference == pytest.approx(0.102)
    expected = stats.ttest_rel(list(shifted.values()), list(base.values())).pvalue
    assert found.p == pytest.approx(expected) and found.p < 1e-6
    assert found.low is not None and found.high is not None
    assert 0.1 <= found.low <= 0.102 <= found.high <= 0.104  # the differences span 0.100-0.104
    assert found.p_holm == pytest.approx(found.p)  # one test: nothing to adjust


def test_identical_arms_differ_by_nothing_significant() -> None:
    values = {0: 0.5, 1: 0.7, 2: 0.6, 3: 0.55}
    noise = {0: 0.52, 1: 0.68, 2: 0.61, 3: 0.54}
    [found] = compare(
        configurations(arm("identity", values) + arm("scale", noise), AXES), "shortcut=identity"
    )
    assert found.p is not None and found.p > 0.5
    assert found.low is not None and found.high is not None and found.low < 0 < found.high
    [same] = compare(
        configurations(arm("identity", values) + arm("scale", values), AXES), "shortcut=identity"
    )
    assert same.difference == 0 and same.p is None and same.test == "paired t, no variance"


def test_different_seeds_are_compared_with_welchs_test() -> None:
    a = {0: 0.50, 1: 0.52, 2: 0.51, 3: 0.53}
    b = {4: 0.60, 5: 0.66, 6: 0.58}
    [found] = compare(
        configurations(arm("identity", a) + arm("gate", b), AXES), "shortcut=identity"
    )
    assert found.test == "Welch t"
    welch = stats.ttest_ind(list(b.values()), list(a.values()), equal_var=False).pvalue
    assert found.p == pytest.approx(welch)
    assert found.difference == pytest.approx(statistics.fmean(b.values()) - 0.515)


def test_too_few_seeds_are_said_not_tested() -> None:
    a = {0: 0.5, 1: 0.6}
    b = {0: 0.9, 1: 0.95}
    [found] = compare(
        configurations(arm("identity", a) + arm("gate", b), AXES), "shortcut=identity"
    )
    assert found.test == f"too few seeds (2 < {MIN_SEEDS})" and found.p is None
    assert found.difference == pytest.approx(0.375)  # still shown
    # a diverged seed has no final metric: it is not a sample
    runs = arm("identity", {0: 0.5, 1: 0.6, 2: 0.7}) + arm("gate", {0: 0.9, 1: 0.9})
    runs += arm("gate", {2: 0.9}, status=DIVERGED)
    [found] = compare(configurations(runs, AXES), "shortcut=identity")
    assert found.n == 2 and found.p is None


def test_holms_adjustment_by_hand() -> None:
    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> kept non-decreasing: 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_the_reference_is_the_first_value_of_every_axis_unless_chosen() -> None:
    runs = arm("identity", {0: 0.5}) + arm("scale", {0: 0.6}) + arm("gate", {0: 0.7})
    groups = configurations(runs, AXES)
    first = {"model.shortcut": "identity", "seed": 0}
    assert reference_of(groups, AXES, first) == "shortcut=identity"
    chosen = {"model.shortcut": "gate"}
    assert reference_of(groups, AXES, first, chosen) == "shortcut=gate"
    assert reference_of(groups, AXES, first, {"model.shortcut": "dropout"}) is None
    # params are text as MLflow keeps them, the plan's values YAML: -6.0 is the plan's -6
    runs = arm("gate", {0: 0.5})
    runs[0].params["model.gate_bias"] = "-6.0"
    axes = ["model.shortcut", "model.gate_bias", "seed"]
    found = configurations(runs, axes)
    assert reference_of(found, axes, {"model.shortcut": "gate", "model.gate_bias": -6}) is not None
