"""Lesion study (Veit, Wilber, Belongie 2016): test accuracy with residual branches removed.

Removing unit l's branch keeps its shortcut, x_{l+1} = h(x_l) (``ResNet.lesioned``). Residual
networks degrade smoothly as more units are removed, like ensembles of shallower paths: test
error rises gently with the number k of units removed at random. A plain unit (no shortcut) is
bypassed, x_{l+1} = x_l, Veit et al.'s deletion of a layer: plain networks collapse at k = 1
even so (zeroing the unit instead would zero everything after it, trained or not). A claim is on
the increase in error over the same net unlesioned (``error_increase_*``), on nets that trained.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn


@torch.no_grad()
def accuracy(net: nn.Module, x: Tensor, y: Tensor, batch: int = 1024) -> float:
    correct = sum(
        int((net(xb).argmax(dim=1) == yb).sum())
        for xb, yb in zip(x.split(batch), y.split(batch), strict=True)
    )
    return correct / len(y)


def lesion(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
    draws: int = 10,
    k: int | None = None,
) -> dict[str, Any]:
    """Test accuracy and error of ``net`` in eval mode with units' branches removed.

    ``whole``: accuracy with nothing removed; ``single``: accuracy with each unit removed alone,
    in order; ``error_by_k``: mean test error with k = 1 … ``k`` units removed (entry k − 1;
    ``k`` defaults to half the units), over ``draws`` random sets of k units, or over every set
    where there are no more than ``draws`` of them (k = 1 is always the mean over ``single``);
    ``error_k1`` and ``error_kmax`` its first and last entries, ``kmax`` the largest k;
    ``error_increase_k1`` and ``error_increase_kmax`` those errors less the unlesioned error
    1 − ``whole``: a lesion claim is about what removing units costs this trained net, which
    the raw error mixes with how well the net trained (science.md §4).
    """
    units = len(net.units)  # type: ignore[arg-type]
    kmax = min(k or max(units // 2, 1), units)
    was_training = net.training
    net.eval()

    def without(chosen: Iterable[int]) -> float:
        with net.lesioned(chosen):  # type: ignore[operator]
            return accuracy(net, x, y)

    try:
        whole = accuracy(net, x, y)
        single = [without([i]) for i in range(units)]
        error_by_k = [1.0 - statistics.fmean(single)]
        for size in range(2, kmax + 1):
            if math.comb(units, size) <= draws:
                sets: Iterable[Iterable[int]] = itertools.combinations(range(units), size)
            else:
                sets = [
                    torch.randperm(units, generator=generator)[:size].tolist()
                    for _ in range(draws)
                ]
            error_by_k.append(1.0 - statistics.fmean(without(s) for s in sets))
    finally:
        net.train(was_training)
    return {
        "whole": whole,
        "single": single,
        "error_by_k": error_by_k,
        "error_k1": error_by_k[0],
        "error_kmax": error_by_k[-1],
        "error_increase_k1": error_by_k[0] - (1.0 - whole),
        "error_increase_kmax": error_by_k[-1] - (1.0 - whole),
        "kmax": kmax,
    }
