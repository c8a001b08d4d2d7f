"""How many trials one device trains at once, and trials/hour (issue 21, point 5).

Measured in one run, in-process and without Ray (the lent GPU machine has none), on data made
here or bundled with scikit-learn (no download):

  width10  the shortcut-depth study's network (mlp, width 10, depth 12, n = 2, mid-ReLU, whitened
           digits, full-batch SGD) in stacks of k trials (resablate.train.run_stack: one vmapped
           computation, each member its own seed and learning rate), k = 1, 8, 64, ... up to the
           most that resablate's stacking lets one stack hold on this device (HEADROOM of its free
           memory over batched.member_bytes); ms per member-epoch and trials/hour at the study's
           400 epochs, training only (the study's Hessian probes are not in it)
  lecture  the lecture net (mnist family, 25 units of 16 channels, batch norm: it cannot stack)
           on MNIST-shaped synthetic images, P processes sharing the device at once (what
           resources.gpu = 1/P gives under Ray): images/s in all and trials/hour at the lecture
           study's 10 epochs of 60,000 images

The first epoch of each measurement is warm-up and not counted. On a CPU each trial (a stack, or
a process) uses one thread, as a Ray worker of one CPU does.

    python benchmarks/stack_capacity.py                 # on a GPU (CPU if none)
    python benchmarks/stack_capacity.py --max-stack 512 --processes 1 2 4
    python benchmarks/stack_capacity.py --smoke         # small, for CI
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

STUDY_EPOCHS = 400  # sweeps/shortcut_depth.yaml
LECTURE_IMAGES = 60_000 * 10  # sweeps/mnist_lecture.yaml: MNIST's training set, 10 epochs


def width10(seed: int, lr: float, epochs: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "model": {
            "family": "mlp",
            "width": 10,
            "depth": 12,
            "shortcut_depth": 2,
            "activation": "mid",
            "act": "relu",
        },
        "init": {"scheme": "zero", "eps": 0.001},
        "data": {"name": "digits", "whiten": 10, "target": "onehot"},
        "train": {"loss": "mse", "lr": lr, "batch_size": "full", "epochs": epochs},
    }


def lecture(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "model": {"family": "mnist", "depth": args.units, "channels": args.channels},
        "data": {"name": "synthetic", "image": [1, 28, 28], "samples": args.samples},
        "train": {"lr": 0.05, "momentum": 0.9, "batch_size": 128, "epochs": args.epochs},
    }


def stack_sizes(largest: int) -> list[int]:
    sizes = [1]
    while sizes[-1] * 8 < largest:
        sizes.append(sizes[-1] * 8)
    return sizes + ([largest] if largest > 1 else [])


def member_epoch_ms(k: int, epochs: int, device: str) -> float:
    """ms per member-epoch of a stack of k width-10 trials (after a warm-up epoch)."""
    from resablate.trial.train import run_stack

    configs = [width10(i, (0.03, 0.1, 0.3)[i % 3], epochs) for i in range(k)]
    times: list[float] = []

    def keep(report: dict[str, Any]) -> None:
        if "epoch_time" in report:
            times.append(report["epoch_time"])

    reports = [keep] + [lambda r: None] * (k - 1)  # every member's epoch took the stack's time
    run_stack(configs, reports, device=device)
    return 1000 * statistics.mean(times[1:]) / k


def lecture_worker(args: argparse.Namespace) -> None:
    """One process's trial: prints its epoch times as JSON."""
    from resablate import run_trial

    times: list[float] = []
    run_trial(lecture(args, args.worker), lambda r: times.append(r["epoch_time"]), args.device)
    print(json.dumps(times))


def shared(args: argparse.Namespace, processes: int) -> float:
    """Images/s of ``processes`` lecture-net trials training at once on the device."""
    command = [sys.executable, __file__, "--device", args.device]
    command += ["--units", str(args.units), "--channels", str(args.channels)]
    command += ["--samples", str(args.samples), "--epochs", str(args.epochs)]
    images, rates = train_images(args), []
    with contextlib.ExitStack() as files:  # files, not pipes: a full pipe would block a process
        logs = [files.enter_context(tempfile.TemporaryFile("w+")) for _ in range(processes)]
        running = [
            subprocess.Popen([*command, "--worker", str(i)], stdout=log, stderr=log, text=True)
            for i, log in enumerate(logs)
        ]
        for process, log in zip(running, logs, strict=True):
            process.wait()
            log.seek(0)
            out = log.read()
            if process.returncode != 0:
                raise SystemExit(f"a lecture-net process failed:\n{out[-3000:]}")
            printed = [line for line in out.splitlines() if line.startswith("[")]  # not warnings
            epoch = statistics.mean(json.loads(printed[-1])[1:])
            rates.append(images / epoch)
    return sum(rates)


def train_images(args: argparse.Namespace) -> int:
    from resablate import trial_config
    from resablate.trial.data import DATASETS

    cfg = trial_config(lecture(args, 0)).data
    return int(DATASETS["synthetic"].train_size(cfg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, for CI")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-stack", type=int, default=None, help="largest k tried")
    parser.add_argument("--processes", type=int, nargs="+", default=None, help="lecture: P")
    parser.add_argument("--units", type=int, default=25, help="lecture net's units")
    parser.add_argument("--channels", type=int, default=16, help="lecture net's channels")
    parser.add_argument(
        "--samples", type=int, default=None, help="lecture: synthetic images (12,000; CPU 2,000)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs a measurement trains (3; CPU 2)"
    )
    parser.add_argument(
        "--stacks", nargs="+", default=None, help="the k measured: numbers or max (1 8 64 ... max)"
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)  # a trial's share of a CPU machine under Ray: one core
    if args.worker is not None:
        lecture_worker(args)
        return
    if args.smoke:
        args.max_stack = args.max_stack or 8
        args.processes = args.processes or [1, 2]
        args.units, args.channels, args.samples, args.epochs = 2, 4, 600, 3
    cuda = args.device == "cuda"
    args.samples = args.samples or (12_000 if cuda else 2_000)
    args.epochs = args.epochs or (3 if cuda else 2)
    from resablate.sweep.capacity import HEADROOM, free_bytes
    from resablate.trial.batched import member_bytes

    name = torch.cuda.get_device_name() if cuda else "CPU (one thread a trial)"
    print(f"device: {name}, torch {torch.__version__}")
    member = member_bytes(width10(0, 0.1, STUDY_EPOCHS))
    free = free_bytes(cuda)
    allowed = max(1, int(free * HEADROOM) // member)
    largest = min(allowed, args.max_stack or (4096 if cuda else 64))
    print(
        f"width10: {member / 2**20:.2f} MiB a member (estimated); {free / 2**30:.1f} GiB free:"
        f" stacks of up to {allowed} fit (HEADROOM {HEADROOM}); measured up to {largest}"
    )
    figures: dict[str, Any] = {
        "device": name,
        "member_mib": member / 2**20,
        "free_gib": free / 2**30,
        "fits": allowed,
        "stacks": [],
        "lecture": [],
    }
    sizes = stack_sizes(largest)
    if args.stacks:
        sizes = sorted({largest if k == "max" else min(int(k), largest) for k in args.stacks})
    alone = None
    for k in sizes:
        ms = member_epoch_ms(k, max(args.epochs, 2), args.device)
        alone = alone or ms
        per_hour = 3600 / (ms / 1000 * STUDY_EPOCHS)
        print(
            f"  stack {k:5d}  {ms:9.3f} ms per member-epoch  x{alone / ms:7.1f} over alone"
            f"  {per_hour:10.0f} trials/hour"
        )
        figures["stacks"].append(
            {
                "k": k,
                "ms_per_member_epoch": ms,
                "member_epochs_per_s": 1000 / ms,
                "trials_per_hour": per_hour,
            }
        )
    images = train_images(args)
    print(
        f"lecture: mnist family, {args.units} units of {args.channels} channels, batch norm,"
        f" {images} synthetic 1x28x28 images, batch 128"
    )
    for p in args.processes or ([1, 2, 4, 8] if cuda else [1, 2]):
        rate = shared(args, p)
        per_hour = 3600 * rate / LECTURE_IMAGES
        print(
            f"  {p} at once  {rate:10.0f} images/s in all  {per_hour:8.1f} trials/hour"
            f" (10 epochs of 60,000 images)"
        )
        figures["lecture"].append(
            {"processes": p, "images_per_s": rate, "trials_per_hour": per_hour}
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
