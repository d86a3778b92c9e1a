"""Shared by the training and experiment tests: the tiny configuration they train (never the real model)."""

from __future__ import annotations

from pathlib import Path

from busassist.training.trainer import TrainConfig


def tiny_config(busi: Path, out: Path, cache: Path, **overrides) -> TrainConfig:
    """40 BUSI images at 64 x 64 for one epoch on the CPU, from scratch: seconds, not minutes."""
    values = dict(
        data_root=str(busi),
        out_dir=str(out),
        image_size=64,
        epochs=1,
        batch_size=8,
        limit=40,
        cache_dir=str(cache),
        device="cpu",
        pretrained=None,
    )
    values.update(overrides)
    return TrainConfig(**values)
