"""The residual unit: y = h(x) + F(x), x' = f(y) (science.md §1), for maps and for vectors.

F is ``n`` weight layers (the shortcut depth) with σ and N where the placement puts them
(placement.py), held as the sequence of its ops in the order they apply: ``print(unit)`` shows
``F = N σ W N σ W`` for ``full_preact``, science.md §1.4's row read from the inside out. How h
joins F is the shortcut type (shortcuts.py). Each unit owns the initialization of its branch
(timm's ``zero_init_last`` habit): the network calls ``unit.init_branch(...)`` and never inspects
the unit's layers itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from resablate.models.init import INITS, LayerContext, ScaledWS, mirrored_
from resablate.models.layers import ACTS, NORMS, subsample_a, weight
from resablate.models.placement import ACT, N, W, parse_placement
from resablate.models.shortcuts import SHORTCUTS, Geometry, projects

if TYPE_CHECKING:
    from resablate.spec.schema import InitSpec, ModelSpec


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
    nf_out: float = 1.0  # normalizer-free: expected variance of the unit's output


def raw_weight(layer: nn.Module) -> Tensor:
    """The stored weight of a layer (under a weight-standardization parametrization too)."""
    if parametrize.is_parametrized(layer):
        return cast(Tensor, layer.parametrizations.weight.original)  # type: ignore[union-attr]
    return cast(Tensor, layer.weight)


@dataclass(frozen=True)
class Step:
    """One op of a unit's equation, applied to z: the layer the unit holds as ``attr``
    (``attr[index]``), or, for Fixup's scalars, the parameter it holds there added to z (+a, +b)
    or multiplying it (×s). Steps name what they apply rather than hold it, so a unit's copies,
    ``functional_call`` and a swapped-in module are all seen."""

    symbol: str  # as science.md writes it: W, N, σ; Fixup's +a, ×s, +b
    attr: str
    index: int | None = None

    def __call__(self, unit: nn.Module, z: Tensor) -> Tensor:
        held = getattr(unit, self.attr)
        if self.index is not None:
            held = held[self.index]
        if self.symbol == "×s":
            return z * held
        if self.symbol.startswith("+"):
            return z + held
        return cast(Tensor, held(z))


class Steps(tuple[Step, ...]):
    """Ops in the order they apply; prints as its equation, e.g. ``N σ W N σ W``."""

    def __str__(self) -> str:
        return " ".join(step.symbol for step in self) or "identity"


def with_fixup(steps: list[Step]) -> list[Step]:
    """Fixup's scalars around each weight (Zhang, Dauphin, Ma 2019, arXiv 1901.09321): a bias
    before it and one after it, the last weight's output multiplied by a scalar first."""
    weights = sum(step.symbol == W for step in steps)
    out: list[Step] = []
    for step in steps:
        if step.symbol != W:
            out.append(step)
            continue
        k = cast(int, step.index)
        out += [Step("+a", "bias_in", k), step]
        if k == weights - 1:
            out.append(Step("×s", "scale"))
        out.append(Step("+b", "bias_out", k))
    return out


class ResidualUnit(nn.Module):
    """x' = f(h(x) + F(x)): F is ``branch_steps``, the placement's ops in the order they apply
    (``F = W N σ W N``, ``f = σ`` for ``post``), h the shortcut, f ``after_steps``.

    Around F, in ``forward``: the normalizer-free x/β and α (Brock, De, Smith 2021), SkipInit's
    gain (De & Smith 2020), stochastic depth and lesioning; Fixup's scalars are steps of F. A
    pre-activation unit whose h projects runs F's leading N σ once and feeds h from it."""

    def __init__(self, plan: UnitPlan, spec: ModelSpec, init: InitSpec) -> None:
        super().__init__()
        self.plan, self.placement = plan, parse_placement(spec.activation)
        scheme = INITS[init.scheme]
        act, nf = ACTS[spec.act], scheme.normalizer_free
        ops = self.placement.ops(len(plan.kernels))
        # The layers F's ops name. Weights are registered before norms: that order is the order
        # of the parameters (state_dict, the Hessian probe's vector) and of the init draws.
        self.weights, self.norms = nn.ModuleList(), nn.ModuleList()
        steps: list[Step] = []
        reads_act: list[bool] = []
        width = plan.widths[0]
        for i, op in enumerate(ops):
            if op == W:
                k = len(self.weights)
                cout, stride = plan.widths[k + 1], plan.stride if k == plan.stride_at else 1
                self.weights.append(
                    weight(plan.spatial, width, cout, plan.kernels[k], stride, plan.bias)
                )
                reads_act.append(i > 0 and ops[i - 1] == ACT)
                steps.append(Step(W, "weights", k))
                width = cout
            elif op == N:
                self.norms.append(NORMS[spec.norm](width, plan.spatial, spec.groups))
                steps.append(Step(N, "norms", len(self.norms) - 1))
            else:
                steps.append(Step(ACT, "act"))
                width *= act.widen
        self.reads_act = tuple(reads_act)  # σ directly before each weight
        self.act_name = spec.act
        cout = plan.widths[-1]
        after = self.placement.after_add.split()
        self.after_add = NORMS[spec.norm if N in after else "none"](
            cout, plan.spatial, spec.groups
        )
        self.act, self.widen = act.make(), act.widen
        # In pre-activation placements a projection reads what F's first weight reads, σ(N(x))
        # (σ(x/β) in normalizer-free units), computed once: the first ``shared`` steps of F,
        # "common BN, ReLU" in He et al.'s pre-act code (KaimingHe/resnet-1k-layers). A
        # projection reading raw x with He's gain 2 would double the variance per unit. Option
        # A and the identity read x itself.
        self.projects = projects(Geometry(plan.widths[0], cout, plan.stride, plan.spatial), spec)
        self.shared = ops.index(W) if self.placement.preact_shortcut and self.projects else 0
        self.shortcut_reads_act = self.shared > 0 and ops[self.shared - 1] == ACT
        reads = plan.widths[0] * (act.widen if self.shortcut_reads_act else 1)
        gamma = ScaledWS.gain(self.act) if nf else 1.0  # Scaled WS: γ where σ precedes a weight
        standardize = (gamma if self.shortcut_reads_act else 1.0) if nf else None
        self.shortcut = SHORTCUTS[spec.shortcut](
            Geometry(reads, cout, plan.stride, plan.spatial, standardize), spec
        )
        self.plain = spec.shortcut == "none"  # lesioned by bypass (science.md §1.7)
        self.lesioned = False  # Veit et al.: F removed, h kept; a plain unit is bypassed
        self.branch_out = nn.Identity()  # F(x) as it joins the sum: where probes hook
        # What the init scheme adds to the architecture (init.py's Scheme).
        self.gain = (
            nn.Parameter(torch.tensor(scheme.branch_gain))
            if scheme.branch_gain is not None
            else None
        )
        if scheme.fixup:
            n = len(self.weights)
            self.bias_in = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in range(n))
            self.bias_out = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in range(n))
            self.scale = nn.Parameter(torch.ones(()))
            steps = with_fixup(steps)
        self.branch_steps = Steps(steps)
        self.after_steps = Steps(
            Step(N, "after_add") if op == N else Step(ACT, "act") for op in after
        )
        self.nf_alpha = math.sqrt(init.c) * init.alpha if nf else None
        if nf:
            for layer, acted in zip(self.weights, self.reads_act, strict=True):
                ScaledWS.register(layer, gamma if acted else 1.0)

    def extra_repr(self) -> str:
        h = f"h reads F's {self.shared_steps}, " if self.shared else ""
        return f"F = {self.branch_steps}, {h}f = {self.after_steps}"

    # -- the equations ------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        if self.lesioned and self.plain:
            return self.bypass(x)
        x_in = x / self.plan.nf_beta if self.nf_alpha is not None else x  # nf: x + α·F(x/β)
        common = self.run(self.shared_steps, x_in)  # σ(N(x)) where h reads it too, else x_in
        fx = self.scaled(self.dropped_branch(common, self.branch_steps[self.shared :]))
        y = self.shortcut(self.shortcut_input(x, common), self.branch_out(fx))
        return self.run(self.after_steps, y)

    def bypass(self, x: Tensor) -> Tensor:
        """A lesioned plain unit: x_{l+1} = x_l, the whole unit skipped, what follows its sum
        too (Veit et al. 2016's deletion of a layer; zeroing F would zero everything after it).
        Where the unit changes shape, option A's parameter-free stride-s subsampling and
        zero-padded channels (He et al. 2015) carry x to the next unit's shape."""
        return subsample_a(x, self.plan.widths[-1], self.plan.stride)

    def run(self, steps: Iterable[Step], z: Tensor) -> Tensor:
        """``steps`` applied in order, each to the layer or scalar of this unit it names."""
        for step in steps:
            z = step(self, z)
        return z

    def branch(self, x: Tensor) -> Tensor:
        """F(x)."""
        return self.run(self.branch_steps, x)

    def scaled(self, fx: Tensor) -> Tensor:
        """α·F in normalizer-free units, then g·F with SkipInit's learnable gain g."""
        if self.nf_alpha is not None:
            fx = self.nf_alpha * fx
        if self.gain is not None:
            fx = self.gain * fx
        return fx

    def shortcut_input(self, x: Tensor, common: Tensor) -> Tensor:
        """What h reads: F's shared pre-activation σ(N(x)) where a pre-activation unit projects;
        x/β where a normalizer-free unit resets the variance (a projection or option A); else x.
        """
        if self.shared or (self.nf_alpha is not None and (self.projects or self.changes_shape)):
            return common
        return x

    @property
    def shared_steps(self) -> Steps:
        """F's first steps, which h reads too (``N σ`` in full_preact); else empty."""
        return Steps(self.branch_steps[: self.shared])

    @property
    def changes_shape(self) -> bool:
        return self.plan.widths[0] != self.plan.widths[-1] or self.plan.stride > 1

    def dropped_branch(self, x: Tensor, steps: Iterable[Step]) -> Tensor:
        """``steps`` applied to x (the rest of F), or zeros when lesioned or dropped by
        stochastic depth (Huang et al. 2016: the whole branch per mini-batch while training,
        F scaled by its survival rate at test)."""
        survival = self.plan.survival
        dropped = self.lesioned or (
            self.training and survival < 1.0 and float(torch.rand(())) >= survival
        )
        if dropped:
            return x.new_zeros(self.output_shape(x))
        fx = self.run(steps, x)
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
            acted = self.reads_act[i]
            reads = self.act_name if acted else None
            ctx = LayerContext(units, n, i, mirrored=acted and self.widen > 1, reads=reads)
            scheme.rule(raw_weight(layer), generator, init.c, init.eps, ctx)
        if scheme.zero_last_norm:  # Goyal et al. 2017: F starts at zero
            last = self.norms[-1]
            with torch.no_grad():
                cast(Tensor, last.weight).zero_()
        if scheme.mirror and self.shortcut_reads_act and self.widen > 1:
            for module in self.shortcut.modules():  # the projection reads σ(N(x)) too
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    mirrored_(module.weight, generator)
        extra = getattr(self.shortcut, "init_extra", None)
        if extra is not None:
            extra()
