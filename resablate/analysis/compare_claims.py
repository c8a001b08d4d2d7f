"""A compare claim (``compare: {a, b, better}``) judged on its two arms' runs.

The test is :func:`resablate.analysis.comparisons.one` (paired t over common seeds, Welch's t
otherwise; the test's t-interval below 10 seeds, a bootstrap from 10; the probability that a
beats b over seed pairs); :func:`resablate.analysis.claims.evaluate` then applies Holm's
correction over the file's compare claims.

``compare.best_over`` puts each arm at its best value of a grid axis, chosen by
``compare.select_by`` (never by a test metric: :class:`resablate.spec.claims.CompareClaim`). An
optimum at the edge of the swept values is noted (widen the grid), and caps the verdict at
inconclusive when it is the *losing* arm's: a wider grid could only improve that arm, so it might
overturn the verdict; the winner's edge optimum could only make its win larger, so the verdict
stands.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from resablate.analysis.comparisons import MIN_SEEDS, one
from resablate.analysis.figures import SEED, group, label, number, varying
from resablate.analysis.verdicts import (
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    Verdict,
    axis_name,
    excluded,
    final,
    not_measured,
    select,
    value,
)
from resablate.errors import UserError
from resablate.spec.claims import ClaimSpec
from resablate.tracking.ledger import RunData


@dataclass
class _Arm:
    runs: list[RunData]
    at: str = ""  # " at best lr=0.01" where it is chosen over best_over
    edge: str | None = None  # the note when that best value is the smallest or largest swept
    missing: str | None = None  # why no best value could be chosen


def _configuration(claim: ClaimSpec, runs: list[RunData], cells: list[str], name: str) -> _Arm:
    """One arm's runs, at its best ``best_over`` value where the claim has one: the best seed
    mean of ``select_by`` at the last epoch (a diverged seed makes its value the worst), ties
    to the smaller value. An arm that matches several configurations is an error in the
    claim."""
    assert claim.compare is not None
    best_over, selection = claim.compare.best_over, claim.compare.selection(claim.metric)
    arm = _Arm(runs)
    if best_over is not None and selection is not None:
        metric, way = selection
        sign = 1.0 if way == "higher" else -1.0

        def score(at: list[RunData]) -> float | None:
            known = [v for v in (final(r, metric) for r in at) if v is not None]
            if not known:
                return None
            if any(math.isnan(v) for v in known):
                return -math.inf
            return sign * statistics.fmean(known)

        by_value = group(runs, lambda r: r.params.get(best_over, "?"))
        scores = {v: score(members) for v, members in by_value.items()}
        scored = [v for v, found in scores.items() if found is not None]
        if not scored:
            return _Arm([], missing=f"{metric} (select_by) not recorded in arm {name}")
        top = max(scored, key=lambda v: (scores[v], -number(v)))
        arm.runs = by_value[top]
        by = "" if metric == claim.metric else f" by {metric}"
        axis = axis_name(best_over)
        arm.at = f" at best {axis}={top}{by}"
        swept = sorted(number(v) for v in by_value)
        if len(swept) == 1:
            arm.edge = f"{name}: {axis} {top} is the only value swept: widen the grid"
        elif number(top) in (swept[0], swept[-1]):
            side = "largest" if number(top) == swept[-1] else "smallest"
            arm.edge = f"{name}: best {axis} {top} is the {side} swept: widen the grid"
    others = [a for a in varying(arm.runs, cells) if a != best_over]
    found = group(arm.runs, lambda r: label(r, others))
    if len(found) > 1:
        raise UserError(
            f"claim {claim.id}: arm {name} matches {len(found)} configurations"
            f" ({'; '.join(list(found)[:3])}...); name more grid axes in compare.{name}"
        )
    return arm


def judge(
    claim: ClaimSpec, chosen: list[RunData], cells: list[str], untrained: set[str]
) -> Verdict:
    """The claim's verdict before Holm's correction: holds or contradicted only where the test
    has no spread to be unsure of, else inconclusive until the correction decides."""
    spec = claim.compare
    assert spec is not None
    every = {"a": select(chosen, spec.a), "b": select(chosen, spec.b)}
    missing = [n for n, r in every.items() if not r]
    if missing:
        return not_measured(claim, f"no run of arm {' or '.join(missing)} in this sweep")
    kept = {n: [r for r in runs if r.run_id not in untrained] for n, runs in every.items()}
    left_out = excluded(claim, every["a"] + every["b"], untrained)
    for name, runs in kept.items():
        if not runs:
            return not_measured(claim, f"no run of arm {name} trained: {left_out}")
    arms = {n: _configuration(claim, runs, cells, n) for n, runs in kept.items()}
    for chosen_arm in arms.values():
        if chosen_arm.missing:
            return not_measured(claim, chosen_arm.missing)
    a_arm, b_arm = arms["a"], arms["b"]
    apart = [x for x in varying(a_arm.runs + b_arm.runs, cells) if x != spec.best_over]
    a_name = label(a_arm.runs[0], apart) + a_arm.at
    b_name = label(b_arm.runs[0], apart) + b_arm.at
    a, b = _finals(a_arm.runs, claim), _finals(b_arm.runs, claim)
    if not a or not b:
        return not_measured(claim, f"{claim.metric} not recorded in arm {'a' if not a else 'b'}")
    if any(math.isnan(v) for v in [*a.values(), *b.values()]):
        return Verdict(claim, INCONCLUSIVE, "a diverged run and no `diverged:` value to count it")
    found = one(a_name, claim.metric, a, b)
    beats = _beats(claim, found.p_greater)
    measured = f"a − b = {found.difference:.4g}"
    if found.low is not None:
        measured += f" {found.shown_interval}"
    measured += f" ({a_name} vs {b_name}; {found.test}"
    shown = "" if beats is None else f", P(a beats b) = {beats:.2g}"
    verdict = INCONCLUSIVE
    if found.p is None:
        if min(found.n, found.n_reference) >= MIN_SEEDS and found.difference != 0:
            # no spread: every seed's difference alike; the sign is then beyond doubt
            verdict = HOLDS if better(claim, found.difference) else CONTRADICTED
        measured += shown + ")"
    else:
        measured += f", p = {found.p:.3g}{shown})"
    notes = [n for n in (left_out, a_arm.edge, b_arm.edge) if n]
    edges = tuple(n for n, arm in arms.items() if arm.edge)
    return Verdict(
        claim,
        verdict,
        measured,
        p=found.p,
        difference=found.difference,
        p_beats=beats,
        notes=notes,
        at_edge=edges,
    )


def edge_cap(found: Verdict) -> None:
    """A verdict that the losing arm's edge optimum could overturn is at most inconclusive."""
    if found.verdict not in (HOLDS, CONTRADICTED) or found.difference is None:
        return
    loser = "b" if better(found.claim, found.difference) else "a"
    if loser in found.at_edge:
        found.verdict = INCONCLUSIVE
        found.notes.append(
            f"inconclusive: the losing arm {loser}'s optimum is at the edge of the grid"
        )


def _beats(claim: ClaimSpec, p_greater: float | None) -> float | None:
    """P(a beats b) in the claim's better direction from P(a > b), ties half: for "lower",
    P(a < b) = 1 − P(a > b), the ties' half staying with each side."""
    assert claim.compare is not None
    if p_greater is None:
        return None
    return p_greater if claim.compare.better == "higher" else 1.0 - p_greater


def better(claim: ClaimSpec, difference: float) -> bool:
    """Whether the measured difference a − b points the way the claim says."""
    assert claim.compare is not None
    return difference > 0 if claim.compare.better == "higher" else difference < 0


def _finals(runs: list[RunData], claim: ClaimSpec) -> dict[str, float]:
    out = {}
    for i, run in enumerate(runs):
        found = value(run, claim)
        if found is not None:
            out[run.params.get(SEED, str(i))] = found
    return out
