"""Spearman's rank correlation with a permutation p-value: the test of a trend claim.

The p-value is scipy.stats.permutation_test's over pairings: every pairing, exact, for up to 7
points (5,040 of them); :data:`PERMUTATIONS` seeded resamples beyond, so a handful of depths is
judged for what it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

PERMUTATIONS = 9999  # resamples when the pairings are too many to enumerate


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's ρ and its two-sided permutation p-value (exact up to 7 points, whose 5,040
    pairings are all counted; seeded resamples beyond)."""
    import numpy as np
    from scipy import stats

    rx, ry = stats.rankdata(x), stats.rankdata(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan, 1.0

    def rho(a: Any, axis: int = -1) -> Any:
        a = a - a.mean(axis=axis, keepdims=True)
        b = ry - ry.mean()
        return (a * b).sum(axis=axis) / np.sqrt((a * a).sum(axis=axis) * (b * b).sum())

    found = stats.permutation_test(
        (rx,),
        rho,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=PERMUTATIONS,
        alternative="two-sided",
        rng=0,
    )
    return float(found.statistic), float(found.pvalue)
