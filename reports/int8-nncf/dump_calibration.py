"""Write make int8's 200 range-calibration images, preprocessed by the product's pipeline, to one .npy file.

    python reports/int8-nncf/dump_calibration.py SPLIT_JSON DATA_ROOT OUT.npy

Runs in the project's environment; nncf_quantize.py (in NNCF's own environment) reads the file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from busassist.constants import IMAGE_SIZE
from busassist.core.preprocessing import preprocess
from busassist.training.busi import discover, load_image
from busassist.training.quantize import calibration_keys


def main(split_json: str, data_root: str, out: str) -> None:
    train = json.loads(Path(split_json).read_text())["train"]
    chosen, _, _ = calibration_keys(train, 200, 64)
    cases = {case.key: case for case in discover(Path(data_root))}
    batch = np.stack([preprocess(load_image(cases[key]), IMAGE_SIZE)[0] for key in chosen]).astype(np.float32)
    np.save(out, batch)
    print(f"{out}: {batch.shape}")


if __name__ == "__main__":
    main(*sys.argv[1:])
