"""Lesion measurements from a binary segmentation mask (numpy only: this module also runs inside 3D Slicer).

Each 8-connected component of the mask is one lesion. For each one this module reports size
(area, maximum and perpendicular diameters), the BI-RADS shape signs that can be read from a
mask (depth-to-width ratio, i.e. "taller than wide", and orientation relative to the skin line)
and two margin-irregularity indices (solidity and convexity).

Conventions (shared by every function here):

* **Axes.** Rows are depth, columns are lateral position. In a B-mode frame the probe surface,
  i.e. the skin, is the top row, so "depth" is the vertical (row) extent and "parallel to the
  skin" means parallel to the image horizontal. This holds for linear probes, which is how
  breast ultrasound is acquired; a sector image would need its own skin line.
* **Spacing.** ``spacing_mm`` is ``(row, column)`` pixel size in mm, the order used by
  ``busassist.core.io.Region.spacing_mm``; ``None`` means uncalibrated and every length is in
  pixels (``units == "px"``). Row and column spacing may differ (anisotropic pixels): point
  coordinates are scaled to mm *before* any hull, diameter or angle is computed, because
  distances and angles are not preserved by a non-uniform scaling afterwards.
* **Pixel geometry.** Pixel ``(r, c)`` is the closed square ``[r, r+1] x [c, c+1]`` in "corner"
  coordinates, so its centre is ``(r + 0.5, c + 0.5)``. Sizes (convex hull, diameters, depth,
  width) are taken on the union of those squares: a lesion ``n`` pixels wide is ``n`` pixels
  wide, as a sonographer's calipers placed on the outer edges would measure it, and
  ``max_diameter >= max(depth, width)`` always holds. (Hull on pixel centres would report 99 for
  a 100-pixel-wide lesion.) ``centroid_rc`` and ``bbox`` are in array-index coordinates
  instead (pixel ``(r, c)`` has index ``(r, c)``), so they can be used to index the image.
* **Holes.** Holes inside a component (e.g. an anechoic centre the network left out) are filled
  before measuring by default: a lesion's size and shape are those of its outer boundary. A
  component lying inside another component's hole is still reported on its own.

Implementation. The batch measures every frame (``count_and_measure_largest``), so this is
written for speed with numpy alone: the frame is read once to find its horizontal runs of
foreground, and everything after that works on runs (a few per row of a lesion) and per-row
extremes rather than on pixels; only the second moments touch each pixel of the lesion once.
Holes, the contour length, both convex hulls and the pixel count inside the hull are derived
from the runs (``core.mask_runs``); the hulls are pruned with array operations instead of a
Python loop (``core.hull``). A
658 x 889 frame with a 40,000-pixel lesion takes about 1.3 ms (``bench/measurements_speed.py``),
against about 7 ms for the image-based version this replaced. Every figure is bit-for-bit
identical to that version's, floats included (exactly equal, not merely within a tolerance):
``Testing/Python/measurements_reference.py`` keeps a frozen copy of it and the parity tests compare every field on
hundreds of hostile masks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from busassist.core.hull import hull_chain_candidates, pixels_in_hull, polygon_perimeter, strict_chains
from busassist.core.mask_runs import (
    as_mask,
    connect_runs,
    fill_run_holes,
    foreground_runs,
    row_bounds,
    touching_pairs,
)

#: Components with fewer pixels than this are dropped as segmentation specks. A fixed pixel
#: count rather than a fraction of the frame: frames differ in size and field of view, and
#: below ~50 pixels (a disc about 8 pixels across) the shape measurements are dominated by
#: digitisation (orientation quantised to tens of degrees), so they would mislead anyway.
DEFAULT_MIN_AREA_PX = 50


@dataclass(frozen=True)
class LesionMeasurement:
    """Measurements of one lesion. Lengths in ``units`` ("mm" or "px"), areas in ``units`` squared.

    ``orientation_deg`` and ``principal_axis_deg`` are angles to the skin line (the image
    horizontal, after scaling to mm) folded into [0, 90]: 0 is parallel to the skin, 90 is
    perpendicular to it. BI-RADS calls a lesion whose long axis is not parallel to the skin
    suspicious, and ``depth_to_width > 1`` ("taller than wide") is the classic malignancy sign.
    ``orientation_deg`` follows the longest chord, as calipers would; on a digitised shape whose
    ends are flat (a run of equally extreme pixels) that chord runs corner to opposite corner and
    can sit a few degrees off the shape's axis, and for a rectangle it is the diagonal.
    ``principal_axis_deg`` uses the whole area and is within about a degree of the true axis of
    an elongated shape. Both angles are meaningless for a round lesion (no long axis).
    """

    area: float  #: area of the (hole-filled) component, mm^2 or px^2
    area_px: int  #: the same area as a pixel count, whatever the calibration
    max_diameter: float  #: longest distance between two convex-hull vertices (maximum Feret diameter)
    perpendicular_diameter: float  #: extent of the hull perpendicular to the max-diameter axis
    depth: float  #: vertical (row, anteroposterior) extent of the bounding box
    width: float  #: horizontal (column, transverse) extent of the bounding box
    depth_to_width: float  #: depth / width; > 1 means taller than wide
    orientation_deg: float  #: angle of the max-diameter axis to the skin line, in [0, 90]
    principal_axis_deg: float  #: angle of the second-moment (inertia) major axis to the skin line, in [0, 90]
    solidity: float  #: area / convex hull area (both as pixel counts), 1 for convex shapes
    convexity: float  #: convex hull perimeter / contour perimeter, <= 1, 1 for convex shapes
    centroid_rc: tuple[float, float]  #: mean (row, column) array index of the component's pixels
    bbox: tuple[int, int, int, int]  #: (row0, col0, row1, col1), end-exclusive array indices
    calibrated: bool  #: False when no spacing was known: lengths are then in pixels
    units: str  #: "mm" or "px"

    @property
    def taller_than_wide(self) -> bool:
        return self.depth_to_width > 1.0


# --------------------------------------------------------------------------------------------
# Connected components: run-length labelling with a vectorised union-find
# --------------------------------------------------------------------------------------------


def _contour_length(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, area_px: int, row_mm: float, col_mm: float
) -> float:
    """Length of the marching-squares contour (iso-level 0.5 through pixel centres) of a set of runs.

    Counting boundary pixel edges ("crack" length) overestimates the perimeter of any oblique
    boundary, by 4/pi (27 %) on average for a circle, which would make every round lesion look
    irregular. The marching-squares polygon joins the midpoints of boundary edges instead: a
    45-degree staircase is measured exactly and the worst error (near a 1:2 slope) is about 8 %.
    Its length is a sum over 2x2 cells, each cell's case fixing its segment length, so no contour
    has to be traced. Both saddle cases give two corner-cutting segments whichever way the saddle
    is resolved, so the ambiguity does not change the length. Lengths are in physical units.

    The number of cells of each case follows from the runs alone, without an image. A cell spans
    two rows and a column boundary ``p``; say a row "steps" at ``p`` when a run starts or ends
    there. If both rows step at ``p`` the cell is vertical (same direction) or a saddle (opposite
    directions), found by matching run ends between consecutive rows. If exactly one row steps,
    the cell cuts a corner; each of the ``n`` runs has two steps, each seen by the cells above
    and below, so ``corner = 4n - 2 (vertical + saddle)``. Horizontal cells are pairs of
    neighbouring columns inside the same run of the rows' symmetric difference, less saddles;
    summed over all row pairs that is ``2 area - 2 overlap - 2n + vertical``, where ``overlap``
    is the pixel count shared by vertically adjacent runs. The counts are exactly those of the
    image, so the length is the same number.
    """
    n = rows.size
    key = np.int64(int(ends.max()) + 2)
    start_key = rows * key + starts  # both sorted: runs are in raster order and disjoint
    end_key = rows * key + ends

    def found(keys: np.ndarray, wanted: np.ndarray) -> int:
        at = np.minimum(np.searchsorted(keys, wanted), n - 1)
        return int(np.count_nonzero(keys[at] == wanted))

    vertical = found(start_key, start_key + key) + found(end_key, end_key + key)
    saddle = found(end_key, start_key + key) + found(start_key, end_key + key)
    a, b = touching_pairs(rows, starts, ends, int(key) - 2, 4)
    overlap = int((np.minimum(ends[a], ends[b]) - np.maximum(starts[a], starts[b])).sum())
    corner = 4 * n - 2 * vertical - 2 * saddle
    horizontal = 2 * area_px - 2 * overlap - 2 * n + vertical
    half_diagonal = 0.5 * math.hypot(row_mm, col_mm)
    return float((corner + 2 * saddle) * half_diagonal + horizontal * col_mm + vertical * row_mm)


def _fold_angle(d_row: float, d_col: float) -> float:
    """Angle of the direction (d_row, d_col) to the horizontal, folded into [0, 90] degrees."""
    return math.degrees(math.atan2(abs(d_row), abs(d_col)))


# --------------------------------------------------------------------------------------------
# Per-lesion measurement
# --------------------------------------------------------------------------------------------


def _parse_spacing(spacing_mm: tuple[float, float] | None) -> tuple[float, float, bool]:
    if spacing_mm is None:
        return 1.0, 1.0, False
    try:
        row_mm, col_mm = (float(s) for s in spacing_mm)
    except (TypeError, ValueError) as error:
        raise ValueError(f"spacing_mm must be (row, column) in mm or None, got {spacing_mm!r}") from error
    if not (math.isfinite(row_mm) and math.isfinite(col_mm) and row_mm > 0 and col_mm > 0):
        raise ValueError(f"spacing_mm must be two positive finite numbers, got {spacing_mm!r}")
    return row_mm, col_mm, True


def _measure_component(
    rows: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    row_mm: float,
    col_mm: float,
    calibrated: bool,
    fill_holes: bool,
) -> LesionMeasurement:
    """Measure one 8-connected component given as its runs (frame coordinates, raster order).

    Everything except the second moments is computed from the runs and per-row extremes, so the
    cost grows with the lesion's height rather than its area, and no crop image is painted.
    Coordinates are those of a crop of the bounding box with a 1-pixel background border (the
    component's first row and column are 1), the frame in which this was first written with
    images: floating-point results depend on the origin of the coordinates, and keeping it makes
    every figure identical to that version's (see the parity test).
    """
    top, left_col = int(rows[0]), int(starts.min())  # the bounding box's first row and column
    width = int(ends.max()) - left_col + 2  # the crop's width, border included
    rows, starts, ends = rows - (top - 1), starts - (left_col - 1), ends - (left_col - 1)
    if fill_holes:
        rows, starts, ends = fill_run_holes(rows, starts, ends, width)
    scale = np.array([row_mm, col_mm])
    lengths = ends - starts
    area_px = int(lengths.sum())

    # Each row of a connected component (crop rows 1..height) has at least one run.
    first_run, last_run = row_bounds(rows)
    first, last = starts[first_run], ends[last_run]  # outer pixel edges of every row
    height = first.size

    # Corner coordinates of the leftmost and rightmost pixel square of every row: the hull of the
    # union of pixel squares is the hull of these points. Corner line y holds the top corners of
    # pixel row y and the bottom corners of pixel row y - 1.
    lines = np.arange(1, height + 2, dtype=np.int64)
    low = np.concatenate([first[:1], np.minimum(first[1:], first[:-1]), first[-1:]])
    high = np.concatenate([last[:1], np.maximum(last[1:], last[:-1]), last[-1:]])
    corner_chains = hull_chain_candidates(lines, low, high)

    # The marching-squares vertices (midpoints of boundary pixel edges) in doubled corner
    # coordinates, so they are integers. Per horizontal line only the extremes can be hull
    # vertices: on line 2y + 1 (pixel row y) the outer edges 2 * first, 2 * last; on line 2y
    # (between rows y - 1 and y) the outermost pixel in one row but not the other, which is
    # 2 * min(first) + 1 when the rows' first pixels differ (and likewise on the right). When
    # they do not differ, every midpoint on that line lies inside the hull of the points of the
    # rows above and below, so leaving it out does not change the hull.
    mid_lines = np.arange(2, 2 * height + 3, dtype=np.int64)
    mid_low = np.empty(mid_lines.size, dtype=np.int64)
    mid_high = np.empty(mid_lines.size, dtype=np.int64)
    mid_low[1::2], mid_high[1::2] = 2 * first, 2 * last
    left = np.concatenate([first[:1], np.minimum(first[1:], first[:-1]), first[-1:]]) * 2 + 1
    right = np.concatenate([last[:1], np.maximum(last[1:], last[:-1]), last[-1:]]) * 2 - 1
    has_left = np.ones(height + 1, dtype=bool)
    has_left[1:-1] = first[1:] != first[:-1]
    has_right = np.ones(height + 1, dtype=bool)
    has_right[1:-1] = last[1:] != last[:-1]
    mid_low[0::2] = np.where(has_left, left, right)
    mid_high[0::2] = np.where(has_right, right, left)
    present = np.ones(mid_lines.size, dtype=bool)
    present[0::2] = has_left | has_right
    mid_chains = hull_chain_candidates(mid_lines[present], mid_low[present], mid_high[present])

    lower, upper, mid_lower, mid_upper = strict_chains([*corner_chains, *mid_chains])
    hull = np.concatenate([lower[:-1], upper[:-1]])
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

    row0, row1 = 1, height + 1
    col0, col1 = int(first.min()), int(last.max())
    depth = (row1 - row0) * row_mm
    width_mm = (col1 - col0) * col_mm

    # Principal axis from second central moments of the pixel squares, in mm (a pixel square
    # adds its own s^2 / 12 along each axis). The pixel coordinate arrays are built from the runs
    # in raster order, and numpy's own var and mean reduce them, so the sums are rounded exactly
    # as before (the angle of a nearly round lesion hangs on that rounding).
    y = np.repeat((rows + 0.5) * row_mm, lengths)
    columns = np.arange(area_px, dtype=np.int64) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    x = (columns + 0.5) * col_mm
    mu_yy = float(np.var(y)) + row_mm**2 / 12.0
    mu_xx = float(np.var(x)) + col_mm**2 / 12.0
    mu_xy = float(np.mean((y - y.mean()) * (x - x.mean())))
    principal = abs(math.degrees(0.5 * math.atan2(2.0 * mu_xy, mu_xx - mu_yy)))

    # Margin indices. Solidity compares pixel counts (pixels whose centre lies in the hull), as
    # scikit-image does: the polygon area of the corner hull exceeds the pixel count of a
    # digitised convex shape by about half a pixel times its perimeter, which would make small
    # lesions look less solid than large ones. Counting is unaffected by anisotropic spacing.
    hull_px = pixels_in_hull(lower, upper[::-1], row0, row1)
    solidity = area_px / hull_px if hull_px else 1.0
    midpoint_hull_mm = np.concatenate([mid_lower[:-1], mid_upper[:-1]]) * (0.5 * scale)
    contour = _contour_length(rows, starts, ends, area_px, row_mm, col_mm)
    # The contour's own hull can never be longer than the contour (the min() only absorbs rounding).
    convexity = min(1.0, polygon_perimeter(midpoint_hull_mm) / contour) if contour > 0 else 1.0

    # Pixel index sums are exact integers, so dividing them equals numpy's mean of the indices.
    sum_r = int((rows * lengths).sum())
    sum_c = int(((starts + ends - 1) * lengths).sum()) // 2
    return LesionMeasurement(
        area=area_px * row_mm * col_mm,
        area_px=area_px,
        max_diameter=max_diameter,
        perpendicular_diameter=perpendicular,
        depth=depth,
        width=width_mm,
        depth_to_width=depth / width_mm,
        orientation_deg=_fold_angle(float(axis[0]), float(axis[1])),
        principal_axis_deg=principal,
        solidity=float(solidity),
        convexity=float(convexity),
        centroid_rc=(sum_r / area_px - 1 + top, sum_c / area_px - 1 + left_col),
        bbox=(row0 - 1 + top, col0 - 1 + left_col, row1 - 1 + top, col1 - 1 + left_col),
        calibrated=calibrated,
        units="mm" if calibrated else "px",
    )


def _measure(
    mask: np.ndarray,
    spacing_mm: tuple[float, float] | None,
    min_area_px: int,
    fill_holes: bool,
    limit: int | None,
) -> tuple[list[LesionMeasurement], int]:
    """The measured lesions (largest first, at most ``limit``) and how many lesions there are in all."""
    m = as_mask(mask)
    row_mm, col_mm, calibrated = _parse_spacing(spacing_mm)
    rows, starts, ends = foreground_runs(m)
    if rows.size == 0:
        return [], 0
    component, count = connect_runs(rows, starts, ends, m.shape[1], 8)
    area = np.bincount(component, weights=ends - starts, minlength=count).astype(np.int64)
    kept = np.flatnonzero(area >= min_area_px)
    kept = kept[np.argsort(-area[kept], kind="stable")]  # largest first; ties in raster order
    lesions = int(kept.size)
    if limit is not None:
        kept = kept[:limit]
    if kept.size == 0:
        return [], 0
    if kept.size <= 8:  # one pass over the run labels per lesion beats sorting them all
        members = [np.flatnonzero(component == k) for k in kept.tolist()]
    else:
        by_component = np.argsort(component, kind="stable")
        bounds = np.searchsorted(component[by_component], np.arange(count + 1))
        members = [by_component[bounds[k] : bounds[k + 1]] for k in kept.tolist()]
    return [
        _measure_component(rows[runs], starts[runs], ends[runs], row_mm, col_mm, calibrated, fill_holes)
        for runs in members
    ], lesions


def measure_lesions(
    mask: np.ndarray,
    spacing_mm: tuple[float, float] | None = None,
    min_area_px: int = DEFAULT_MIN_AREA_PX,
    fill_holes: bool = True,
) -> list[LesionMeasurement]:
    """Measure every 8-connected lesion of ``mask`` with at least ``min_area_px`` pixels, largest first.

    ``mask`` is any 2-D array (nonzero = lesion), e.g. the 0/255 mask of the analyzer.
    ``spacing_mm`` is the (row, column) pixel size in mm, or None for pixel units. The minimum
    area is counted in pixels of the component as segmented (before hole filling). Ties in area
    keep raster order. An empty mask, or one with only specks, gives ``[]``.
    """
    return _measure(mask, spacing_mm, min_area_px, fill_holes, None)[0]


def measure_largest(
    mask: np.ndarray,
    spacing_mm: tuple[float, float] | None = None,
    min_area_px: int = DEFAULT_MIN_AREA_PX,
    fill_holes: bool = True,
) -> LesionMeasurement | None:
    """The largest lesion of ``mask`` (see ``measure_lesions``), or None; only that one is measured."""
    return count_and_measure_largest(mask, spacing_mm, min_area_px, fill_holes)[1]


def count_and_measure_largest(
    mask: np.ndarray,
    spacing_mm: tuple[float, float] | None = None,
    min_area_px: int = DEFAULT_MIN_AREA_PX,
    fill_holes: bool = True,
) -> tuple[int, LesionMeasurement | None]:
    """(how many lesions, the largest one measured) from one labelling of ``mask``.

    Lesions are counted as ``measure_lesions`` finds them (8-connected, at least ``min_area_px``
    pixels), so the count and the measurements never disagree about what a lesion is.
    """
    found, count = _measure(mask, spacing_mm, min_area_px, fill_holes, 1)
    return count, (found[0] if found else None)


# --------------------------------------------------------------------------------------------
# Flat CSV rows
# --------------------------------------------------------------------------------------------

#: Column names of ``as_row`` / ``EMPTY_ROW``, in order. The names never depend on calibration:
#: ``measurement_units`` says whether the length columns are in mm (areas in mm^2) or in pixels
#: (areas in px^2), so a CSV mixing calibrated and uncalibrated frames keeps one schema.
MEASUREMENT_COLUMNS: tuple[str, ...] = (
    "measurement_units",  # "mm" or "px" ("" when no lesion)
    "lesion_area",  # mm^2 or px^2
    "lesion_area_px",  # pixel count, whatever the units
    "lesion_max_diameter",
    "lesion_perpendicular_diameter",
    "lesion_depth",
    "lesion_width",
    "lesion_depth_to_width",  # > 1: taller than wide
    "lesion_orientation_deg",  # max-diameter axis vs skin line, 0..90
    "lesion_principal_axis_deg",  # inertia major axis vs skin line, 0..90
    "lesion_solidity",
    "lesion_convexity",
    "lesion_centroid_row",  # array index
    "lesion_centroid_col",
    "lesion_bbox_row0",  # end-exclusive array indices
    "lesion_bbox_col0",
    "lesion_bbox_row1",
    "lesion_bbox_col1",
)

#: The row for a frame without a lesion: every column present, every value "" (an empty CSV
#: cell, not 0, which would read as a measured size). Read-only; copy it with ``dict(EMPTY_ROW)``.
EMPTY_ROW: Mapping[str, str | float] = MappingProxyType(dict.fromkeys(MEASUREMENT_COLUMNS, ""))


def as_row(measurement: LesionMeasurement | None, decimals: int = 4) -> dict[str, str | float]:
    """Flat CSV columns (``MEASUREMENT_COLUMNS``) of one lesion; None gives a copy of ``EMPTY_ROW``.

    Lengths and areas are rounded to ``decimals`` places (0.1 um at the default, far below a
    pixel) so the CSV stays readable; the dataclass keeps full precision. Integer columns (pixel
    area, bounding box) stay integers.
    """
    if measurement is None:
        return dict(EMPTY_ROW)
    m = measurement
    values = (
        m.units,
        m.area,
        m.area_px,
        m.max_diameter,
        m.perpendicular_diameter,
        m.depth,
        m.width,
        m.depth_to_width,
        m.orientation_deg,
        m.principal_axis_deg,
        m.solidity,
        m.convexity,
        m.centroid_rc[0],
        m.centroid_rc[1],
        *m.bbox,
    )
    row: dict[str, str | float] = {}
    for name, value in zip(MEASUREMENT_COLUMNS, values):
        row[name] = round(value, decimals) if isinstance(value, float) else value
    return row
