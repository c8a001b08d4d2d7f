"""Lesion study (Veit, Wilber, Belongie 2016): test accuracy with residual branches removed.

Removing unit l's branch keeps its shortcut, x_{l+1} = h(x_l) (``ResNet.lesioned``). Residual
networks degrade smoothly, like ensembles of shallower paths; plain networks collapse.
"""

from __future__ import annotations

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
    net: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator, k: int = 2, draws: int = 10
) -> dict[str, Any]:
    """``whole``, ``single`` (each unit removed alone, in order), ``random_k`` (mean over
    ``draws`` random sets of ``k`` units) and ``k``."""
    units = len(net.units)  # type: ignore[arg-type]
    k = min(k, units)
    was_training = net.training
    net.eval()
    try:
        whole = accuracy(net, x, y)
        single = []
        for i in range(units):
            with net.lesioned([i]):  # type: ignore[operator]
                single.append(accuracy(net, x, y))
        removed = []
        for _ in range(draws):
            chosen = torch.randperm(units, generator=generator)[:k].tolist()
            with net.lesioned(chosen):  # type: ignore[operator]
                removed.append(accuracy(net, x, y))
    finally:
        net.train(was_training)
    return {"whole": whole, "single": single, "random_k": sum(removed) / len(removed), "k": k}
