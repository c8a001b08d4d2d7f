"""The small registries a unit is assembled from: norms, activation functions, weight layers.

Each entry is a factory with one signature, keyed by its YAML name (science.md §1.5, §1.6). Units
are either spatial (convolutions on N×C×H×W maps) or dense (linear layers on N×C vectors, the
``mlp`` family), and every factory takes that flag, so one unit class serves both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resablate.models.init import ScaledWS
from resablate.registry import Registry

# norm name -> factory(channels, spatial, groups) -> module; the N of science.md §1.5.
NORMS: Registry[Callable[[int, bool, int], nn.Module]] = Registry("norm")
NORMS.add("none", lambda c, spatial, groups: nn.Identity())
NORMS.add("batch", lambda c, spatial, groups: nn.BatchNorm2d(c) if spatial else nn.BatchNorm1d(c))
NORMS.add("group", lambda c, spatial, groups: nn.GroupNorm(groups, c))
# LayerNorm over all features of a sample: GroupNorm with one group is exactly that, maps too.
NORMS.add("layer", lambda c, spatial, groups: nn.GroupNorm(1, c))


class CReLU(nn.Module):
    """Concatenated ReLU, [relu(x), relu(-x)] along channels: doubles the width (Shang et al.
    2016); with mirrored weights a network is exactly linear at init (Balduzzi et al. 2017)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([F.relu(x), F.relu(-x)], dim=1)


@dataclass(frozen=True)
class Act:
    make: Callable[[], nn.Module]
    widen: int = 1  # output channels per input channel


# act name -> Act; σ of science.md §1.6.
ACTS: Registry[Act] = Registry("activation function")
ACTS.add("relu", Act(nn.ReLU))
ACTS.add("tanh", Act(nn.Tanh))
ACTS.add("gelu", Act(nn.GELU))
ACTS.add("identity", Act(nn.Identity))
ACTS.add("crelu", Act(CReLU, widen=2))


def weight(
    spatial: bool, cin: int, cout: int, kernel: int = 1, stride: int = 1, bias: bool = False
) -> nn.Module:
    """A k×k convolution ('same' padding) for maps, a linear layer for vectors."""
    if not spatial:
        return nn.Linear(cin, cout, bias=bias)
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)


def subsample_a(x: Tensor, cout: int, stride: int) -> Tensor:
    """x at stride ``stride`` over its spatial dims (none for vectors), zero-padded to ``cout``
    channels on dim 1."""
    spatial = x.dim() - 2
    index = (slice(None), slice(None)) + (slice(None, None, stride),) * spatial
    x = x[index]
    return F.pad(x, (0, 0) * spatial + (0, cout - x.shape[1]))  # new channels are zero


class SubsampleA(nn.Module):
    """He 2015's option A: stride-2 subsampling and zero-padded new channels, parameter-free."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: Tensor) -> Tensor:
        return subsample_a(x, x.shape[1] + self.extra, self.stride)


def projection(
    spatial: bool,
    cin: int,
    cout: int,
    stride: int,
    norm: str,
    groups: int,
    standardize: float | None = None,
) -> nn.Sequential:
    """Option B (and shortcut ``conv``): 1×1 convolution with the unit's stride, then the norm.
    With ``standardize`` = γ the weight is Scaled-WS, as in normalizer-free units (Brock, De,
    Smith 2021, arXiv 2101.08692)."""
    conv = weight(spatial, cin, cout, 1, stride)
    if standardize is not None:
        ScaledWS.register(conv, standardize)
    return nn.Sequential(conv, NORMS[norm](cout, spatial, groups))
