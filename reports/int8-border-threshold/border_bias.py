"""The label-free look this plan rests on: int8 mask logits against float32's near float32's border.

    python reports/int8-border-threshold/border_bias.py SPLIT_JSON DATA_ROOT NAME=INT8_FILE [NAME=INT8_FILE ...]

On the 64 bias-correction training images of ``make int8`` (none among the 48 held out), network-level mask
logits: the mean and SD of int8 minus float32 where |float32 logit| < band, and the total mask area of int8
over float32's. One JSON line per file and band.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "int8-faithful-qat"))

from faithful import correction_inputs  # noqa: E402

from busassist.core.model_store import default_model_path  # noqa: E402


def mask_logits(path: Path, inputs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i : i + 8]})[1] for i in range(0, len(inputs), 8)])


def main(split_json: str, data_root: str, *files: str) -> None:
    inputs = correction_inputs(Path(split_json), Path(data_root)).numpy()
    reference = mask_logits(default_model_path(), inputs)
    for named in files:
        name, path = named.split("=", 1)
        difference = mask_logits(Path(path), inputs) - reference
        area = float(np.count_nonzero(reference + difference > 0) / np.count_nonzero(reference > 0))
        for band in (0.5, 1.0, 2.0, 4.0):
            near = np.abs(reference) < band
            row = {"file": name, "band": band, "pixels": int(near.sum())}
            row |= {"mean": round(float(difference[near].mean()), 3), "sd": round(float(difference[near].std()), 3)}
            print(json.dumps({**row, "area_ratio": round(area, 4)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
