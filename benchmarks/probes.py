"""Probe cost, measured in one run: each probe's time relative to one training epoch of a mid-size
model, and the exact Hessian's time at about 1k, 2k and 4k parameters.

    python benchmarks/probes.py            # digits, mlp depth 16 width 64
    python benchmarks/probes.py --smoke    # smaller, for CI
    python benchmarks/probes.py --hessian-on cpu cuda --json F   # the headline study's Hessian

--hessian-on times the headline study's exact Hessian probe (sweeps/shortcut_depth.yaml, its
deepest trial at full scale, float64) on each device named, instead of the above.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from resablate import models, run_trial
from resablate.probes.measure import ProbeData, measure
from resablate.spec.schema import DataSpec, InitSpec, ModelSpec, ProbesSpec
from resablate.trial import data
from resablate.trial.optim import loss_fn

ROOT = Path(__file__).resolve().parents[1]


def model(depth: int, width: int) -> ModelSpec:
    raw = {"family": "mlp", "depth": depth, "width": width}
    return ModelSpec(**{**models.FAMILIES["mlp"].defaults(raw), **raw})


def hessian_on(devices: list[str], profile: str | None, out: Path | None) -> None:
    """The shortcut-depth study's Hessian probe (as its sweep sets it) on its deepest trial's
    network at init, timed on each device (the first call on a device warms it up)."""
    from resablate import make_plan, probe_trial

    plan = make_plan(ROOT / "sweeps" / "shortcut_depth.yaml", (), profile)
    trial = max(plan.trials, key=lambda t: t.config["model"]["depth"])
    chosen = ProbesSpec(hessian=plan.spec.probes.hessian)
    depth = trial.config["model"]["depth"]
    figures: dict[str, Any] = {"trial": trial.id, "depth": depth}
    for device in devices:
        probe_trial(trial.config, chosen, device=device)  # warm-up
        start = time.perf_counter()
        found = probe_trial(trial.config, chosen, device=device)["hessian"]
        took = time.perf_counter() - start
        figures[device] = {"seconds": took, "max_abs": found["max_abs"], "cond": found["cond"]}
        print(
            f"exact Hessian on {device:5s} {took:8.3f} s a trial"
            f"  (depth {depth}, max |λ| {found['max_abs']:.6g})"
        )
    if len(devices) == 2:
        a, b = devices
        print(f"{b}/{a} {figures[b]['seconds'] / figures[a]['seconds']:.2f}")
    if out:
        out.write_text(json.dumps(figures, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a smaller model and sizes")
    parser.add_argument("--hessian-on", nargs="+", help="devices: time the study's Hessian")
    parser.add_argument("--profile", default=None, help="the study's profile (--hessian-on)")
    parser.add_argument("--json", type=Path, help="write --hessian-on's figures to this file")
    args = parser.parse_args()
    if args.hessian_on:
        hessian_on(args.hessian_on, args.profile, args.json)
        return
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
