"""Where resablate's trainer spends more than a hand loop, per training step (issue 34, part 2):
torch's profiler over both loops of gpu_throughput.py on the same net and data, on the CPU.

A small net on a GPU is bound by the host: each operator the loop launches costs the CPU its
dispatch (tens of microseconds on a virtualized machine), whatever the GPU does. So the ops a
loop runs per step, and the host time they take, are what a CPU profile can show of a GPU gap.
This prints, per training step, the operators whose counts differ between the two loops, each
loop's operator count and its wall time per step on a tiny net (where the host's work is most
of a step).

    python benchmarks/trainer_profile.py              # cifar ResNet-8, 8 channels, 1 thread
    python benchmarks/trainer_profile.py --depth 20 --channels 16
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_throughput import config, hand_epochs, resablate_epochs


def top_level_ops(
    loop: Callable[[dict[str, Any], str], list[float]], raw: dict[str, Any]
) -> Counter:
    """The operators the loop calls itself (not those inside other operators), counted."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loop(raw, "cpu")
    counts: Counter = Counter()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    for event in events:
        if event.cpu_parent is None or not event.cpu_parent.name.startswith("aten::"):
            counts[event.name] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--samples", type=int, default=1280, help="synthetic images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="the first is warm-up")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.precision, args.channels_last, args.compile = "fp32", False, False
    raw = config(args, "cpu")
    from resablate import trial_config
    from resablate.trial import data

    n_train = len(data.load(trial_config(raw).data).y_train)
    steps = -(-n_train // args.batch_size) * args.epochs
    print(
        f"cifar ResNet-{args.depth} ({args.channels} channels), {n_train} images, batch"
        f" {args.batch_size}, {args.epochs} epochs ({steps} steps), {args.threads} thread(s)"
    )
    walls = {}
    for name, loop in (("hand", hand_epochs), ("resablate", resablate_epochs)):
        loop(raw, "cpu")  # warm: data cached, kernels ready
        times = loop(raw, "cpu")
        walls[name] = sum(times[1:]) / (len(times) - 1) / -(-n_train // args.batch_size)
    hand, ours = top_level_ops(hand_epochs, raw), top_level_ops(resablate_epochs, raw)
    print(f"{'operator':<36} {'hand/step':>10} {'ours/step':>10}")
    for op in sorted(set(hand) | set(ours), key=lambda o: -(ours[o] - hand[o])):
        if hand[op] != ours[op]:
            print(f"{op:<36} {hand[op] / steps:10.2f} {ours[op] / steps:10.2f}")
    print(
        f"{'all operators':<36} {sum(hand.values()) / steps:10.2f}"
        f" {sum(ours.values()) / steps:10.2f}"
    )
    print(
        f"wall per step: hand {1000 * walls['hand']:.3f} ms, resablate"
        f" {1000 * walls['resablate']:.3f} ms, resablate/hand"
        f" {walls['resablate'] / walls['hand']:.3f}"
    )


if __name__ == "__main__":
    main()
