"""Convex hulls of pixel outlines, and the exact pixel count inside one, numpy only.

``convex_hull`` is Andrew's monotone chain. For the integer outlines the lesion measurements give
it (``core.measurements``), the points that cannot be on the hull are pruned with array operations
first (``strict_chains``), a few dozen passes over per-row extremes, and the sequential stack only
finishes what the passes left; the result is the same hull, vertex for vertex.
"""

from __future__ import annotations

import numpy as np

#: Passes of parallel pruning before ``strict_chains`` finishes a chain with the sequential stack.
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


def strict_chains(chains: list[np.ndarray]) -> list[np.ndarray]:
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


def hull_chain_candidates(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    tests are exact, and is pruned with array operations (``strict_chains``); other input goes
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
        chains = hull_chain_candidates(pts[new_group, 0], pts[new_group, 1], pts[last_of_group, 1])
        lower, upper = strict_chains(list(chains))
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


def polygon_perimeter(polygon: np.ndarray) -> float:
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


def pixels_in_hull(left: np.ndarray, right: np.ndarray, row0: int, row1: int) -> int:
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
