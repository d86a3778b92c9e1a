"""Lesion measurements on synthetic shapes whose answers are known analytically.

Parity with the previous implementation is in ``test_measurements_parity.py``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from busassist.core.hull import convex_hull
from busassist.core.mask_runs import label_components
from busassist.core.measurements import (
    DEFAULT_MIN_AREA_PX,
    EMPTY_ROW,
    MEASUREMENT_COLUMNS,
    LesionMeasurement,
    as_row,
    count_and_measure_largest,
    measure_largest,
    measure_lesions,
)


def rectangle(rows: int = 40, cols: int = 100, shape: tuple[int, int] = (200, 300)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[50 : 50 + rows, 100 : 100 + cols] = True
    return mask


def disc(radius: float, centre: tuple[float, float] = (150.0, 150.0), shape: tuple[int, int] = (300, 300)):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr + 0.5 - centre[0]) ** 2 + (cc + 0.5 - centre[1]) ** 2 <= radius**2


def ellipse(semi_rows: float, semi_cols: float, angle_deg: float, size: int = 300) -> np.ndarray:
    """Ellipse centred in the frame; its ``semi_cols`` axis is turned ``angle_deg`` from the horizontal."""
    rr, cc = np.mgrid[:size, :size]
    y, x = rr + 0.5 - size / 2, cc + 0.5 - size / 2
    t = math.radians(angle_deg)
    along = x * math.cos(t) + y * math.sin(t)
    across = -x * math.sin(t) + y * math.cos(t)
    return (along / semi_cols) ** 2 + (across / semi_rows) ** 2 <= 1.0


def star(size: int = 300, points: int = 8) -> np.ndarray:
    rr, cc = np.mgrid[:size, :size]
    y, x = rr + 0.5 - size / 2, cc + 0.5 - size / 2
    return np.hypot(y, x) <= 35 + 15 * np.cos(points * np.arctan2(y, x))


def only(mask: np.ndarray, spacing=None) -> LesionMeasurement:
    found = measure_lesions(mask, spacing)
    assert len(found) == 1
    return found[0]


# --------------------------------------------------------------------------------------------
# Known shapes, pixel units
# --------------------------------------------------------------------------------------------


def test_rectangle_pixel_units() -> None:
    m = only(rectangle(40, 100))
    assert m.area == pytest.approx(4000, rel=0.01)
    assert m.area_px == 4000
    assert m.max_diameter == pytest.approx(math.hypot(40, 100), abs=2)
    assert m.depth == 40 and m.width == 100
    assert m.depth_to_width == pytest.approx(0.4)
    assert not m.taller_than_wide
    assert m.solidity == pytest.approx(1.0, abs=1e-9)
    assert m.convexity == pytest.approx(1.0, abs=0.01)
    # The max-diameter axis of a rectangle is its diagonal; the inertia axis is its long side.
    assert m.orientation_deg == pytest.approx(math.degrees(math.atan2(40, 100)), abs=0.01)
    assert m.principal_axis_deg == pytest.approx(0.0, abs=1e-6)
    # Perpendicular to the diagonal the rectangle spans 2 * 40 * 100 / diagonal.
    assert m.perpendicular_diameter == pytest.approx(2 * 40 * 100 / math.hypot(40, 100), rel=1e-6)
    assert m.bbox == (50, 100, 90, 200)
    assert m.centroid_rc == pytest.approx((69.5, 149.5))
    assert m.units == "px" and m.calibrated is False


def test_disc() -> None:
    m = only(disc(50))
    assert m.area == pytest.approx(math.pi * 50**2, rel=0.01)
    assert m.max_diameter == pytest.approx(100, abs=2)
    assert m.perpendicular_diameter == pytest.approx(100, abs=2)
    assert m.depth_to_width == pytest.approx(1.0, abs=0.03)
    assert m.solidity > 0.97
    assert m.convexity > 0.9
    assert m.centroid_rc == pytest.approx((149.5, 149.5), abs=0.01)


def test_rotated_ellipse_orientation_and_diameter() -> None:
    m = only(ellipse(20, 60, 30))
    assert m.orientation_deg == pytest.approx(30, abs=3)
    assert m.principal_axis_deg == pytest.approx(30, abs=1)
    assert m.max_diameter == pytest.approx(120, abs=2)
    assert m.perpendicular_diameter == pytest.approx(40, abs=2)
    assert m.area == pytest.approx(math.pi * 20 * 60, rel=0.01)
    # Bounding box of an ellipse turned by t: 2 * sqrt(a^2 sin^2 t + b^2 cos^2 t) and so on.
    t = math.radians(30)
    depth = 2 * math.sqrt(60**2 * math.sin(t) ** 2 + 20**2 * math.cos(t) ** 2)
    width = 2 * math.sqrt(60**2 * math.cos(t) ** 2 + 20**2 * math.sin(t) ** 2)
    assert m.depth_to_width == pytest.approx(depth / width, rel=0.03)


def test_vertical_ellipse_is_taller_than_wide() -> None:
    m = only(ellipse(20, 60, 90))
    assert m.depth_to_width == pytest.approx(3.0, rel=0.05)
    assert m.taller_than_wide
    assert m.orientation_deg == pytest.approx(90, abs=3)
    assert m.principal_axis_deg == pytest.approx(90, abs=1)
    assert m.max_diameter == pytest.approx(120, abs=2)
    flat = only(ellipse(20, 60, 0))
    assert flat.orientation_deg == pytest.approx(0, abs=3)
    assert flat.depth_to_width == pytest.approx(1 / 3, rel=0.05)


@pytest.mark.parametrize("angle", [0, 15, 45, 60, 75, 90, 120, 150])
def test_orientation_folds_into_0_90(angle: float) -> None:
    m = only(ellipse(15, 60, angle))
    expected = min(angle % 180, 180 - angle % 180)
    assert 0 <= m.orientation_deg <= 90
    assert m.orientation_deg == pytest.approx(expected, abs=3)
    assert m.principal_axis_deg == pytest.approx(expected, abs=1)


def test_spiculated_shape_has_lower_margin_indices_than_disc() -> None:
    round_ = only(disc(40))
    spiky = only(star())
    assert spiky.solidity < round_.solidity - 0.2
    assert spiky.convexity < round_.convexity - 0.2
    assert 0 < spiky.solidity < 1 and 0 < spiky.convexity < 1


def test_convexity_is_not_the_biased_edge_count() -> None:
    # Counting boundary pixel edges would give convexity ~ pi / 4 for any disc.
    for radius in (15, 30, 60):
        assert only(disc(radius)).convexity > 0.9


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def test_anisotropic_spacing_rectangle_in_mm() -> None:
    m = only(rectangle(40, 100), spacing=(0.1, 0.2))  # (row, column) mm
    depth, width = 40 * 0.1, 100 * 0.2  # 4 mm x 20 mm
    assert m.units == "mm" and m.calibrated is True
    assert m.area == pytest.approx(depth * width, rel=1e-9)
    assert m.area_px == 4000
    assert m.depth == pytest.approx(depth) and m.width == pytest.approx(width)
    assert m.depth_to_width == pytest.approx(0.2)
    diagonal = math.hypot(depth, width)
    assert m.max_diameter == pytest.approx(diagonal, rel=1e-9)
    assert m.perpendicular_diameter == pytest.approx(2 * depth * width / diagonal, rel=1e-9)
    # The angle is the physical one, not the pixel one (atan(40/100) = 21.8 degrees).
    assert m.orientation_deg == pytest.approx(math.degrees(math.atan2(depth, width)), abs=0.01)
    assert m.solidity == pytest.approx(1.0) and m.convexity == pytest.approx(1.0)


def test_anisotropic_spacing_turns_a_disc_into_an_ellipse() -> None:
    # Square pixels on screen, but each row is 0.2 mm and each column 0.1 mm: physically an
    # ellipse twice as deep as wide, vertical.
    m = only(disc(40), spacing=(0.2, 0.1))
    assert m.max_diameter == pytest.approx(80 * 0.2, abs=2 * 0.2)
    assert m.perpendicular_diameter == pytest.approx(80 * 0.1, abs=2 * 0.2)
    assert m.depth_to_width == pytest.approx(2.0, rel=0.03)
    # The digitised disc has flat 13-pixel tops and bottoms; its longest chord runs corner to
    # opposite corner across them, a few degrees off vertical. The inertia axis is not fooled.
    assert m.orientation_deg > 80
    assert m.principal_axis_deg == pytest.approx(90, abs=1)
    assert m.area == pytest.approx(math.pi * 40**2 * 0.02, rel=0.01)


def test_uncalibrated_units_are_pixels() -> None:
    m = only(rectangle(), spacing=None)
    assert m.units == "px" and m.calibrated is False
    assert only(rectangle(), spacing=(1.0, 1.0)).units == "mm"


@pytest.mark.parametrize("spacing", [(0.0, 0.1), (-0.1, 0.1), (float("nan"), 0.1), (0.1,), "ab"])
def test_invalid_spacing_is_rejected(spacing) -> None:
    with pytest.raises(ValueError):
        measure_lesions(rectangle(), spacing)


# --------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------


def test_two_blobs_sorted_by_area_and_speck_dropped() -> None:
    mask = np.zeros((300, 400), dtype=np.uint8)
    mask[20:40, 20:60] = 255  # small: 800 px, first in raster order
    mask[100:200, 150:300] = 255  # large: 15000 px
    mask[250:253, 10:13] = 255  # speck: 9 px < DEFAULT_MIN_AREA_PX
    found = measure_lesions(mask, None)
    assert [m.area_px for m in found] == [15000, 800]
    assert found[0].bbox == (100, 150, 200, 300)
    assert found[1].bbox == (20, 20, 40, 60)
    assert DEFAULT_MIN_AREA_PX > 9
    assert [m.area_px for m in measure_lesions(mask, None, min_area_px=1)] == [15000, 800, 9]
    largest = measure_largest(mask, None)
    assert largest is not None and largest.area_px == 15000


def test_empty_mask() -> None:
    assert measure_lesions(np.zeros((64, 64), dtype=bool), None) == []
    assert measure_largest(np.zeros((64, 64), dtype=bool), (0.1, 0.1)) is None
    speck_only = np.zeros((64, 64), dtype=bool)
    speck_only[10:12, 10:12] = True
    assert measure_lesions(speck_only, None) == []


def test_diagonal_touch_joins_lesions() -> None:
    mask = np.zeros((100, 100), dtype=bool)
    mask[10:30, 10:30] = True
    mask[30:50, 30:50] = True  # touches the first only at one corner
    found = measure_lesions(mask, None)
    assert len(found) == 1 and found[0].area_px == 800
    assert label_components(mask, connectivity=8)[1] == 1
    assert label_components(mask, connectivity=4)[1] == 2


def test_holes_are_filled() -> None:
    ring = disc(40) & ~disc(20)
    filled = only(ring)
    assert filled.area_px == int(disc(40).sum())
    assert filled.solidity > 0.97
    hollow = measure_lesions(ring, None, fill_holes=False)[0]
    assert hollow.area_px == int(ring.sum())
    assert hollow.solidity < 0.8


def test_labels_match_hand_example() -> None:
    mask = np.array(
        [
            [1, 1, 0, 0, 1],
            [0, 1, 0, 1, 0],
            [0, 0, 0, 0, 0],
            [1, 0, 1, 1, 1],
            [1, 0, 0, 0, 1],
        ]
    )
    labels, count = label_components(mask)
    assert count == 4
    expected = np.array(
        [
            [1, 1, 0, 0, 2],
            [0, 1, 0, 2, 0],
            [0, 0, 0, 0, 0],
            [3, 0, 4, 4, 4],
            [3, 0, 0, 0, 4],
        ]
    )
    np.testing.assert_array_equal(labels, expected)
    labels4, count4 = label_components(mask, connectivity=4)
    assert count4 == 5  # the diagonal pair at the top right splits
    with pytest.raises(ValueError):
        label_components(mask, connectivity=6)
    with pytest.raises(ValueError):
        label_components(np.zeros((2, 2, 2)))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_labels_match_scikit_image_on_random_masks(connectivity: int) -> None:
    skimage_measure = pytest.importorskip("skimage.measure")
    rng = np.random.default_rng(7)
    for density in (0.2, 0.45, 0.6):
        mask = rng.random((120, 90)) < density
        ours, count = label_components(mask, connectivity)
        theirs = skimage_measure.label(mask, connectivity=1 if connectivity == 4 else 2)
        assert count == theirs.max()
        np.testing.assert_array_equal(ours, theirs)


def test_convex_hull_of_square_with_interior_and_collinear_points() -> None:
    pts = np.array([[0, 0], [0, 2], [0, 4], [4, 0], [4, 4], [2, 2], [1, 3], [4, 2], [2, 0]])
    hull = convex_hull(pts)
    assert {tuple(p) for p in hull.tolist()} == {(0, 0), (0, 4), (4, 0), (4, 4)}
    assert len(hull) == 4


def test_performance_smoke_1000x1000() -> None:
    rr, cc = np.mgrid[:1000, :1000]
    mask = np.zeros((1000, 1000), dtype=bool)
    mask[100:400, 100:500] = True
    mask[600:900, 600:700] = True
    mask |= (rr - 800) ** 2 + (cc - 250) ** 2 <= 120**2
    mask |= np.hypot(rr - 300, cc - 800) <= 100 + 50 * np.cos(7 * np.arctan2(rr - 300, cc - 800))
    start = time.perf_counter()
    found = measure_lesions(mask, (0.1, 0.1))
    elapsed = time.perf_counter() - start
    assert len(found) == 4
    assert elapsed < 2.0


# --------------------------------------------------------------------------------------------
# CSV rows
# --------------------------------------------------------------------------------------------


def test_rows_have_a_fixed_schema() -> None:
    calibrated = as_row(only(rectangle(), spacing=(0.1, 0.2)))
    uncalibrated = as_row(only(rectangle(), spacing=None))
    assert tuple(calibrated) == MEASUREMENT_COLUMNS
    assert tuple(uncalibrated) == MEASUREMENT_COLUMNS
    assert tuple(EMPTY_ROW) == MEASUREMENT_COLUMNS
    assert calibrated["measurement_units"] == "mm" and uncalibrated["measurement_units"] == "px"
    assert calibrated["lesion_area"] == pytest.approx(80.0)
    assert uncalibrated["lesion_area"] == pytest.approx(4000.0)
    assert calibrated["lesion_area_px"] == 4000
    assert calibrated["lesion_depth_to_width"] == pytest.approx(0.2)
    assert (calibrated["lesion_bbox_row0"], calibrated["lesion_bbox_col1"]) == (50, 200)
    assert all(value == "" for value in EMPTY_ROW.values())
    assert as_row(None) == dict(EMPTY_ROW)
    with pytest.raises(TypeError):
        EMPTY_ROW["lesion_area"] = 1.0  # type: ignore[index]


def test_hull_pruning_keeps_exactly_the_same_hull() -> None:
    """The numpy pre-pruning of interior points (speed) never changes a hull vertex or its order."""
    from busassist.core import hull as m

    def chain(points):  # the plain monotone chain, without any pruning
        ordered = [tuple(p) for p in points[np.lexsort((points[:, 1], points[:, 0]))].tolist()]
        lower, upper = [], []
        for p in ordered:
            while len(lower) >= 2 and m._cross(lower[-2], lower[-1], p) <= 0:
                lower.pop()
            lower.append(p)
        for p in reversed(ordered):
            while len(upper) >= 2 and m._cross(upper[-2], upper[-1], p) <= 0:
                upper.pop()
            upper.append(p)
        return lower[:-1] + upper[:-1]

    rng = np.random.default_rng(7)
    for trial in range(600):
        count = int(rng.integers(20, 500))
        if trial % 3 == 0:  # round lesion outlines: most points near the hull
            angle, radius = rng.uniform(0, 2 * np.pi, count), rng.uniform(10, 80)
            points = np.stack([np.round(radius * np.cos(angle)), np.round(radius * np.sin(angle))], 1)
        else:
            points = rng.integers(-60, 60, (count, 2))
        points = points.astype(np.int64)
        assert [tuple(p) for p in m.convex_hull(points).tolist()] == chain(points), trial


def test_lesion_count_counts_what_the_measurements_call_a_lesion() -> None:
    from busassist.core.measurements import DEFAULT_MIN_AREA_PX, measure_lesions
    from busassist.core.results import read_frame

    mask = np.zeros((120, 160), bool)
    mask[10:40, 10:50] = True  # 1200 px
    mask[60:70, 80:95] = True  # 150 px
    mask[100:103, 140:143] = True  # a 9-pixel speck, below DEFAULT_MIN_AREA_PX
    assert DEFAULT_MIN_AREA_PX > 9
    count, largest = count_and_measure_largest(mask)
    assert count == len(measure_lesions(mask)) == 2 and largest.area_px == 1200
    reading = read_frame(mask, 0.7, 0.5, 0.5, mask.size, 0.002, None)
    assert reading.lesion_count == 2 and reading.mask_area_px == 1200 + 150 + 9
