"""How far a distilled student's classification targets moved from the labels.

Usage: python targets.py RUN [RUN ...]   (student run folders, each with config.json and its teachers)
Prints, per student: the teachers' mean |probability - label| over the labelled training images, its
median, and the share of those images whose teachers' probability is on the other side of 0.5.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from busassist.training.distill import teacher_probabilities
from busassist.training.trainer import TrainConfig, load_data, teacher_scoring


def moved(run: Path) -> tuple[float, float, float]:
    meta = json.loads((run / "config.json").read_text())
    config = TrainConfig(**meta["config"])
    data, split, _, cases = load_data(config)
    runs = [Path(teacher["run"]) for teacher in meta["teachers"]]
    probabilities = teacher_probabilities(runs, data, split.train, teacher_scoring(config, cases, split), torch.device("cpu"))
    labels = data.labels[split.train].astype(np.float64)
    labelled = labels >= 0
    gap = np.abs(probabilities[labelled] - labels[labelled])
    return float(gap.mean()), float(np.median(gap)), float(np.mean(gap > 0.5))


if __name__ == "__main__":
    torch.set_num_threads(2)
    for folder in sys.argv[1:]:
        mean, median, flipped = moved(Path(folder))
        print(f"{folder}: mean |p - label| {mean:.3f}, median {median:.3f}, other side of 0.5 {flipped:.1%}")
