"""The reviewer's analysis session: the presenter's session interface over files instead of MRML nodes.

``busassist.presenter.Presenter`` drives the Slicer panel through ``busassist.slicer.BUSAssistMRMLLogic``
and the desktop reviewer through this class; both answer the same calls (analyse a frame, report
it, change W' or the mask threshold, show a frame, export) with the same ``FrameReport``, whose
row is the core's reading (``core.results``), so the reviewer shows the numbers results.csv has.
A "volume" here is a worklist row (``review.worklist.WorkItem``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from busassist.core.backends import DEFAULT_BACKEND
from busassist.core.inference import FrameResult
from busassist.core.io import Frame, FrameSelection, InputError, iter_frames
from busassist.core.model_settings import ModelSettings
from busassist.core.results import decide
from busassist.core.training_pairs import ExportResult, export_pair
from busassist.presenter import FrameReport
from busassist.review.edit import MaskEditor
from busassist.review.worklist import WorkItem
from busassist.slicer.nodes import NO_REGION_WARNING

#: Shown for a frame whose figures come from a batch run's results.csv.
FROM_BATCH = "Figures from the batch run's results.csv (not re-analysed); press Analyze to edit this frame."


@dataclass
class FrameState:
    """One frame: its pixels, the model's result (after Analyze) and the mask under correction."""

    frame: Frame
    result: FrameResult | None = None
    editor: MaskEditor | None = None
    seconds: float = 0.0


class DesktopSession(ModelSettings):
    """Frames of worklist items, analysed on demand with one ``Analyzer`` (made on first use)."""

    def __init__(self, model_path: str | Path | None = None, analyzer=None, backend: str = DEFAULT_BACKEND) -> None:
        super().__init__(analyzer, model_path, backend)
        self._frames: dict[tuple[str, int], FrameState] = {}
        self._shown: dict[str, int] = {}

    # ---- frames -----------------------------------------------------------------------------------

    def frame_count(self, item: WorkItem) -> int:
        return max(1, item.frames)

    def frame(self, item: WorkItem, index: int) -> Frame:
        """Frame ``index`` of ``item``, decoded once (``InputError`` for a frame that cannot be)."""
        state = self._frames.get((item.key, index))
        if state is not None:
            return state.frame
        for decoded in iter_frames(item.path, frames=FrameSelection(str(index + 1)), luma=True):
            if isinstance(decoded, InputError):
                raise decoded
            self._frames[(item.key, index)] = FrameState(decoded)
            return decoded
        raise InputError(item.path, f"frame {index + 1} is not in the file", "read", index)

    def state(self, item: WorkItem, index: int) -> FrameState | None:
        return self._frames.get((item.key, index))

    def mask(self, item: WorkItem, index: int) -> np.ndarray | None:
        """The mask to draw: the one under correction, else the batch run's, else none."""
        state = self.state(item, index)
        if state is not None and state.editor is not None:
            return state.editor.mask
        row = item.batch_rows.get(index)
        if row and row.get("mask_path") and item.batch_root is not None:
            from busassist.core.outputs import load_png

            loaded = load_png(item.batch_root / row["mask_path"])
            return None if loaded is None else loaded > 0
        return None

    def editor(self, item: WorkItem, index: int) -> MaskEditor | None:
        state = self.state(item, index)
        return None if state is None else state.editor

    # ---- the presenter's session interface ---------------------------------------------------------

    def analyze_volume(self, item: WorkItem, index: int = 0) -> FrameReport:
        frame = self.frame(item, index)
        started = time.perf_counter()
        result = self.analyzer.analyze(frame)
        self.store_result(item, index, frame, result, time.perf_counter() - started)
        self.show_frame(item, index)
        return self.report(item, index)

    def analyse_frame(self, item: WorkItem, index: int) -> tuple[Frame, FrameResult, float]:
        """Compute only (no state changed): what a worker thread runs; ``store_result`` keeps it."""
        frame = self.frame(item, index)
        started = time.perf_counter()
        return frame, self.analyzer.analyze(frame), time.perf_counter() - started

    def store_result(self, item: WorkItem, index: int, frame: Frame, result: FrameResult, seconds: float) -> None:
        """Keep a frame's result; a mask corrected by hand before stays as it is (its model mask is updated)."""
        model_mask = result.probability_map >= self.current_mask_threshold()
        previous = self._frames.get((item.key, index))
        editor = MaskEditor(model_mask)
        if previous is not None and previous.editor is not None and previous.editor.edited:
            editor = MaskEditor(model_mask, previous.editor.mask)
        self._frames[(item.key, index)] = FrameState(frame, result, editor, seconds)

    def iter_analyze_frames(self, item: WorkItem) -> Iterator[tuple[int, int]]:
        total = self.frame_count(item)
        for index in range(total):
            self.analyze_volume(item, index)
            yield index + 1, total

    def show_frame(self, item: WorkItem, index: int) -> FrameReport | None:
        self._shown[item.key] = int(index)
        return self.report(item, index)

    def set_effective_weight(self, weight: float, item: WorkItem | None = None) -> FrameReport | None:
        self.effective_weight = float(weight)
        return None if item is None else self.report(item, self._shown.get(item.key, 0))

    def set_mask_threshold(self, threshold: float, item: WorkItem | None = None, shown_only: bool = False):
        """Re-cut the model's mask of unedited frames from their probability maps; corrections stay."""
        self.mask_threshold = float(threshold)
        for (key, index), state in list(self._frames.items()):
            if shown_only and item is not None and (key != item.key or index != self._shown.get(item.key)):
                continue
            if state.result is not None and state.editor is not None and not state.editor.edited:
                state.editor = MaskEditor(state.result.probability_map >= self.mask_threshold)
        return None if item is None else self.report(item, self._shown.get(item.key, 0))

    def report(self, item: WorkItem, index: int | None = None) -> FrameReport | None:
        index = self._shown.get(item.key, 0) if index is None else int(index)
        state = self.state(item, index)
        meta = self.model_metadata
        if state is not None and state.result is not None:
            result = state.result
            reading = _with_mask(result, state.editor.mask).reading(self.threshold())
            row = {**reading.columns(), "mask_threshold": self.current_mask_threshold()}
            warning = NO_REGION_WARNING if result.region is None else ""
            seconds = state.seconds
        elif index in item.batch_rows:
            row = dict(item.batch_rows[index])
            probability = float(row["malignancy_probability"])
            row["threshold"] = self.threshold()
            row["decision"] = decide(probability, row.get("lesion_detected") == "1", self.threshold()).value
            warning, seconds = FROM_BATCH, 0.0
        else:
            return None
        return FrameReport(
            item.label,
            index,
            self.frame_count(item),
            row,
            float(row.get("mask_threshold") or self.current_mask_threshold()),
            self.operating_point(),
            str(meta.model_version),
            seconds,
            warning,
        )

    def export_for_training(self, item: WorkItem, folder, class_name: str, index: int | None = None) -> ExportResult:
        index = self._shown.get(item.key, 0) if index is None else int(index)
        state = self.state(item, index)
        if state is None or state.editor is None:
            raise ValueError("analyse the frame first: there is no mask to save")
        from busassist.core.io import is_dicom

        return export_pair(
            folder,
            class_name,
            state.frame.pixels,
            state.editor.mask,
            state.editor.model_mask,
            item.path if is_dicom(item.path) else None,
            index,
            state.frame.sop_instance_uid,
            str(self.model_metadata.model_version),
            None if state.result is None else state.result.probability,
        )


def _with_mask(result: FrameResult, mask: np.ndarray) -> FrameResult:
    """``result`` with the mask under correction: the reading then measures what the reader sees."""
    from dataclasses import replace

    lesion = np.asarray(mask) > 0
    fraction = float(np.count_nonzero(lesion)) / max(result.analysed_area_px, 1)
    return replace(result, mask=np.where(lesion, 255, 0).astype(np.uint8), lesion_fraction=fraction)
