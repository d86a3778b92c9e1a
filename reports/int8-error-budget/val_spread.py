"""How much the rule's Dice margin one int8 file uses up by chance (validation split only; no test image).

    python reports/int8-error-budget/val_spread.py FP32 SPLIT_JSON DATA_ROOT INT8 [INT8 ...]

Per lesion image of the validation split, the Dice change (int8 minus float32) against the expert mask, and
the standard deviation of their mean: the spread of the rule's Dice drop that the int8 noise alone gives
on 78 images. Run on the files already judged; it chooses nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from busassist.core.inference import Analyzer
from busassist.training.busi import discover
from busassist.training.evaluate import analyse_cases
from busassist.training.reference import REFERENCE_RUNTIME

fp32, split, data, *int8s = sys.argv[1:]
keys = json.loads(Path(split).read_text())["val"]
cases = {c.key: c for c in discover(Path(data))}
f = analyse_cases(Analyzer(Path(fp32), verify=False, backend=REFERENCE_RUNTIME), [cases[k] for k in keys])
lesion = f["labels"] >= 0
for p in int8s:
    q = analyse_cases(Analyzer(Path(p), verify=False, backend=REFERENCE_RUNTIME), [cases[k] for k in keys])
    d = (q["dice"] - f["dice"])[lesion]
    order = np.sort(np.abs(d))[::-1]
    print(
        json.dumps(
            {
                "int8": p,
                "lesion_images": int(lesion.sum()),
                "mean_change": round(float(d.mean()), 4),
                "sd_per_image": round(float(d.std(ddof=1)), 4),
                "sd_of_mean": round(float(d.std(ddof=1) / np.sqrt(d.size)), 4),
                "largest_abs_changes": [round(float(x), 3) for x in order[:5]],
                "share_of_abs_change_in_top3": round(float(order[:3].sum() / order.sum()), 3),
            }
        )
    )
