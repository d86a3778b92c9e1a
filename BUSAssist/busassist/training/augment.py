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


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5
    rotate_degrees: float = 10.0
    scale: tuple[float, float] = (0.9, 1.15)
    shift: float = 0.06
    contrast: tuple[float, float] = (0.75, 1.3)
    brightness: float = 20.0
    gamma: tuple[float, float] = (0.75, 1.35)


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (N, C, height, width), align_corners=False)`` without a matrix product.

    ``F.affine_grid`` multiplies with a batched matrix product, which PyTorch sends to Intel MKL, and
    MKL sums in another order on AMD CPUs; three products and two sums per pixel, written out, are the
    same on every CPU (training/reproducible.py).
    """
    xs = (torch.arange(width, dtype=theta.dtype, device=theta.device) * 2 + 1) / width - 1
    ys = (torch.arange(height, dtype=theta.dtype, device=theta.device) * 2 + 1) / height - 1
    x, y = xs.view(1, 1, width), ys.view(1, height, 1)
    t = theta.view(-1, 6, 1, 1)
    grid_x = t[:, 0] * x + t[:, 1] * y + t[:, 2]
    grid_y = t[:, 3] * x + t[:, 4] * y + t[:, 5]
    return torch.stack([grid_x, grid_y], dim=-1)


def bilinear_sample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(images, grid, "bilinear", "zeros", align_corners=False)`` from gathers and sums.

    PyTorch's vectorised sampler reads pixels with the AVX2 gather instruction; written with an index
    gather and plain arithmetic it gives the same numbers on every CPU and under an emulator, which is
    how the cross-CPU check verifies the trainer (training/reproducible.py). Differs from
    ``F.grid_sample`` by rounding only.
    """
    n, channels, height, width = images.shape
    x = ((grid[..., 0] + 1) * width - 1) / 2
    y = ((grid[..., 1] + 1) * height - 1) / 2
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    pixels = images.reshape(n, channels, height * width)
    out = torch.zeros(n, channels, *x.shape[1:], dtype=images.dtype, device=images.device)
    for dy, weight_y in ((0, 1 - fy), (1, fy)):
        for dx, weight_x in ((0, 1 - fx), (1, fx)):
            xs, ys = x0 + dx, y0 + dy
            inside = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
            index = ys.clamp(0, height - 1) * width + xs.clamp(0, width - 1)
            index = index.long().reshape(n, 1, -1).expand(n, channels, -1)
            values = pixels.gather(2, index).reshape(out.shape)
            out = out + values * (weight_x * weight_y * inside).unsqueeze(1)
    return out


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
    grid = affine_grid(theta, images.shape[2], images.shape[3])
    images = bilinear_sample(images, grid)
    masks = bilinear_sample(masks, grid)

    contrast = uniform(*config.contrast).view(n, 1, 1, 1)
    brightness = uniform(-config.brightness, config.brightness).view(n, 1, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = ((images - mean) * contrast + mean + brightness).clamp(0, 255)
    gamma = uniform(*config.gamma).view(n, 1, 1, 1)
    images = 255.0 * (images / 255.0).pow(gamma)
    return images, masks
