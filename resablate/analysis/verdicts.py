"""What a claim's judgment is made of: the verdict it ends in, the runs it selects and the value
it reads from each.

The verdicts:

- **holds**: the data show it (a significant test where the claim is statistical);
- **contradicted**: the data show the opposite, or a value claim fails;
- **inconclusive**: a test that is not significant, or too few seeds for one;
- **not measured**: no recorded run is what the claim speaks of (a ``cpu`` profile without the
  arm, a metric the runs did not record).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from resablate.analysis.comparisons import _same
from resablate.results import DIVERGED, FINISHED
from resablate.spec.claims import SEARCH_KEY, ClaimSpec
from resablate.tracking.ledger import RunData

HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = (
    "holds",
    "contradicted",
    "inconclusive",
    "not measured",
)
VERDICTS = (HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED)


@dataclass
class Verdict:
    claim: ClaimSpec
    verdict: str
    measured: str  # the number(s) the verdict rests on, as text
    p: float | None = None
    p_holm: float | None = None
    difference: float | None = None  # compare: mean(a) − mean(b)
    p_beats: float | None = None  # compare: P(a beats b) over seed pairs, ties half
    parts: list[str] = field(default_factory=list)  # per configuration, for a trend or value
    notes: list[str] = field(default_factory=list)  # said after the numbers (excluded, edges)
    at_edge: tuple[str, ...] = ()  # compare: the arms whose best_over optimum is at an edge
    mutant: Verdict | None = None  # the claim judged on its mutant arm (claim.mutant)


def not_measured(claim: ClaimSpec, why: str) -> Verdict:
    return Verdict(claim, NOT_MEASURED, why)


def select(runs: Sequence[RunData], chosen: Mapping[str, Any]) -> list[RunData]:
    """The runs whose params have the ``chosen`` values (a list: any of its values); ``search:
    tuned`` / ``written`` picks a search's runs at its best values / the grid's own runs."""
    return [
        run
        for run in runs
        if all(
            any(
                _origin(run) == v if axis == SEARCH_KEY else _same(run.params.get(axis), v)
                for v in (want if isinstance(want, list) else [want])
            )
            for axis, want in chosen.items()
        )
    ]


def _origin(run: RunData) -> str:
    return "tuned" if "search_cell" in run.tags else "written"


def value(run: RunData, claim: ClaimSpec) -> float | None:
    """The run's value of the claim's metric: at init its step-0 value (whatever happened
    later); at the last epoch its final value, ``claim.diverged`` (else NaN: against the claim)
    for a diverged run; None when the run did not record it or ended otherwise."""
    if claim.at == "init":
        return next((v for step, v in run.history.get(claim.metric, []) if step == 0), None)
    if run.status == DIVERGED:
        return math.nan if claim.diverged is None else claim.diverged
    if run.status != FINISHED:
        return None
    return run.metrics.get(claim.metric)


def final(run: RunData, metric: str) -> float | None:
    """A run's last value of ``metric``: NaN for a diverged run, None for one that did not
    finish or did not record it."""
    if run.status == DIVERGED:
        return math.nan
    if run.status != FINISHED:
        return None
    return run.metrics.get(metric)


def not_trained(claim: ClaimSpec, runs: list[RunData]) -> set[str]:
    """The ids of the runs that fail the claim's ``trained`` precondition (none without one)."""
    if claim.trained is None:
        return set()
    return {r.run_id for r in runs if not claim.trained.holds(final(r, claim.trained.metric))}


def excluded(claim: ClaimSpec, runs: list[RunData], untrained: set[str]) -> str | None:
    """The note that says how many of ``runs`` the precondition left out, if any."""
    left = sum(r.run_id in untrained for r in runs)
    if not left:
        return None
    return f"{left} of {len(runs)} runs excluded as not trained ({claim.trained})"


def axis_name(path: str) -> str:
    """A grid axis as a claim's text names it: ``train.lr`` -> ``lr``."""
    return path.rsplit(".", 1)[-1]
