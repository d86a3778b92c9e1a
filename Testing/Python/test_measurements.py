"""Lesion measurements on synthetic shapes whose answers are known analytically, and parity with the old code."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from busassist.core.measurements import (
    DEFAULT_MIN_AREA_PX,
    EMPTY_ROW,
    MEASUREMENT_COLUMNS,
    LesionMeasurement,
    as_row,
    convex_hull,
    count_and_measure_largest,
    label_components,
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
    from busassist.core import measurements as m

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
    from busassist.core.measurements import DEFAULT_MIN_AREA_PX, count_and_measure_largest, measure_lesions
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


# --------------------------------------------------------------------------------------------
# Parity with the previous, image-based implementation (frozen copy)
# --------------------------------------------------------------------------------------------
# The module now measures from run lengths with numpy array operations. Every figure must be
# the one the previous implementation gave, bit for bit. The ``_ref_*`` functions below are
# that implementation, copied verbatim from busassist/core/measurements.py before the rewrite
# (docstrings cut to their first line, names prefixed): it is the reference, do not "fix" it.
# bench/measurements_speed.py imports it from here to time old against new.


def _ref_as_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D (rows, columns) mask, got shape {m.shape}")
    return m if m.dtype == bool else m != 0


def _ref_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of foreground as (row, start, end-exclusive) arrays in raster order."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows.astype(np.int64), starts.astype(np.int64), ends.astype(np.int64)


def _ref_connect_runs(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int, connectivity: int
) -> tuple[np.ndarray, int]:
    """Component index (0..k-1, in raster order of each component's first pixel) of every run."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    n = rows.size
    key = np.int64(width + 2)  # > any column index, so row-major keys never collide across rows
    below = (rows + 1) * key
    start_key = rows * key + starts
    end_key = rows * key + ends
    if connectivity == 8:  # run b below a touches a when b.start <= a.end and b.end >= a.start
        lo = np.searchsorted(end_key, below + starts, side="left")
        hi = np.searchsorted(start_key, below + ends, side="right")
    else:  # strict overlap: b.start < a.end and b.end > a.start
        lo = np.searchsorted(end_key, below + starts, side="right")
        hi = np.searchsorted(start_key, below + ends, side="left")
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    parent = np.arange(n, dtype=np.int64)
    if total:
        a = np.repeat(np.arange(n, dtype=np.int64), counts)
        b = np.repeat(lo, counts) + (np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts))
        # Invariant parent[x] <= x (roots only ever hook onto smaller roots), so there are no
        # cycles; each pass hooks every root that still has an edge to a different root.
        while True:
            root_a, root_b = parent[a], parent[b]
            differ = root_a != root_b
            if not differ.any():
                break
            a, b = a[differ], b[differ]  # edges inside one tree stay inside it
            root_a, root_b = root_a[differ], root_b[differ]
            np.minimum.at(parent, np.maximum(root_a, root_b), np.minimum(root_a, root_b))
            while True:  # full path compression: afterwards parent[x] is x's root
                grand = parent[parent]
                if np.array_equal(grand, parent):
                    break
                parent = grand
    # Each root is the smallest run index of its component, i.e. its first run in raster order.
    roots, component = np.unique(parent, return_inverse=True)
    return component.reshape(-1), int(roots.size)


def _ref_paint(shape: tuple[int, int], rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, values) -> np.ndarray:
    """An int32 image with each run [start, end) of ``rows`` set to its value (0 elsewhere)."""
    image = np.zeros(shape, dtype=np.int32)
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return image
    run = np.repeat(np.arange(rows.size), lengths)
    offset = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = rows[run] * shape[1] + starts[run] + offset
    image.reshape(-1)[flat] = np.broadcast_to(np.asarray(values, dtype=np.int32), rows.shape)[run]
    return image


def _ref_fill_holes(padded: np.ndarray) -> np.ndarray:
    """``padded`` (foreground with a background border) with every enclosed background filled."""
    rows, starts, ends = _ref_runs(~padded)
    component, _ = _ref_connect_runs(rows, starts, ends, padded.shape[1], 4)
    # Run 0 starts at pixel (0, 0), which is on the background border, so component 0 is outside.
    outside = _ref_paint(padded.shape, rows, starts, ends, component == 0)
    return outside == 0


def _ref_cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _ref_convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull vertices of an (N, 2) point array, in order around the hull, Andrew's monotone chain."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"expected an (N, 2) point array, got shape {pts.shape}")
    if pts.shape[0] == 0:
        return pts.reshape(0, 2)
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    new_group = np.ones(pts.shape[0], dtype=bool)
    new_group[1:] = pts[1:, 0] != pts[:-1, 0]
    last_of_group = np.ones(pts.shape[0], dtype=bool)
    last_of_group[:-1] = new_group[1:]
    pts = pts[new_group | last_of_group]
    if pts.shape[0] > 16:
        pts = _ref_drop_interior(pts)
    ordered = [tuple(p) for p in pts.tolist()]
    if len(ordered) < 3:
        return np.unique(pts, axis=0)
    lower: list[tuple[float, float]] = []
    for p in ordered:
        while len(lower) >= 2 and _ref_cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, float]] = []
    for p in reversed(ordered):
        while len(upper) >= 2 and _ref_cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    return np.asarray(hull, dtype=pts.dtype).reshape(-1, 2)


def _ref_drop_interior(pts: np.ndarray) -> np.ndarray:
    """``pts`` (sorted) without the points strictly inside the hull of its eight extreme points."""
    x, y = pts[:, 0], pts[:, 1]
    extremes = {int(f(v)) for v in (x, y, x + y, x - y) for f in (np.argmin, np.argmax)}
    polygon = _ref_convex_hull(pts[sorted(extremes)])  # at most 8 points: the loop is trivial
    if polygon.shape[0] < 3:
        return pts
    a, b = polygon, np.roll(polygon, -1, axis=0)
    edge = b - a  # counter-clockwise polygon: strictly inside means left of every edge
    cross = edge[None, :, 0] * (pts[:, None, 1] - a[None, :, 1]) - edge[None, :, 1] * (pts[:, None, 0] - a[None, :, 0])
    return pts[~(cross > 0).all(axis=1)]


def _ref_perimeter(polygon: np.ndarray) -> float:
    if polygon.shape[0] < 2:
        return 0.0
    edges = np.roll(polygon, -1, axis=0) - polygon
    return float(np.hypot(edges[:, 0], edges[:, 1]).sum())


def _ref_pixels_in_hull(hull: np.ndarray, row0: int, row1: int) -> int:
    """Number of pixel centres (r + 0.5, c + 0.5) inside (or on) a convex polygon in corner coordinates."""
    y = np.arange(row0, row1, dtype=np.float64)[:, None] + 0.5
    y1, x1 = hull[:, 0].astype(np.float64), hull[:, 1].astype(np.float64)
    y2, x2 = np.roll(y1, -1), np.roll(x1, -1)
    sloped = y1 != y2
    y1, x1, y2, x2 = y1[sloped], x1[sloped], y2[sloped], x2[sloped]
    spans = (y >= np.minimum(y1, y2)) & (y <= np.maximum(y1, y2))
    x = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    left = np.where(spans, x, np.inf).min(axis=1)
    right = np.where(spans, x, -np.inf).max(axis=1)
    eps = 1e-9
    first = np.ceil(left - 0.5 - eps)
    last = np.floor(right - 0.5 + eps)
    return int(np.maximum(last - first + 1, 0).sum())


def _ref_contour_length(filled: np.ndarray, row_mm: float, col_mm: float) -> float:
    """Length of the marching-squares contour (iso-level 0.5 through pixel centres) of a padded mask."""
    f = filled.astype(np.uint8)
    case = f[:-1, :-1] + 2 * f[:-1, 1:] + 4 * f[1:, :-1] + 8 * f[1:, 1:]
    counts = np.bincount(case.reshape(-1), minlength=16)
    corner = counts[[1, 2, 4, 8, 7, 11, 13, 14]].sum()  # one pixel in or one out: a cut corner
    saddle = counts[6] + counts[9]  # diagonal pair: two cut corners
    horizontal = counts[3] + counts[12]  # top or bottom pair: a segment across the cell's width
    vertical = counts[5] + counts[10]  # left or right pair: a segment down the cell's height
    half_diagonal = 0.5 * math.hypot(row_mm, col_mm)
    return float((corner + 2 * saddle) * half_diagonal + horizontal * col_mm + vertical * row_mm)


def _ref_edge_midpoints_x2(filled: np.ndarray) -> np.ndarray:
    """Midpoints of the boundary pixel edges (the marching-squares vertices), in doubled corner coordinates."""
    across = np.nonzero(np.diff(filled.astype(np.int8), axis=1))  # between (r, c) and (r, c + 1)
    down = np.nonzero(np.diff(filled.astype(np.int8), axis=0))  # between (r, c) and (r + 1, c)
    return np.concatenate(
        [
            np.stack([2 * across[0] + 1, 2 * across[1] + 2], axis=1),
            np.stack([2 * down[0] + 2, 2 * down[1] + 1], axis=1),
        ]
    ).astype(np.int64)


def _ref_fold_angle(d_row: float, d_col: float) -> float:
    """Angle of the direction (d_row, d_col) to the horizontal, folded into [0, 90] degrees."""
    return math.degrees(math.atan2(abs(d_row), abs(d_col)))


def _ref_parse_spacing(spacing_mm: tuple[float, float] | None) -> tuple[float, float, bool]:
    if spacing_mm is None:
        return 1.0, 1.0, False
    try:
        row_mm, col_mm = (float(s) for s in spacing_mm)
    except (TypeError, ValueError) as error:
        raise ValueError(f"spacing_mm must be (row, column) in mm or None, got {spacing_mm!r}") from error
    if not (math.isfinite(row_mm) and math.isfinite(col_mm) and row_mm > 0 and col_mm > 0):
        raise ValueError(f"spacing_mm must be two positive finite numbers, got {spacing_mm!r}")
    return row_mm, col_mm, True


def _ref_measure_component(
    crop: np.ndarray, origin: tuple[int, int], row_mm: float, col_mm: float, calibrated: bool, fill_holes: bool
) -> LesionMeasurement:
    """Measure the single component in ``crop`` (its bounding box plus a 1-pixel background border)."""
    filled = _ref_fill_holes(crop) if fill_holes else crop
    scale = np.array([row_mm, col_mm])
    pixels_r, pixels_c = np.nonzero(filled)
    area_px = int(pixels_r.size)

    # Corner coordinates of the leftmost and rightmost pixel square of every row: the hull of the
    # union of pixel squares is the hull of these points.
    present = np.flatnonzero(filled.any(axis=1))
    rows_f = filled[present]
    first = rows_f.argmax(axis=1)
    last = filled.shape[1] - rows_f[:, ::-1].argmax(axis=1)
    corners = [np.stack([present + dr, col], axis=1) for dr in (0, 1) for col in (first, last)]
    hull = _ref_convex_hull(np.concatenate(corners).astype(np.int64))
    hull_mm = hull * scale

    # Maximum Feret diameter: the farthest pair of hull vertices (a few hundred at most).
    diff = hull_mm[:, None, :] - hull_mm[None, :, :]
    dist2 = (diff**2).sum(axis=2)
    i, j = np.unravel_index(int(np.argmax(dist2)), dist2.shape)
    axis = hull_mm[j] - hull_mm[i]
    max_diameter = float(math.sqrt(dist2[i, j]))
    normal = np.array([-axis[1], axis[0]]) / max_diameter
    projection = hull_mm @ normal
    perpendicular = float(projection.max() - projection.min())

    row0, row1 = int(present[0]), int(present[-1]) + 1
    col0, col1 = int(first.min()), int(last.max())
    depth = (row1 - row0) * row_mm
    width = (col1 - col0) * col_mm

    # Principal axis from second central moments of the pixel squares, in mm (a pixel square
    # adds its own s^2 / 12 along each axis).
    y = (pixels_r + 0.5) * row_mm
    x = (pixels_c + 0.5) * col_mm
    mu_yy = float(np.var(y)) + row_mm**2 / 12.0
    mu_xx = float(np.var(x)) + col_mm**2 / 12.0
    mu_xy = float(np.mean((y - y.mean()) * (x - x.mean())))
    principal = abs(math.degrees(0.5 * math.atan2(2.0 * mu_xy, mu_xx - mu_yy)))

    # Margin indices. Solidity compares pixel counts (pixels whose centre lies in the hull), as
    # scikit-image does: the polygon area of the corner hull exceeds the pixel count of a
    # digitised convex shape by about half a pixel times its perimeter, which would make small
    # lesions look less solid than large ones. Counting is unaffected by anisotropic spacing.
    hull_px = _ref_pixels_in_hull(hull, row0, row1)
    solidity = area_px / hull_px if hull_px else 1.0
    midpoint_hull_mm = _ref_convex_hull(_ref_edge_midpoints_x2(filled)) * (0.5 * scale)
    contour = _ref_contour_length(filled, row_mm, col_mm)
    # The contour's own hull can never be longer than the contour (the min() only absorbs rounding).
    convexity = min(1.0, _ref_perimeter(midpoint_hull_mm) / contour) if contour > 0 else 1.0

    return LesionMeasurement(
        area=area_px * row_mm * col_mm,
        area_px=area_px,
        max_diameter=max_diameter,
        perpendicular_diameter=perpendicular,
        depth=depth,
        width=width,
        depth_to_width=depth / width,
        orientation_deg=_ref_fold_angle(float(axis[0]), float(axis[1])),
        principal_axis_deg=principal,
        solidity=float(solidity),
        convexity=float(convexity),
        centroid_rc=(float(pixels_r.mean()) - 1 + origin[0], float(pixels_c.mean()) - 1 + origin[1]),
        bbox=(row0 - 1 + origin[0], col0 - 1 + origin[1], row1 - 1 + origin[0], col1 - 1 + origin[1]),
        calibrated=calibrated,
        units="mm" if calibrated else "px",
    )


def _ref_measure(
    mask: np.ndarray,
    spacing_mm: tuple[float, float] | None,
    min_area_px: int,
    fill_holes: bool,
    limit: int | None,
) -> tuple[list[LesionMeasurement], int]:
    """The measured lesions (largest first, at most ``limit``) and how many lesions there are in all."""
    m = _ref_as_mask(mask)
    row_mm, col_mm, calibrated = _ref_parse_spacing(spacing_mm)
    rows, starts, ends = _ref_runs(m)
    if rows.size == 0:
        return [], 0
    component, count = _ref_connect_runs(rows, starts, ends, m.shape[1], 8)
    area = np.bincount(component, weights=ends - starts, minlength=count).astype(np.int64)
    kept = np.flatnonzero(area >= min_area_px)
    kept = kept[np.argsort(-area[kept], kind="stable")]  # largest first; ties in raster order
    lesions = int(kept.size)
    if limit is not None:
        kept = kept[:limit]
    if kept.size == 0:
        return [], 0
    row0 = np.full(count, np.iinfo(np.int64).max)
    col0 = np.full(count, np.iinfo(np.int64).max)
    row1 = np.zeros(count, dtype=np.int64)
    col1 = np.zeros(count, dtype=np.int64)
    np.minimum.at(row0, component, rows)
    np.minimum.at(col0, component, starts)
    np.maximum.at(row1, component, rows + 1)
    np.maximum.at(col1, component, ends)
    by_component = np.argsort(component, kind="stable")
    bounds = np.searchsorted(component[by_component], np.arange(count + 1))
    results = []
    for k in kept.tolist():
        runs = by_component[bounds[k] : bounds[k + 1]]
        shape = (int(row1[k] - row0[k]) + 2, int(col1[k] - col0[k]) + 2)  # 1-pixel background border
        r, s, e = rows[runs] - row0[k] + 1, starts[runs] - col0[k] + 1, ends[runs] - col0[k] + 1
        crop = _ref_paint(shape, r, s, e, 1).astype(bool)
        results.append(
            _ref_measure_component(crop, (int(row0[k]), int(col0[k])), row_mm, col_mm, calibrated, fill_holes)
        )
    return results, lesions


def reference_measure_lesions(mask, spacing=None, min_area_px=DEFAULT_MIN_AREA_PX, fill_holes=True):
    """The frozen implementation's ``measure_lesions``."""
    return _ref_measure(mask, spacing, min_area_px, fill_holes, None)[0]


def reference_count_and_measure_largest(mask, spacing=None, min_area_px=DEFAULT_MIN_AREA_PX, fill_holes=True):
    """The frozen implementation's ``count_and_measure_largest``."""
    found, count = _ref_measure(mask, spacing, min_area_px, fill_holes, 1)
    return count, (found[0] if found else None)


def reference_label_components(mask, connectivity=8):
    """The frozen implementation's ``label_components``."""
    m = _ref_as_mask(mask)
    rows, starts, ends = _ref_runs(m)
    if rows.size == 0:
        return np.zeros(m.shape, dtype=np.int32), 0
    component, count = _ref_connect_runs(rows, starts, ends, m.shape[1], connectivity)
    return _ref_paint(m.shape, rows, starts, ends, component + 1), count


SPACINGS = (None, (1.0, 1.0), (0.1, 0.1), (0.07, 0.13), (0.3, 0.05), (1 / 3, 0.2))
MASK_KINDS = (
    "ellipse",
    "rotated_rect",
    "ring",
    "line",
    "diagonal",
    "checker",
    "multi",
    "border",
    "blob",
    "tiny",
    "full",
    "empty",
    "star",
)


def hostile_mask(rng: np.random.Generator, kind: str) -> np.ndarray:
    """One random mask of ``kind``: shapes whose digitisation stresses runs, holes, hulls and ties."""
    if kind in ("tiny", "full", "empty"):
        h, w = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    else:
        h, w = int(rng.integers(12, 90)), int(rng.integers(12, 90))
    rr, cc = np.mgrid[:h, :w]
    yy, xx = rr + 0.5, cc + 0.5

    def ellipse_at(cy, cx, a, b, turn):
        along = (xx - cx) * math.cos(turn) + (yy - cy) * math.sin(turn)
        across = -(xx - cx) * math.sin(turn) + (yy - cy) * math.cos(turn)
        return (along / a) ** 2 + (across / b) ** 2 <= 1.0

    def random_ellipse(size):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        return ellipse_at(cy, cx, rng.uniform(1, size * w + 1), rng.uniform(1, size * h + 1), rng.uniform(0, math.pi))

    if kind == "ellipse":
        return random_ellipse(0.5)
    if kind == "rotated_rect":
        turn, cy, cx = rng.uniform(0, math.pi), rng.uniform(0, h), rng.uniform(0, w)
        along = (xx - cx) * math.cos(turn) + (yy - cy) * math.sin(turn)
        across = -(xx - cx) * math.sin(turn) + (yy - cy) * math.cos(turn)
        return (abs(along) <= rng.uniform(1, w / 2)) & (abs(across) <= rng.uniform(0.5, h / 3))
    if kind == "ring":  # holes, an island inside a hole, and sometimes a slit that opens the hole
        cy, cx = rng.uniform(h / 4, 3 * h / 4), rng.uniform(w / 4, 3 * w / 4)
        radius, outer = np.hypot(yy - cy, xx - cx), rng.uniform(4, min(h, w) / 2)
        mask = (radius <= outer) & (radius > outer * rng.uniform(0.2, 0.8))
        if rng.random() < 0.5:
            mask |= radius < outer * 0.1
        if rng.random() < 0.3:
            mask[int(cy), int(cx) :] = False
        return mask
    if kind == "line":
        mask = np.zeros((h, w), dtype=bool)
        if rng.random() < 0.5:
            mask[int(rng.integers(h)), int(rng.integers(w // 2)) :] = True
        else:
            mask[int(rng.integers(h // 2)) :, int(rng.integers(w))] = True
        return mask
    if kind == "diagonal":  # 1-pixel chains joined only at corners, at slope 1 or a steeper digital slope
        mask = np.zeros((h, w), dtype=bool)
        steps = np.arange(int(rng.integers(1, min(h, w) + 1)))
        slope = [1.0, 1.0, 0.5, 2.0, 1 / 3][int(rng.integers(5))]
        r = np.minimum((steps * max(slope, 1.0)).astype(int), h - 1)
        c = np.minimum((steps * max(1.0 / slope, 1.0)).astype(int), w - 1)
        if rng.random() < 0.5:
            c = w - 1 - c
        mask[r, c] = True
        if rng.random() < 0.5:
            mask |= np.roll(mask, 2, axis=1)
        return mask
    if kind == "checker":  # speckle: many 1-pixel components, 8-connected into long chains
        return ((rr + cc) % 2 == 0) & (rng.random((h, w)) < rng.uniform(0.5, 1.0))
    if kind == "multi":
        mask = np.zeros((h, w), dtype=bool)
        for _ in range(int(rng.integers(2, 6))):
            mask |= random_ellipse(0.25)
        return mask | (rng.random((h, w)) < 0.02)
    if kind == "border":
        mask = random_ellipse(0.8)
        mask[0, :] |= rng.random(w) < 0.5
        mask[:, -1] |= rng.random(h) < 0.5
        return mask
    if kind == "blob":  # smoothed noise: ragged outlines with holes and islands
        mask = rng.random((h, w)) < rng.uniform(0.3, 0.7)
        for _ in range(2):
            votes = mask.astype(int) + np.roll(mask, 1, 0) + np.roll(mask, -1, 0) + np.roll(mask, 1, 1)
            mask = votes + np.roll(mask, -1, 1) >= 3
        return mask
    if kind == "tiny":
        return rng.random((h, w)) < 0.5
    if kind == "full":
        return np.ones((h, w), dtype=bool)
    if kind == "empty":
        return np.zeros((h, w), dtype=bool)
    cy, cx = rng.uniform(h / 3, 2 * h / 3), rng.uniform(w / 3, 2 * w / 3)  # star
    lobes = int(rng.integers(3, 9)) * np.arctan2(yy - cy, xx - cx) + rng.uniform(0, 6)
    return np.hypot(yy - cy, xx - cx) <= min(h, w) / 4 * (1 + 0.5 * np.cos(lobes))


def hostile_cases(seed: int, count: int):
    """``count`` (mask, spacing, min_area_px, fill_holes) cases; masks are bool, 0/255 uint8 or int."""
    rng = np.random.default_rng(seed)
    cases = [(np.ones((1, 1), dtype=bool), None, 1, True), (np.zeros((1, 1), dtype=bool), (0.1, 0.2), 1, True)]
    for i in range(count - len(cases)):
        mask = hostile_mask(rng, MASK_KINDS[i % len(MASK_KINDS)])
        if i % 5 == 1:
            mask = mask.astype(np.uint8) * 255
        elif i % 5 == 2:
            mask = mask.astype(np.int64)
        cases.append((mask, SPACINGS[i % len(SPACINGS)], int(rng.choice([1, 5, 50])), bool(rng.random() < 0.8)))
    return cases


def assert_identical(ours: LesionMeasurement | None, reference: LesionMeasurement | None) -> None:
    """Every field equal, and of the same type (a numpy scalar where a float was is a difference too)."""
    assert (ours is None) == (reference is None)
    if ours is None:
        return
    for field in dataclasses.fields(LesionMeasurement):
        mine, theirs = getattr(ours, field.name), getattr(reference, field.name)
        assert type(mine) is type(theirs), field.name
        assert mine == theirs, (field.name, mine, theirs)
        if isinstance(mine, tuple):
            assert [type(v) for v in mine] == [type(v) for v in theirs], field.name


def assert_parity(mask, spacing, min_area_px, fill_holes) -> None:
    ours = measure_lesions(mask, spacing, min_area_px, fill_holes)
    reference = reference_measure_lesions(mask, spacing, min_area_px, fill_holes)
    assert len(ours) == len(reference)
    for mine, theirs in zip(ours, reference):
        assert_identical(mine, theirs)
    count, largest = count_and_measure_largest(mask, spacing, min_area_px, fill_holes)
    ref_count, ref_largest = reference_count_and_measure_largest(mask, spacing, min_area_px, fill_holes)
    assert count == ref_count
    assert_identical(largest, ref_largest)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_every_figure_matches_the_frozen_implementation_on_hostile_masks(seed: int) -> None:
    for index, (mask, spacing, min_area_px, fill_holes) in enumerate(hostile_cases(seed, 80)):
        try:
            assert_parity(mask, spacing, min_area_px, fill_holes)
        except AssertionError as error:
            raise AssertionError(f"seed {seed}, case {index}, mask {mask.shape}: {error}") from error


def test_every_figure_matches_the_frozen_implementation_on_full_frames() -> None:
    rng = np.random.default_rng(5)
    for frame, (shape, spacing) in enumerate(
        [((658, 889), (0.083, 0.121)), ((480, 640), None), ((480, 640), (0.1, 0.1))]
    ):
        rr, cc = np.mgrid[: shape[0], : shape[1]]
        for lesions in (1, 3):
            mask = np.zeros(shape, dtype=bool)
            for _ in range(lesions):
                cy, cx, turn = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(0, math.pi)
                along = (cc + 0.5 - cx) * math.cos(turn) + (rr + 0.5 - cy) * math.sin(turn)
                across = -(cc + 0.5 - cx) * math.sin(turn) + (rr + 0.5 - cy) * math.cos(turn)
                wobble = 1 + 0.3 * np.cos(int(rng.integers(2, 9)) * np.arctan2(across, along))
                size = (along / rng.uniform(20, 160)) ** 2 + (across / rng.uniform(15, 90)) ** 2
                mask |= size <= wobble**2
                mask &= ~(size <= 0.1)  # an anechoic centre left out of the mask
            mask |= rng.random(shape) < 0.001
            for fill_holes in (True, False):
                assert_parity(mask.astype(np.uint8) * 255, spacing, DEFAULT_MIN_AREA_PX, fill_holes), frame


def test_parity_holds_when_hull_pruning_falls_back_to_the_stack(monkeypatch) -> None:
    """One pass of parallel pruning, then the Python stack: the rarely needed path gives the same figures."""
    from busassist.core import measurements as m

    monkeypatch.setattr(m, "_CHAIN_PASSES", 1)
    for mask, spacing, min_area_px, fill_holes in hostile_cases(21, 40):
        assert_parity(mask, spacing, min_area_px, fill_holes)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_labels_match_the_frozen_implementation(connectivity: int) -> None:
    for mask, *_ in hostile_cases(31, 60):
        ours, count = label_components(mask, connectivity)
        theirs, ref_count = reference_label_components(mask, connectivity)
        assert count == ref_count
        np.testing.assert_array_equal(ours, theirs)
        assert ours.dtype == theirs.dtype


def test_convex_hull_matches_the_frozen_implementation() -> None:
    """Integer (vectorised) and float (Python stack) input, degenerate sets included."""
    rng = np.random.default_rng(41)
    for trial in range(400):
        count = int(rng.integers(1, 40)) if trial % 2 else int(rng.integers(40, 400))
        points = rng.integers(-20, 20, (count, 2))
        if trial % 7 == 0:  # all on one line, with duplicates
            points = np.stack([points[:, 0], 3 * points[:, 0] + 1], axis=1)
        if trial % 11 == 0:
            points[:] = points[0]
        for typed in (points.astype(np.int64), points.astype(np.int32), points.astype(np.float64) / 4):
            ours, theirs = convex_hull(typed), _ref_convex_hull(typed)
            assert ours.dtype == theirs.dtype, trial
            np.testing.assert_array_equal(ours, theirs)
