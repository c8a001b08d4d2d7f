"""Shattered gradients (Balduzzi et al. 2017, "The Shattered Gradients Problem", arXiv 1702.08591).

Inputs along a line x(t) = a + t·(b − a), t in [0, 1] at ``points`` steps; the signal is the
directional derivative g(t) = ∇ₓ(r·f(x(t))) · (b − a) of a fixed random projection r of the output.
Its mean-subtracted, normalized autocorrelation by lag is compared with white noise (what deep
plain networks approach) and brown noise, the cumulative sum of that white noise (what ResNets
resemble).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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


def shattered_gradients(
    net: nn.Module,
    input_shape: tuple[int, ...],
    generator: torch.Generator,
    points: int = 256,
    max_lag: int = 32,
) -> dict[str, list[float]]:
    device = next(net.parameters()).device
    a, b = (torch.randn(input_shape, generator=generator) for _ in range(2))
    t = torch.linspace(0.0, 1.0, points).view(-1, *([1] * len(input_shape)))
    line = (a + t * (b - a)).to(device).requires_grad_(True)
    was_training = net.training
    try:  # eval mode: each point's gradient depends on that point alone
        out = net.eval()(line)
        r = torch.randn(out.shape[1], generator=generator).to(device)
        (grad,) = torch.autograd.grad((out @ r).sum(), line)
    finally:
        net.train(was_training)
    g = (grad.flatten(1) @ (b - a).flatten().to(device)).detach().cpu()
    white = torch.randn(points, generator=generator)
    lag = min(max_lag, points - 2)
    return {
        "autocorr": autocorrelation(g, lag),
        "white": autocorrelation(white, lag),
        "brown": autocorrelation(white.cumsum(0), lag),
    }
