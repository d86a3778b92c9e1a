"""The lesion measurements as they were before the run-length rewrite: the oracle of the parity tests.

``busassist/core/measurements.py`` now measures from run lengths with numpy array operations, and
every figure must be the one this image-based implementation gave, bit for bit. The functions below
were copied verbatim from the module before the rewrite (docstrings cut to their first line, names
prefixed ``_ref_``). They resemble the current code on purpose: this is the reference, so do not
"fix" it or make it share code with the module it checks. ``test_measurements_parity.py`` compares
against it, and ``bench/measurements_speed.py`` times old against new with it.
"""

from __future__ import annotations

import math

import numpy as np

from busassist.core.measurements import DEFAULT_MIN_AREA_PX, LesionMeasurement


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
