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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

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


def _as_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D (rows, columns) mask, got shape {m.shape}")
    return m if m.dtype == bool else m != 0


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of foreground as (row, start, end-exclusive) arrays in raster order."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows.astype(np.int64), starts.astype(np.int64), ends.astype(np.int64)


def _connect_runs(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int, connectivity: int
) -> tuple[np.ndarray, int]:
    """Component index (0..k-1, in raster order of each component's first pixel) of every run.

    Two runs touch when they lie in consecutive rows and their column ranges overlap (4-
    connectivity) or overlap or meet diagonally (8-connectivity). Because runs are sorted in
    raster order and disjoint within a row, the runs below a given run that touch it form one
    contiguous index range, found with two binary searches on row-major keys. The resulting run
    graph is merged with a vectorised union-find (hook larger root onto smaller, then pointer
    jumping) so no Python loop runs per pixel or per run.
    """
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


def _paint(shape: tuple[int, int], rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, values) -> np.ndarray:
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


def label_components(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label connected components of a 2-D mask: (int32 label image, number of components).

    Labels run 1..n in raster order of each component's first pixel (as ``skimage.measure.label``
    numbers them); 0 is background. ``connectivity`` is 8 (diagonal neighbours touch, the
    default for lesions, so a lesion whose outline narrows to a diagonal step stays one lesion)
    or 4. A 1000x1000 mask of a few blobs labels in a few milliseconds.
    """
    m = _as_mask(mask)
    rows, starts, ends = _runs(m)
    if rows.size == 0:
        return np.zeros(m.shape, dtype=np.int32), 0
    component, count = _connect_runs(rows, starts, ends, m.shape[1], connectivity)
    return _paint(m.shape, rows, starts, ends, component + 1), count


def _fill_holes(padded: np.ndarray) -> np.ndarray:
    """``padded`` (foreground with a background border) with every enclosed background filled.

    Background is 4-connected (the complement of 8-connected foreground), so a background pixel
    reaching the outside only through a diagonal gap between two foreground pixels is a hole.
    """
    rows, starts, ends = _runs(~padded)
    component, _ = _connect_runs(rows, starts, ends, padded.shape[1], 4)
    # Run 0 starts at pixel (0, 0), which is on the background border, so component 0 is outside.
    outside = _paint(padded.shape, rows, starts, ends, component == 0)
    return outside == 0


# --------------------------------------------------------------------------------------------
# Convex hull and contour geometry
# --------------------------------------------------------------------------------------------


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull vertices of an (N, 2) point array, in order around the hull, Andrew's monotone chain.

    Collinear and duplicate points are dropped. Points that share a first coordinate and are
    not the extremes of that group in the second coordinate cannot be hull vertices, so they are
    removed first with numpy; for pixel-grid input this leaves two points per row, which keeps
    the Python loop short. Integer input stays integer, so the orientation tests are exact.
    """
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
        pts = _drop_interior(pts)
    ordered = [tuple(p) for p in pts.tolist()]
    if len(ordered) < 3:
        return np.unique(pts, axis=0)
    lower: list[tuple[float, float]] = []
    for p in ordered:
        while len(lower) >= 2 and _cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, float]] = []
    for p in reversed(ordered):
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    return np.asarray(hull, dtype=pts.dtype).reshape(-1, 2)


def _drop_interior(pts: np.ndarray) -> np.ndarray:
    """``pts`` (sorted) without the points strictly inside the hull of its eight extreme points.

    Such points can never be hull vertices (the Akl-Toussaint heuristic), so the hull is exactly
    the same; removing them with numpy leaves the Python loop a few dozen points instead of
    hundreds. Integer input keeps the tests exact.
    """
    x, y = pts[:, 0], pts[:, 1]
    extremes = {int(f(v)) for v in (x, y, x + y, x - y) for f in (np.argmin, np.argmax)}
    polygon = convex_hull(pts[sorted(extremes)])  # at most 8 points: the loop is trivial
    if polygon.shape[0] < 3:
        return pts
    a, b = polygon, np.roll(polygon, -1, axis=0)
    edge = b - a  # counter-clockwise polygon: strictly inside means left of every edge
    cross = edge[None, :, 0] * (pts[:, None, 1] - a[None, :, 1]) - edge[None, :, 1] * (pts[:, None, 0] - a[None, :, 0])
    return pts[~(cross > 0).all(axis=1)]


def _perimeter(polygon: np.ndarray) -> float:
    if polygon.shape[0] < 2:
        return 0.0
    edges = np.roll(polygon, -1, axis=0) - polygon
    return float(np.hypot(edges[:, 0], edges[:, 1]).sum())


def _pixels_in_hull(hull: np.ndarray, row0: int, row1: int) -> int:
    """Number of pixel centres (r + 0.5, c + 0.5) inside (or on) a convex polygon in corner coordinates.

    Row by row, the polygon cuts the horizontal line through the pixel centres in one interval;
    every edge spanning that line contributes an x and the interval is their min..max.
    """
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


def _contour_length(filled: np.ndarray, row_mm: float, col_mm: float) -> float:
    """Length of the marching-squares contour (iso-level 0.5 through pixel centres) of a padded mask.

    Counting boundary pixel edges ("crack" length) overestimates the perimeter of any oblique
    boundary, by 4/pi (27 %) on average for a circle, which would make every round lesion look
    irregular. The marching-squares polygon joins the midpoints of boundary edges instead: a
    45-degree staircase is measured exactly and the worst error (near a 1:2 slope) is about 8 %.
    Its length is a sum over 2x2 cells, each cell's case fixing its segment length, so no contour
    has to be traced. Both saddle cases give two corner-cutting segments whichever way the saddle
    is resolved, so the ambiguity does not change the length. Lengths are in physical units.
    """
    f = filled.astype(np.uint8)
    case = f[:-1, :-1] + 2 * f[:-1, 1:] + 4 * f[1:, :-1] + 8 * f[1:, 1:]
    counts = np.bincount(case.reshape(-1), minlength=16)
    corner = counts[[1, 2, 4, 8, 7, 11, 13, 14]].sum()  # one pixel in or one out: a cut corner
    saddle = counts[6] + counts[9]  # diagonal pair: two cut corners
    horizontal = counts[3] + counts[12]  # top or bottom pair: a segment across the cell's width
    vertical = counts[5] + counts[10]  # left or right pair: a segment down the cell's height
    half_diagonal = 0.5 * math.hypot(row_mm, col_mm)
    return float((corner + 2 * saddle) * half_diagonal + horizontal * col_mm + vertical * row_mm)


def _edge_midpoints_x2(filled: np.ndarray) -> np.ndarray:
    """Midpoints of the boundary pixel edges (the marching-squares vertices), in doubled corner coordinates.

    Doubling keeps them integer, so the hull of these points is computed exactly.
    """
    across = np.nonzero(np.diff(filled.astype(np.int8), axis=1))  # between (r, c) and (r, c + 1)
    down = np.nonzero(np.diff(filled.astype(np.int8), axis=0))  # between (r, c) and (r + 1, c)
    return np.concatenate(
        [
            np.stack([2 * across[0] + 1, 2 * across[1] + 2], axis=1),
            np.stack([2 * down[0] + 2, 2 * down[1] + 1], axis=1),
        ]
    ).astype(np.int64)


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
    crop: np.ndarray, origin: tuple[int, int], row_mm: float, col_mm: float, calibrated: bool, fill_holes: bool
) -> LesionMeasurement:
    """Measure the single component in ``crop`` (its bounding box plus a 1-pixel background border)."""
    filled = _fill_holes(crop) if fill_holes else crop
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
    hull = convex_hull(np.concatenate(corners).astype(np.int64))
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
    hull_px = _pixels_in_hull(hull, row0, row1)
    solidity = area_px / hull_px if hull_px else 1.0
    midpoint_hull_mm = convex_hull(_edge_midpoints_x2(filled)) * (0.5 * scale)
    contour = _contour_length(filled, row_mm, col_mm)
    # The contour's own hull can never be longer than the contour (the min() only absorbs rounding).
    convexity = min(1.0, _perimeter(midpoint_hull_mm) / contour) if contour > 0 else 1.0

    return LesionMeasurement(
        area=area_px * row_mm * col_mm,
        area_px=area_px,
        max_diameter=max_diameter,
        perpendicular_diameter=perpendicular,
        depth=depth,
        width=width,
        depth_to_width=depth / width,
        orientation_deg=_fold_angle(float(axis[0]), float(axis[1])),
        principal_axis_deg=principal,
        solidity=float(solidity),
        convexity=float(convexity),
        centroid_rc=(float(pixels_r.mean()) - 1 + origin[0], float(pixels_c.mean()) - 1 + origin[1]),
        bbox=(row0 - 1 + origin[0], col0 - 1 + origin[1], row1 - 1 + origin[0], col1 - 1 + origin[1]),
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
    m = _as_mask(mask)
    row_mm, col_mm, calibrated = _parse_spacing(spacing_mm)
    rows, starts, ends = _runs(m)
    if rows.size == 0:
        return [], 0
    component, count = _connect_runs(rows, starts, ends, m.shape[1], 8)
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
        crop = _paint(shape, r, s, e, 1).astype(bool)
        results.append(_measure_component(crop, (int(row0[k]), int(col0[k])), row_mm, col_mm, calibrated, fill_holes))
    return results, lesions


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
