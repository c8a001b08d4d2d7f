"""Weight norms per layer kind: the mean Frobenius norm of weight matrices and kernels
(Demystifying ResNet, Figs. 2-3)."""

from __future__ import annotations

from torch import Tensor, nn


def _weights(module: nn.Module) -> list[Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def weight_norms(net: nn.Module) -> dict[str, float]:
    """``branch`` (residual-branch weights), ``shortcut`` (projections, gates), ``stem``,
    ``head`` and ``all``: each the mean Frobenius norm of its weights (0 where there are none)."""
    units = list(net.units)  # type: ignore[arg-type]
    kinds = {
        "branch": [w for u in units for w in _weights(u.weights)],
        "shortcut": [w for u in units for w in _weights(u.shortcut)],
        "stem": _weights(net.stem),  # type: ignore[arg-type]
        "head": _weights(net.head),  # type: ignore[arg-type]
    }
    kinds["all"] = [w for ws in kinds.values() for w in ws]
    return {
        k: (sum(float(w.detach().norm()) for w in ws) / len(ws) if ws else 0.0)
        for k, ws in kinds.items()
    }
