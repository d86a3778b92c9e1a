"""How faithfully an int8 model reproduces its float32 parent on training images: no labels, no
validation or test image.

    python reports/int8-fidelity-search/fidelity.py FP32 SPLIT_JSON DATA_ROOT INT8 [INT8 ...]

The images are 48 training images that neither the range calibration (``tools quantize``'s 200, taken
evenly from the training split) nor the bias correction (64, taken evenly from the rest) uses: every
other image of the remainder. For each int8 file it prints one JSON line: the mean and smallest Dice
between the int8 and float32 masks, the number of images whose "no lesion" call differs, and the mean
and largest change of the malignancy probability.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from busassist.core.inference import Analyzer
from busassist.training.busi import discover, load_image
from busassist.training.quantize import calibration_keys
from busassist.training.reference import REFERENCE_RUNTIME

IMAGES = 48


def held_out_training_keys(split_json: Path) -> list[str]:
    train = json.loads(Path(split_json).read_text())["train"]
    _, correcting, unused = calibration_keys(train, 200, 64)  # make int8's: 200 range images, 64 of the rest
    rest = [key for key in unused if key not in set(correcting)]
    return rest[::2][:IMAGES]


def main(fp32: str, split_json: str, data_root: str, *int8_files: str) -> None:
    keys = held_out_training_keys(Path(split_json))
    cases = {case.key: case for case in discover(Path(data_root))}
    images = [load_image(cases[key]) for key in keys]
    reference = Analyzer(fp32, threads=2, backend=REFERENCE_RUNTIME)
    expected = [reference.analyze(image) for image in images]
    for path in int8_files:
        analyzer = Analyzer(path, threads=2, backend=REFERENCE_RUNTIME)
        dices, moves, flips = [], [], 0
        for image, base in zip(images, expected):
            got = analyzer.analyze(image)
            a, b = got.mask > 0, base.mask > 0
            union = np.count_nonzero(a) + np.count_nonzero(b)
            dices.append(2 * np.count_nonzero(a & b) / union if union else 1.0)
            moves.append(abs(got.probability - base.probability))
            flips += got.lesion_detected != base.lesion_detected
        print(
            json.dumps(
                {
                    "int8": path,
                    "images": len(images),
                    "mask_dice_mean": round(float(np.mean(dices)), 5),
                    "mask_dice_min": round(float(np.min(dices)), 4),
                    "lesion_call_flips": flips,
                    "probability_move_mean": round(float(np.mean(moves)), 5),
                    "probability_move_max": round(float(np.max(moves)), 4),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
