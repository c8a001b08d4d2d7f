"""Claims and their verdicts on hand-made runs whose statistics can be checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from resablate.analysis.claims import evaluate
from resablate.analysis.comparisons import holm
from resablate.analysis.rank_correlation import spearman
from resablate.analysis.verdicts import CONTRADICTED, HOLDS, INCONCLUSIVE, NOT_MEASURED, select
from resablate.errors import SpecError, UserError
from resablate.spec.claims import ClaimSpec
from resablate.tracking.ledger import RunData

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


def lr_sweep(metric: str, losses: dict[str, dict[float, list[float]]], **kw: Any) -> list[RunData]:
    """Each arm's runs at each lr: arm -> lr -> one value per seed."""
    return [
        r
        for shortcut, by_lr in losses.items()
        for lr, values in by_lr.items()
        for r in arm(shortcut, values, metric, lr=lr, **kw)
    ]


LOWER = {**BETTER, "better": "lower", "best_over": "train.lr"}


def test_best_over_compares_each_arm_at_its_best_learning_rate() -> None:
    # identity's best lr is 0.01 (0.2), none's 0.1 (0.31): both inside the swept 0.001-1
    runs = lr_sweep(
        "train_loss",
        {
            "identity": {0.001: [0.9, 0.9, 0.9], 0.01: [0.2, 0.21, 0.19], 0.1: [0.5, 0.52, 0.51]},
            "none": {0.01: [0.4, 0.41, 0.42], 0.1: [0.3, 0.31, 0.32], 1.0: [0.8, 0.9, 0.8]},
        },
    )
    (found,) = evaluate([claim(metric="train_loss", compare=LOWER)], runs, AXES)
    assert found.verdict == HOLDS
    assert found.difference == pytest.approx(0.2 - 0.31)
    assert "at best lr=0.01" in found.measured and "at best lr=0.1" in found.measured
    assert "widen the grid" not in found.measured
    # a diverged seed makes its lr the worst, whatever the others reached
    runs.append(run("identity", seed=3, lr=0.01, status="diverged", train_loss=0.0))
    (found,) = evaluate([claim(metric="train_loss", compare=LOWER)], runs, AXES)
    assert found.difference == pytest.approx((0.5 + 0.52 + 0.51) / 3 - 0.31)


def test_an_optimum_at_the_grids_edge_is_noted_and_caps_the_losers_verdict() -> None:
    inside = {0.01: [0.2, 0.21, 0.19], 0.1: [0.25, 0.26, 0.24], 1.0: [0.9, 0.9, 0.9]}
    edge = {0.01: [0.4, 0.41, 0.42], 0.1: [0.35, 0.36, 0.37], 1.0: [0.3, 0.31, 0.32]}
    # b (none) loses, and its best lr is the largest swept: it might do better beyond it
    runs = lr_sweep("train_loss", {"identity": {0.001: [0.5, 0.5, 0.5], **inside}, "none": edge})
    (found,) = evaluate([claim(metric="train_loss", compare=LOWER)], runs, AXES)
    assert found.p_holm is not None and found.p_holm < 0.05  # significant, yet not decided
    assert found.verdict == INCONCLUSIVE
    assert "b: best lr 1.0 is the largest swept: widen the grid" in found.measured
    assert found.at_edge == ("b",)
    # the winner at the edge: a wider grid could only widen its lead; the verdict stands
    winner = {0.01: [0.4, 0.41, 0.42], 0.1: [0.2, 0.21, 0.22], 1.0: [0.1, 0.11, 0.12]}
    runs = lr_sweep("train_loss", {"identity": winner, "none": {0.001: [0.5] * 3, **inside}})
    (found,) = evaluate([claim(metric="train_loss", compare=LOWER)], runs, AXES)
    assert found.verdict == HOLDS and found.at_edge == ("a",)
    assert "a: best lr 1.0 is the largest swept: widen the grid" in found.measured


def test_a_test_metric_is_read_at_the_lr_a_validation_metric_chose() -> None:
    # test_acc is best at lr 0.1 for identity, but val_acc chooses lr 0.01: the claim reads
    # test_acc there, never choosing on the test set
    runs = []
    for lr, val, test in ((0.001, 0.5, 0.5), (0.01, 0.9, 0.8), (0.1, 0.7, 0.95)):
        for seed, shift in enumerate((0.0, 0.01, 0.02)):
            runs.append(run("identity", seed=seed, lr=lr, val_acc=val + shift, test_acc=test))
            runs.append(run("none", seed=seed, lr=lr, val_acc=val - 0.1, test_acc=0.6 + shift))
    higher = {**BETTER, "best_over": "train.lr", "select_by": "val_acc"}
    (found,) = evaluate([claim(compare=higher)], runs, AXES)
    assert found.difference == pytest.approx(0.8 - 0.61)
    assert "at best lr=0.01 by val_acc" in found.measured
    # a selection metric no run recorded is said, not silently replaced
    (absent,) = evaluate([claim(compare={**higher, "select_by": "val_loss"})], runs, AXES)
    assert (
        absent.verdict == NOT_MEASURED and "val_loss (select_by) not recorded" in absent.measured
    )


@pytest.mark.parametrize(
    ("compare", "metric", "problem"),
    [
        ({}, "test_acc", "'test_acc' is read on the test set"),
        ({"select_by": "train_loss"}, "test_acc", "by a validation metric (val_*)"),
        ({"select_by": "test_loss"}, "train_loss", "'test_loss' is read on the test set"),
        ({"select_by": "val_thing"}, "train_loss", "neither loss, error nor acc"),
        ({"select_by": "val_acc", "best_over": None}, "test_acc", "give compare.best_over"),
    ],
)
def test_a_best_over_chosen_on_the_test_set_is_refused_in_one_line(
    tmp_path: Path, compare: dict[str, Any], metric: str, problem: str
) -> None:
    from resablate.spec.loader import load_sweep

    spec = {**BETTER, "best_over": "train.lr", **compare}
    raw = {"id": "c", "says": "s", "metric": metric, "compare": spec}
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: x\nmodel: {depth: 4}\n"
        "grid: {model.shortcut: [identity, none], train.lr: [0.01, 0.1], seed: [0, 1]}\n"
        f"claims: [{json.dumps(raw)}]\n"
    )
    with pytest.raises(SpecError) as refused:
        load_sweep(path)
    assert refused.value.field == "claims.c.compare.select_by"
    assert problem in str(refused.value) and "\n" not in str(refused.value)


def test_select_by_defaults_to_a_training_metric_and_reads_its_direction_from_its_name() -> None:
    # the paper's own procedure: the best final training loss per configuration
    own = claim(metric="train_loss", compare=LOWER).compare
    assert own is not None and own.selection("train_loss") == ("train_loss", "lower")
    chosen = {**BETTER, "best_over": "train.lr", "select_by": "val_acc"}
    by_val = claim(compare=chosen).compare
    assert by_val is not None and by_val.selection("test_acc") == ("val_acc", "higher")
    assert claim(compare=BETTER).compare.selection("test_acc") is None  # type: ignore[union-attr]


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


# -- a precondition on each run: a lesion claim counts only on a net that trained ---------------

TRAINED = {"metric": "lesion.whole", "above": 0.5}


def lesioned(shortcut: str, wholes: list[float], increases: list[float]) -> list[RunData]:
    return [
        run(shortcut, seed=i, **{"lesion.whole": w, "lesion.error_increase_k1": e})
        for i, (w, e) in enumerate(zip(wholes, increases, strict=True))
    ]


def test_runs_that_did_not_train_are_left_out_and_counted() -> None:
    # seed 3 of the plain net stayed at chance (whole 0.1): its lesion says nothing
    runs = lesioned("identity", [0.9, 0.92, 0.91, 0.9], [0.02, 0.03, 0.025, 0.02])
    runs += lesioned("none", [0.9, 0.88, 0.91, 0.1], [0.7, 0.72, 0.69, 0.0])
    lower = {**BETTER, "better": "lower"}
    spec = claim(metric="lesion.error_increase_k1", trained=TRAINED, compare=lower)
    (found,) = evaluate([spec], runs, AXES)
    assert found.verdict == HOLDS
    assert "1 of 8 runs excluded as not trained (lesion.whole above 0.5)" in found.measured
    assert "paired t" not in found.measured  # seed 3 is gone from b: the seeds differ
    kept = [0.02, 0.03, 0.025, 0.02], [0.7, 0.72, 0.69]
    welch = stats.ttest_ind(*kept, equal_var=False).pvalue
    assert found.p == pytest.approx(welch)
    # counted as a sample, the untrained seed would have given b a lower mean
    (unfiltered,) = evaluate([claim(metric="lesion.error_increase_k1", compare=lower)], runs, AXES)
    assert unfiltered.difference != pytest.approx(found.difference)
    # an arm with no trained run is not measured, and the claim says why
    dead = runs[:4] + lesioned("none", [0.1, 0.12, 0.1, 0.11], [0.0, 0.0, 0.0, 0.0])
    (found,) = evaluate([spec], dead, AXES)
    assert found.verdict == NOT_MEASURED
    assert found.measured.startswith("no run of arm b trained: 4 of 8 runs excluded")


def test_a_value_claim_on_untrained_configurations_is_not_measured_there() -> None:
    runs = lesioned("identity", [0.9, 0.92], [0.02, 0.03])
    runs += lesioned("none", [0.1, 0.1], [0.0, 0.0])
    below = claim(metric="lesion.error_increase_k1", trained=TRAINED, below={"value": 0.1})
    (found,) = evaluate([below], runs, AXES)
    assert found.verdict == INCONCLUSIVE  # holds on the ResNet, nothing on the plain net
    assert "shortcut=none: no run trained (lesion.whole above 0.5)" in found.measured
    assert "2 of 4 runs excluded" in found.measured
    only = claim(metric="lesion.error_increase_k1", trained=TRAINED, below={"value": 0.1})
    assert evaluate([only], runs[:2], AXES)[0].verdict == HOLDS


def test_a_precondition_names_one_bound() -> None:
    with pytest.raises(ValueError, match="give exactly one bound"):
        claim(trained={"metric": "lesion.whole"}, below={"value": 1.0})
    assert claim(trained={"metric": "train_loss", "below": 1.0}, below={"value": 1.0}).trained


# -- pooled laws: the mean over seeds of each unit's series ---------------------------------------


def doubling(seeds: int) -> tuple[list[RunData], dict[str, dict[int, dict[str, Any]]]]:
    """Seeds whose mean second moment doubles per unit exactly (1, 2, 4, 8, 16) while each
    seed's own last unit lands at 1.5x or 0.5x of it: factors 2.21 and 1.68, as one finite
    width seed may."""
    runs, series = [], {}
    for seed in range(seeds):
        last = 24.0 if seed % 2 == 0 else 8.0
        fwd = [1.0, 2.0, 4.0, 8.0, last]
        found = run(seed=seed, history={"spp.moment_growth": [(0, last ** (1 / 4))]})
        found.metrics["spp.moment_growth"] = last ** (1 / 4)
        runs.append(found)
        series[found.run_id] = {0: {"fwd_var": fwd, "chan_sq_mean": [0.0] * 5}}
    return runs, series


def test_a_law_of_the_expectation_is_judged_on_the_seeds_mean_series() -> None:
    runs, series = doubling(8)

    def probes(r: RunData, probe: str) -> dict[int, dict[str, Any]]:
        assert probe == "spp"
        return series[r.run_id]

    law = {"metric": "spp.moment_growth", "at": "init"}
    per_seed = claim(**law, equals={"value": 2.0, "tolerance": 0.1, "of": "every"})
    assert evaluate([per_seed], runs, AXES, probes)[0].verdict == CONTRADICTED
    pooled = claim(**law, equals={"value": 2.0, "tolerance": 0.1, "pool": "seeds"})
    (found,) = evaluate([pooled], runs, AXES, probes)
    assert found.verdict == HOLDS and "2 pooled over 8 seeds" in found.measured
    # fewer than 8 seeds: the mean series is not yet the expectation's
    few, few_series = doubling(4)
    (found,) = evaluate([pooled], few, AXES, lambda r, p: few_series[r.run_id])
    assert found.verdict == INCONCLUSIVE
    assert "pooled over 4 seeds, the law needs ≥ 8" in found.measured
    # no recorded series: not measured
    (found,) = evaluate([pooled], runs, AXES, lambda r, p: {})
    assert found.verdict == NOT_MEASURED


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"metric": "test_acc", "at": "init"}, "pools a law of the spp probe"),
        ({"metric": "spp.moment_growth"}, "add at: init"),
        ({"metric": "spp.moment_growth", "at": "init", "of": "every"}, "drop of: every"),
    ],
)
def test_pooling_is_for_the_spp_laws_at_init(raw: dict[str, Any], problem: str) -> None:
    of = raw.pop("of", "mean")
    with pytest.raises(ValueError, match=problem):
        claim(**raw, equals={"value": 2.0, "pool": "seeds", "of": of})


def test_a_mutant_arm_is_the_claim_with_its_selections_replaced() -> None:
    """``mutant:`` judges the claim again on another arm of the same runs: the ResNet's claim
    on the plain net must not hold, or the claim could not have failed."""
    runs = arm("identity", [0.90, 0.91, 0.92]) + arm("none", [0.80, 0.82, 0.81])
    said = claim(compare=BETTER, mutant={"a": {"model.shortcut": "none"}})
    mutated = said.mutated()
    assert mutated is not None and mutated.compare is not None
    assert mutated.compare.a == {"model.shortcut": "none"} and mutated.compare.b == BETTER["b"]
    (found,) = evaluate([said], runs, AXES)
    (broken,) = evaluate([mutated], runs, AXES)
    assert found.verdict == HOLDS and broken.verdict == INCONCLUSIVE  # the same arm twice
    value_claim = claim(
        where={"model.shortcut": "identity"},
        above={"value": 0.85, "of": "every"},
        mutant={"where": {"model.shortcut": "none"}},
    )
    (holds,) = evaluate([value_claim], runs, AXES)
    (turned,) = evaluate([value_claim.mutated()], runs, AXES)  # type: ignore[list-item]
    assert holds.verdict == HOLDS and turned.verdict == CONTRADICTED
    assert claim(above={"value": 0.5}).mutated() is None


def test_search_tuned_and_written_select_a_searchs_best_runs_and_the_grids_own() -> None:
    written = arm("identity", [0.5, 0.6, 0.55])
    tuned = arm("identity", [0.9, 0.92, 0.91])
    for found in tuned:
        found.tags["search_cell"] = "abc"
        found.run_id += "-tuned"
    both = written + tuned
    assert select(both, {"search": "tuned"}) == tuned
    assert select(both, {"search": "written", "model.shortcut": "identity"}) == written
    assert select(both, {"search": ["tuned", "written"]}) == both
    with pytest.raises(Exception, match="give tuned"):
        claim(where={"search": "best"}, above={"value": 0.5})
