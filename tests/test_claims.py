"""Claims and their verdicts on hand-made runs whose statistics can be checked by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest
from scipy import stats

from resablate.claims import (
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    evaluate,
    select,
    spearman,
)
from resablate.comparisons import holm
from resablate.errors import UserError
from resablate.ledger import RunData
from resablate.options import ClaimSpec

AXES = ["model.shortcut", "model.depth", "train.lr", "seed"]


def run(
    shortcut: str = "identity",
    depth: int = 4,
    seed: int = 0,
    status: str = "finished",
    lr: float = 0.1,
    history: dict[str, list[tuple[int, float]]] | None = None,
    **metrics: float,
) -> RunData:
    params = {
        "model.shortcut": shortcut,
        "model.depth": str(depth),
        "train.lr": str(lr),
        "seed": str(seed),
    }
    return RunData(f"{shortcut}-{depth}-{lr}-{seed}", status, params, {}, metrics, history or {})


def arm(shortcut: str, values: list[float], metric: str = "test_acc", **kw: Any) -> list[RunData]:
    return [run(shortcut, seed=i, **kw, **{metric: v}) for i, v in enumerate(values)]


def claim(**raw: Any) -> ClaimSpec:
    return ClaimSpec.model_validate({"id": "c", "says": "s", "metric": "test_acc", **raw})


BETTER = {"better": "higher", "a": {"model.shortcut": "identity"}, "b": {"model.shortcut": "none"}}


def test_a_known_shift_holds_and_its_reverse_is_contradicted() -> None:
    runs = arm("identity", [0.90, 0.91, 0.92]) + arm("none", [0.80, 0.82, 0.81])
    (found,) = evaluate([claim(compare=BETTER)], runs, AXES)
    p = stats.ttest_rel([0.90, 0.91, 0.92], [0.80, 0.82, 0.81]).pvalue
    assert found.verdict == HOLDS
    assert found.p == pytest.approx(p) and found.p_holm == pytest.approx(p)  # one test: no change
    assert found.difference == pytest.approx(0.1)
    assert "paired t" in found.measured and "(95% t)" in found.measured
    assert found.p_beats == 1.0 and "P(a beats b) = 1" in found.measured
    (reverse,) = evaluate([claim(compare={**BETTER, "better": "lower"})], runs, AXES)
    assert reverse.verdict == CONTRADICTED and reverse.p_beats == 0.0


def test_the_probability_that_a_beats_b_follows_the_claims_direction() -> None:
    # seeds 0 and 1: a higher; seed 2: a tie (half) -> P(a > b) = 2.5 / 3
    runs = arm("identity", [0.90, 0.91, 0.80]) + arm("none", [0.80, 0.82, 0.80])
    (higher,) = evaluate([claim(compare=BETTER)], runs, AXES)
    assert higher.p_beats == pytest.approx(2.5 / 3)
    (lower,) = evaluate([claim(compare={**BETTER, "better": "lower"})], runs, AXES)
    assert lower.p_beats == pytest.approx(0.5 / 3)  # the tie's half stays with a


def test_identical_arms_and_too_few_seeds_are_inconclusive() -> None:
    same = arm("identity", [0.90, 0.80, 0.85]) + arm("none", [0.85, 0.90, 0.80])
    (found,) = evaluate([claim(compare=BETTER)], same, AXES)
    assert found.verdict == INCONCLUSIVE and found.p is not None and found.p > 0.05
    few = arm("identity", [0.9, 0.91]) + arm("none", [0.1, 0.11])
    (found,) = evaluate([claim(compare=BETTER)], few, AXES)
    assert found.verdict == INCONCLUSIVE and "too few seeds (2 < 3)" in found.measured


def test_holm_over_the_files_compare_claims_decides_the_verdicts() -> None:
    # three claims each significant alone (p < 0.05) of which Holm keeps only some
    a = [0.50, 0.60, 0.70, 0.80]
    shifts = {"identity": [0.03, 0.05, 0.04, 0.06], "gate": [0.02, 0.06, 0.03, 0.07]}
    shifts["conv"] = [0.02, 0.06, 0.02, 0.06]
    runs = arm("none", a)
    claims, raw = [], []
    for name, shift in shifts.items():
        values = [x + s for x, s in zip(a, shift, strict=True)]
        runs += arm(name, values)
        raw.append(stats.ttest_rel(values, a).pvalue)
        compare = {**BETTER, "a": {"model.shortcut": name}}
        claims.append(claim(id=name, compare=compare))
    assert all(p < 0.05 for p in raw)
    found = evaluate(claims, runs, AXES)
    adjusted = holm(raw)
    assert [v.p_holm for v in found] == pytest.approx(adjusted)
    assert [v.verdict for v in found] == [HOLDS if p < 0.05 else INCONCLUSIVE for p in adjusted]
    assert INCONCLUSIVE in [v.verdict for v in found]  # Holm made a difference here


def test_an_arm_with_no_run_is_not_measured_and_an_ambiguous_arm_is_an_error() -> None:
    runs = arm("identity", [0.9, 0.91, 0.92])
    (found,) = evaluate([claim(compare=BETTER)], runs, AXES)
    assert found.verdict == NOT_MEASURED and "arm b" in found.measured
    runs += arm("none", [0.8, 0.8, 0.8]) + arm("none", [0.7, 0.7, 0.7], depth=8)
    with pytest.raises(UserError, match="arm b matches 2 configurations"):
        evaluate([claim(compare=BETTER)], runs, AXES)


def test_best_over_compares_each_arm_at_its_best_learning_rate() -> None:
    # identity: lr 0.1 has loss 0.5, lr 0.01 has 0.2 (its best); none: 0.3 at both lrs
    runs = arm("identity", [0.5, 0.52, 0.51], "train_loss", lr=0.1)
    runs += arm("identity", [0.2, 0.21, 0.19], "train_loss", lr=0.01)
    runs += arm("none", [0.3, 0.31, 0.32], "train_loss", lr=0.1)
    runs += arm("none", [0.3, 0.31, 0.33], "train_loss", lr=0.01)
    lower = {**BETTER, "better": "lower", "best_over": "train.lr"}
    (found,) = evaluate([claim(metric="train_loss", compare=lower)], runs, AXES)
    assert found.verdict == HOLDS
    assert found.difference == pytest.approx(0.2 - 0.31)  # none's best lr: 0.1, its lower mean
    assert "lr=0.01" in found.measured and "lr=0.1" in found.measured
    # a diverged seed makes its lr the worst, whatever the others reached
    runs.append(run("identity", seed=3, lr=0.01, status="diverged", train_loss=0.0))
    (found,) = evaluate([claim(metric="train_loss", compare=lower)], runs, AXES)
    assert found.difference == pytest.approx((0.5 + 0.52 + 0.51) / 3 - 0.31)


def test_trends_by_spearman_with_an_exact_permutation_p() -> None:
    def series(values: dict[int, list[float]], **kw: Any) -> list[RunData]:
        return [
            run(depth=d, seed=s, **kw, test_loss=v)
            for d, vs in values.items()
            for s, v in enumerate(vs)
        ]

    up = claim(metric="test_loss", trend={"over": "model.depth", "is": "increasing"})
    three = series({2: [1.0, 1.1], 4: [2.0, 2.1], 8: [3.0, 3.1]})
    (found,) = evaluate([up], three, AXES)
    # ρ = 0.956 (depths tie within seeds); 16 of the 720 pairings are as extreme either way
    assert found.verdict == HOLDS and "ρ = 0.956, p = 0.0222" in found.measured
    two = series({2: [1.0, 1.1], 4: [2.0, 2.1]})
    (found,) = evaluate([up], two, AXES)
    assert found.verdict == INCONCLUSIVE and "p = 0.333" in found.measured  # 8 of 24 pairings
    down = claim(metric="test_loss", trend={"over": "model.depth", "is": "decreasing"})
    assert evaluate([down], three, AXES)[0].verdict == CONTRADICTED
    assert spearman([1, 2, 3], [5, 5, 5]) == (pytest.approx(math.nan, nan_ok=True), 1.0)
    # each configuration is judged; one that does not hold decides
    mixed = three + series({2: [3.0, 3.1], 4: [2.0, 2.1], 8: [1.0, 1.1]}, shortcut="none")
    (found,) = evaluate([up], mixed, AXES)
    assert found.verdict == CONTRADICTED and len(found.parts) == 2


def test_flat_within_a_relative_tolerance() -> None:
    runs = [
        run(depth=d, seed=s, test_loss=v) for d, v in ((6, 1.667), (12, 1.668)) for s in (0, 1)
    ]
    flat = claim(
        metric="test_loss", trend={"over": "model.depth", "is": "flat", "tolerance": 0.01}
    )
    assert evaluate([flat], runs, AXES)[0].verdict == HOLDS
    runs.append(run(depth=24, test_loss=1.8))
    (found,) = evaluate([flat], runs, AXES)
    assert found.verdict == CONTRADICTED and "spread 0.0" in found.measured


def test_value_claims_of_the_mean_every_run_and_most_runs() -> None:
    runs = arm("identity", [0.05, 0.12, 0.08, 0.6, 0.07])
    assert evaluate([claim(below={"value": 0.15})], runs, AXES)[0].verdict == CONTRADICTED  # 0.184
    assert evaluate([claim(below={"value": 0.15, "of": "most"})], runs, AXES)[0].verdict == HOLDS
    assert evaluate([claim(below={"value": 0.15, "of": "every"})], runs, AXES)[0].verdict == (
        CONTRADICTED
    )
    assert evaluate([claim(above={"value": 0.1, "of": "most"})], runs, AXES)[0].verdict == (
        CONTRADICTED  # 2 of 5
    )
    exact = claim(equals={"value": 0.184, "tolerance": 1e-9})
    assert evaluate([exact], runs, AXES)[0].verdict == HOLDS
    absent = claim(where={"model.shortcut": "gate"}, below={"value": 1.0})
    assert evaluate([absent], runs, AXES)[0].verdict == NOT_MEASURED


def test_a_diverged_run_counts_against_a_claim_unless_it_is_given_a_value() -> None:
    runs = [*arm("identity", [0.05, 0.06]), run(seed=2, status="diverged", test_acc=0.9)]
    assert evaluate([claim(below={"value": 0.2, "of": "every"})], runs, AXES)[0].verdict == (
        CONTRADICTED
    )
    chance = claim(below={"value": 0.2, "of": "every"}, diverged=0.1)
    assert evaluate([chance], runs, AXES)[0].verdict == HOLDS
    killed = [*arm("identity", [0.05]), run(seed=1, status="killed", test_acc=0.9)]
    assert evaluate([claim(below={"value": 0.2, "of": "every"})], killed, AXES)[0].verdict == HOLDS


def test_at_init_reads_step_0_whatever_happened_later() -> None:
    history = {"hessian.cond": [(0, 17.5), (100, 3.0)]}
    runs = [run(status="diverged", history=history, **{"hessian.cond": 3.0})]
    at_init = claim(metric="hessian.cond", at="init", equals={"value": 17.5})
    assert evaluate([at_init], runs, AXES)[0].verdict == HOLDS
    last = claim(metric="hessian.cond", equals={"value": 17.5})
    assert evaluate([last], runs, AXES)[0].verdict == CONTRADICTED  # diverged, no value given


def test_where_takes_a_value_or_a_list_of_values() -> None:
    runs = arm("identity", [0.5]) + arm("none", [0.4]) + arm("gate", [0.3])
    assert len(select(runs, {"model.shortcut": ["identity", "gate"]})) == 2
    assert len(select(runs, {"model.depth": 4, "model.shortcut": "none"})) == 1
