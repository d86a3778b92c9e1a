"""The one preprocessing pipeline, shared by training and inference (numpy only).

grey -> pad to a square (paper section 3.1: no tumour distortion) -> resize to IMAGE_SIZE ->
(x - 127.5) / 127.5. ``SquareGeometry`` remembers the padding and size so that a mask predicted
on the network grid is mapped back exactly onto the source frame's pixel grid.

Resizing is done with separable resampling matrices (triangle filter widened when shrinking, i.e.
antialiased bilinear), so the pipeline needs nothing beyond numpy and gives the same numbers in
the trainer, the CLI and Slicer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from busassist.constants import IMAGE_SIZE, LUMA_WEIGHTS, NORMALISATION_MEAN, NORMALISATION_STD


def to_grey(frame: np.ndarray) -> np.ndarray:
    """Return a float32 2-D grey image from a 2-D grey or (H, W, 3|4) colour frame."""
    array = np.asarray(frame)
    if array.ndim == 2:
        return array.astype(np.float32, copy=False)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        rgb = array[..., :3].astype(np.float32)
        return rgb @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    if array.ndim == 3 and array.shape[2] == 1:
        return array[..., 0].astype(np.float32)
    raise ValueError(f"expected a 2-D grey or (H, W, 3) colour frame, got shape {array.shape}")


def to_uint8_range(grey: np.ndarray) -> np.ndarray:
    """Scale a grey frame of any bit depth into 0..255 float32 (8-bit data is left unchanged)."""
    grey = np.asarray(grey, dtype=np.float32)
    if grey.size == 0:
        raise ValueError("empty frame")
    high = float(grey.max())
    low = float(grey.min())
    if low >= 0.0 and high <= 255.0:
        return grey
    span = high - low
    if span <= 0:
        return np.zeros_like(grey)
    return (grey - low) * (255.0 / span)


@dataclass(frozen=True)
class SquareGeometry:
    """How a (height, width) frame was padded to a square and resized to ``size``."""

    height: int
    width: int
    pad_top: int
    pad_left: int
    side: int
    size: int = IMAGE_SIZE

    @classmethod
    def for_shape(cls, height: int, width: int, size: int = IMAGE_SIZE) -> SquareGeometry:
        if height < 1 or width < 1:
            raise ValueError(f"frame of size {height}x{width} cannot be analysed")
        side = max(height, width)
        return cls(height, width, (side - height) // 2, (side - width) // 2, side, size)


@lru_cache(maxsize=64)
def resampling_matrix(length_in: int, length_out: int) -> np.ndarray:
    """(length_out, length_in) matrix of an antialiased linear resampling along one axis.

    Pixel centres are aligned (half-pixel convention, like PIL and OpenCV ``INTER_LINEAR``);
    when shrinking, the triangle kernel is widened by the scale factor so every input pixel
    contributes (area-like averaging that keeps speckle from aliasing).
    """
    scale = length_in / length_out
    support = max(scale, 1.0)
    centres = (np.arange(length_out, dtype=np.float64) + 0.5) * scale - 0.5
    positions = np.arange(length_in, dtype=np.float64)
    distance = np.abs(positions[None, :] - centres[:, None]) / support
    weights = np.clip(1.0 - distance, 0.0, None)
    # Replicate the edge: where a kernel falls off the border, give its weight to the edge pixel.
    empty = weights.sum(axis=1) == 0
    if np.any(empty):
        nearest = np.clip(np.rint(centres[empty]), 0, length_in - 1).astype(int)
        weights[np.where(empty)[0], nearest] = 1.0
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a 2-D float image with antialiased linear resampling."""
    rows = resampling_matrix(image.shape[0], height)
    cols = resampling_matrix(image.shape[1], width)
    return rows @ np.asarray(image, dtype=np.float32) @ cols.T


def pad_to_square(image: np.ndarray, geometry: SquareGeometry) -> np.ndarray:
    """Centre a 2-D image on a zero (black, like ultrasound background) square canvas."""
    canvas = np.zeros((geometry.side, geometry.side), dtype=np.float32)
    canvas[
        geometry.pad_top : geometry.pad_top + geometry.height,
        geometry.pad_left : geometry.pad_left + geometry.width,
    ] = image
    return canvas


@lru_cache(maxsize=256)
def _taps(length_in: int, length_out: int, start: int, count: int, transpose: bool) -> tuple[np.ndarray, np.ndarray]:
    """Banded form of a (sliced) resampling matrix: per output index, source indices and weights.

    The matrix is ``resampling_matrix(length_in, length_out)`` (or the transpose of
    ``resampling_matrix(length_out, length_in)`` when ``transpose``) restricted to ``count``
    source positions from ``start``. Each output only mixes a few neighbours, so applying it as
    a gather is ~50x cheaper than a dense matrix product and gives the same numbers.
    """
    if transpose:  # inverse mapping: rows of the matrix that maps network grid -> padded square
        matrix = resampling_matrix(length_in, length_out)[start : start + count]
    else:
        matrix = resampling_matrix(length_in, length_out)[:, start : start + count]
    width = max(1, int((matrix != 0).sum(axis=1).max()))
    indices = np.zeros((matrix.shape[0], width), dtype=np.intp)
    weights = np.zeros((matrix.shape[0], width), dtype=np.float32)
    for row in range(matrix.shape[0]):
        nonzero = np.flatnonzero(matrix[row])
        indices[row, : nonzero.size] = nonzero
        weights[row, : nonzero.size] = matrix[row, nonzero]
    return indices, weights


def _resample_axis0(image: np.ndarray, taps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    indices, weights = taps
    out = weights[:, 0, None] * image[indices[:, 0]]
    for k in range(1, indices.shape[1]):
        out += weights[:, k, None] * image[indices[:, k]]
    return out


def pad_and_resize(image: np.ndarray, geometry: SquareGeometry) -> np.ndarray:
    """``resize(pad_to_square(image))`` without building the padded canvas.

    Padding adds zero rows and columns, so only the resampling weights that fall on the image
    contribute: slicing them out gives the same numbers at a fraction of the cost.
    """
    image = np.asarray(image, dtype=np.float32)
    rows = _taps(geometry.side, geometry.size, geometry.pad_top, geometry.height, False)
    cols = _taps(geometry.side, geometry.size, geometry.pad_left, geometry.width, False)
    return _resample_axis0(_resample_axis0(image, rows).T, cols).T


def square_image(frame: np.ndarray, size: int = IMAGE_SIZE) -> tuple[np.ndarray, SquareGeometry]:
    """Grey, pad and resize a frame: the network grid in 0..255, before normalisation."""
    grey = to_uint8_range(to_grey(frame))
    geometry = SquareGeometry.for_shape(grey.shape[0], grey.shape[1], size)
    return np.clip(pad_and_resize(grey, geometry), 0.0, 255.0), geometry


def square_mask(mask: np.ndarray, geometry: SquareGeometry) -> np.ndarray:
    """Bring a binary source-grid mask onto the network grid as a 0..1 float (soft at edges)."""
    return pad_and_resize((np.asarray(mask) > 0).astype(np.float32), geometry)


def normalise(squared: np.ndarray) -> np.ndarray:
    """Scale 0..255 grey to the encoder's input range and add the channel axis: (1, S, S)."""
    return ((np.asarray(squared, dtype=np.float32) - NORMALISATION_MEAN) / NORMALISATION_STD)[None]


def preprocess(frame: np.ndarray, size: int = IMAGE_SIZE) -> tuple[np.ndarray, SquareGeometry]:
    """Frame -> normalised (1, size, size) network input and the geometry needed to undo it."""
    squared, geometry = square_image(frame, size)
    return normalise(squared), geometry


def probability_to_source(probability: np.ndarray, geometry: SquareGeometry) -> np.ndarray:
    """Exact inverse of the geometry for a network-grid probability map: source-grid probabilities.

    Equivalent to resizing to the padded square and cropping the padding away, but only the
    rows and columns that survive the crop are computed.
    """
    rows = _taps(geometry.size, geometry.side, geometry.pad_top, geometry.height, True)
    cols = _taps(geometry.size, geometry.side, geometry.pad_left, geometry.width, True)
    probability = np.asarray(probability, dtype=np.float32)
    return np.ascontiguousarray(_resample_axis0(_resample_axis0(probability, rows).T, cols).T)
