"""Shortcut types (science.md §1.2): h and the way it is summed with the branch F.

Each registered factory takes the unit's geometry and the model spec and returns a module whose
``forward(x, fx)`` is the unit's sum. ``self.h`` is the identity, or a downsampling map where the
unit changes shape (``downsample: A`` subsampling with zero channels, ``B`` 1×1 projection).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from resablate.models.layers import SubsampleA, projection, weight
from resablate.registry import Registry

if TYPE_CHECKING:
    from resablate.spec.schema import ModelSpec


@dataclass(frozen=True)
class Geometry:
    cin: int  # channels the shortcut reads
    cout: int  # channels of the unit's output
    stride: int
    spatial: bool
    standardize: float | None = None  # γ of Scaled WS on a projection (normalizer-free units)

    @property
    def changes_shape(self) -> bool:
        return self.cin != self.cout or self.stride != 1


def projects(g: Geometry, spec: ModelSpec) -> bool:
    """Whether h is a learned 1×1 projection (science.md §1.3): in every unit with shortcut
    ``conv``, else where the unit changes shape, unless option A can subsample it (maps that
    widen)."""
    if spec.shortcut == "conv":
        return True
    subsamples = spec.downsample == "A" and g.spatial and g.cout >= g.cin
    return spec.shortcut != "none" and g.changes_shape and not subsamples


def variance_law(spec: ModelSpec) -> tuple[float, float] | None:
    """(a, b) with Var(sum) = a·Var(h(x)) + b·Var(F(x)) in expectation at init, for independent
    zero-mean h(x) and F(x): what the normalizer-free β schedule follows (science.md §3 ``nf``).

    ``scale``: λ², β²; ``dropout``: 1 − p (the Bernoulli mask's second moment, as the net trains;
    at evaluation (1 − p)·h gives (1 − p)² instead); ``scalar``: 1, α_init²; ``none``: 0, 1;
    ``identity`` and ``conv``: 1, 1. None for the gates: g = sigmoid(conv(x) + b) depends on x,
    and no constant multiplier describes it."""
    laws = {
        "identity": (1.0, 1.0),
        "conv": (1.0, 1.0),
        "none": (0.0, 1.0),
        "scale": (spec.lambda_**2, spec.branch_scale**2),
        "dropout": (1.0 - spec.p, 1.0),
        "scalar": (1.0, spec.alpha_init**2),
    }
    return laws.get(spec.shortcut)


def downsample(g: Geometry, spec: ModelSpec) -> nn.Module:
    """h for a unit: a projection where it ``projects``, else option A where the unit changes
    shape, else the identity."""
    if projects(g, spec):
        return projection(
            g.spatial, g.cin, g.cout, g.stride, spec.norm, spec.groups, g.standardize
        )
    if g.changes_shape:
        return SubsampleA(g.cin, g.cout, g.stride)
    return nn.Identity()


class Identity(nn.Module):
    """``identity``: x' = h(x) + F(x) (He et al. 2015); ``conv`` is this with h a 1×1 projection
    in every unit ("ConvShort")."""

    def __init__(self, h: nn.Module) -> None:
        super().__init__()
        self.h = h

    def forward(self, x: Tensor, fx: Tensor) -> Tensor:
        return self.h(x) + fx


class Plain(nn.Module):
    """``none``: x' = F(x), the plain network with the same layers."""

    def forward(self, x: Tensor, fx: Tensor) -> Tensor:
        return fx


class Scale(nn.Module):
    """``scale``: x' = λ·h(x) + β·F(x), Identity Mappings' constant scaling."""

    def __init__(self, h: nn.Module, lam: float, beta: float) -> None:
        super().__init__()
        self.h, self.lam, self.beta = h, lam, beta

    def forward(self, x: Tensor, fx: Tensor) -> Tensor:
        return self.lam * self.h(x) + self.beta * fx


class Gate(nn.Module):
    """``gate``: x' = g⊙F(x) + (1−g)⊙h(x); ``shortcut_gate``: x' = F(x) + (1−g)⊙h(x);
    g = σ(1×1 conv(x) + b), element-wise (Identity Mappings §3.1, highway-like)."""

    def __init__(self, h: nn.Module, gate: nn.Module, bias: float, exclusive: bool) -> None:
        super().__init__()
        self.h, self.gate, self.bias, self.exclusive = h, gate, bias, exclusive

    def forward(self, x: Tensor, fx: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate(x))
        branch = g * fx if self.exclusive else fx
        return branch + (1 - g) * self.h(x)

    def init_extra(self) -> None:
        with torch.no_grad():
            cast(Tensor, self.gate.bias).fill_(self.bias)  # b = −6: gate almost closed on F


class Dropout(nn.Module):
    """``dropout``: x' = m⊙h(x) + F(x), m ~ Bernoulli(1 − p) element-wise, and (1 − p)·h(x) + F(x)
    at evaluation. No 1/(1 − p) rescaling: the dropout shortcut "statistically imposes a scale
    of λ with an expectation of 0.5" (He et al. 2016 §3.1, p = 0.5), which inverted dropout
    would undo."""

    def __init__(self, h: nn.Module, p: float) -> None:
        super().__init__()
        self.h, self.p = h, p

    def forward(self, x: Tensor, fx: Tensor) -> Tensor:
        hx = self.h(x)
        if not self.training:
            return (1 - self.p) * hx + fx
        keep = torch.full_like(hx, 1 - self.p)
        return torch.bernoulli(keep) * hx + fx


class Scalar(nn.Module):
    """``scalar``: x' = h(x) + α·F(x), α learnable per unit ("LearnScalar"; α = 0 is SkipInit)."""

    def __init__(self, h: nn.Module, alpha: float) -> None:
        super().__init__()
        self.h = h
        self.alpha = nn.Parameter(torch.tensor(alpha))
        self.alpha_init = alpha

    def forward(self, x: Tensor, fx: Tensor) -> Tensor:
        return self.h(x) + self.alpha * fx

    def init_extra(self) -> None:
        with torch.no_grad():
            self.alpha.fill_(self.alpha_init)


def _gate(g: Geometry, spec: ModelSpec, exclusive: bool) -> nn.Module:
    gate = weight(g.spatial, g.cin, g.cout, 1, g.stride, bias=True)
    return Gate(downsample(g, spec), gate, spec.gate_bias, exclusive)


SHORTCUTS: Registry[Callable[[Geometry, ModelSpec], nn.Module]] = Registry("shortcut")
SHORTCUTS.add("identity", lambda g, s: Identity(downsample(g, s)))
SHORTCUTS.add("none", lambda g, s: Plain())
SHORTCUTS.add("scale", lambda g, s: Scale(downsample(g, s), s.lambda_, s.branch_scale))
SHORTCUTS.add("gate", lambda g, s: _gate(g, s, exclusive=True))
SHORTCUTS.add("shortcut_gate", lambda g, s: _gate(g, s, exclusive=False))
SHORTCUTS.add("conv", lambda g, s: Identity(downsample(g, s)))
SHORTCUTS.add("dropout", lambda g, s: Dropout(downsample(g, s), s.p))
SHORTCUTS.add("scalar", lambda g, s: Scalar(downsample(g, s), s.alpha_init))
