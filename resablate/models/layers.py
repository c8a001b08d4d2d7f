"""The small registries a block is assembled from: norms, activation functions, shortcuts.

Each entry is a factory with one signature, keyed by its YAML name (science.md §1.2, §1.5, §1.6).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from resablate.registry import Registry

# norm name -> factory(features) -> module; the N of science.md §1.5 (dense layers: 1-d norms).
NORMS: Registry[Callable[[int], nn.Module]] = Registry("norm")
NORMS.add("none", lambda features: nn.Identity())
NORMS.add("batch", lambda features: nn.BatchNorm1d(features))

# act name -> factory() -> module; σ of science.md §1.6.
ACTS: Registry[Callable[[], nn.Module]] = Registry("activation function")
ACTS.add("relu", nn.ReLU)
ACTS.add("tanh", nn.Tanh)
ACTS.add("gelu", nn.GELU)
ACTS.add("identity", nn.Identity)


class IdentityShortcut(nn.Module):
    """h(x) = x: the unit computes x + F(x) (He et al. 2015)."""

    def forward(self, x: Tensor, branch: Tensor) -> Tensor:
        return x + branch


class NoShortcut(nn.Module):
    """No shortcut: the unit computes F(x), the plain network with the same layers."""

    def forward(self, x: Tensor, branch: Tensor) -> Tensor:
        return branch


# shortcut name -> factory(features) -> module whose forward(x, F(x)) returns the unit's sum.
SHORTCUTS: Registry[Callable[[int], nn.Module]] = Registry("shortcut")
SHORTCUTS.add("identity", lambda features: IdentityShortcut())
SHORTCUTS.add("none", lambda features: NoShortcut())
