"""Would post-processing the mask raise Dice? A validation-only study of an exported run.

Missed lesions, not ragged borders, are what hold the shipped model's mean Dice down (the
median lesion Dice is far above the mean), so a cheaper fix than retraining is worth ruling in
or out first: a different mask threshold, and dropping connected components much smaller than
the largest one. Every variant is scored on the validation split; the test split is scored only
for the unchanged mask and for the single variant validation picks, so the study cannot tune on
test. The variant is adopted only if it clears the same bar as a new model (``MIN_GAIN``), and
even then dropping components hides a second lesion from the radiologist, which the study
reports but cannot weigh: that is a product decision, recorded in the README.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from busassist.constants import MIN_LESION_FRACTION
from busassist.core.inference import Analyzer
from busassist.core.mask_runs import label_components
from busassist.training.busi import BusiCase, discover, load_image, load_mask
from busassist.training.metrics import dice_iou
from busassist.training.reference import REFERENCE_RUNTIME

#: Mask thresholds and component-size fractions (of the largest component) that the study tries.
THRESHOLDS: tuple[float, ...] = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65)
COMPONENT_FRACTIONS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
#: Validation Dice gain a post-processing variant must bring (the bar a new model must clear).
MIN_GAIN = 0.01


@dataclass(frozen=True)
class Variant:
    threshold: float  # mask probability threshold
    min_component_fraction: float  # components smaller than this fraction of the largest are dropped


def postprocess(probability_map: np.ndarray, variant: Variant) -> np.ndarray:
    """The boolean mask a variant makes of a probability map (0..1)."""
    mask = probability_map >= variant.threshold
    if variant.min_component_fraction <= 0 or not mask.any():
        return mask
    labels, count = label_components(mask)
    if count < 2:
        return mask
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = np.flatnonzero(areas >= variant.min_component_fraction * areas.max()) + 1
    return np.isin(labels, keep)


def _probability_maps(analyzer: Analyzer, cases: list[BusiCase]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(label, probability map, ground truth) per case; one network run per image for all variants."""
    rows = []
    for case in cases:
        image = load_image(case)
        # float32 as the analyzer gives it: rounding would move pixels across the threshold and the
        # unchanged variant would no longer reproduce the model card's Dice.
        rows.append((case.label, analyzer.analyze(image).probability_map, load_mask(case, image.shape[:2])))
    return rows


def score_variant(
    rows: list[tuple[int, np.ndarray, np.ndarray]], variant: Variant, min_lesion_fraction: float = MIN_LESION_FRACTION
) -> dict[str, float]:
    """Mean Dice on lesion images and the share of normal images left with "no lesion"."""
    dices, quiet = [], []
    for label, probability_map, truth in rows:
        mask = postprocess(probability_map, variant)
        if label >= 0:
            dices.append(dice_iou(mask, truth)[0])
        else:
            quiet.append(np.count_nonzero(mask) / mask.size < min_lesion_fraction)
    return {"dice": float(np.mean(dices)), "normal_no_lesion": float(np.mean(quiet)) if quiet else float("nan")}


def several_lesions(rows: list[tuple[int, np.ndarray, np.ndarray]], fraction: float = 0.1) -> int:
    """Ground truths with two or more components each at least ``fraction`` of the largest.

    These are the images where keeping only the largest predicted component would hide a lesion.
    """
    count = 0
    for _, _, truth in rows:
        labels, components = label_components(truth)
        if components > 1:
            areas = np.bincount(labels.ravel())[1:]
            count += int(np.count_nonzero(areas >= fraction * areas.max()) > 1)
    return count


def mask_study(run: Path, data_root: Path, onnx_name: str = "emtnet.onnx") -> dict:
    """Score every variant on validation, then the unchanged mask and validation's pick on test."""
    run = Path(run)
    split = json.loads((run / "split.json").read_text())
    cases = {case.key: case for case in discover(Path(data_root))}
    analyzer = Analyzer(run / onnx_name, verify=False, backend=REFERENCE_RUNTIME)
    val = _probability_maps(analyzer, [cases[k] for k in split["val"]])
    variants = [Variant(t, f) for t in THRESHOLDS for f in COMPONENT_FRACTIONS]
    rule = float(analyzer.metadata.min_lesion_fraction)

    table = [
        {"threshold": v.threshold, "min_component_fraction": v.min_component_fraction, **score_variant(val, v, rule)}
        for v in variants
    ]
    best_row = max(table, key=lambda row: row["dice"])
    best = Variant(best_row["threshold"], best_row["min_component_fraction"])
    unchanged = Variant(float(analyzer.metadata.mask_threshold), 0.0)
    baseline = score_variant(val, unchanged, rule)
    test = _probability_maps(analyzer, [cases[k] for k in split["test"]])
    gain = best_row["dice"] - baseline["dice"]
    result = {
        "variants_tried": len(variants),
        "unchanged": {
            "variant": unchanged.__dict__,
            "validation": baseline,
            "test": score_variant(test, unchanged, rule),
        },
        "validation_pick": {
            "variant": best.__dict__,
            "validation": {key: best_row[key] for key in ("dice", "normal_no_lesion")},  # scored in the table
            "test": score_variant(test, best, rule),
        },
        "validation_gain": gain,
        "min_gain": MIN_GAIN,
        "clears_bar": bool(gain > MIN_GAIN),
        "ground_truths_with_several_lesions": {"validation": several_lesions(val), "test": several_lesions(test)},
        "lesion_images": {"validation": sum(r[0] >= 0 for r in val), "test": sum(r[0] >= 0 for r in test)},
    }
    with (run / "mask_study.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    (run / "mask_study.json").write_text(json.dumps(result, indent=1))
    return result
