"""Checkpoint cost, measured in one run: seconds and MB per checkpoint of a CIFAR ResNet-110 trial
(He et al.'s recipe: SGD with momentum, so the optimizer state doubles the weights) and its share
of the trial's time at the default cadence (resablate.checkpoint: every tenth of the epochs, and at
least every 10 minutes of training).

    python benchmarks/checkpoint_cost.py            # ResNet-110, CIFAR-sized synthetic images
    python benchmarks/checkpoint_cost.py --smoke    # ResNet-20, for CI

A step's time is measured on this machine over one short epoch (with its evaluation, so a little
long); the trial's time is that step times He et al.'s 64k iterations.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from resablate.trial import checkpoint
from resablate.trial.checkpoint import Checkpoints
from resablate.trial.train import run_stack

ITERATIONS = 64_000  # He et al. 2015, CIFAR-10
STEPS_PER_EPOCH = 391  # 50k images, batch 128


class Timed(Checkpoints):
    """Checkpoints that time each save and note its size."""

    took: list[float]
    sizes: list[int]

    def save(self, state: dict[str, Any]) -> None:
        start = time.perf_counter()
        super().save(state)
        self.took.append(time.perf_counter() - start)
        self.sizes.append((self.folder / checkpoint.name(state["epoch"])).stat().st_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="ResNet-20 and fewer steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    depth, steps = (20, 2) if args.smoke else (110, 4)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    config = {
        # half held out: `steps` training batches of 128 an epoch
        "data": {
            "name": "synthetic",
            "image": [3, 32, 32],
            "samples": 2 * 128 * steps,
            "test_fraction": 0.5,
        },
        "model": {"family": "cifar", "depth": depth},
        "train": {"recipe": "he_cifar", "epochs": 2, "max_iterations": None, "warmup_lr": None},
    }
    with tempfile.TemporaryDirectory() as folder:
        timed = Timed(Path(folder), every=1)
        timed.took, timed.sizes = [], []
        reports: list[dict[str, Any]] = []
        run_stack([config], [reports.append], device=args.device, checkpoints=timed)
        read_start = time.perf_counter()
        checkpoint.read(timed.files()[0])
        read = time.perf_counter() - read_start
    save, size = timed.took[-1], timed.sizes[-1] / 2**20  # the second: caches warm
    # the second epoch's time (its training steps and its evaluation: a step a little long)
    step = reports[-1]["epoch_time"] / steps
    trial = ITERATIONS * step
    epochs = ITERATIONS // STEPS_PER_EPOCH
    count = max(epochs // checkpoint.default_every(epochs), int(trial // checkpoint.EVERY_SECONDS))
    where = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    print(f"ResNet-{depth}, CIFAR-sized images, batch 128, {where}")
    print(f"checkpoint  {save:.3f} s to write   {read:.3f} s to read   {size:.2f} MB")
    print(f"step        {step:.3f} s   a {ITERATIONS}-iteration trial: {trial / 3600:.2f} h")
    print(
        f"cadence     {count} checkpoints a trial: {100 * count * save / trial:.3f} % of its time"
    )
    if args.json:
        figures = {
            "device": where,
            "model": f"cifar ResNet-{depth}",
            "write_s": save,
            "read_s": read,
            "size_mb": size,
            "step_s": step,
            "trial_h": trial / 3600,
            "checkpoints_a_trial": count,
            "share_of_trial": count * save / trial,
        }
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
