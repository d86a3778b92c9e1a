"""Ensemble distillation: the classification target softened toward teachers of the same recipe.

Why: one training's operating point moves between seeds by more than the test split's paired 95 %
intervals (docs/training.md, the seed spread), so ``make reproduce`` cannot be held to one lucky
model. The mean malignancy probability of several independently seeded teachers is steadier than any
one of them; a student trained toward it is still one EMT-Net at inference.

The teachers are trainings of the student's own recipe (every setting equal, distillation off) with
seeds derived from the student's, kept inside the student's run folder, so that one ``fit --teachers N``
(or one study replicate) reproduces the whole chain from one seed. They see only the student's
training split; their probabilities are computed once, on the cached (unaugmented) training images.
Trained on the whole split (``all``), a teacher scores images it has learnt and mostly repeats their
labels; out of fold (``out-of-fold``), teacher k of N leaves part k out and alone gives that part's
targets: one teacher's judgement on images it has not seen (the N teachers together cover the split),
at the price of 1/N less data per teacher.
Augmentation moves pixels, not the class, so one soft target per image serves every augmented copy.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # the trainer imports this module: its names are loaded lazily at run time
    from busassist.training.busi import PreparedData
    from busassist.training.trainer import TrainConfig

#: Teacher k (1-based) of a student with seed s trains with seed s * TEACHER_SEED_STRIDE + k.
TEACHER_SEED_STRIDE = 1000
#: ``--teacher-data``: every teacher on the whole training split, or teacher k of N without part k.
ALL_TRAINING = "all"
OUT_OF_FOLD = "out-of-fold"
TEACHER_DATA = (ALL_TRAINING, OUT_OF_FOLD)


def teacher_configs(config: TrainConfig) -> list[TrainConfig]:
    """The teachers' configurations: the student's recipe, its own seed per teacher, no distillation.

    Every teacher keeps the student's split (a K-fold student's partition seed, not the teacher's own
    seed): a teacher that had trained on the student's test part would leak its labels into the targets.
    Out of fold, teacher k also leaves part k of the training split out.
    """
    from busassist.training.busi import split_seed

    out_of_fold = config.teacher_data == OUT_OF_FOLD
    return [
        replace(
            config,
            out_dir=str(Path(config.out_dir) / "teachers" / f"teacher-{number}"),
            seed=config.seed * TEACHER_SEED_STRIDE + number,
            teachers=0,
            teacher_data=ALL_TRAINING,
            partition_seed=split_seed(asdict(config)) if config.folds else None,
            leave_out=number if out_of_fold else 0,
            leave_out_of=config.teachers if out_of_fold else 0,
        )
        for number in range(1, config.teachers + 1)
    ]


def train_teachers(config: TrainConfig, resume: bool = True) -> list[Path]:
    """Train (or resume; finished ones are only reloaded) the student's teachers, one after another.

    ``resume=False`` (``fit --restart``) retrains them too: a restart means the whole chain.
    """
    from busassist.training.trainer import train

    return [train(teacher, resume) for teacher in teacher_configs(config)]


def teacher_probabilities(
    runs: list[Path], data: PreparedData, indices: list[int], scoring: list[list[int]], device: torch.device
) -> np.ndarray:
    """Malignancy probability on ``indices``, averaged over the teachers that score each image (``scoring[k]``:
    the images teacher k scores with its kept weights, ``best.pt``; every index scored at least once): all
    N teachers per image for whole-split teachers, the one that left it out for out-of-fold ones.

    Building each teacher's network draws a random initialisation (overwritten at once by its
    weights); that runs inside a forked RNG, because the student seeds itself before this call and its
    own initialisation and batch order must not depend on whether it has teachers.
    """
    from busassist.training.trainer import load_best, predict

    total = np.zeros(len(data.labels), dtype=np.float64)
    count = np.zeros(len(data.labels), dtype=np.int64)
    for run, scored in zip(runs, scoring):
        with torch.random.fork_rng(devices=[]):
            network = load_best(run, str(device)).to(device).to(memory_format=torch.channels_last)
        probabilities, _ = predict(network, data, scored, device)  # check_config: teachers have a classifier
        total[scored] += probabilities
        count[scored] += 1
    if not count[indices].all():
        raise ValueError("a training image that no teacher scores")
    return (total[indices] / count[indices]).astype(np.float32)


def soft_targets(labels: np.ndarray, indices: list[int], probabilities: np.ndarray, weight: float) -> np.ndarray:
    """Classification targets for every image: (1 - weight) * label + weight * teachers' probability on
    the labelled images of ``indices``; normal images keep -1 (no classification term), others their label."""
    targets = labels.astype(np.float32)
    for index, probability in zip(indices, probabilities):
        if labels[index] >= 0:
            targets[index] = (1.0 - weight) * float(labels[index]) + weight * float(probability)
    return targets
