"""Give an int8 file a mask threshold of its own, chosen on training images (PLAN.md of this folder).

    python reports/int8-border-threshold/threshold.py INT8_FILE SPLIT_JSON DATA_ROOT

On the 64 bias-correction training images of ``make int8`` (none among the 48 held-out ones the gate scores),
the analyzer-level masks of the bundled float32 model and of INT8_FILE at each logit offset t in
``OFFSETS`` (mask = probability >= sigmoid(t)); the t with the highest mean Dice (ties: nearest 0) is written
into INT8_FILE's metadata as its ``mask_threshold``, and the file is resealed. One JSON line per offset,
then the choice.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from busassist.core.inference import Analyzer
from busassist.core.model_store import default_model_path, read_metadata
from busassist.training.busi import discover, load_image
from busassist.training.export import seal_model, set_metadata
from busassist.training.metrics import dice_iou
from busassist.training.quantize import calibration_keys
from busassist.training.reference import REFERENCE_RUNTIME

OFFSETS = [round(-0.5 + 0.1 * i, 1) for i in range(11)]


def main(int8_file: str, split_json: str, data_root: str) -> None:
    train = json.loads(Path(split_json).read_text())["train"]
    _, keys, _ = calibration_keys(train, 200, 64)
    cases = {case.key: case for case in discover(Path(data_root))}
    images = [load_image(cases[key]) for key in keys]
    reference = Analyzer(default_model_path(), threads=2, backend=REFERENCE_RUNTIME)
    int8 = Analyzer(int8_file, threads=2, backend=REFERENCE_RUNTIME, verify=False)
    expected = [reference.analyze(image).mask > 0 for image in images]
    maps = [int8.analyze(image).probability_map for image in images]
    scores = {}
    for offset in OFFSETS:
        cut = 1.0 / (1.0 + math.exp(-offset))
        scores[offset] = float(np.mean([dice_iou(p >= cut, e)[0] for p, e in zip(maps, expected)]))
        print(json.dumps({"offset": offset, "threshold": round(cut, 5), "agreement": round(scores[offset], 5)}))
    best = max(OFFSETS, key=lambda t: (round(scores[t], 6), -abs(t)))
    metadata = read_metadata(Path(int8_file))
    metadata.mask_threshold = 1.0 / (1.0 + math.exp(-best))
    metadata.extra = {
        **metadata.extra,
        "mask_threshold_calibration": {
            "offset": best,
            "images": len(images),
            "agreement_at_0": round(scores[0.0], 5),
            "agreement": round(scores[best], 5),
            "against": reference.metadata.model_version,
        },
    }
    set_metadata(Path(int8_file), metadata)
    seal_model(Path(int8_file))
    print(json.dumps({"file": int8_file, "chosen_offset": best, **metadata.extra["mask_threshold_calibration"]}))


if __name__ == "__main__":
    main(*sys.argv[1:])
