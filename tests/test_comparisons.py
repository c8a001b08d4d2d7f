"""Comparisons between configurations (resablate/comparisons.py) on hand-checkable cases."""

from __future__ import annotations

import statistics

import pytest
from scipy import stats

from resablate.analysis.comparisons import (
    BOOTSTRAP_FROM,
    MIN_SEEDS,
    compare,
    configurations,
    holm,
    one,
    p_greater,
    reference_of,
)
from resablate.results import DIVERGED, FINISHED
from resablate.tracking.ledger import RunData

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


def test_below_ten_seeds_the_interval_is_the_t_interval_of_the_test() -> None:
    # a bootstrap of three paired differences is their range: far too sure of itself
    arm, ref = {0: 0.60, 1: 0.71, 2: 0.65}, {0: 0.50, 1: 0.55, 2: 0.58}
    found = one("a", "test_acc", arm, ref)
    differences = [arm[s] - ref[s] for s in arm]
    low, high = stats.t.interval(
        0.95, df=2, loc=statistics.fmean(differences), scale=stats.sem(differences)
    )
    assert found.interval == "t" and "(95% t)" in found.shown_interval
    assert (found.low, found.high) == (pytest.approx(low), pytest.approx(high))
    assert found.high - found.low > 2 * (max(differences) - min(differences))  # not the range
    # different seeds: Welch's interval (its own degrees of freedom), wider than paired here
    welch = one("a", "test_acc", arm, {4: 0.50, 5: 0.55, 6: 0.58})
    interval = stats.ttest_ind(list(arm.values()), [0.50, 0.55, 0.58], equal_var=False)
    expected = interval.confidence_interval(0.95)
    assert welch.test == "Welch t" and welch.interval == "t"
    assert (welch.low, welch.high) == (pytest.approx(expected.low), pytest.approx(expected.high))


def test_from_ten_seeds_the_interval_is_a_seeded_bootstrap() -> None:
    assert BOOTSTRAP_FROM == 10
    arm = {s: 0.6 + 0.01 * ((s * 7) % 5) for s in range(12)}
    ref = {s: 0.5 + 0.01 * ((s * 3) % 4) for s in range(12)}
    found = one("a", "test_acc", arm, ref)
    differences = [arm[s] - ref[s] for s in sorted(arm)]
    expected = stats.bootstrap(
        (differences,), statistics.fmean, method="percentile", rng=0, vectorized=False
    ).confidence_interval
    assert found.interval == "bootstrap" and "(95% bootstrap)" in found.shown_interval
    assert (found.low, found.high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    nine = one("a", "test_acc", {s: arm[s] for s in range(9)}, {s: ref[s] for s in range(9)})
    assert nine.interval == "t"


def test_probability_of_improvement_by_hand() -> None:
    # paired (same seeds): seed 0 wins, seed 1 ties (half), seed 2 loses -> 1.5 / 3
    assert p_greater({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.4, 1: 0.6, 2: 0.8}) == 0.5
    # unpaired: every pair; 1 beats 0; 2 ties 2 and beats 0; 3 beats both -> 4.5 of 6
    assert p_greater({0: 1.0, 1: 2.0, 2: 3.0}, {5: 2.0, 6: 0.0}) == 0.75
    # shown even where there are too few seeds for a test
    assert one("a", "m", {0: 0.9}, {0: 0.1}).p_greater == 1.0


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


def test_arms_equal_up_to_rounding_are_said_alike_with_no_warning() -> None:
    """A plain net at chance on every seed: differences of 1e-16 are rounding, not spread, and
    scipy's t-test on them warns of catastrophic cancellation; the table says no variance."""
    import warnings

    arm = {str(s): 1.0 - s * 1e-16 for s in range(3)}
    ref = {str(s): 1.0 + s * 2e-16 for s in range(3)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = one("plain", "train_loss", arm, ref)
    assert found.test == "paired t, no variance" and found.p is None
    spread = one("plain", "train_loss", {**arm, "2": 0.9}, ref)  # a real difference is tested
    assert spread.test == "paired t" and spread.p is not None
