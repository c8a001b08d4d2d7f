"""Probe cost, measured in one run: each probe's time relative to one training epoch of a mid-size
model, and the exact Hessian's time at about 1k, 2k and 4k parameters.

    python benchmarks/probes.py            # digits, mlp depth 16 width 64
    python benchmarks/probes.py --smoke    # smaller, for CI
"""

from __future__ import annotations

import argparse
import time

import torch

from resablate import models, run_trial
from resablate.probes.measure import ProbeData, measure
from resablate.spec.schema import DataSpec, InitSpec, ModelSpec, ProbesSpec
from resablate.trial import data
from resablate.trial.optim import loss_fn


def model(depth: int, width: int) -> ModelSpec:
    raw = {"family": "mlp", "depth": depth, "width": width}
    return ModelSpec(**{**models.FAMILIES["mlp"].defaults(raw), **raw})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a smaller model and sizes")
    args = parser.parse_args()
    depth, width = (4, 16) if args.smoke else (16, 64)
    torch.set_num_threads(1)
    digits = data.load(DataSpec())
    config = {"model": {"depth": depth, "width": width}, "train": {"epochs": 1, "batch_size": 64}}
    run_trial(config)  # warm: data loaded and cached, kernels ready
    start = time.perf_counter()
    run_trial(config)
    epoch = time.perf_counter() - start
    net = models.build(model(depth, width), InitSpec(), digits.shape, torch.Generator())
    probe_data = ProbeData.of(digits, loss_fn("ce", 10))
    defaults = ProbesSpec.model_validate(
        {"spp": {}, "hessian": {"method": "lanczos"}, "weights": {}, "shattered": {}, "lesion": {}}
    )
    print(f"one training epoch (mlp depth {depth} width {width}, digits): {epoch:.3f} s")
    for name, probe in defaults.chosen().items():
        start = time.perf_counter()
        measure(net, probe_data, {name: probe.model_dump()}, seed=0)
        took = time.perf_counter() - start
        print(f"  probe {name:9s} {took:8.3f} s   {took / epoch:6.2f} × an epoch")
    sizes = (250, 500) if args.smoke else (1000, 2000, 4000)
    for target in sizes:
        width_for = max(4, int((target / 4) ** 0.5))  # 4 square layers, no stem/head
        shape = data.DataShape((width_for,), width_for)
        net = models.build(model(4, width_for), InitSpec(), shape, torch.Generator())
        x = torch.randn(256, width_for)
        y = torch.randint(0, width_for, (256,))
        n = sum(p.numel() for p in net.parameters())
        start = time.perf_counter()
        measure(
            net,
            ProbeData(x, y, x, y, x, y, loss_fn("ce", width_for), width_for),
            {"hessian": {"method": "exact", "max_exact": n, "batch": 256, "dtype": "float64"}},
            seed=0,
        )
        print(f"exact Hessian, {n:5d} parameters: {time.perf_counter() - start:8.3f} s")


if __name__ == "__main__":
    main()
