"""Per-volume analysis sessions: each frame's result and edits, the segment, the map and the table.

``BUSAssistMRMLLogic`` takes the volume Slicer made from an ultrasound DICOM (scalar or RGB vector
volume, single frame, multi-frame volume, or the proxy volume of a sequence browser over a cine)
or from a PNG, runs the core ``Analyzer`` on the frame that is shown and writes the output nodes
(``slicer.nodes``). Thresholds change without running the model again; corrections an annotator
makes are kept per frame; after a scene reload the table's rows come back and no outline is ever
shown beside another frame's score.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from busassist.core.model_settings import ModelSettings
from busassist.core.results import decide, read_frame
from busassist.presenter import FrameReport
from busassist.slicer.export import ExportResult
from busassist.slicer.nodes import (
    MODEL_VERSION_ATTRIBUTE,
    OUTPUT_CLASSES,
    OUTPUT_SUFFIXES,
    PROBABILITY_COLOR_NODE_IDS,
    PROBABILITY_SHOWN_FROM,
    RELOADED_WARNING,
    ROLE_ATTRIBUTE,
    ROLE_PROBABILITY,
    ROLE_SEGMENTATION,
    ROLE_TABLE,
    SEGMENT_FRAME_ATTRIBUTE,
    SEGMENT_ID,
    SEGMENT_NAME,
    SOURCE_FILE_ATTRIBUTE,
    SOURCE_REFERENCE_ROLE,
    TABLE_COLUMNS,
    _create_columns,
    _ensure_segment,
    _frame_shape,
    _node_scene,
    _nodes_by_class,
    _segment_on_grid,
    _sequence_item,
    _set_row,
    _slicer,
    _vtk_matrix,
    array_from_image_data,
    find_sequence,
    ijk_to_ras,
    update_volume_from_array,
)
from busassist.slicer.state import FrameEntry, SourceInfo, VolumeState

# The logic
# --------------------------------------------------------------------------------------------


class BUSAssistMRMLLogic(ModelSettings):
    """Analyse ultrasound volumes in a MRML scene and keep the output nodes up to date.

    One instance per Slicer session (the module logic owns it): the onnxruntime session inside
    ``analyzer`` is created on first use and reused. ``effective_weight`` (W') and
    ``mask_threshold`` are the slider values; change them with ``set_effective_weight`` and
    ``set_mask_threshold``, which never run the model.
    """

    def __init__(
        self,
        analyzer=None,
        model_path: str | Path | None = None,
        dicom_file_for_instance: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__(analyzer, model_path)
        #: Finds a DICOM file by SOP Instance UID (Slicer: ``slicer.dicomDatabase.fileForInstance``).
        self.dicom_file_for_instance = dicom_file_for_instance
        self._volumes: dict[str, VolumeState] = {}

    def forget(self, volume_node=None) -> None:
        """Drop results kept in memory for one volume, or for all (call when the scene closes)."""
        if volume_node is None:
            self._volumes.clear()
        else:
            self._volumes.pop(volume_node.GetID(), None)

    # ---- frames -------------------------------------------------------------------------

    def frame_count(self, volume_node) -> int:
        browser, sequence = find_sequence(volume_node)
        if sequence is not None:
            return max(1, sequence.GetNumberOfDataNodes())
        image = volume_node.GetImageData()
        return 1 if image is None else image.GetDimensions()[2]

    def current_frame_index(self, volume_node) -> int:
        """The frame a sequence browser shows; 0 for a volume (pass the slice for multi-frame volumes)."""
        browser, sequence = find_sequence(volume_node)
        if sequence is None:
            state = self._volumes.get(volume_node.GetID())
            return state.shown_frame if state is not None and state.shown_frame is not None else 0
        return _sequence_item(browser, sequence, max(0, browser.GetSelectedItemNumber()))

    def frame_from_volume(self, volume_node, frame_index: int | None = None) -> np.ndarray:
        """The (H, W) grey or (H, W, C) colour pixels of one frame (a copy).

        A Slicer 2-D ultrasound volume is a single-slice 3-D volume, array (1, H, W) or
        (1, H, W, 3); a multi-frame volume has one slice per frame; the proxy volume of a
        sequence browser shows the selected item, other items are read from the sequence.
        """
        browser, sequence = find_sequence(volume_node)
        if sequence is not None:
            shown = _sequence_item(browser, sequence, max(0, browser.GetSelectedItemNumber()))
            node = volume_node
            if frame_index is not None and frame_index != shown:
                if not 0 <= frame_index < sequence.GetNumberOfDataNodes():
                    raise IndexError(f"frame {frame_index} outside 0..{sequence.GetNumberOfDataNodes() - 1}")
                node = sequence.GetNthDataNode(frame_index)
            array = array_from_image_data(node.GetImageData())
            frame = array[0]
        else:
            image = volume_node.GetImageData()
            if image is None:
                raise ValueError(f"{volume_node.GetName()}: the volume has no voxels")
            array = array_from_image_data(image)
            index = 0 if frame_index is None else int(frame_index)
            if not 0 <= index < array.shape[0]:
                raise IndexError(f"frame {index} outside 0..{array.shape[0] - 1}")
            frame = array[index]
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[..., 0]
        if frame.ndim == 3 and frame.shape[2] not in (3, 4):
            raise ValueError(f"{volume_node.GetName()}: {frame.shape[2]}-component voxels are not an image")
        return np.array(frame, copy=True)

    def _frame_geometry(self, volume_node, frame_index: int) -> tuple[np.ndarray, int]:
        """IJKToRAS and the slice index that a frame's mask occupies in the volume's grid."""
        browser, sequence = find_sequence(volume_node)
        return ijk_to_ras(volume_node), 0 if sequence is not None else int(frame_index)

    # ---- source DICOM: tissue region and calibration ---------------------------------------

    def source_info(self, volume_node) -> SourceInfo:
        """The DICOM file behind a volume (storage node file or DICOM instance UID) and its region."""
        state = self._volumes.get(volume_node.GetID())
        if state is not None:
            return state.source
        info = SourceInfo()
        path, uid = self._source_dicom(volume_node)
        if path is not None:
            info.dicom_path, info.sop_instance_uid = path, uid
            try:
                import pydicom

                from busassist.core.io import tissue_region

                dataset = pydicom.dcmread(path, stop_before_pixels=True)
                info.sop_instance_uid = info.sop_instance_uid or str(getattr(dataset, "SOPInstanceUID", "")) or None
                height, width = _frame_shape(volume_node)
                info.region = tissue_region(dataset, height, width)
                if info.region is not None and info.region.spacing_mm is not None:
                    info.spacing_mm = tuple(float(s) for s in info.region.spacing_mm)
            except Exception:  # noqa: BLE001 - an unreadable header only costs the region crop
                info.region = None
        if info.spacing_mm is None:
            spacing = volume_node.GetSpacing()
            if not (math.isclose(spacing[0], 1.0) and math.isclose(spacing[1], 1.0)):
                info.spacing_mm = (float(spacing[1]), float(spacing[0]))
        self._volumes[volume_node.GetID()] = VolumeState(info)
        return info

    def _source_dicom(self, volume_node) -> tuple[str | None, str | None]:
        from busassist.core.io import is_dicom

        candidates = [volume_node]
        browser, sequence = find_sequence(volume_node)
        if sequence is not None:
            candidates.append(sequence)
            if sequence.GetNumberOfDataNodes():
                candidates.append(sequence.GetNthDataNode(0))
        for node in candidates:  # the reference kept on the node survives a removed storage node
            name = node.GetAttribute(SOURCE_FILE_ATTRIBUTE)
            if name and Path(name).is_file() and is_dicom(Path(name)):
                return name, None
        for node in candidates:
            storage = node.GetStorageNode() if hasattr(node, "GetStorageNode") else None
            name = storage.GetFileName() if storage is not None else None
            if name and Path(name).is_file() and is_dicom(Path(name)):
                volume_node.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(Path(name).resolve()))
                return name, None
        for node in candidates:
            uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
            if uids and self.dicom_file_for_instance is not None:
                path = self.dicom_file_for_instance(uids[0])
                if path and Path(path).is_file():
                    return str(path), uids[0]
        return None, None

    # ---- analysis -----------------------------------------------------------------------

    def analyze_volume(self, volume_node, frame_index: int | None = None, analyzer=None) -> FrameReport:
        """Run the model on one frame (default: the one shown) and update the output nodes."""
        index = self.current_frame_index(volume_node) if frame_index is None else int(frame_index)
        self._analyze_frame(volume_node, index, analyzer)
        self.show_frame(volume_node, index)
        return self.report(volume_node, index)

    def iter_analyze_frames(
        self, volume_node, frames: list[int] | None = None, analyzer=None
    ) -> Iterator[tuple[int, int]]:
        """Analyse every frame (or ``frames``), yielding (frames done, total) after each one.

        The caller drives the loop (and keeps the UI responsive between frames); closing the
        generator early cancels. Either way the segment ends on the frame that is shown.
        """
        indices = list(range(self.frame_count(volume_node))) if frames is None else [int(f) for f in frames]
        try:
            for done, index in enumerate(indices, 1):
                self._analyze_frame(volume_node, index, analyzer)
                yield done, len(indices)
        finally:
            state = self._volumes.get(volume_node.GetID())
            if state is not None and state.frames:
                shown = self.current_frame_index(volume_node)
                self.show_frame(volume_node, shown if shown in state.frames else min(state.frames))

    def _analyze_frame(self, volume_node, index: int, analyzer=None) -> FrameEntry:
        analyzer = analyzer or self.analyzer
        if self._analyzer is None:
            self._analyzer = analyzer
        start = time.perf_counter()
        pixels = self.frame_from_volume(volume_node, index)
        source = self.source_info(volume_node)
        result = analyzer.analyze(pixels, source.region)
        height, width = result.mask.shape
        region = result.region
        analysed_area = region.area if region is not None else height * width
        entry = FrameEntry(
            float(result.probability),
            result.probability_map.astype(np.float16),
            result.mask > 0,
            float(analyzer.metadata.mask_threshold),
            int(analysed_area),
            time.perf_counter() - start,
            calibrated_probability=float(result.calibrated_probability),
        )
        state = self._volumes[volume_node.GetID()]
        state.frames[index] = entry
        table = self._output(volume_node, ROLE_TABLE)
        self._write_row(volume_node, table, index, entry)
        return entry

    # ---- showing a frame ----------------------------------------------------------------

    def show_frame(self, volume_node, frame_index: int, capture_edits: bool = True) -> FrameReport | None:
        """Put frame ``frame_index``'s mask into the segment and its probability map on display.

        Call when the shown frame changes (sequence browser, slice offset). Corrections an
        annotator made to the previously shown frame are kept with that frame first. A frame not
        analysed yet clears the segment, so no outline from another frame is ever shown.
        """
        state = self._volumes.get(volume_node.GetID())
        if state is None:
            return self._show_reloaded_frame(volume_node, frame_index)
        if capture_edits and state.shown_frame is not None and state.shown_frame != frame_index:
            self._capture_edits(volume_node, state)
        entry = state.frames.get(frame_index)
        threshold = self.current_mask_threshold()
        segmentation = self._output(volume_node, ROLE_SEGMENTATION)
        matrix, k = self._frame_geometry(volume_node, frame_index)
        if entry is None:
            mask = np.zeros(_frame_shape(volume_node), dtype=bool)
            probability_map = np.zeros(mask.shape, dtype=np.float32)
        else:
            mask = entry.edited_mask if entry.edited_mask is not None else entry.mask(threshold)
            probability_map = entry.probability_map.astype(np.float32)
        self._write_segment(segmentation, volume_node, mask, matrix, k)
        segmentation.SetAttribute(SEGMENT_FRAME_ATTRIBUTE, str(frame_index))
        self._write_probability(volume_node, probability_map, matrix, k)
        state.shown_frame = frame_index
        return None if entry is None else self.report(volume_node, frame_index)

    def _show_reloaded_frame(self, volume_node, frame_index: int) -> FrameReport | None:
        """A volume analysed before the scene was loaded: its table rows are in the scene, its masks are not.

        The segment is cleared when it was saved for another frame, so an outline never sits beside
        another frame's score; the report says how to get the outline back.
        """
        segmentation = self.find_output(volume_node, ROLE_SEGMENTATION)
        if segmentation is None:
            return None
        if segmentation.GetAttribute(SEGMENT_FRAME_ATTRIBUTE) != str(frame_index):
            matrix, k = self._frame_geometry(volume_node, frame_index)
            self._write_segment(segmentation, volume_node, np.zeros(_frame_shape(volume_node), bool), matrix, k)
            segmentation.SetAttribute(SEGMENT_FRAME_ATTRIBUTE, str(frame_index))
        report = self.report(volume_node, frame_index)
        return None if report is None else replace(report, warning=RELOADED_WARNING)

    def _capture_edits(self, volume_node, state: VolumeState) -> None:
        entry = state.frames.get(state.shown_frame)
        if entry is None:
            return
        current = self.segment_mask(volume_node, state.shown_frame)
        if current is not None and not np.array_equal(current, entry.mask(self.current_mask_threshold())):
            entry.edited_mask = current

    # ---- thresholds (no inference) ------------------------------------------------------

    def set_effective_weight(self, w_effective: float, volume_node=None) -> FrameReport | None:
        """Move the decision threshold to W' = ``w_effective``: every BUSAssist table gets the new
        threshold and decisions, from the stored scores; the model is not run."""
        self.effective_weight = float(w_effective)
        for table in self._all_tables(volume_node):
            self._refresh_decisions(table)
        return self._current_report(volume_node)

    def set_mask_threshold(self, threshold: float, volume_node=None, shown_only: bool = False) -> FrameReport | None:
        """Re-threshold the stored probability maps (the model is not run); manual corrections are kept.

        A frame an annotator corrected keeps its correction, including the shown frame's (captured
        first). With ``shown_only`` only the shown frame is re-cut: live feedback while a slider is
        dragged, cheap for a long cine; call again without it when the drag ends to re-cut the
        other unedited frames and their table rows.
        """
        scene = getattr(_slicer(), "mrmlScene", None) if volume_node is None else _node_scene(volume_node)
        volumes = []
        for volume_id, state in list(self._volumes.items()):
            volume = scene.GetNodeByID(volume_id) if scene is not None else None
            if volume is None or not state.frames or (volume_node is not None and volume is not volume_node):
                continue
            if state.shown_frame is not None:
                self._capture_edits(volume, state)  # at the old threshold, before it changes
            volumes.append((volume, state))
        self.mask_threshold = float(threshold)
        for volume, state in volumes:
            table = self._output(volume, ROLE_TABLE)
            indices = [state.shown_frame] if shown_only else list(state.frames)
            for index in indices:
                entry = state.frames.get(index)
                if entry is not None and entry.edited_mask is None:
                    self._write_row(volume, table, index, entry)
            if state.shown_frame is not None:
                self.show_frame(volume, state.shown_frame, capture_edits=False)
        return self._current_report(volume_node)

    def _current_report(self, volume_node) -> FrameReport | None:
        if volume_node is None:
            return None
        state = self._volumes.get(volume_node.GetID())
        frame = state.shown_frame if state is not None and state.shown_frame is not None else None
        return self.report(volume_node, frame)

    # ---- reading results back -----------------------------------------------------------

    def report(self, volume_node, frame_index: int | None = None) -> FrameReport | None:
        """The panel's figures for a frame, from the results table (works after a scene reload)."""
        table = self.find_output(volume_node, ROLE_TABLE)
        if table is None:
            return None
        index = self.current_frame_index(volume_node) if frame_index is None else int(frame_index)
        row = self._find_row(table, index)
        if row is None:
            return None
        values = self._row_values(table, row)
        source_warning = self.source_info(volume_node).warning
        state = self._volumes.get(volume_node.GetID())
        entry = state.frames.get(index) if state is not None else None
        # A row without a result in memory: the scene was loaded; the outline is gone until Analyze.
        warning = " ".join(w for w in (RELOADED_WARNING if entry is None else "", source_warning) if w)
        return FrameReport(
            volume_node.GetName(),
            index,
            self.frame_count(volume_node),
            values,
            values["mask_threshold"],
            self.operating_point(),
            values["model_version"],
            entry.seconds if entry is not None else 0.0,
            warning,
        )

    def segment_mask(self, volume_node, frame_index: int | None = None, segmentation_node=None) -> np.ndarray | None:
        """The Tumour segment (possibly corrected in Segment Editor) on a frame's pixel grid, (H, W) bool."""
        segmentation_node = segmentation_node or self.find_output(volume_node, ROLE_SEGMENTATION)
        if segmentation_node is None:
            return None
        segmentation = segmentation_node.GetSegmentation()
        segment_id = SEGMENT_ID if segmentation.GetSegment(SEGMENT_ID) is not None else None
        if segment_id is None:
            segment_id = segmentation.GetSegmentIdBySegmentName(SEGMENT_NAME) or None
        if segment_id is None:
            return None
        index = self.current_frame_index(volume_node) if frame_index is None else int(frame_index)
        matrix, k = self._frame_geometry(volume_node, index)
        return _segment_on_grid(segmentation_node, segment_id, volume_node, matrix, k, _frame_shape(volume_node))

    # ---- export for training ------------------------------------------------------------

    def export_for_training(
        self, volume_node, out_dir: str | Path, class_name: str, frame_index: int | None = None
    ) -> ExportResult:
        """The shown (or given) frame and its current segment as a BUSI pair and a DICOM SEG (``slicer.export``)."""
        from busassist.slicer.export import export_for_training

        return export_for_training(self, volume_node, out_dir, class_name, frame_index)

    # ---- output nodes -------------------------------------------------------------------

    def find_output(self, volume_node, role: str):
        """The output node of ``role`` made for ``volume_node`` (by reference, then by name), or None."""
        scene = volume_node.GetScene()
        if scene is None:
            return None
        class_name = OUTPUT_CLASSES[role]
        named = None
        expected_name = volume_node.GetName() + OUTPUT_SUFFIXES[role]
        for node in _nodes_by_class(scene, class_name):
            if node.GetAttribute(ROLE_ATTRIBUTE) != role:
                continue
            source = node.GetNodeReference(SOURCE_REFERENCE_ROLE)
            if source is not None and source.GetID() == volume_node.GetID():
                return node
            if source is None and named is None and node.GetName() == expected_name:
                named = node
        return named

    def _output(self, volume_node, role: str):
        node = self.find_output(volume_node, role)
        if node is None:
            scene = _node_scene(volume_node)
            node = scene.AddNewNodeByClass(OUTPUT_CLASSES[role], volume_node.GetName() + OUTPUT_SUFFIXES[role])
            node.SetAttribute(ROLE_ATTRIBUTE, role)
            node.SetNodeReferenceID(SOURCE_REFERENCE_ROLE, volume_node.GetID())
            if role == ROLE_SEGMENTATION:
                node.CreateDefaultDisplayNodes()
            elif role == ROLE_TABLE:
                _create_columns(node)
            elif role == ROLE_PROBABILITY:
                # a display layer of this module, not an input: kept out of volume selectors (ours included)
                node.SetHideFromEditors(True)
            self._place_beside(volume_node, node)
        elif node.GetNodeReference(SOURCE_REFERENCE_ROLE) is None:
            node.SetNodeReferenceID(SOURCE_REFERENCE_ROLE, volume_node.GetID())
        if hasattr(node, "SetAndObserveTransformNodeID"):
            node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        if role == ROLE_SEGMENTATION:
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
            _ensure_segment(node)
        elif role == ROLE_TABLE:
            node.SetAttribute(MODEL_VERSION_ATTRIBUTE, self._model_facts()[3])  # provenance of the rows
        return node

    def use_segmentation(self, volume_node, segmentation_node) -> None:
        """Write ``volume_node``'s Tumour segment into ``segmentation_node`` (the panel's output selector).

        The node becomes the volume's segmentation output (role attribute and reference); the one it
        replaces keeps its segments but is no longer written to. ``None`` goes back to the default
        "<volume> BUSAssist" node. The shown frame's outline is written into the new node at once.
        """
        current = self.find_output(volume_node, ROLE_SEGMENTATION)
        if segmentation_node is not None and current is segmentation_node:
            return
        if current is not None:
            current.RemoveAttribute(ROLE_ATTRIBUTE)
            current.RemoveNodeReferenceIDs(SOURCE_REFERENCE_ROLE)
        if segmentation_node is not None:
            segmentation_node.SetAttribute(ROLE_ATTRIBUTE, ROLE_SEGMENTATION)
            segmentation_node.SetNodeReferenceID(SOURCE_REFERENCE_ROLE, volume_node.GetID())
            if segmentation_node.GetDisplayNode() is None:
                segmentation_node.CreateDefaultDisplayNodes()
        state = self._volumes.get(volume_node.GetID())
        if state is not None and state.shown_frame is not None:
            self.show_frame(volume_node, state.shown_frame, capture_edits=False)

    def _place_beside(self, volume_node, node) -> None:
        """Put ``node`` under the volume's parent in the subject hierarchy (the study, for DICOM)."""
        slicer = _slicer()
        scene = _node_scene(volume_node)
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        if hierarchy is None:
            return
        invalid = 0
        scene_item = hierarchy.GetSceneItemID()
        parent = scene_item
        volume_item = hierarchy.GetItemByDataNode(volume_node)
        if volume_item != invalid:
            parent = hierarchy.GetItemParent(volume_item)
        if parent in (invalid, scene_item):
            browser, sequence = find_sequence(volume_node)
            for owner in (browser, sequence):
                item = hierarchy.GetItemByDataNode(owner) if owner is not None else invalid
                if item != invalid and hierarchy.GetItemParent(item) not in (invalid, scene_item):
                    parent = hierarchy.GetItemParent(item)
                    break
        if parent == invalid:
            parent = scene_item
        item = hierarchy.GetItemByDataNode(node)
        if item == invalid:
            hierarchy.CreateItem(parent, node)
        else:
            hierarchy.SetItemParent(item, parent)

    def _write_segment(self, segmentation_node, volume_node, mask: np.ndarray, matrix: np.ndarray, k: int) -> None:
        import vtk
        from vtk.util import numpy_support

        slicer = _slicer()
        height, width = mask.shape
        labelmap = slicer.vtkOrientedImageData()
        labelmap.SetExtent(0, width - 1, 0, height - 1, k, k)
        labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
        labelmap.SetImageToWorldMatrix(_vtk_matrix(matrix))
        _ensure_segment(segmentation_node)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.SetBinaryLabelmapToSegment(labelmap, segmentation_node, SEGMENT_ID, logic.MODE_REPLACE):
            raise RuntimeError(f"{segmentation_node.GetName()}: could not write the {SEGMENT_NAME} segment")

    def _write_probability(self, volume_node, probability_map: np.ndarray, matrix: np.ndarray, k: int) -> None:
        node = self._output(volume_node, ROLE_PROBABILITY)
        origin_shift = matrix @ np.array([0.0, 0.0, float(k), 1.0])
        frame_matrix = matrix.copy()
        frame_matrix[:3, 3] = origin_shift[:3]
        node.SetIJKToRASMatrix(_vtk_matrix(frame_matrix))
        update_volume_from_array(node, probability_map.astype(np.float32)[None])
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            if display is not None:
                display.AutoWindowLevelOff()
                display.SetWindowLevelMinMax(0.0, 1.0)
                scene = _node_scene(volume_node)
                for color_id in PROBABILITY_COLOR_NODE_IDS:
                    if scene.GetNodeByID(color_id) is not None:
                        display.SetAndObserveColorNodeID(color_id)
                        break
        display = node.GetDisplayNode()
        if display is not None and not display.GetApplyThreshold():
            # Below PROBABILITY_SHOWN_FROM the overlay is transparent, so it tints the suspect tissue
            # instead of darkening the whole image.
            display.SetLowerThreshold(PROBABILITY_SHOWN_FROM)
            display.SetUpperThreshold(1.0)
            display.ApplyThresholdOn()

    # ---- results table ------------------------------------------------------------------

    def _all_tables(self, volume_node=None) -> list:
        scene = volume_node.GetScene() if volume_node is not None else getattr(_slicer(), "mrmlScene", None)
        if scene is None:
            return []
        return [t for t in _nodes_by_class(scene, "vtkMRMLTableNode") if t.GetAttribute(ROLE_ATTRIBUTE) == ROLE_TABLE]

    def _write_row(self, volume_node, table_node, index: int, entry: FrameEntry) -> None:
        state = self._volumes[volume_node.GetID()]
        threshold_mask = self.current_mask_threshold()
        reading = read_frame(  # the one function every face uses (core.results)
            entry.mask(threshold_mask),
            entry.probability,
            entry.calibrated_probability,
            self.operating_point().threshold,
            entry.analysed_area,
            self.current_min_lesion_fraction(),
            state.source.spacing_mm,
        )
        values = {
            "frame": index,
            **reading.columns(),
            "mask_threshold": threshold_mask,
            "model_version": self._model_facts()[3],
        }
        row = self._find_row(table_node, index)
        table = table_node.GetTable()
        if row is None:
            row = table.InsertNextBlankRow()
        _set_row(table, row, values)
        table.Modified()
        table_node.Modified()

    def _refresh_decisions(self, table_node) -> None:
        op = self.operating_point()
        table = table_node.GetTable()
        if table.GetColumnByName("decision") is None:
            return
        for row in range(table.GetNumberOfRows()):
            values = self._row_values(table_node, row)
            decision = decide(values["malignancy_probability"], bool(values["lesion_detected"]), op.threshold)
            _set_row(table, row, {"threshold": round(op.threshold, 6), "decision": decision.value})
        table.Modified()
        table_node.Modified()

    @staticmethod
    def _find_row(table_node, index: int) -> int | None:
        column = table_node.GetTable().GetColumnByName("frame")
        if column is None:
            return None
        for row in range(column.GetNumberOfTuples()):
            if int(column.GetValue(row)) == index:
                return row
        return None

    @staticmethod
    def _row_values(table_node, row: int) -> dict:
        table = table_node.GetTable()
        values = {}
        for name, kind, _, _ in TABLE_COLUMNS:
            if table.GetColumnByName(name) is None:
                continue
            variant = table.GetValueByName(row, name)
            if kind == "int":
                values[name] = variant.ToInt()
            elif kind == "double":
                values[name] = variant.ToDouble()
            else:
                values[name] = variant.ToString()
        return values


# --------------------------------------------------------------------------------------------
