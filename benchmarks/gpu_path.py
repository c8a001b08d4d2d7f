"""The GPU path's checks that only a GPU shows (issue 30, part 2): one line each, and a JSON file.

Each check prints `ok` or `FAILED` with its numbers, and all go into OUT/gpu_path.json:

  driver_has_no_cuda_context  the stack budget of a sweep with resources.gpu 0.25 asks for the
                              GPU's free memory in a child process: this process opens no CUDA
                              context (one would hold ~0.5 GB of GPU 0 for the whole sweep, and
                              under exclusive-process mode no trial could use the GPU); run
                              first, before anything here touches CUDA
  lanczos_on_device           the Lanczos Hessian probe computed on the device: its max |λ|
                              within 1e-3 of the exact spectrum's (computed on the CPU)
  resume_on_device            a trial resumed on the device from its epoch-2 checkpoint ends as
                              the uninterrupted one (train.deterministic); the checkpoint holds
                              the CUDA RNG state of this trial's own GPU only (so a resume that
                              sees fewer GPUs reads it)
  cache_released              after a stack trained, the GPU memory it cached is handed back
                              (what a reused Ray worker would keep for the next trial)
  probe_on_device             `resablate probe`'s computation on the device: the weights and
                              signal-propagation probes equal the CPU's within float32 rounding

    python benchmarks/gpu_path.py --out DIR                  # on a GPU
    python benchmarks/gpu_path.py --device cpu --out DIR     # the rehearsal (tests, CI)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checks import finish, run_checks

BASE: dict[str, Any] = {  # a small trial on scikit-learn's bundled digits: no download
    "data": {"name": "digits"},
    "model": {"family": "mlp", "width": 16, "depth": 4, "norm": "none"},
    "train": {"epochs": 4, "batch_size": 256, "lr": 0.05, "deterministic": True},
    "seed": 0,
}
SWEEP = "name: gpu_path\nmodel: {depth: 4, width: 16}\nresources: {cpu: 1, gpu: 0.25}\n"


def driver_has_no_cuda_context(device: str, folder: Path) -> dict[str, Any]:
    from resablate import make_plan
    from resablate.sweep.capacity import stack_budget

    sweep = folder / "gpu_path.yaml"
    sweep.write_text(SWEEP)
    budget = stack_budget(make_plan(sweep), 4)
    opened = torch.cuda.is_initialized()
    cuda = device.startswith("cuda")
    return {
        "ok": not opened and (budget is not None and budget > 0),
        "budget_bytes": budget,
        "cuda_context_in_driver": opened,
        "gpu_asked": cuda,
    }


def lanczos_on_device(device: str, folder: Path) -> dict[str, Any]:
    from torch import nn

    from resablate.probes.hessian import hessian_spectrum

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    loss = nn.functional.cross_entropy
    exact = hessian_spectrum(net, loss, x, y, method="exact")
    on = net.to(device)
    generator = torch.Generator().manual_seed(0)
    found = hessian_spectrum(
        on, loss, x.to(device), y.to(device), method="lanczos", generator=generator
    )
    error = abs(found["max_abs"] - exact["max_abs"]) / exact["max_abs"]
    return {
        "ok": math.isfinite(found["p10_abs"]) and error < 1e-3,
        "max_abs": found["max_abs"],
        "exact_max_abs": exact["max_abs"],
        "relative_error": error,
    }


def resume_on_device(device: str, folder: Path) -> dict[str, Any]:
    from resablate.trial import checkpoint
    from resablate.trial.checkpoint import Checkpoints
    from resablate.trial.train import run_stack

    def train(where: Path, resume: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        run_stack(
            [copy.deepcopy(BASE)],
            [seen.append],
            device=device,
            checkpoints=Checkpoints(where, every=2),
            resume=resume,
        )
        return [{k: v for k, v in r.items() if k != "epoch_time"} for r in seen]

    whole = train(folder / "whole")
    saved = checkpoint.read(folder / "whole" / "epoch_2.pt")
    state = saved["cuda_rng"]
    own_gpu_only = state is None if device == "cpu" else isinstance(state, torch.Tensor)
    resumed = train(folder / "resumed", saved)
    gap = max(
        abs(a[k] - b[k]) / max(abs(b[k]), 1e-12)
        for a, b in zip(resumed, whole[-2:], strict=True)
        for k in ("train_loss", "test_loss")
    )
    return {
        "ok": own_gpu_only and [r["epoch"] for r in resumed] == [3, 4] and gap <= 1e-6,
        "largest_relative_gap": gap,
        "cuda_rng_of_one_gpu": own_gpu_only,
    }


def cache_released(device: str, folder: Path) -> dict[str, Any]:
    from resablate.spec.schema import ProbesSpec
    from resablate.sweep.worker import train_stack

    wide = {**BASE, "model": {**BASE["model"], "width": 512}}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    train_stack([wide], [lambda report: None], device, ProbesSpec(), 1)
    if not device.startswith("cuda"):
        return {"ok": True, "note": "nothing cached on a CPU"}
    peak, left = torch.cuda.max_memory_reserved(), torch.cuda.memory_reserved()
    return {
        "ok": torch.cuda.memory_allocated() == 0 and left <= max(64 * 2**20, peak // 10),
        "peak_reserved_bytes": peak,
        "reserved_after_bytes": left,
    }


def probe_on_device(device: str, folder: Path) -> dict[str, Any]:
    from resablate import probe_trial
    from resablate.spec.schema import ProbesSpec

    probes = ProbesSpec.model_validate({"weights": {}, "spp": {"input": "data"}})
    here = probe_trial(copy.deepcopy(BASE), probes, 0, device=device)
    cpu = probe_trial(copy.deepcopy(BASE), probes, 0, device="cpu")
    gaps = [
        abs(a - b) / max(abs(b), 1e-12)
        for name in ("weights", "spp")
        for a, b in zip(numbers(here[name]), numbers(cpu[name]), strict=True)
    ]
    return {"ok": bool(gaps) and max(gaps) <= 1e-4, "largest_relative_gap": max(gaps, default=0)}


def numbers(found: Any) -> list[float]:
    """Every finite number in a probe's result, in a fixed order."""
    if isinstance(found, dict):
        return [v for k in sorted(found) for v in numbers(found[k])]
    if isinstance(found, list):
        return [v for item in found for v in numbers(item)]
    if isinstance(found, (int, float)) and not isinstance(found, bool) and math.isfinite(found):
        return [float(found)]
    return []


CHECKS: list[Callable[[str, Path], dict[str, Any]]] = [
    driver_has_no_cuda_context,  # first: nothing before it may touch CUDA in this process
    lanczos_on_device,
    resume_on_device,
    cache_released,
    probe_on_device,
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (rehearsal)")
    parser.add_argument("--out", required=True, help="folder for gpu_path.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "CPU" if args.device == "cpu" else f"{args.device} (name read after the first check)"
    print(f"gpu_path: device {name}, torch {torch.__version__}")
    results = run_checks(CHECKS, lambda check, folder: check(args.device, folder))
    if args.device != "cpu":
        name = torch.cuda.get_device_name()
    (out / "gpu_path.json").write_text(
        json.dumps({"device": name, "torch": torch.__version__, "checks": results}, indent=1)
    )
    return finish("gpu_path", results)


if __name__ == "__main__":
    sys.exit(main())
