"""The model and the reader's two settings, as every face's analysis session holds them.

The Slicer session (``busassist.slicer.session``) and the desktop reviewer's
(``busassist.review.session``) both need the same things: the model, loaded on first use; its facts
(W_p, operating table, lesion rule, mask threshold, version) from one place, the model file, even
before it is loaded; the effective weight W' with its threshold and validation figures; the mask
threshold; and the label a face names the model by. They inherit them from here.
"""

from __future__ import annotations

from pathlib import Path

from busassist.constants import threshold_for_effective_weight
from busassist.core.backends import DEFAULT_BACKEND
from busassist.core.model_store import resolve_model_path
from busassist.core.operating_point import OperatingPoint, operating_point


class ModelSettings:
    """The model (lazy), its facts, W' and the mask threshold (``None``: the model's own values)."""

    def __init__(self, analyzer=None, model_path: str | Path | None = None, backend: str = DEFAULT_BACKEND) -> None:
        self._analyzer = analyzer
        self.model_path = resolve_model_path(model_path) if model_path else None
        self.backend = backend  # the runtime asked for (core.backends); the analyzer says which one answers
        self.effective_weight: float | None = None  # None: the model's W_p
        self.mask_threshold: float | None = None  # None: the model's mask threshold
        self._metadata = None  # the model file's facts, read once (model_metadata)

    @property
    def analyzer(self):
        """The core ``Analyzer`` (model verified by SHA-256, one onnxruntime session), made on first use."""
        if self._analyzer is None:
            from busassist.core.inference import Analyzer

            self._analyzer = Analyzer(self.model_path, backend=self.backend)
        return self._analyzer

    @property
    def has_analyzer(self) -> bool:
        return self._analyzer is not None

    @property
    def model_metadata(self):
        """The model's facts: the loaded analyzer's metadata, or the same read from the ONNX file.

        Reading the file (``core.model_store.read_metadata``) needs no onnxruntime, so a face can
        show the operating table before the model is loaded.
        """
        if self._analyzer is not None:
            return self._analyzer.metadata
        if self._metadata is None:
            from busassist.core.model_store import default_model_path, read_metadata

            self._metadata = read_metadata(self.model_path or default_model_path())
        return self._metadata

    def _model_facts(self) -> tuple[float, float, list[dict], str]:
        """(W_p, mask threshold, operating table, model version) of the model."""
        meta = self.model_metadata
        return float(meta.w_p), float(meta.mask_threshold), list(meta.operating_table), str(meta.model_version)

    def model_description(self) -> str:
        """The model a face names: its version and SHA-256 (``core.model_store.model_label``), and, once
        loaded, the runtime that answers (``on openvino``), since faces must be able to say what ran."""
        from busassist.core.model_store import model_label

        sha256 = getattr(self._analyzer, "sha256", None)
        label = model_label(str(self.model_metadata.model_version), self.model_path, sha256)
        runtime = getattr(self._analyzer, "backend", None)
        return f"{label}, on {runtime}" if isinstance(runtime, str) else label

    def current_effective_weight(self) -> float:
        return self._model_facts()[0] if self.effective_weight is None else float(self.effective_weight)

    def current_min_lesion_fraction(self) -> float:
        """The model's "no lesion" rule: smallest lesion area as a fraction of the analysed region."""
        return float(self.model_metadata.min_lesion_fraction)

    def current_mask_threshold(self) -> float:
        return self._model_facts()[1] if self.mask_threshold is None else float(self.mask_threshold)

    def threshold(self) -> float:
        """The decision threshold W_p / (W_p + W') at the current effective weight."""
        return threshold_for_effective_weight(self.current_effective_weight(), self._model_facts()[0])

    def operating_point(self, w_effective: float | None = None) -> OperatingPoint:
        w_p, _, table, _ = self._model_facts()
        weight = self.current_effective_weight() if w_effective is None else w_effective
        return operating_point(weight, table, w_p)
