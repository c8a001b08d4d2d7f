"""The skeleton every family shares: stem -> residual units -> head, and its initialization."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from resablate.models.blocks import ResidualUnit, UnitPlan, raw_weight
from resablate.models.init import INITS, he_, mirrored_
from resablate.models.layers import ACTS, NORMS, CReLU
from resablate.models.placement import parse_placement
from resablate.models.shortcuts import Geometry, projects, variance_law

if TYPE_CHECKING:
    from resablate.spec.schema import InitSpec, ModelSpec


class ResNet(nn.Module):
    def __init__(self, stem: nn.Module, units: list[ResidualUnit], head: nn.Module) -> None:
        super().__init__()
        self.stem, self.units, self.head = stem, nn.ModuleList(units), head

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for unit in self.units:
            x = unit(x)
        return self.head(x)

    @contextlib.contextmanager
    def lesioned(self, units: Iterable[int]) -> Iterator[ResNet]:
        """Evaluate with the branches of ``units`` removed, their shortcuts kept (Veit et al.
        2016); the network is whole again on leaving."""
        chosen = [cast(ResidualUnit, self.units[i]) for i in units]
        for unit in chosen:
            unit.lesioned = True
        try:
            yield self
        finally:
            for unit in chosen:
                unit.lesioned = False

    def init_weights(self, init: InitSpec, generator: torch.Generator) -> None:
        """He (c = 1) for every weight outside the branches, zero biases, norms at γ = 1, β = 0;
        then each unit initializes its own branch with the scheme and c."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                he_(raw_weight(module), generator)  # a Scaled-WS weight's stored one
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
                module.reset_parameters()
        for unit in self.units:
            cast(ResidualUnit, unit).init_branch(init, generator, len(self.units))
        scheme = INITS[init.scheme]
        reads_crelu = False
        for module in self.head.modules():
            reads_crelu = reads_crelu or isinstance(module, CReLU)
            if isinstance(module, nn.Linear):
                if scheme.zero_head:  # Fixup: the classifier starts at zero
                    nn.init.zeros_(module.weight)
                elif scheme.mirror and reads_crelu:  # Looks-Linear: [W0, −W0]
                    mirrored_(module.weight, generator)


def survival(spec: ModelSpec, index: int, units: int) -> float:
    """Stochastic depth's linear decay: p_l = 1 − (l/L)(1 − p_L), with drop_path = 1 − p_L
    (Huang et al. 2016); index l counts from 1."""
    return 1.0 - (index / units) * spec.drop_path


def with_schedule(plans: list[UnitPlan], spec: ModelSpec, init: InitSpec) -> list[UnitPlan]:
    """Fill in each unit's stochastic-depth survival and normalizer-free β_l.

    β_l is the expected std of unit l's input (Brock, De, Smith 2021, arXiv 2101.08692), and
    ``nf_out`` the expected variance of its output, the law the spp probe's ``nf_ratio`` checks.
    F(x/β) has variance 1 and enters the sum as α·F, so Var_{l+1} = a·Var(h) + b·c·α²
    (``shortcuts.variance_law``: a = λ², b = β² for ``scale``, b = α_init² for ``scalar``,
    a = 0 for ``none``; dropout's a = 1 − p is right for h, but its mask leaves F off the law
    and the check refuses it under nf). Var(h) is Var_l for the identity; 1 where h projects,
    a Scaled-WS 1×1 conv reading σ(x/β) (with shortcut conv, every unit); cin/cout where
    option A keeps cin of x/β's cout channels and zero-pads the rest. The stem hands the first
    unit variance 1. A scheme that does not divide by β (the test's mutant) keeps β_l = 1 and
    the same expected schedule."""
    scheme = INITS[init.scheme]
    law = variance_law(spec) if scheme.normalizer_free else None
    keep, branch = law or (1.0, 1.0)  # refused under nf where there is no law (check)
    alpha2 = branch * init.c * init.alpha**2
    variance, out = 1.0, []
    for i, plan in enumerate(plans, start=1):
        beta = math.sqrt(variance) if scheme.divides_by_beta else 1.0
        g = Geometry(plan.widths[0], plan.widths[-1], plan.stride, plan.spatial)
        if projects(g, spec):
            h = 1.0
        elif g.changes_shape:
            h = g.cin / g.cout
        else:
            h = variance
        variance = keep * h + alpha2
        out.append(
            replace(plan, survival=survival(spec, i, len(plans)), nf_beta=beta, nf_out=variance)
        )
    return out


def stem_tail(spec: ModelSpec, channels: int, spatial: bool) -> list[nn.Module]:
    """What the placement puts after the stem's weight: nothing, N, or N σ."""
    kind = parse_placement(spec.activation).stem
    out: list[nn.Module] = []
    if kind in ("conv_norm", "conv_norm_act"):
        out.append(NORMS[spec.norm](channels, spatial, spec.groups))
    if kind == "conv_norm_act":
        out.append(ACTS[spec.act].make())
    return out


def head(spec: ModelSpec, channels: int, classes: int, spatial: bool, bias: bool) -> nn.Sequential:
    """[N] [σ] (what the placement ends with), global average pool, linear classifier."""
    final = parse_placement(spec.activation).final
    act = ACTS[spec.act]
    layers: list[nn.Module] = []
    if final == "norm_act":
        layers.append(NORMS[spec.norm](channels, spatial, spec.groups))
    widen = act.widen if final else 1
    if final:
        layers.append(act.make())
    if spatial:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    layers.append(nn.Linear(channels * widen, classes, bias=bias))
    return nn.Sequential(*layers)


def build_units(plans: list[UnitPlan], spec: ModelSpec, init: InitSpec) -> list[ResidualUnit]:
    return [ResidualUnit(plan, spec, init) for plan in with_schedule(plans, spec, init)]
