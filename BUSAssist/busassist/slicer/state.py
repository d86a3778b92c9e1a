"""What the Slicer session keeps in memory per volume: each frame's result and edits, and the source DICOM."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from busassist.slicer.nodes import NO_REGION_WARNING


@dataclass
class FrameEntry:
    """What the model said about one frame; enough to re-threshold without running it again.

    The probability map is kept as float16 (half the memory for a long cine); the mask at the
    model's own mask threshold is kept exactly, so the default segment equals the core mask.
    """

    probability: float
    probability_map: np.ndarray  # (H, W) float16
    model_mask: np.ndarray  # (H, W) bool at ``model_mask_threshold``
    model_mask_threshold: float
    analysed_area: int
    seconds: float = 0.0
    edited_mask: np.ndarray | None = None  # the annotator's correction, captured when leaving the frame
    calibrated_probability: float = float("nan")  # posterior estimate (Analyzer.calibrate)

    def mask(self, threshold: float) -> np.ndarray:
        if math.isclose(threshold, self.model_mask_threshold, abs_tol=1e-9):
            return self.model_mask
        return self.probability_map >= np.float16(threshold)


@dataclass
class SourceInfo:
    """Where a volume came from: its DICOM file (if found), tissue region and calibration."""

    dicom_path: str | None = None
    sop_instance_uid: str | None = None
    region: object | None = None  # busassist.core.io.Region
    spacing_mm: tuple[float, float] | None = None  # (row, column)

    @property
    def warning(self) -> str:
        """What the panel must say about this source ("" when the tissue region is known)."""
        return "" if self.region is not None else NO_REGION_WARNING


@dataclass
class VolumeState:
    source: SourceInfo
    frames: dict[int, FrameEntry] = field(default_factory=dict)
    shown_frame: int | None = None
