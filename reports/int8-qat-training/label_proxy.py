"""The int8 rule's Dice drop, measured on training images instead of validation or test: a proxy for a go.

    python reports/int8-qat-training/label_proxy.py FP32 SPLIT_JSON DATA_ROOT INT8 [INT8 ...]

The images are fidelity.py's 48 held-out training images (used by neither the range calibration nor the
bias correction; the training did see them). For each int8 file it prints one JSON line: the mean Dice
against the expert mask over the lesion images among them, for float32 and int8, and the drop. A model
trained with the int8 rounding simulated may answer better as int8 than as float32; the rule judges
that drop, which mask agreement alone cannot show.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "int8-fidelity-search"))

from fidelity import held_out_training_keys  # noqa: E402

from busassist.core.inference import Analyzer  # noqa: E402
from busassist.training.busi import discover, load_image, load_mask  # noqa: E402
from busassist.training.metrics import dice_iou  # noqa: E402
from busassist.training.reference import REFERENCE_RUNTIME  # noqa: E402


def mean_lesion_dice(model: str, images: list[np.ndarray], truths: list[np.ndarray]) -> float:
    analyzer = Analyzer(model, threads=2, backend=REFERENCE_RUNTIME)
    return float(
        np.mean([dice_iou(analyzer.analyze(image).mask > 0, truth)[0] for image, truth in zip(images, truths)])
    )


def main(fp32: str, split_json: str, data_root: str, *int8_files: str) -> None:
    cases = {case.key: case for case in discover(Path(data_root))}
    lesions = [cases[key] for key in held_out_training_keys(Path(split_json)) if cases[key].label >= 0]
    images = [load_image(case) for case in lesions]
    truths = [load_mask(case, image.shape[:2]) for case, image in zip(lesions, images)]
    reference = mean_lesion_dice(fp32, images, truths)
    for path in int8_files:
        got = mean_lesion_dice(path, images, truths)
        row = {
            "int8": path,
            "lesion_images": len(lesions),
            "fp32_dice": round(reference, 5),
            "int8_dice": round(got, 5),
        }
        print(json.dumps({**row, "dice_drop": round(reference - got, 5)}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
