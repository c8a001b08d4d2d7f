"""The residual unit: y = h(x) + F(x), x' = f(y) (science.md §1), for maps and for vectors.

F is ``n`` weight layers (the shortcut depth); where σ and N sit is the placement (placement.py),
how h joins F is the shortcut type (shortcuts.py). Each unit owns the initialization of its branch
(timm's ``zero_init_last`` habit): the network calls ``unit.init_branch(...)`` and never inspects
the unit's layers itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from resablate.models.init import INITS, LayerContext, ScaledWS, mirrored_
from resablate.models.layers import ACTS, NORMS, weight
from resablate.models.placement import parse_placement
from resablate.models.shortcuts import SHORTCUTS, Geometry, projects

if TYPE_CHECKING:
    from resablate.spec import InitSpec, ModelSpec


@dataclass(frozen=True)
class UnitPlan:
    """A unit's layers: channels before and after each weight, kernels, and the stride."""

    widths: tuple[int, ...]  # n + 1 channel counts: input, then after each weight
    kernels: tuple[int, ...]  # n kernel sizes (1 for dense units)
    stride: int = 1
    stride_at: int = 0  # the weight that carries the stride (torchvision: the 3×3 of a bottleneck)
    spatial: bool = True
    bias: bool = False  # conv biases (the mnist family has them)
    survival: float = 1.0  # stochastic depth: probability that F is kept while training
    nf_beta: float = 1.0  # normalizer-free: expected std of the unit's input


def raw_weight(layer: nn.Module) -> Tensor:
    """The stored weight of a layer (under a weight-standardization parametrization too)."""
    if parametrize.is_parametrized(layer):
        return cast(Tensor, layer.parametrizations.weight.original)  # type: ignore[union-attr]
    return cast(Tensor, layer.weight)


class ResidualUnit(nn.Module):
    def __init__(self, plan: UnitPlan, spec: ModelSpec, init: InitSpec) -> None:
        super().__init__()
        self.plan, self.placement = plan, parse_placement(spec.activation)
        self.scheme_name, scheme = init.scheme, INITS[init.scheme]
        act = ACTS[spec.act]
        p, n = self.placement, len(plan.kernels)
        self.acted = [p.pre if i == 0 else p.mid for i in range(n)]  # σ before weight i
        self.weights = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(n):
            cin, cout = plan.widths[i], plan.widths[i + 1]
            stride = plan.stride if i == plan.stride_at else 1
            wide = cin * (act.widen if self.acted[i] else 1)
            self.weights.append(
                weight(plan.spatial, wide, cout, plan.kernels[i], stride, plan.bias)
            )
            has_norm = p.norm_first or i < n - 1 or p.last_norm
            channels = cin if p.norm_first else cout
            norm = spec.norm if has_norm else "none"
            self.norms.append(NORMS[norm](channels, plan.spatial, spec.groups))
        cout = plan.widths[-1]
        self.after_add = NORMS[spec.norm if p.norm_after_add else "none"](
            cout, plan.spatial, spec.groups
        )
        # He et al.'s pre-activation nets feed a shape-changing projection with σ(N(x)), what the
        # branch's first weight reads; normalizer-free units feed every projection (shortcut conv
        # too) what the branch reads, σ(x/β) (Brock et al. 2021). Option A subsamples x itself.
        nf = scheme.normalizer_free
        self.projects = projects(Geometry(plan.widths[0], cout, plan.stride, plan.spatial), spec)
        self.preact_shortcut = p.preact_shortcut and self.projects and (self.changes_shape or nf)
        reads = plan.widths[0] * (act.widen if self.preact_shortcut and p.pre else 1)
        self.act, self.widen = act.make(), act.widen
        gamma = ScaledWS.gain(self.act) if nf else 1.0  # Scaled WS: γ where σ precedes a weight
        standardize = (gamma if self.preact_shortcut and p.pre else 1.0) if nf else None
        self.shortcut = SHORTCUTS[spec.shortcut](
            Geometry(reads, cout, plan.stride, plan.spatial, standardize), spec
        )
        self.lesioned = False  # Veit et al.: evaluate with F removed, h kept
        self.branch_out = nn.Identity()  # F(x) as it joins the sum: where probes hook
        # What the init scheme adds to the architecture (init.py's Scheme).
        self.gain = (
            nn.Parameter(torch.tensor(scheme.branch_gain))
            if scheme.branch_gain is not None
            else None
        )
        self.fixup = scheme.fixup
        if scheme.fixup:  # scalar biases before each weight and σ, a multiplier and a bias last
            self.bias_in = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in range(n))
            self.bias_out = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in range(n))
            self.scale = nn.Parameter(torch.ones(()))
        self.nf_alpha = math.sqrt(init.c) * init.alpha if nf else None
        if nf:
            for layer, acted in zip(self.weights, self.acted, strict=True):
                ScaledWS.register(layer, gamma if acted else 1.0)

    # -- the equations ------------------------------------------------------------------------

    def layer(self, i: int, z: Tensor) -> Tensor:
        """One branch layer: W N (σ before it where the placement says), or N σ W pre-activated."""
        if self.placement.norm_first:
            z = self.norms[i](z)
        if self.acted[i]:
            z = self.act(z)
        if self.fixup:
            z = z + self.bias_in[i]
        z = self.weights[i](z)
        if self.fixup:
            last = i == len(self.weights) - 1
            z = (z * self.scale if last else z) + self.bias_out[i]
        if not self.placement.norm_first:
            z = self.norms[i](z)
        return z

    def branch(self, x: Tensor) -> Tensor:
        """F(x), ending with σ when the placement is relu_before_add / post_branch."""
        z = x
        for i in range(len(self.weights)):
            z = self.layer(i, z)
        return self.act(z) if self.placement.post_branch else z

    def forward(self, x: Tensor) -> Tensor:
        x_in = x / self.plan.nf_beta if self.nf_alpha is not None else x  # nf: x + α·F(x/β)
        fx = self.dropped_branch(x_in)
        if self.nf_alpha is not None:
            fx = self.nf_alpha * fx
        if self.gain is not None:
            fx = self.gain * fx
        y = self.after_add(self.shortcut(self.shortcut_input(x, x_in), self.branch_out(fx)))
        return self.act(y) if self.placement.act_after_add else y

    def shortcut_input(self, x: Tensor, x_in: Tensor) -> Tensor:
        """What h reads: x, or x/β where a normalizer-free unit resets the variance (a projection
        or option A); a pre-activated projection reads what the branch's first weight reads."""
        if self.nf_alpha is not None and (self.projects or self.changes_shape):
            x = x_in
        if self.preact_shortcut:
            return self.act(self.norms[0](x)) if self.placement.norm_first else self.act(x)
        return x

    @property
    def changes_shape(self) -> bool:
        return self.plan.widths[0] != self.plan.widths[-1] or self.plan.stride > 1

    def dropped_branch(self, x: Tensor) -> Tensor:
        """F(x), or zeros when lesioned or dropped by stochastic depth (Huang et al. 2016: the
        whole branch per mini-batch while training, F scaled by its survival rate at test)."""
        survival = self.plan.survival
        dropped = self.lesioned or (
            self.training and survival < 1.0 and float(torch.rand(())) >= survival
        )
        if dropped:
            return x.new_zeros(self.output_shape(x))
        fx = self.branch(x)
        return fx * survival if (not self.training and survival < 1.0) else fx

    def output_shape(self, x: Tensor) -> tuple[int, ...]:
        s = self.plan.stride
        spatial = tuple(-(-d // s) for d in x.shape[2:])  # ceil: 'same' padding
        return (x.shape[0], self.plan.widths[-1], *spatial)

    # -- initialization -----------------------------------------------------------------------

    def init_branch(self, init: InitSpec, generator: torch.Generator, units: int) -> None:
        scheme = INITS[init.scheme]
        n = len(self.weights)
        for i, layer in enumerate(self.weights):
            ctx = LayerContext(units, n, i, mirrored=self.acted[i] and self.widen > 1)
            scheme.rule(raw_weight(layer), generator, init.c, init.eps, ctx)
        if scheme.zero_last_norm:
            last = self.norms[-1]
            with torch.no_grad():
                cast(Tensor, last.weight).zero_()
        if scheme.mirror and self.preact_shortcut and self.widen > 1:
            for module in self.shortcut.modules():  # the projection reads σ(N(x)) too
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    mirrored_(module.weight, generator)
        extra = getattr(self.shortcut, "init_extra", None)
        if extra is not None:
            extra()
