"""The moving average of a training's weights (``--keep ema``), with batch-norm statistics of its own."""

from __future__ import annotations

import torch

from busassist.training.busi import PreparedData
from busassist.training.model import EMTNet


def moving_average(network: EMTNet, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``network``'s weights, per step; its batch-norm statistics are
    not averaged but recomputed for the averaged weights (``fit_batch_norm``) before it is used.

    Averaged statistics do not describe the averaged weights: their variances are those of many
    networks along the way, wider than the average network's activations. Until 2026-12-06 they were
    averaged, and on the full preset that left the mask head dead (validation Dice 0 from epoch 6,
    the highest mask probability about 0.2) while the classifier still worked.
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


def fit_batch_norm(model: EMTNet, data: PreparedData, indices: list[int], device: torch.device) -> None:
    """Set ``model``'s batch-norm statistics to those of its own activations on the training images.

    One pass, unaugmented, in a fixed order and batches of the training size (``swa_utils.update_bn``:
    a cumulative mean over the batches), so the statistics are as reproducible as the weights. It runs
    in training mode, where dropout draws random numbers: inside a forked RNG, so that the trained
    network's own trajectory is the same whichever weights the run keeps.
    """
    from torch.optim.swa_utils import update_bn

    from busassist.training.trainer import network_batches

    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        update_bn(network_batches(data, indices, device, 16), model, device)
