"""Signal propagation per residual unit (science.md §4; Brock, De, Smith 2021; De & Smith 2020).

For each unit l on one batch: the variance of its output x_l (mean over channels of the per-channel
variance over batch and space; features for dense units), the same at the end of its residual
branch (``unit.branch_out``), of the gradient dLoss/dx_l, the average channel squared mean of
x_l, and the unit's stage (where the variance starts anew: :func:`stages`). Hooks reduce to
floats at once and are removed in ``finally``; in-place activations are switched off while
probing; parameter gradients are left untouched.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn


def channel_stats(t: Tensor) -> tuple[float, float]:
    """(mean over channels of the per-channel variance, mean over channels of mean²), channels
    on dim 1, statistics over the batch and every spatial position."""
    per_channel = t.detach().transpose(0, 1).reshape(t.shape[1], -1).double()
    return float(per_channel.var(dim=1, unbiased=False).mean()), float(
        per_channel.mean(dim=1).pow(2).mean()
    )


@contextlib.contextmanager
def not_inplace(net: nn.Module) -> Iterator[None]:
    """Switch every in-place activation off (an in-place op would overwrite hooked outputs)."""
    flagged = [m for m in net.modules() if getattr(m, "inplace", False)]
    for module in flagged:
        module.inplace = False  # type: ignore[assignment]
    try:
        yield
    finally:
        for module in flagged:
            module.inplace = True  # type: ignore[assignment]


def noise_batch(shape: tuple[int, ...], n: int, generator: torch.Generator) -> Tensor:
    """A white-noise batch N(0, 1) of ``n`` inputs (Brock et al.'s signal propagation plots)."""
    return torch.randn((n, *shape), generator=generator)


def signal_propagation(
    net: nn.Module, x: Tensor, y: Tensor, loss: Callable[[Tensor, Tensor], Tensor]
) -> dict[str, Any]:
    units = list(net.units)  # type: ignore[arg-type]
    fwd, sq, branch, outputs = [0.0] * len(units), [0.0] * len(units), [0.0] * len(units), []
    handles = []

    def on_output(i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, out: Tensor) -> None:
            fwd[i], sq[i] = channel_stats(out)
            outputs.append(out)  # kept only until the backward pass below

        return hook

    def on_branch(i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, out: Tensor) -> None:
            branch[i] = channel_stats(out)[0]

        return hook

    try:
        for i, unit in enumerate(units):
            handles.append(unit.register_forward_hook(on_output(i)))
            handles.append(unit.branch_out.register_forward_hook(on_branch(i)))
        with not_inplace(net):
            value = loss(net(x), y)
            grads = torch.autograd.grad(value, outputs, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    bwd = [channel_stats(g)[0] if g is not None else 0.0 for g in grads]
    stage = stages(units)
    found: dict[str, Any] = {
        "fwd_var": fwd,
        "branch_var": branch,
        "bwd_var": bwd,
        "chan_sq_mean": sq,
        "stage": stage,
    }
    expected = [u.plan.nf_out for u in units if getattr(u, "nf_alpha", None) is not None]
    if len(expected) == len(units):
        found["nf_expected"] = expected  # what a report pooling seeds computes nf_ratio from
    return {**found, **laws(fwd, sq, found.get("nf_expected"), stage)}


def stages(units: list[nn.Module]) -> list[int]:
    """Each unit's stage: a new one begins at a unit that changes shape or whose shortcut is a
    projection. De & Smith's linear growth of the variance is a law of identity shortcuts
    x + F(x), each adding its branch's variance; a projection or a change of width or
    resolution sets the variance anew, so a line fits each stage, not the whole net."""
    out, stage = [], 0
    for i, unit in enumerate(units):
        if i and (getattr(unit, "changes_shape", False) or getattr(unit, "projects", False)):
            stage += 1
        out.append(stage)
    return out


def laws(
    fwd: list[float],
    sq: list[float],
    nf_expected: list[float] | None = None,
    stage: list[int] | None = None,
) -> dict[str, float]:
    """The numbers the study's laws are stated in (science.md §4), each only where defined:

    - ``moment_growth``, ``var_growth``: the factor per unit by which the second moment
      (variance + channel squared mean) and the variance grow from the first unit to the last,
      (last / first)^(1 / (units − 1)): 2 for unnormalized He units;
    - ``var_linearity``: the lowest, over the stages (``stage``: each unit's, default one
      stage) of at least 3 units, R² of a least-squares line through the variance against the
      unit index (scipy.stats.linregress): near 1 where it grows linearly within every stage
      (De & Smith 2020); ``var_linearity_all``: the same line through every unit, across the
      stages' resets (the two agree on a net of one stage);
    - ``var_slope``: that line's slope, the variance each unit adds, averaged over those stages:
      each He branch after batch norm and ReLU adds 2·Var(relu(z)) = 1 − 1/π ≈ 0.68 (its
      second moment adds 2·E[relu(z)²] = 1; the rest is each channel's mean, W·E[relu(z)],
      constant over the batch), a norm after the addition adds 0 (R² alone cannot tell: a
      flat series with a small drift fits a line well);
    - ``fwd_last``: the last unit's variance;
    - ``nf_ratio`` (normalizer-free nets): the largest factor, either way, between a unit's
      variance and its expected β² schedule (Brock et al. 2021).

    The series may be one seed's or, pooled, the mean over seeds of each unit's (a law of the
    expectation is taken on the mean, :mod:`resablate.analysis.claims`).
    """
    out: dict[str, float] = {"fwd_last": fwd[-1]} if fwd else {}
    moment = [v + s for v, s in zip(fwd, sq, strict=True)]
    for key, series in (("moment_growth", moment), ("var_growth", fwd)):
        if len(series) > 1 and series[0] > 0 and series[-1] > 0:
            out[key] = (series[-1] / series[0]) ** (1.0 / (len(series) - 1))
    stage = stage or [0] * len(fwd)
    fits = [
        line
        for s in sorted(set(stage))
        if (line := _line([v for v, t in zip(fwd, stage, strict=True) if t == s])) is not None
    ]
    if fits:
        out["var_linearity"] = min(r2 for r2, _ in fits)
        out["var_slope"] = sum(slope for _, slope in fits) / len(fits)
    whole = _line(fwd)
    if whole is not None:
        out["var_linearity_all"] = whole[0]
    if nf_expected and all(v > 0 for v in fwd):
        out["nf_ratio"] = max(max(v / e, e / v) for v, e in zip(fwd, nf_expected, strict=True))
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _line(series: list[float]) -> tuple[float, float] | None:
    """R² and slope of a least-squares line through ``series`` against its index; None for
    fewer than 3 points, or a constant or non-finite series (no line to speak of)."""
    from scipy import stats

    if len(series) < 3 or len(set(series)) < 2 or not all(math.isfinite(v) for v in series):
        return None
    fit = stats.linregress(range(len(series)), series)
    return float(fit.rvalue**2), float(fit.slope)
