"""The shared preprocessing pipeline: grey, pad to square, resize, normalise, and its inverse."""

from __future__ import annotations

import numpy as np
import pytest

from busassist.constants import IMAGE_SIZE, LUMA_WEIGHTS
from busassist.core.preprocessing import (
    SquareGeometry,
    preprocess,
    probability_to_source,
    resampling_matrix,
    resize,
    square_image,
    square_mask,
    to_grey,
    to_uint8_range,
)

# ---------------------------------------------------------------------------------------------
# Geometry


def test_geometry_landscape_pads_top_and_bottom() -> None:
    geometry = SquareGeometry.for_shape(100, 160)
    assert geometry.side == 160
    assert (geometry.pad_top, geometry.pad_left) == (30, 0)
    assert geometry.size == IMAGE_SIZE


def test_geometry_portrait_pads_left_and_right() -> None:
    geometry = SquareGeometry.for_shape(160, 100)
    assert geometry.side == 160
    assert (geometry.pad_top, geometry.pad_left) == (0, 30)


def test_geometry_odd_difference_and_square() -> None:
    geometry = SquareGeometry.for_shape(471, 562)
    assert geometry.side == 562
    assert geometry.pad_top == 45  # (562 - 471) // 2; the extra row goes to the bottom
    assert geometry.pad_left == 0
    square = SquareGeometry.for_shape(300, 300, size=128)
    assert (square.side, square.pad_top, square.pad_left, square.size) == (300, 0, 0, 128)


@pytest.mark.parametrize("shape", [(0, 10), (10, 0), (0, 0)])
def test_geometry_rejects_empty_frames(shape: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        SquareGeometry.for_shape(*shape)


# ---------------------------------------------------------------------------------------------
# preprocess


def test_preprocess_shape_dtype_range() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(300, 420), dtype=np.uint8)
    tensor, geometry = preprocess(frame)
    assert tensor.shape == (1, IMAGE_SIZE, IMAGE_SIZE)
    assert tensor.dtype == np.float32
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0
    assert geometry == SquareGeometry.for_shape(300, 420)


def test_preprocess_black_is_minus_one_and_white_is_plus_one() -> None:
    black, _ = preprocess(np.zeros((200, 200), dtype=np.uint8))
    np.testing.assert_allclose(black, -1.0, atol=1e-6)

    white, geometry = preprocess(np.full((112, 224), 255, dtype=np.uint8))
    # Landscape: the top and bottom 56 rows are (black) padding, the middle is the white frame.
    assert (geometry.pad_top, geometry.side) == (56, 224)
    np.testing.assert_allclose(white[0, :56], -1.0, atol=1e-6)
    np.testing.assert_allclose(white[0, 56:168], 1.0, atol=1e-5)
    np.testing.assert_allclose(white[0, 168:], -1.0, atol=1e-6)


def test_preprocess_zero_sized_frame_raises() -> None:
    with pytest.raises(ValueError):
        preprocess(np.zeros((0, 50), dtype=np.uint8))
    with pytest.raises(ValueError):
        preprocess(np.zeros((50, 0, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# Resampling


@pytest.mark.parametrize("length_in,length_out", [(562, 224), (224, 562), (471, 224), (7, 3), (3, 7), (100, 99)])
def test_resampling_matrix_rows_sum_to_one(length_in: int, length_out: int) -> None:
    matrix = resampling_matrix(length_in, length_out)
    assert matrix.shape == (length_out, length_in)
    assert (matrix >= 0).all()
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("length", [1, 5, 224])
def test_resampling_matrix_identity_for_equal_sizes(length: int) -> None:
    np.testing.assert_array_equal(resampling_matrix(length, length), np.eye(length, dtype=np.float32))


def test_resampling_matrix_shrink_averages_every_input_pixel() -> None:
    # Antialiasing: when shrinking, every input pixel contributes to some output pixel.
    matrix = resampling_matrix(562, 224)
    assert (matrix.sum(axis=0) > 0).all()


@pytest.mark.parametrize("shape,out", [((471, 562), (224, 224)), ((50, 60), (224, 300))])
def test_resize_keeps_constant_image_constant(shape: tuple[int, int], out: tuple[int, int]) -> None:
    image = np.full(shape, 77.0, dtype=np.float32)
    resized = resize(image, *out)
    assert resized.shape == out
    np.testing.assert_allclose(resized, 77.0, atol=1e-3)


def test_resize_preserves_a_linear_ramp_when_enlarging_by_two() -> None:
    # Half-pixel-centred linear interpolation of a ramp stays a ramp (away from the clamped edges).
    image = np.tile(np.arange(10, dtype=np.float32), (4, 1))
    resized = resize(image, 4, 20)
    expected = (np.arange(20) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(resized[0, 1:-1], expected[1:-1], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Mask round trip


def _blob_mask(shape: tuple[int, int], centre: tuple[float, float], radius: float, seed: int) -> np.ndarray:
    """An irregular lesion-like blob: a disc with a smooth random radial perturbation."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    dy, dx = rows - centre[0], cols - centre[1]
    angle = np.arctan2(dy, dx)
    boundary = radius * np.ones_like(angle)
    for k in (2, 3, 5):
        boundary += radius * 0.08 * rng.uniform(0.5, 1.0) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    return np.hypot(dy, dx) <= boundary


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum(a & b) / (a.sum() + b.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_round_trip_recovers_the_source_mask(seed: int) -> None:
    shape = (471, 562)
    mask = _blob_mask(shape, (230.0, 300.0), 90.0, seed)
    geometry = SquareGeometry.for_shape(*shape)
    network = square_mask(mask, geometry)
    assert network.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert network.min() >= -1e-6 and network.max() <= 1 + 1e-6
    back = probability_to_source(network, geometry)
    assert back.shape == shape
    recovered = back > 0.5
    assert np.mean(recovered == mask) >= 0.99
    assert _dice(recovered, mask) >= 0.97


@pytest.mark.parametrize(
    "shape,centre", [((471, 562), (70.0, 470.0)), ((562, 471), (480.0, 80.0)), ((300, 800), (250.0, 60.0))]
)
def test_off_centre_mask_comes_back_in_place(shape: tuple[int, int], centre: tuple[float, float]) -> None:
    mask = _blob_mask(shape, centre, 30.0, 3)
    geometry = SquareGeometry.for_shape(*shape)
    recovered = probability_to_source(square_mask(mask, geometry), geometry) > 0.5
    assert recovered.any()
    original_centroid = np.argwhere(mask).mean(axis=0)
    recovered_centroid = np.argwhere(recovered).mean(axis=0)
    assert np.linalg.norm(recovered_centroid - original_centroid) <= 1.5
    assert _dice(recovered, mask) >= 0.9


def test_square_mask_places_lesion_in_padded_square() -> None:
    # A lesion in the top-left of a landscape frame lands below the top padding on the network grid.
    shape = (100, 200)
    mask = np.zeros(shape, dtype=bool)
    mask[:20, :20] = True
    geometry = SquareGeometry.for_shape(*shape, size=100)  # side 200 -> scale 1/2, pad_top 50
    network = square_mask(mask, geometry)
    rows, cols = np.nonzero(network > 0.5)
    assert rows.min() >= 24 and rows.max() <= 35  # source rows 0..19 + pad 50 -> 25..34 on the grid
    assert cols.min() == 0 and cols.max() <= 10


# ---------------------------------------------------------------------------------------------
# Colour and bit depth


def test_rgb_frames_use_bt601_luma() -> None:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert LUMA_WEIGHTS == (0.299, 0.587, 0.114)
    np.testing.assert_allclose(to_grey(rgb), expected, rtol=1e-5, atol=1e-3)

    rgba = np.concatenate([rgb, np.full((20, 30, 1), 17, dtype=np.uint8)], axis=2)
    np.testing.assert_allclose(to_grey(rgba), expected, rtol=1e-5, atol=1e-3)


def test_rgb_constant_frame_through_pipeline() -> None:
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    frame[..., 0] = 200  # pure red
    squared, _ = square_image(frame, size=32)
    np.testing.assert_allclose(squared, 0.299 * 200, atol=1e-3)


def test_to_grey_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        to_grey(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError):
        to_grey(np.zeros(10))


def test_sixteen_bit_input_is_scaled_into_byte_range() -> None:
    frame = np.zeros((40, 40), dtype=np.uint16)
    frame[:, 20:] = 4000
    frame[:, 10:20] = 2000
    scaled = to_uint8_range(frame)
    assert scaled.min() == 0.0 and scaled.max() == pytest.approx(255.0)
    assert scaled[0, 15] == pytest.approx(127.5, abs=1e-3)

    squared, _ = square_image(frame, size=40)
    assert squared.max() <= 255.0 and squared.min() >= 0.0
    assert squared[:, 25:].min() == pytest.approx(255.0, abs=1e-3)
    assert squared[:, :5].max() == pytest.approx(0.0, abs=1e-3)

    tensor, _ = preprocess(frame)
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0
    assert tensor.max() == pytest.approx(1.0, abs=1e-4)


def test_eight_bit_range_data_is_left_unchanged() -> None:
    frame = np.array([[0, 10], [128, 255]], dtype=np.uint16)
    np.testing.assert_array_equal(to_uint8_range(frame), frame.astype(np.float32))


def test_to_uint8_range_empty_raises() -> None:
    with pytest.raises(ValueError):
        to_uint8_range(np.zeros((0, 0)))
