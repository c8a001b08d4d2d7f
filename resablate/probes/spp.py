"""Signal propagation per residual unit (science.md §4; Brock, De, Smith 2021; De & Smith 2020).

For each unit l on one batch: the variance of its output x_l (mean over channels of the per-channel
variance over batch and space; features for dense units), the same at the end of its residual
branch (``unit.branch_out``), of the gradient dLoss/dx_l, and the average channel squared mean of
x_l. Hooks reduce to floats at once and are removed in ``finally``; in-place activations are
switched off while probing; parameter gradients are left untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

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
) -> dict[str, list[float]]:
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
    return {"fwd_var": fwd, "branch_var": branch, "bwd_var": bwd, "chan_sq_mean": sq}
