"""The Hessian spectrum of the training loss with respect to all weights (science.md §4).

Demystifying ResNet (Li et al. 2016, arXiv 1611.01186) measures the condition number max|λ| /
P10|λ| at initialization: at the zero point it grows with depth for shortcut depth n = 1, does not
for n = 2, and the Hessian vanishes for n ≥ 3. Exact: the full matrix with ``torch.func`` (float64
by default) and ``eigvalsh``. Above ``max_exact`` parameters: stochastic Lanczos quadrature on
Hessian-vector products (Ubaru, Chen, Saad 2017; Ghorbani, Krishnan, Xiao 2019) — the Ritz values
of several random starts, weighted by the squared first components of the tridiagonal matrix's
eigenvectors, estimate the spectral density whose quantiles are reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, jvp

from resablate.models.placement import ACT, W, parse_placement

if TYPE_CHECKING:
    from resablate.spec.schema import InitSpec, ModelSpec

# The exact Hessian is reverse-over-reverse (jacrev of jacrev) over this many of its rows at a
# time: 2.7x faster than torch.func.hessian's forward-over-reverse over all rows at once for a
# 1,200-parameter net at batch 512 in float64 (2.7 s against 7.4 s on one core: the vmapped
# pass over every row at once moves gigabytes), and its memory is bounded by the chunk
HESSIAN_CHUNK = 64
ZERO_ATOL = 1e-12  # a Hessian whose max |λ| is below this (float64) is the zero matrix
ZERO_RTOL = 1e-6  # eigenvalues with |λ| ≤ this × max |λ| count as zero (not negative, not P10)


def _loss_of_flat(
    net: nn.Module,
    loss: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    dtype: torch.dtype,
) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """The loss as a function of one flat parameter vector (a ``dtype`` copy), and that vector."""
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named]).to(dtype)
    buffers = {n: (b.to(dtype) if b.is_floating_point() else b) for n, b in net.named_buffers()}
    x = x.to(dtype) if x.is_floating_point() else x

    def of(vector: Tensor) -> Tensor:
        pieces = [t.view(s) for t, s in zip(vector.split(sizes), shapes, strict=True)]
        out = functional_call(net, {**dict(zip(names, pieces, strict=True)), **buffers}, (x,))
        return loss(out, y)

    return of, flat


def _lanczos(
    hvp: Callable[[Tensor], Tensor],
    n: int,
    steps: int,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Ritz values and their weights (squared first eigenvector components) from one start."""
    v = torch.randn(n, generator=generator, dtype=dtype).to(device)
    basis = [v / v.norm()]
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    for j in range(steps):
        w = hvp(basis[j])
        alphas.append(w @ basis[j])
        w = w - alphas[j] * basis[j] - (betas[j - 1] * basis[j - 1] if j else 0)
        stacked = torch.stack(basis)
        w = w - stacked.T @ (stacked @ w)  # full reorthogonalization
        beta = w.norm()
        if j == steps - 1 or beta <= 1e-10 * max(1.0, float(alphas[0].abs())):
            break
        betas.append(beta)
        basis.append(w / beta)
    k = len(alphas)
    tri = torch.diag(torch.stack(alphas))
    if k > 1:
        off = torch.stack(betas[: k - 1])
        tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
    values, vectors = torch.linalg.eigh(tri)
    return values, vectors[0].pow(2)


def _weighted_quantile(values: Tensor, weights: Tensor, q: float) -> float:
    order = values.argsort()
    cumulative = weights[order].cumsum(0) / weights.sum()
    return float(
        values[order][
            int(
                torch.searchsorted(cumulative, cumulative.new_tensor(q)).clamp(max=len(values) - 1)
            )
        ]
    )


def hessian_spectrum(
    net: nn.Module,
    loss: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    method: str = "auto",
    max_exact: int = 3000,
    dtype: torch.dtype = torch.float64,
    lanczos_steps: int = 80,
    probes: int = 4,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """max |λ|, P10 |λ| (torch.quantile, linear interpolation; for Lanczos the weighted quantile of
    the estimated density), cond = max/P10 (inf when P10 is 0), index (fraction of λ < 0 beyond
    ZERO_RTOL), n_params, method, and zero (True for the zero matrix). The network is evaluated
    in eval mode on a ``dtype`` copy of its parameters; it is not changed."""
    was_training = net.training
    net.eval()
    try:
        of, flat = _loss_of_flat(net, loss, x, y, dtype)
        n = flat.numel()
        chosen = method if method != "auto" else ("exact" if n <= max_exact else "lanczos")
        if chosen == "exact":
            matrix = jacrev(jacrev(of), chunk_size=HESSIAN_CHUNK)(flat).detach()
            values = torch.linalg.eigvalsh((matrix + matrix.T) / 2)
            weights = torch.ones_like(values)
        else:
            gradient = grad(of)

            def hvp(v: Tensor) -> Tensor:
                return jvp(gradient, (flat,), (v,))[1].detach()

            runs = [
                _lanczos(hvp, n, min(lanczos_steps, n), generator, dtype, flat.device)
                for _ in range(probes)
            ]
            values = torch.cat([r[0] for r in runs])
            weights = torch.cat([r[1] for r in runs])
    finally:
        net.train(was_training)
    magnitudes = values.abs()
    max_abs = float(magnitudes.max())
    if max_abs <= ZERO_ATOL:
        return {
            "max_abs": 0.0,
            "p10_abs": 0.0,
            "cond": math.inf,
            "index": 0.0,
            "n_params": n,
            "method": chosen,
            "zero": True,
        }
    # |λ| below this is zero: round-off for the exact spectrum, and the Ritz values Lanczos puts
    # near a cluster of zero eigenvalues
    tolerance = max_abs * ZERO_RTOL
    if chosen == "exact":
        p10 = float(torch.quantile(magnitudes, 0.1))
    else:
        p10 = _weighted_quantile(magnitudes, weights, 0.1)
    p10 = p10 if p10 > tolerance else 0.0
    index = float(weights[values < -tolerance].sum() / weights.sum())
    return {
        "max_abs": max_abs,
        "p10_abs": p10,
        "cond": max_abs / p10 if p10 else math.inf,
        "index": index,
        "n_params": n,
        "method": chosen,
        "zero": False,
    }


def degenerate_hessian(model: ModelSpec, init: InitSpec) -> str | None:
    """Why the Hessian at this initialization says nothing about the theorems (None: it does).

    Demystifying ResNet's Hessian theorems at the zero point assume σ(0) = 0 with derivatives at
    0 (its Assumption 3). ReLU'(0) = 0 in PyTorch: a σ that reads a zero branch's pre-activation
    (mid, post_branch) passes no gradient at the exact zero point, and the Hessian comes out
    degenerate (an n = 2 Hessian of exactly zero, against the theorem)."""
    ops = parse_placement(model.activation).ops(model.shortcut_depth)
    reads_zero = ACT in ops[ops.index(W) + 1 :]  # a σ after the first weight
    if init.scheme != "zero" or init.eps != 0 or model.act not in ("relu", "crelu"):
        return None
    if not reads_zero:
        return None
    return (
        f"a Hessian at the exact zero point (init zero, eps 0) of a {model.act} net is"
        f" degenerate: {model.act}'(0) = 0 stops every branch gradient there; use act tanh or"
        " identity, or init.eps above 0"
    )
