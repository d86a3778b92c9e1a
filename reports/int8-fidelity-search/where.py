"""Where an int8 model's mask disagrees with float32's: at the lesion border or away from it.

    python reports/int8-fidelity-search/where.py FP32 SPLIT_JSON DATA_ROOT INT8

On ``fidelity.py``'s 48 held-out training images (no labels, no validation or test image), counts the
pixels where the two masks differ and the share of them within 2 and 5 pixels of float32's mask border
(on the image grid the masks are reported on), and prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from fidelity import held_out_training_keys

from busassist.core.inference import Analyzer
from busassist.training.busi import discover, load_image
from busassist.training.reference import REFERENCE_RUNTIME


def _shifted(mask: np.ndarray, shift: int, axis: int) -> np.ndarray:
    """``mask`` moved by one pixel along ``axis``, the vacated row or column copied from the edge (no wrap)."""
    index = [slice(None)] * 2
    padded = np.concatenate([mask.take([0], axis), mask, mask.take([-1], axis)], axis)
    index[axis] = slice(1 - shift, padded.shape[axis] - 1 - shift)
    return padded[tuple(index)]


def border_distance(mask: np.ndarray, limit: int) -> np.ndarray:
    """Chebyshev distance (capped at ``limit + 1``) of every pixel to the mask's border."""
    distance = np.full(mask.shape, limit + 1, np.int32)
    reach = (mask ^ _shifted(mask, 1, 0)) | (mask ^ _shifted(mask, 1, 1))
    distance[reach] = 0
    for step in range(1, limit + 1):
        grown = reach.copy()
        for axis in (0, 1):
            for shift in (1, -1):
                grown |= _shifted(reach, shift, axis)
        distance[grown & ~reach] = step
        reach = grown
    return distance


def main(fp32: str, split_json: str, data_root: str, int8: str) -> None:
    cases = {case.key: case for case in discover(Path(data_root))}
    images = [load_image(cases[key]) for key in held_out_training_keys(Path(split_json))]
    reference = Analyzer(fp32, threads=2, backend=REFERENCE_RUNTIME)
    candidate = Analyzer(int8, threads=2, backend=REFERENCE_RUNTIME)
    differing = near2 = near5 = 0
    for image in images:
        base, got = reference.analyze(image).mask > 0, candidate.analyze(image).mask > 0
        distance = border_distance(base, 5)
        diff = base ^ got
        differing += int(diff.sum())
        near2 += int((diff & (distance <= 2)).sum())
        near5 += int((diff & (distance <= 5)).sum())
    print(
        json.dumps(
            {
                "images": len(images),
                "differing_pixels": differing,
                "within_2_px_of_border": round(near2 / max(differing, 1), 4),
                "within_5_px_of_border": round(near5 / max(differing, 1), 4),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
