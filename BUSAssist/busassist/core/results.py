"""One result model for every face: the decision, the "no lesion" rule and the row every face shows.

The batch's results.csv, the Slicer results table and the desktop reviewer call ``read_frame`` and
show ``FrameReading.columns()`` under the names of ``READING_COLUMNS``, so one mask gives one set of
numbers everywhere. Lesion measurements describe the *largest* lesion (``core.measurements``);
``lesion_count`` and ``mask_area_px`` (all lesion pixels) say what else the mask holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from busassist.core.measurements import (
    MEASUREMENT_COLUMNS,
    LesionMeasurement,
    as_row,
    count_and_measure_largest,
)

#: Decimal places of probabilities and thresholds in every face (far finer than any decision needs).
PROBABILITY_DECIMALS = 6


class Decision(str, Enum):
    """Values of the ``decision`` column (a ``str``, so it compares and serialises as its value)."""

    SUSPICIOUS = "suspicious"  # suspicious for malignancy at the chosen threshold
    BENIGN = "benign"  # below the threshold: likely benign
    NO_LESION = "no_lesion"  # the segmentation found no lesion; the score is not acted on

    def __str__(self) -> str:
        return self.value

    @property
    def text(self) -> str:
        """Words for a reader."""
        return DECISION_TEXT[self]


DECISION_TEXT = {
    Decision.SUSPICIOUS: "suspicious for malignancy",
    Decision.BENIGN: "benign",
    Decision.NO_LESION: "no lesion found",
}


def lesion_detected(mask_area_px: int, analysed_area_px: int, min_lesion_fraction: float) -> bool:
    """The model's "no lesion" rule: a lesion when the mask covers ``min_lesion_fraction`` of the analysed area."""
    return mask_area_px / max(int(analysed_area_px), 1) >= float(min_lesion_fraction)


def decide(probability: float, detected: bool, threshold: float) -> Decision:
    """Suspicious when a lesion was found and its score reaches the threshold W_p / (W_p + W')."""
    if not detected:
        return Decision.NO_LESION
    return Decision.SUSPICIOUS if probability >= threshold else Decision.BENIGN


#: The reading's columns, in order, with their kind and unit: results.csv and the Slicer table use
#: these names. Measurement units follow ``measurement_units`` (mm when calibrated, else px).
READING_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("malignancy_probability", "double", ""),
    ("calibrated_probability", "double", ""),
    ("threshold", "double", ""),
    ("decision", "string", ""),
    ("lesion_detected", "int", ""),
    ("lesion_count", "int", ""),
    ("mask_area_px", "int", "px"),
    ("analysed_area_px", "int", "px"),
    *((name, "string" if name == "measurement_units" else "double", "") for name in MEASUREMENT_COLUMNS),
)
READING_COLUMN_NAMES = tuple(name for name, _, _ in READING_COLUMNS)


@dataclass(frozen=True)
class FrameReading:
    """What every face shows for one frame: scores, decision and the largest lesion's measurements."""

    probability: float
    calibrated_probability: float
    threshold: float
    decision: Decision
    lesion_detected: bool
    lesion_count: int  # lesions as the measurements count them (8-connected, at least a few pixels)
    mask_area_px: int  # all lesion pixels
    analysed_area_px: int  # pixels of the analysed (tissue) region
    largest: LesionMeasurement | None  # the largest lesion (None: the mask is empty)

    def columns(self) -> dict[str, object]:
        """The row under ``READING_COLUMN_NAMES``: numbers rounded alike for every face."""
        return {
            "malignancy_probability": round(float(self.probability), PROBABILITY_DECIMALS),
            "calibrated_probability": round(float(self.calibrated_probability), PROBABILITY_DECIMALS),
            "threshold": round(float(self.threshold), PROBABILITY_DECIMALS),
            "decision": self.decision.value,
            "lesion_detected": int(self.lesion_detected),
            "lesion_count": int(self.lesion_count),
            "mask_area_px": int(self.mask_area_px),
            "analysed_area_px": int(self.analysed_area_px),
            **as_row(self.largest),
        }


def read_frame(
    mask: np.ndarray,
    probability: float,
    calibrated_probability: float,
    threshold: float,
    analysed_area_px: int,
    min_lesion_fraction: float,
    spacing_mm: tuple[float, float] | None,
) -> FrameReading:
    """The one function from (mask, class scores, threshold, the model's lesion rule, spacing) to a reading."""
    lesion = np.asarray(mask) > 0
    area = int(np.count_nonzero(lesion))
    detected = lesion_detected(area, analysed_area_px, min_lesion_fraction)
    count, largest = count_and_measure_largest(lesion, spacing_mm) if area else (0, None)
    return FrameReading(
        float(probability),
        float(calibrated_probability),
        float(threshold),
        decide(float(probability), detected, float(threshold)),
        detected,
        int(count),
        area,
        int(analysed_area_px),
        largest,
    )
