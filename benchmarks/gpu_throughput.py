"""GPU throughput, measured in one run on CIFAR-sized synthetic images (3×32×32, 10 classes; no
download, so it runs on a machine without internet):

  trainer   images/s of resablate's trainer (resablate.train.run_trial: data resident on the
            device, per-epoch evaluation) against a minimal hand-written loop doing the same work
            on the same model and data (target ratio >= 0.9)
  sharing   trials/hour of CIFAR ResNet-20 with 1, 2 and 4 trials per GPU (resources.gpu 1, 0.5,
            0.25), each a real `resablate sweep` (Ray, MLflow) of the same trials

    python benchmarks/gpu_throughput.py                      # on a GPU: ResNet-20, 10k images
    python benchmarks/gpu_throughput.py --precision bf16 --channels-last --compile
    python benchmarks/gpu_throughput.py --smoke              # tiny, on CPU if no GPU (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from resablate import models, run_trial, trial_config
from resablate.trial import data
from resablate.trial.compute import Compute


def config(args: argparse.Namespace, device: str) -> dict[str, Any]:
    return {
        "model": {"family": "cifar", "depth": args.depth, "channels": args.channels},
        "data": {"name": "synthetic", "image": [3, 32, 32], "samples": args.samples},
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": 0.05,
            "precision": args.precision,
            "channels_last": args.channels_last,
            "compile": args.compile,
        },
    }


def resablate_epochs(raw: dict[str, Any], device: str) -> list[float]:
    reports: list[dict[str, Any]] = []
    run_trial(trial_config(raw), report=reports.append, device=device)
    return [r["epoch_time"] for r in reports]


def hand_epochs(raw: dict[str, Any], device: str) -> list[float]:
    """The least a training loop can do: the same model, data on the device, SGD, a shuffled
    pass over the training set and an evaluation pass over the test set per epoch."""
    cfg = trial_config(raw)
    tensors = data.load(cfg.data).to(device)
    compute = Compute(cfg.train, torch.device(device))
    net, forward = compute.model(
        models.build(cfg.model, cfg.init, tensors.shape, torch.Generator().manual_seed(0)).to(
            device
        )
    )
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum)
    n, batch = len(tensors.y_train), int(cfg.train.batch_size)
    times = []
    for _ in range(cfg.train.epochs):
        start = time.perf_counter()
        net.train()
        for idx in torch.randperm(n, device=device).split(batch):
            with compute.autocast():
                out = forward(compute.batch(tensors.x_train[idx]))
            loss = F.cross_entropy(out.float(), tensors.y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad(), compute.autocast():
            for xb in tensors.x_test.split(1024):
                net(compute.batch(xb)).argmax(dim=1)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


SWEEP = """\
name: share{per_gpu}
model: {{family: cifar, depth: {depth}, channels: {channels}}}
data: {{name: synthetic, image: [3, 32, 32], samples: {samples}}}
train: {{epochs: {epochs}, batch_size: {batch_size}, lr: 0.05, precision: {precision}}}
grid: {{seed: {seeds}}}
resources: {{cpu: 1, gpu: {gpu}}}
"""


def trials_per_hour(args: argparse.Namespace, per_gpu: int, folder: Path) -> float:
    trials = max(4, per_gpu * torch.cuda.device_count())
    sweep = folder / f"share{per_gpu}.yaml"
    sweep.write_text(
        SWEEP.format(
            per_gpu=per_gpu,
            depth=args.depth,
            channels=args.channels,
            samples=args.samples,
            epochs=args.epochs,
            batch_size=args.batch_size,
            precision=args.precision,
            seeds=json.dumps(list(range(trials))),
            gpu=1 / per_gpu,
        )
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "resablate", "sweep", str(sweep), "--quiet"],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"sweep with {per_gpu} trials per GPU failed:\n{done.stderr[-3000:]}")
    return trials / (time.perf_counter() - start) * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI; CPU if no GPU)")
    parser.add_argument("--depth", type=int, default=20, help="cifar family depth (6n+2)")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--samples", type=int, default=10_000, help="synthetic images")
    parser.add_argument("--epochs", type=int, default=4, help="epochs; the first is warm-up")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-sharing", action="store_true", help="leave out trials per GPU")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    if args.smoke:
        args.depth, args.channels, args.samples, args.epochs = 8, 8, 400, 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    raw = config(args, device)
    n_train = len(data.load(trial_config(raw).data).y_train)
    print(
        f"device {name}; cifar ResNet-{args.depth} ({args.channels} channels), {n_train}"
        f" training images, batch {args.batch_size}, {args.precision}"
        f"{', channels-last' if args.channels_last else ''}"
        f"{', compiled' if args.compile else ''}"
    )
    hand = hand_epochs(raw, device)
    ours = resablate_epochs(raw, device)
    # the first epoch warms up (allocator, cuDNN autotuning, compilation): leave it out
    hand_rate = n_train / (sum(hand[1:]) / len(hand[1:]))
    our_rate = n_train / (sum(ours[1:]) / len(ours[1:]))
    print(f"hand loop   {hand_rate:10.0f} images/s")
    print(f"resablate   {our_rate:10.0f} images/s")
    print(f"resablate/hand {our_rate / hand_rate:.2f}  (target >= 0.95)")
    figures: dict[str, Any] = {
        "device": name,
        "model": f"cifar ResNet-{args.depth}, {args.channels} channels",
        "images": n_train,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "hand_epoch_s": hand,
        "resablate_epoch_s": ours,
        "hand_images_per_s": round(hand_rate),
        "resablate_images_per_s": round(our_rate),
        "ratio": round(our_rate / hand_rate, 3),
    }
    if device != "cuda" or args.no_sharing:
        print("trials per GPU: not measured" + (" (no GPU here)" if device != "cuda" else ""))
    else:
        with tempfile.TemporaryDirectory(prefix="resablate-gpu-") as tmp:
            for per_gpu in (1, 2, 4):
                rate = trials_per_hour(args, per_gpu, Path(tmp))
                figures[f"trials_per_hour_{per_gpu}_per_gpu"] = round(rate)
                print(f"{per_gpu} trial(s) per GPU  {rate:8.0f} trials/hour")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
