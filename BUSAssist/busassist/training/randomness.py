"""Seeding a training, and carrying its random states across an interruption.

A training draws from its own generator (shuffling, augmentation) and from the global ones (dropout).
``make reproduce`` promises the same weights whether or not the run was interrupted, so a checkpoint
keeps the global states and a resume restores them; before 2026-12-07 a resume reseeded them and the
resumed epochs trained other weights.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def global_rng_state(device: torch.device) -> dict:
    """The global random states a training step draws from (dropout: torch's), for an exact resume."""
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_global_rng(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch"].cpu())
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
