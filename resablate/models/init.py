"""Initialization schemes for residual-branch weights, with init scale c (science.md §3).

c multiplies the variance of the branch weights; c = 1 is the scheme itself. Stem and head layers
use ``he`` with c = 1 (science.md: "Stem, classifier and shortcut projections use he"). Every draw
takes an explicit ``torch.Generator``, so a config and seed give bit-identical weights on a device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from resablate.registry import Registry


@dataclass(frozen=True)
class InitContext:
    """What a depth-aware scheme needs to know about the network."""

    units: int  # L, the number of residual units
    layers_per_branch: int  # m (= shortcut depth n)


def fans(weight: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a linear (out, in) or conv (out, in, k, k) weight."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def normal_(weight: Tensor, std: float, generator: torch.Generator) -> None:
    weight.normal_(0.0, std, generator=generator)


def he_(weight: Tensor, generator: torch.Generator, c: float = 1.0) -> None:
    """N(0, c·2/fan_in): Kaiming with the ReLU gain (He et al. 2015, arXiv 1502.01852)."""
    fan_in, _ = fans(weight)
    normal_(weight, math.sqrt(c * 2.0 / fan_in), generator)


def xavier_(weight: Tensor, generator: torch.Generator, c: float = 1.0) -> None:
    """N(0, c·2/(fan_in+fan_out)) (Glorot & Bengio 2010)."""
    fan_in, fan_out = fans(weight)
    normal_(weight, math.sqrt(c * 2.0 / (fan_in + fan_out)), generator)


# scheme name -> rule(weight, generator, c, eps, context) for one branch weight.
BranchInit = Callable[[Tensor, torch.Generator, float, float, InitContext], None]
INITS: Registry[BranchInit] = Registry("init scheme")
INITS.add("he", lambda w, g, c, eps, ctx: he_(w, g, c))
INITS.add("xavier", lambda w, g, c, eps, ctx: xavier_(w, g, c))


@INITS.register("zero")
def zero_(
    weight: Tensor, generator: torch.Generator, c: float, eps: float, ctx: InitContext
) -> None:
    """Xavier times ε: the zero point with a small perturbation; ε = 0 is the exact zero point
    whose Hessian Demystifying ResNet's theorems describe (arXiv 1611.01186)."""
    xavier_(weight, generator, c)
    with torch.no_grad():
        weight.mul_(eps)
