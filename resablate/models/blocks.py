"""Residual units: y = h(x) + F(x), assembled from the registries in layers.py.

Each unit owns the initialization of its branch (timm's ``zero_init_last`` habit): the network
calls ``unit.init_branch(...)`` and never inspects the unit's layers itself.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from resablate.models.init import INITS, InitContext
from resablate.models.layers import ACTS, NORMS, SHORTCUTS
from resablate.models.placement import parse_placement


class DenseUnit(nn.Module):
    """One unit of Demystifying ResNet's n-shortcut dense network (arXiv 1611.01186).

    F is ``n`` square bias-free linear layers of width d, each followed by the norm N; σ sits at
    the positions the placement names. The shortcut module forms the sum h(x) + F(x).
    """

    def __init__(
        self, width: int, n: int, activation: str, norm: str, act: str, shortcut: str
    ) -> None:
        super().__init__()
        self.placement = parse_placement(activation)
        self.weights = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(n))
        self.norms = nn.ModuleList(NORMS[norm](width) for _ in range(n))
        self.act = ACTS[act]()
        self.shortcut = SHORTCUTS[shortcut](width)

    def branch(self, x: Tensor) -> Tensor:
        """F(x) = N_n W_n σ ... σ N_1 W_1 x, with σ where the placement puts it."""
        z = self.act(x) if self.placement.pre else x
        last = len(self.weights) - 1
        for i, (weight, norm) in enumerate(zip(self.weights, self.norms, strict=True)):
            z = norm(weight(z))
            if self.placement.mid and i < last:
                z = self.act(z)
        return self.act(z) if self.placement.post_branch else z

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x, self.branch(x))

    def init_branch(
        self, scheme: str, c: float, eps: float, generator: torch.Generator, ctx: InitContext
    ) -> None:
        rule = INITS[scheme]
        for weight in self.weights:
            rule(cast(Tensor, weight.weight), generator, c, eps, ctx)
