"""Batch augmentation suited to breast ultrasound (torch, applied before normalisation).

Left-right flips and small rotations, zooms and shifts mimic probe placement; contrast,
brightness and gamma changes mimic gain and time-gain-compensation settings. Vertical flips
are not used: depth (top = skin) carries meaning in ultrasound, e.g. posterior shadowing.
Padding uses 0, the black background of an ultrasound frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5
    rotate_degrees: float = 10.0
    scale: tuple[float, float] = (0.9, 1.15)
    shift: float = 0.06
    contrast: tuple[float, float] = (0.75, 1.3)
    brightness: float = 20.0
    gamma: tuple[float, float] = (0.75, 1.35)


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, config: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment (N, 1, S, S) images in 0..255 and their (N, 1, S, S) 0..1 masks together."""
    n = images.shape[0]
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator).mul(high - low).add(low).to(device)

    angle = uniform(-config.rotate_degrees, config.rotate_degrees) * math.pi / 180
    scale = uniform(*config.scale)
    flip = torch.where(uniform(0, 1) < config.flip, -1.0, 1.0)
    tx, ty = uniform(-config.shift, config.shift) * 2, uniform(-config.shift, config.shift) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    contrast = uniform(*config.contrast).view(n, 1, 1, 1)
    brightness = uniform(-config.brightness, config.brightness).view(n, 1, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = ((images - mean) * contrast + mean + brightness).clamp(0, 255)
    gamma = uniform(*config.gamma).view(n, 1, 1, 1)
    images = 255.0 * (images / 255.0).pow(gamma)
    return images, masks
