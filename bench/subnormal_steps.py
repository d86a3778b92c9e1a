"""Time EMT-Net training steps from a checkpoint with and without flushing subnormal floats to zero.

Late in an unflushed full training the steps took twice as long (docs/training.md, "The full-size
seed spread after pinning"), which is why ``busassist-train`` now flushes from its first line
(``training/reproducible.py``). This script sets only the kernel pins, so that it can compare both.
It times four 16-image steps on real augmented batches of a run's training split, from one of its
checkpoints, alternating flushing off and on. ``torch.set_flush_denormal`` sets the
flag for the calling thread only; threads created afterwards inherit it, so ``--flush-from-start`` sets
it before the first parallel region (before the data load) and then every thread flushes.

    python bench/subnormal_steps.py RUN [--checkpoint last.pt] [--threads 1] [--flush-from-start]
"""

from __future__ import annotations

from busassist.training.reproducible import pin_arithmetic

pin_arithmetic()  # the trainer's arithmetic, before torch loads

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from busassist.training.augment import AugmentConfig  # noqa: E402
from busassist.training.losses import multitask_loss  # noqa: E402
from busassist.training.operating_check import run_config  # noqa: E402
from busassist.training.trainer import TrainingBatches, build_network, load_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoint", default="last.pt")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--flush-from-start",
        action="store_true",
        help="flush subnormals from the process start, so that every worker thread inherits it (all steps flushed)",
    )
    args = parser.parse_args()
    if args.flush_from_start:  # before the first parallel region: the worker threads created then inherit it
        torch.set_flush_denormal(True)
    config = run_config(args.run)
    torch.set_num_threads(args.threads)
    data, split, _, _ = load_data(config)
    checkpoint = torch.load(args.run / args.checkpoint, map_location="cpu", weights_only=False)
    for flush in (True, True) if args.flush_from_start else (False, True, False, True):
        torch.set_flush_denormal(flush)
        network = build_network(config).to(memory_format=torch.channels_last)
        network.load_state_dict(checkpoint["model"])
        network.train()
        optimiser = torch.optim.Adam(network.parameters(), lr=1e-6, fused=True)
        first = np.array(split.train)[:64]
        batches = TrainingBatches(data, first, 16, torch.Generator().manual_seed(0), AugmentConfig())
        seconds = []
        for images, masks, labels in batches:
            started = time.perf_counter()
            out = network(images.contiguous(memory_format=torch.channels_last))
            loss, _ = multitask_loss(
                out.class_logit, labels, out.mask_logit, masks,
                config.w_p, config.w_clf, config.mask_bce, config.dice, config.false_lesion,
            )  # fmt: skip
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            seconds.append(time.perf_counter() - started)
        print(f"threads {args.threads}, flush subnormals {flush}: step seconds {[round(s, 2) for s in seconds]}")


if __name__ == "__main__":
    main()
