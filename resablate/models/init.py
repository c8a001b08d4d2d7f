"""Initialization schemes for residual-branch weights, with init scale c (science.md §3).

c multiplies the variance of the branch weights; c = 1 is the scheme itself. Stem, classifier and
shortcut projections use ``he`` with c = 1 unless the scheme says otherwise. Every draw takes an
explicit ``torch.Generator``, so a config and seed give bit-identical weights on a device.

A scheme is a rule for each branch weight plus what it adds to the architecture (SkipInit's α,
Fixup's scalars, the normalizer-free α/β and weight standardization), declared as data so that
units read it instead of testing scheme names.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from resablate.registry import Registry


@dataclass(frozen=True)
class LayerContext:
    """Where a branch weight sits: what depth-aware and structural rules need."""

    units: int  # L, residual units in the network
    layers: int  # m, weight layers per branch
    index: int = 0  # this weight's position in its branch
    mirrored: bool = False  # it reads a CReLU output (twice the channels)
    reads: str | None = None  # the σ (model.act) directly before it; None: no σ precedes it

    @property
    def last(self) -> bool:
        return self.index == self.layers - 1


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


@torch.no_grad()
def orthogonal_(weight: Tensor, generator: torch.Generator, c: float = 1.0) -> None:
    """Orthogonal with gain √c (Saxe et al. 2014)."""
    nn.init.orthogonal_(weight, gain=math.sqrt(c), generator=generator)


def read_gain(act: str | None) -> float:
    """The variance gain g that keeps a weight N(0, g/fan_in) variance-preserving given what it
    reads: Var(W σ(z)) = g·E[σ(z)²] = Var(z) for z ~ N(0, v).

    No σ (a weight reading x or a norm's output) and ``identity``: 1. ReLU: 2 (He et al. 2015).
    CReLU: 2 as well, on a fan_in that counts both halves: each of the 2C inputs [relu(z),
    relu(−z)] has second moment Var(z)/2, so 2C·(2/(2C))·Var(z)/2 = Var(z). Others: torch's
    ``calculate_gain`` squared (tanh: 25/9), and for a σ it does not tabulate (gelu) the exact
    1/E[σ(z)²], z ~ N(0, 1), by quadrature."""
    if act is None or act == "identity":
        return 1.0
    if act in ("relu", "crelu"):
        return 2.0
    try:
        return float(nn.init.calculate_gain(act)) ** 2  # type: ignore[arg-type]
    except ValueError:
        return _second_moment_gain(act)


@functools.cache
def _second_moment_gain(act: str) -> float:
    fn = getattr(torch.nn.functional, act)
    z = torch.linspace(-10.0, 10.0, 20_001, dtype=torch.float64)
    density = torch.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
    return float(1.0 / torch.trapezoid(fn(z) ** 2 * density, z))


Rule = Callable[[Tensor, torch.Generator, float, float, LayerContext], None]


@dataclass(frozen=True)
class Scheme:
    rule: Rule  # (weight, generator, c, eps, context) for one branch weight
    branch_gain: float | None = None  # a learnable α on F, initialized to this (SkipInit)
    fixup: bool = False  # scalar biases before each layer and a multiplier per branch
    zero_last_norm: bool = False  # γ of each branch's last norm starts at 0
    normalizer_free: bool = False  # x + α·F(x/β) with scaled weight standardization
    # Under normalizer_free: divide F's input by β_l. False (x + α·F(x), β_l = 1, the expected
    # schedule kept as the law) is the mutant a test registers to show the β band can fail.
    divides_by_beta: bool = True
    zero_head: bool = False  # the classifier starts at 0
    mirror: bool = False  # every weight that reads a CReLU output is [W0, −W0] (Looks-Linear)


INITS: Registry[Scheme] = Registry("init scheme")
INITS.add("he", Scheme(lambda w, g, c, eps, ctx: he_(w, g, c)))
INITS.add("xavier", Scheme(lambda w, g, c, eps, ctx: xavier_(w, g, c)))
INITS.add("orthogonal", Scheme(lambda w, g, c, eps, ctx: orthogonal_(w, g, c)))


def _zero(
    weight: Tensor, generator: torch.Generator, c: float, eps: float, ctx: LayerContext
) -> None:
    """Xavier times ε: the zero point with a small perturbation; ε = 0 is the exact zero point
    whose Hessian Demystifying ResNet's theorems describe (arXiv 1611.01186)."""
    xavier_(weight, generator, c)
    with torch.no_grad():
        weight.mul_(eps)


def _taki(
    weight: Tensor, generator: torch.Generator, c: float, eps: float, ctx: LayerContext
) -> None:
    """Taki 2017 (arXiv 1709.02956), depth-aware: the branch's last layer N(0, c/(fan_in·L)),
    earlier layers variance-preserving given what they read (``read_gain``: 2/fan_in after a
    ReLU, 1/fan_in after no σ), with c = 1. The branch's variance gain is then (c/L)·E[z²]/Var(x)
    for z what the last layer reads, whatever the number of layers m: c/(2L) where a ReLU
    precedes it, as in Taki's one-layer unit x + W σ(x) (relu_preact, mid), c/L where none does
    (pre with m ≥ 2, linear). He's 2/fan_in on a layer that reads no σ would double it per such
    layer, and c/(fan_in·L) on every layer would give (c/L)^m, a near-identity network."""
    fan_in, _ = fans(weight)
    if not ctx.last:
        normal_(weight, math.sqrt(read_gain(ctx.reads) / fan_in), generator)
        return
    normal_(weight, math.sqrt(c / (fan_in * ctx.units)), generator)


def _fixup(
    weight: Tensor, generator: torch.Generator, c: float, eps: float, ctx: LayerContext
) -> None:
    """He scaled by L^(−1/(2m−2)); the branch's last layer starts at zero (Zhang et al. 2019).

    The He part is literal, 2/fan_in whatever the layer reads: Fixup's rule is "a standard
    initialization (e.g. He et al.)" rescaled, not a variance-preserving one, and its own units
    put a ReLU (after a scalar bias) before every branch weight but the first."""
    if ctx.last:
        with torch.no_grad():
            weight.zero_()
        return
    he_(weight, generator, c)
    with torch.no_grad():
        weight.mul_(ctx.units ** (-1.0 / (2 * ctx.layers - 2)))


def mirrored_(weight: Tensor, generator: torch.Generator, c: float = 1.0) -> None:
    """[W0, −W0] with W0 orthogonal, gain √c, for a weight that reads a CReLU output."""
    _looks_linear(weight, generator, c, 0.0, LayerContext(1, 1, mirrored=True))


@torch.no_grad()
def _looks_linear(
    weight: Tensor, generator: torch.Generator, c: float, eps: float, ctx: LayerContext
) -> None:
    """W = [W0, −W0] on a CReLU input, W0 orthogonal with gain √c: W·crelu(z) = W0·z, so the
    network is exactly linear at initialization (Balduzzi et al. 2017)."""
    if not ctx.mirrored:
        orthogonal_(weight, generator, c)
        return
    half = weight.shape[1] // 2
    w0 = torch.empty_like(weight[:, :half])
    orthogonal_(w0, generator, c)
    weight.copy_(torch.cat([w0, -w0], dim=1))


INITS.add("zero", Scheme(_zero))
INITS.add("taki", Scheme(_taki))
INITS.add("fixup", Scheme(_fixup, fixup=True, zero_head=True))
INITS.add("skipinit", Scheme(lambda w, g, c, eps, ctx: he_(w, g, c), branch_gain=0.0))
INITS.add("zero_last", Scheme(lambda w, g, c, eps, ctx: he_(w, g, c), zero_last_norm=True))
INITS.add("looks_linear", Scheme(_looks_linear, mirror=True))


def _nf(
    weight: Tensor, generator: torch.Generator, c: float, eps: float, ctx: LayerContext
) -> None:
    """Brock, De, Smith 2021 (arXiv 2101.08692), reduced: each unit computes x + α·F(x/β_l),
    β_l the analytic std of its input (``network.with_schedule``), with Scaled Weight
    Standardization on the branch and projection weights (``ScaledWS``); c multiplies α². The
    draw is He's (c = 1): the standardization sets the scale. Only full pre-activation units
    after a bare stem conv are built, as theirs are. The official NF-ResNet also has a SkipInit
    gain at 0 on each branch, a learnable gain and bias on every standardized conv and a
    classifier N(0, 0.01); this scheme has none of them."""
    he_(weight, generator)


INITS.add("nf", Scheme(_nf, normalizer_free=True))


class ScaledWS(nn.Module):
    """Scaled Weight Standardization, a parametrization of a branch or projection weight (Brock,
    De, Smith 2021, arXiv 2101.08692): Ŵ = γ·(W − mean(W))/(std(W)·√fan_in) per output channel,
    γ = 1/std(σ(z)), z ~ N(0, 1), for the σ that precedes the weight: √(2/(1 − 1/π)) for ReLU,
    1 where none does. With Σŵ = 0 and Σŵ² = γ², Ŵσ(z) has variance 1."""

    GAMMA_RELU = math.sqrt(2.0 / (1.0 - 1.0 / math.pi))

    def __init__(self, gamma: float = GAMMA_RELU, eps: float = 1e-4) -> None:
        super().__init__()
        self.gamma, self.eps = gamma, eps

    @classmethod
    def register(cls, layer: nn.Module, gamma: float) -> None:
        """Standardize ``layer``'s weight from now on; its stored weight is ``original``. Ŵ keeps
        W's shape and dtype: ``unsafe`` skips the check that computes Ŵ once to show it (most of
        a ResNet-101's build time)."""
        parametrize.register_parametrization(layer, "weight", cls(gamma), unsafe=True)

    @staticmethod
    @torch.no_grad()
    def gain(act: nn.Module) -> float:
        """γ = 1/std(σ(z)) for z ~ N(0, 1), by quadrature on a fine grid (a CReLU's two halves
        have one std); Brock et al. tabulate the same gains for their nonlinearities."""
        z = torch.linspace(-10.0, 10.0, 20_001, dtype=torch.float64, device="cpu")
        density = torch.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
        a = act(z[None, :])[0]  # channels on dim 1, as σ sees a batch
        halves = a.reshape(-1, z.numel())  # a CReLU returns [σ(z), σ(−z)]: each has one std
        mean = torch.trapezoid(halves * density, z, dim=-1)
        var = torch.trapezoid((halves - mean[:, None]) ** 2 * density, z, dim=-1)
        return float(var[0].rsqrt())

    def forward(self, w: Tensor) -> Tensor:
        dims = tuple(range(1, w.dim()))
        fan_in = math.prod(w.shape[1:])
        var, mean = torch.var_mean(w, dim=dims, keepdim=True, correction=0)
        return self.gamma * (w - mean) / torch.sqrt(var * fan_in + self.eps)
