"""Every lesion figure equals the previous, image-based implementation's, bit for bit, on hostile masks.

The reference is frozen in ``measurements_reference.py``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from measurements_reference import (
    _ref_convex_hull,
    reference_count_and_measure_largest,
    reference_label_components,
    reference_measure_lesions,
)

from busassist.core.hull import convex_hull
from busassist.core.mask_runs import label_components
from busassist.core.measurements import (
    DEFAULT_MIN_AREA_PX,
    LesionMeasurement,
    count_and_measure_largest,
    measure_lesions,
)

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
    from busassist.core import hull

    monkeypatch.setattr(hull, "_CHAIN_PASSES", 1)
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
