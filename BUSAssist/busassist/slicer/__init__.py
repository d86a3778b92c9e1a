"""The BUSAssist Slicer module's logic, free of Qt so it runs (and is tested) against ``slicer-core``.

Split by job:

- ``nodes``: the MRML nodes BUSAssist writes (names, roles, attributes saved with the scene) and
  helpers that move arrays in and out of VTK or build volumes as Slicer's readers do;
- ``session``: ``BUSAssistMRMLLogic``, per-volume analysis sessions (each frame's result and
  edits, the segment, the probability map and the results table, whose rows are the core's
  reading: ``busassist.core.results``);
- ``operating_point``: the threshold for an effective weight W' and its validation figures;
- ``export``: Export for training (BUSI image/mask pair and DICOM SEG).

``BUSAssist/BUSAssist.py`` only draws the panel and wires it to these. Nothing here imports Qt,
torch or onnxruntime at import time; ``slicer`` and ``vtk`` are imported inside functions. The
package must stay Python 3.9 compatible (Slicer 5.8).
"""

from __future__ import annotations

from busassist.core.operating_point import OperatingPoint, operating_point
from busassist.presenter import FrameReport
from busassist.slicer.export import ExportResult, export_for_training
from busassist.slicer.nodes import (
    EXPORT_CLASSES,
    EXPORT_MANIFEST,
    NO_REGION_WARNING,
    OUTPUT_CLASSES,
    OUTPUT_SUFFIXES,
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
    TABLE_COLUMNS,
    TERMINOLOGY_ENTRY,
    TERMINOLOGY_TAG,
    HeadlessSlicer,
    _vtk_matrix,
    add_volume_from_frame,
    array_from_image_data,
    create_headless_scene,
    find_sequence,
    frame_index_at_ras,
    ijk_to_ras,
    load_volume_file,
    module_resource,
    remember_source,
    update_volume_from_array,
)
from busassist.slicer.session import BUSAssistMRMLLogic
from busassist.slicer.state import FrameEntry, SourceInfo, VolumeState

__all__ = [
    "EXPORT_CLASSES",
    "EXPORT_MANIFEST",
    "NO_REGION_WARNING",
    "OUTPUT_CLASSES",
    "OUTPUT_SUFFIXES",
    "PROBABILITY_SHOWN_FROM",
    "RELOADED_WARNING",
    "ROLE_ATTRIBUTE",
    "ROLE_PROBABILITY",
    "ROLE_SEGMENTATION",
    "ROLE_TABLE",
    "SEGMENT_FRAME_ATTRIBUTE",
    "SEGMENT_ID",
    "SEGMENT_NAME",
    "SOURCE_FILE_ATTRIBUTE",
    "TABLE_COLUMNS",
    "TERMINOLOGY_ENTRY",
    "TERMINOLOGY_TAG",
    "BUSAssistMRMLLogic",
    "ExportResult",
    "FrameEntry",
    "FrameReport",
    "HeadlessSlicer",
    "OperatingPoint",
    "SourceInfo",
    "VolumeState",
    "_vtk_matrix",
    "add_volume_from_frame",
    "array_from_image_data",
    "create_headless_scene",
    "export_for_training",
    "find_sequence",
    "frame_index_at_ras",
    "ijk_to_ras",
    "load_volume_file",
    "module_resource",
    "operating_point",
    "remember_source",
    "update_volume_from_array",
]
