"""Frame in, malignancy probability and tumour mask out: onnxruntime (or OpenVINO) on the CPU, no torch.

``Analyzer`` loads the model into one runtime session (the expensive part, ``core.backends``) and
reuses it for every frame. A frame is cropped to its declared ultrasound tissue region, run through the shared
preprocessing, and the mask is mapped back onto the source frame's full pixel grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from busassist.constants import MIN_LESION_FRACTION, threshold_for_effective_weight
from busassist.core.backends import DEFAULT_BACKEND, open_network
from busassist.core.io import Frame, Region
from busassist.core.model_store import read_metadata, resolve_model_path, verify_model
from busassist.core.preprocessing import preprocess, probability_to_source
from busassist.core.results import Decision, FrameReading, decide, read_frame

__all__ = ["Analyzer", "Decision", "FrameResult", "sigmoid"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free logistic function."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-x[positive]))
    exp = np.exp(x[~positive])
    out[~positive] = exp / (1.0 + exp)
    return out


@dataclass
class FrameResult:
    """What the model says about one frame, in the source frame's geometry."""

    probability: float  # malignancy probability of the lesion in view
    probability_map: np.ndarray  # (H, W) float32 lesion probability per source pixel
    mask: np.ndarray  # (H, W) uint8, 0 background / 255 lesion
    region: Region | None  # the analysed region (None = whole frame)
    lesion_fraction: float  # mask area / analysed area
    logit: float = float("nan")  # the classifier's raw logit z (probability = sigmoid(z))
    calibrated_probability: float = float("nan")  # posterior estimate, see Analyzer.calibrate
    min_lesion_fraction: float = MIN_LESION_FRACTION  # the model's "no lesion" rule (its metadata)
    analysed_area_px: int = 0  # pixels of the analysed region (the crop)

    @property
    def lesion_detected(self) -> bool:
        return self.lesion_fraction >= self.min_lesion_fraction

    def decision(self, threshold: float) -> Decision:
        return decide(self.probability, self.lesion_detected, threshold)

    def reading(self, threshold: float) -> FrameReading:
        """What every face shows for this frame at ``threshold`` (``core.results``)."""
        spacing = self.region.spacing_mm if self.region is not None else None
        return read_frame(
            self.mask,
            self.probability,
            self.calibrated_probability,
            threshold,
            self.analysed_area_px,
            self.min_lesion_fraction,
            spacing,
        )


class Analyzer:
    """Runs EMT-Net on frames. Create once, call ``analyze`` per frame."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        threads: int | None = None,
        verify: bool = True,
        backend: str = DEFAULT_BACKEND,
    ) -> None:
        self.model_path = resolve_model_path(model_path)
        self.sha256 = verify_model(self.model_path) if verify else None
        self.network = open_network(self.model_path, backend, threads, self.sha256)
        self.network_seconds = 0.0  # time spent inside the runtime, for the benchmarks
        self.metadata = read_metadata(self.model_path)

    @property
    def backend(self) -> str:
        """The runtime that answers (``onnxruntime`` or ``openvino``), for logs, CSV and panels."""
        return self.network.name

    def threshold(self, effective_weight: float | None = None) -> float:
        """Decision threshold for an effective weight W' (default: the training W_p, i.e. 0.5)."""
        weight = self.metadata.w_p if effective_weight is None else effective_weight
        return threshold_for_effective_weight(weight, self.metadata.w_p)

    def run_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 1, S, S) normalised input -> class logits (N,), mask logits (N, S, S)."""
        started = time.perf_counter()
        class_logit, mask_logit = self.network.run(np.ascontiguousarray(batch, dtype=np.float32))
        self.network_seconds += time.perf_counter() - started
        return class_logit.reshape(-1), mask_logit[:, 0]

    def run_network(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 1, S, S) normalised input -> malignancy probabilities (N,), mask probabilities (N, S, S)."""
        class_logit, mask_logit = self.run_logits(batch)
        return sigmoid(class_logit), sigmoid(mask_logit)

    def calibrate(self, logit: float | np.ndarray) -> np.ndarray:
        """Posterior probability of malignancy: sigmoid((z - ln W_p) / T).

        Training with W_p inflates the logit by ln W_p (that is what makes the 0.5 threshold
        sensitive); removing it and dividing by the temperature T fitted on the validation split
        gives a probability that means what it says. Decisions still use the raw probability with
        the W_p / (W_p + W') thresholds, which is what the operating table was measured on.
        """
        z = np.asarray(logit, dtype=np.float32)
        return sigmoid((z - np.log(self.metadata.w_p)) / self.metadata.temperature)

    def analyze(self, frame: Frame | np.ndarray, region: Region | None = None) -> FrameResult:
        """Score and segment one frame (cropped to ``region`` or the frame's declared region)."""
        if isinstance(frame, Frame):
            pixels, region = frame.pixels, region or frame.region
        else:
            pixels = np.asarray(frame)
        height, width = pixels.shape[:2]
        if region is not None:
            region = region.clipped(height, width)
        crop = pixels if region is None else pixels[region.y0 : region.y1, region.x0 : region.x1]
        network_input, geometry = preprocess(crop, self.metadata.input_size)
        class_logits, mask_logits = self.run_logits(network_input[None])
        crop_probability = probability_to_source(sigmoid(mask_logits[0]), geometry)
        probability_map = np.zeros((height, width), dtype=np.float32)
        if region is None:
            probability_map[:] = crop_probability
        else:
            probability_map[region.y0 : region.y1, region.x0 : region.x1] = crop_probability
        mask = np.multiply(probability_map >= self.metadata.mask_threshold, 255, dtype=np.uint8)  # 0 or 255
        analysed_area = crop.shape[0] * crop.shape[1]
        logit = float(class_logits[0])
        return FrameResult(
            float(sigmoid(class_logits)[0]),
            probability_map,
            mask,
            region,
            float(np.count_nonzero(mask)) / analysed_area,
            logit,
            float(self.calibrate(logit)),
            float(self.metadata.min_lesion_fraction),
            int(analysed_area),
        )
