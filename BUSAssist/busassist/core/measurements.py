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
from the runs; the hulls are pruned with array operations instead of a Python loop. A
658 x 889 frame with a 40,000-pixel lesion takes about 1.3 ms (``bench/measurements_speed.py``),
against about 7 ms for the image-based version this replaced. Every figure is bit-for-bit
identical to that version's, floats included (exactly equal, not merely within a tolerance):
``Testing/Python/test_measurements.py`` keeps a frozen copy of it and compares every field on
hundreds of hostile masks.
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
    """Horizontal runs of foreground as (row, start, end-exclusive) int64 arrays in raster order.

    The rows are laid end to end in one flat boolean line with a background pixel before each row
    (and one after the last), so no run continues into the next row and the changes between
    neighbours along the line are run starts and ends, alternately. One comparison and one
    ``flatnonzero`` over the frame find them all; differencing an int8 copy and searching it twice
    took 20 times longer and was half the time of a whole measurement.
    """
    height, width = mask.shape
    stride = width + 1
    line = np.zeros(height * stride + 1, dtype=bool)
    line[:-1].reshape(height, stride)[:, 1:] = mask
    change = np.flatnonzero(line[1:] != line[:-1]).astype(np.int64, copy=False) + 1
    first, after = change[0::2], change[1::2]
    rows = first // stride
    line_start = rows * stride + 1
    return rows, first - line_start, after - line_start


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
    a, b = _touching_pairs(rows, starts, ends, width, connectivity)
    parent = np.arange(n, dtype=np.int64)
    if a.size:
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


def _touching_pairs(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every (run, run in the next row that touches it) index pair, as two arrays (see ``_connect_runs``)."""
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
    a = np.repeat(np.arange(rows.size, dtype=np.int64), counts)
    b = np.repeat(lo, counts) + (np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts))
    return a, b


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


def _row_bounds(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the first and of the last run of each row, for runs in raster order."""
    first = np.ones(rows.size, dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    last = np.ones(rows.size, dtype=bool)
    last[:-1] = first[1:]
    return first, last


def _fill_holes(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of one component (rows 1..h of a crop ``width`` wide with a background border) with its holes filled.

    Background is 4-connected (the complement of 8-connected foreground), so a background pixel
    reaching the outside only through a diagonal gap between two foreground pixels is a hole.
    The background runs are known without an image: in each row the one before the first run
    and the one after the last touch the border, the gaps between runs may be holes. Those runs
    (plus the empty border rows) are labelled like the foreground; a gap not connected to the
    border run at (0, 0) is a hole, and filling it joins the two runs on either side. A row with a
    single run has no gap, so most lesions skip all of this.
    """
    first, last = _row_bounds(rows)
    if first.all():
        return rows, starts, ends
    n, height = rows.size, int(rows[-1])
    total = n + height + 2
    bg_rows = np.empty(total, dtype=np.int64)
    bg_starts = np.zeros(total, dtype=np.int64)
    bg_ends = np.full(total, width, dtype=np.int64)
    bg_rows[0], bg_rows[-1] = 0, height + 1  # the empty border rows above and below
    before = np.arange(n, dtype=np.int64) + rows  # the background run before each run, in raster order
    bg_rows[before] = rows
    bg_starts[before[1:]] = np.where(first[1:], 0, ends[:-1])
    bg_ends[before] = starts
    after = before[last] + 1  # the background run after the last run of each row
    bg_rows[after] = rows[last]
    bg_starts[after] = ends[last]
    component, _ = _connect_runs(bg_rows, bg_starts, bg_ends, width, 4)
    hole = ~first & (component[before] != component[0])
    if not hole.any():
        return rows, starts, ends
    keep_end = np.ones(n, dtype=bool)
    keep_end[:-1] = ~hole[1:]
    return rows[~hole], starts[~hole], ends[keep_end]


# --------------------------------------------------------------------------------------------
# Convex hull and contour geometry
# --------------------------------------------------------------------------------------------

#: Passes of parallel pruning before ``_strict_chains`` finishes a chain with the sequential stack.
_CHAIN_PASSES = 64


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _stack_chain(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """One half of Andrew's monotone chain: pop every point that does not make a strict left turn."""
    chain: list[tuple[float, float]] = []
    for p in points:
        while len(chain) >= 2 and _cross(chain[-2], chain[-1], p) <= 0:
            chain.pop()
        chain.append(p)
    return chain


def _strict_chains(chains: list[np.ndarray]) -> list[np.ndarray]:
    """Each int64 (n, 2) chain reduced as the monotone chain's stack reduces it, all chains at once with numpy.

    Every chain is sorted by first coordinate and the stack keeps its two ends and, between them,
    exactly the points that make a strict left turn with *any* kept neighbours: the vertices of
    that side of the hull. A vertex turns left whatever points surround it, so removing every
    point that does not turn left with its current neighbours, all at once, never removes a
    vertex; repeating until all turns are strict leaves exactly the stack's answer. The chains
    are concatenated with their ends pinned, so one pass prunes all of them. A pixel outline
    needs a handful of passes; should one need more, the Python stack finishes the pruned points.
    """
    points = np.concatenate(chains)
    pinned = np.zeros(points.shape[0], dtype=bool)
    ends = np.cumsum([c.shape[0] for c in chains])
    pinned[ends - 1] = True
    pinned[ends - np.array([c.shape[0] for c in chains])] = True
    for _ in range(_CHAIN_PASSES):
        step = np.diff(points, axis=0)
        left = step[:-1, 0] * step[1:, 1] - step[:-1, 1] * step[1:, 0] > 0  # turn at points 1..n-2
        keep = pinned.copy()
        keep[1:-1] |= left
        if keep.all():
            break
        points, pinned = points[keep], pinned[keep]
    else:
        bounds = np.flatnonzero(pinned).reshape(-1, 2)
        return [
            np.asarray(_stack_chain([tuple(p) for p in points[i : j + 1].tolist()]), dtype=np.int64) for i, j in bounds
        ]
    bounds = np.flatnonzero(pinned).reshape(-1, 2)
    return [points[i : j + 1] for i, j in bounds]


def _hull_chain_candidates(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points the two halves of the monotone chain can keep, for lines ``x`` (increasing) holding ``low..high``.

    Sorted by (x, y), the lower chain runs from (x0, low0) to (xn, highn) and can only keep the
    lowest point of each line (and that last point); the upper chain runs back and can only keep
    the highest point of each line (and the first point).
    """
    lower = np.stack([x, low], axis=1)
    if high[-1] != low[-1]:
        lower = np.concatenate([lower, [[x[-1], high[-1]]]])
    upper = np.stack([x[::-1], high[::-1]], axis=1)
    if high[0] != low[0]:
        upper = np.concatenate([upper, [[x[0], low[0]]]])
    return lower.astype(np.int64, copy=False), upper.astype(np.int64, copy=False)


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull vertices of an (N, 2) point array, in order around the hull, Andrew's monotone chain.

    Collinear and duplicate points are dropped. Points that share a first coordinate and are
    not the extremes of that group in the second coordinate cannot be hull vertices, so they are
    removed first with numpy. Integer input (the pixel case) stays integer, so the orientation
    tests are exact, and is pruned with array operations (``_strict_chains``); other input goes
    through the Python stack. Either way the vertices and their order are those of the textbook
    algorithm: starting at the smallest point in (first, second) order, lower chain then upper.
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
    reduced = pts[new_group | last_of_group]
    if reduced.shape[0] < 3:
        return np.unique(reduced, axis=0)
    if pts.dtype.kind in "iu" and reduced.min() > -(2**30) and reduced.max() < 2**30:  # products fit in int64
        chains = _hull_chain_candidates(pts[new_group, 0], pts[new_group, 1], pts[last_of_group, 1])
        lower, upper = _strict_chains(list(chains))
        return np.concatenate([lower[:-1], upper[:-1]]).astype(pts.dtype, copy=False)
    pts = reduced
    if pts.shape[0] > 16:
        pts = _drop_interior(pts)
    ordered = [tuple(p) for p in pts.tolist()]
    hull = _stack_chain(ordered)[:-1] + _stack_chain(ordered[::-1])[:-1]
    return np.asarray(hull, dtype=pts.dtype).reshape(-1, 2)


def _drop_interior(pts: np.ndarray) -> np.ndarray:
    """``pts`` (sorted) without the points strictly inside the hull of its eight extreme points.

    Such points can never be hull vertices (the Akl-Toussaint heuristic), so the hull is exactly
    the same; removing them with numpy leaves the Python loop a few dozen points instead of
    hundreds. Only the non-integer path of ``convex_hull`` uses it.
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


def _chain_column(chain: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a hull side (vertices by non-decreasing row) crosses ``rows + 0.5``, minus 0.5: (numerator, denominator).

    Vertices have integer rows, so no crossing falls on a vertex: exactly one edge of the side
    spans each line, and the crossing is a fraction with denominator 2 * (edge height).
    """
    r, c = chain[:, 0], chain[:, 1]
    i = np.searchsorted(r, rows, side="right") - 1
    r1, c1, height = r[i], c[i], r[i + 1] - r[i]
    return 2 * c1 * height + (2 * rows + 1 - 2 * r1) * (c[i + 1] - c1) - height, 2 * height


def _pixels_in_hull(left: np.ndarray, right: np.ndarray, row0: int, row1: int) -> int:
    """Number of pixel centres (r + 0.5, c + 0.5) inside (or on) a convex polygon in corner coordinates.

    ``left`` and ``right`` are its two sides as vertex chains with increasing rows (the lower and
    the reversed upper half of the monotone chain). Row by row, the polygon cuts the line through
    the pixel centres in one interval and the centres from ceil(left - 0.5) to floor(right - 0.5)
    are in. This is computed exactly with integers; the former floating-point version with a
    1e-9 tolerance gives the same counts, since a crossing that is not on a centre is at least
    1 / (2 * frame height) away from one.
    """
    rows = np.arange(row0, row1, dtype=np.int64)
    num, den = _chain_column(left, rows)
    first = -((-num) // den)  # ceil
    num, den = _chain_column(right, rows)
    last = num // den  # floor
    return int(np.maximum(last - first + 1, 0).sum())


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
    a, b = _touching_pairs(rows, starts, ends, int(key) - 2, 4)
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
        rows, starts, ends = _fill_holes(rows, starts, ends, width)
    scale = np.array([row_mm, col_mm])
    lengths = ends - starts
    area_px = int(lengths.sum())

    # Each row of a connected component (crop rows 1..height) has at least one run.
    first_run, last_run = _row_bounds(rows)
    first, last = starts[first_run], ends[last_run]  # outer pixel edges of every row
    height = first.size

    # Corner coordinates of the leftmost and rightmost pixel square of every row: the hull of the
    # union of pixel squares is the hull of these points. Corner line y holds the top corners of
    # pixel row y and the bottom corners of pixel row y - 1.
    lines = np.arange(1, height + 2, dtype=np.int64)
    low = np.concatenate([first[:1], np.minimum(first[1:], first[:-1]), first[-1:]])
    high = np.concatenate([last[:1], np.maximum(last[1:], last[:-1]), last[-1:]])
    corner_chains = _hull_chain_candidates(lines, low, high)

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
    mid_chains = _hull_chain_candidates(mid_lines[present], mid_low[present], mid_high[present])

    lower, upper, mid_lower, mid_upper = _strict_chains([*corner_chains, *mid_chains])
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
    hull_px = _pixels_in_hull(lower, upper[::-1], row0, row1)
    solidity = area_px / hull_px if hull_px else 1.0
    midpoint_hull_mm = np.concatenate([mid_lower[:-1], mid_upper[:-1]]) * (0.5 * scale)
    contour = _contour_length(rows, starts, ends, area_px, row_mm, col_mm)
    # The contour's own hull can never be longer than the contour (the min() only absorbs rounding).
    convexity = min(1.0, _perimeter(midpoint_hull_mm) / contour) if contour > 0 else 1.0

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
