"""Shattered gradients (Balduzzi et al. 2017, "The Shattered Gradients Problem", arXiv 1702.08591).

Inputs along a line x(t) = a + t·(b − a), t in [0, 1] at ``points`` steps; the signal is the
directional derivative g(t) = ∇ₓ(r·f(x(t))) · (b − a) of a fixed random projection r of the output.
Its mean-subtracted, normalized autocorrelation by lag is compared with white noise (what deep
plain networks approach) and brown noise, the cumulative sum of that white noise (what ResNets
resemble).

The ``points`` inputs are one batch, and batch norm normalizes with that batch's statistics, as in
the paper (eval-mode batch norm is the identity at init and would measure the unnormalized net);
running statistics are left untouched and stochastic depth and dropout stay off. The statistics
enter the gradient as constants: g(t) is the gradient at x(t) of the function the batch-normalized
network computes, and depends on the other points through the statistics' values. The exact
per-point derivative differs from it only by x(t)'s 1/points share in the statistics; the gradient
of the batch's summed output would add every other point's response to x(t) through them, a term
as large as g itself in the nets measured (in a linear net it cancels g exactly).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def autocorrelation(signal: Tensor, max_lag: int) -> list[float]:
    """Normalized autocorrelation of a 1-D signal at lags 0..max_lag; a constant signal (a linear
    network's gradient) is perfectly correlated: 1 at every lag."""
    centred = signal.double() - signal.double().mean()
    energy = float(centred.pow(2).sum())
    if energy <= 1e-24 * max(1.0, float(signal.double().pow(2).sum())):
        return [1.0] * (max_lag + 1)
    return [1.0] + [
        float((centred[:-lag] * centred[lag:]).sum()) / energy for lag in range(1, max_lag + 1)
    ]


def _normalize_by_batch(norm: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
    """A batch norm's output recomputed with its input batch's own (biased) statistics, as in
    training mode, held constant for the gradient; the module's buffers are only read."""
    x = args[0]
    dims = [0, *range(2, x.dim())]  # all but the channels
    mean, var = x.detach().mean(dims), x.detach().var(dims, unbiased=False)
    weight, bias = cast(Tensor | None, norm.weight), cast(Tensor | None, norm.bias)
    return F.batch_norm(x, mean, var, weight, bias, False, 0.0, cast(float, norm.eps))


@contextlib.contextmanager
def batch_statistics(net: nn.Module) -> Iterator[nn.Module]:
    """``net`` in eval mode, its batch norms normalizing with the batch's statistics: stochastic
    depth and dropout stay off, so nothing is drawn, and no running statistic changes."""
    was_training = net.training
    net.eval()
    hooks = [
        m.register_forward_hook(_normalize_by_batch)
        for m in net.modules()
        if isinstance(m, BATCH_NORMS)
    ]
    try:
        yield net
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)


def line_gradients(
    net: nn.Module, input_shape: tuple[int, ...], generator: torch.Generator, points: int = 256
) -> Tensor:
    """g(t) at ``points`` steps of a random line, the inputs fed as one batch (a CPU tensor)."""
    device = next(net.parameters()).device
    a, b = (torch.randn(input_shape, generator=generator) for _ in range(2))
    t = torch.linspace(0.0, 1.0, points).view(-1, *([1] * len(input_shape)))
    line = (a + t * (b - a)).to(device).requires_grad_(True)
    with batch_statistics(net):
        out = net(line)
        r = torch.randn(out.shape[1], generator=generator).to(device)
        (grad,) = torch.autograd.grad((out @ r).sum(), line)
    return (grad.flatten(1) @ (b - a).flatten().to(device)).detach().cpu()


def shattered_gradients(
    net: nn.Module,
    input_shape: tuple[int, ...],
    generator: torch.Generator,
    points: int = 256,
    max_lag: int = 32,
) -> dict[str, Any]:
    """Autocorrelation of g(t) (``autocorr``) and of white and brown noise, lags 0..max_lag."""
    g = line_gradients(net, input_shape, generator, points)
    white = torch.randn(points, generator=generator)
    lag = min(max_lag, points - 2)
    found = {
        "autocorr": autocorrelation(g, lag),
        "white": autocorrelation(white, lag),
        "brown": autocorrelation(white.cumsum(0), lag),
    }
    # lag 1: Balduzzi et al.'s summary, near 0 for white noise and near 1 for brown noise
    return {
        **found,
        "lag1": found["autocorr"][1],
        "white_lag1": found["white"][1],
        "brown_lag1": found["brown"][1],
    }
