"""Export for training from Slicer: the shown frame and its (corrected) segment, through the core's writer.

The pair, the DICOM SEG and the manifest line are written by ``core.training_pairs`` (the desktop
reviewer writes the same way); this module only gathers the frame, the mask and the source from
the MRML session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from busassist.core.training_pairs import ExportResult, export_pair

__all__ = ["ExportResult", "export_for_training"]


def export_for_training(
    logic, volume_node, out_dir: str | Path, class_name: str, frame_index: int | None = None
) -> ExportResult:
    """Write the shown (or given) frame and its current segment as a BUSI pair (see ``core.training_pairs``)."""
    index = logic.current_frame_index(volume_node) if frame_index is None else int(frame_index)
    pixels = logic.frame_from_volume(volume_node, index)
    state = logic._volumes.get(volume_node.GetID())
    entry = state.frames.get(index) if state is not None else None
    shown = state is None or state.shown_frame in (None, index)
    if shown:
        mask = logic.segment_mask(volume_node, index)
    else:
        mask = entry.edited_mask if entry is not None and entry.edited_mask is not None else None
        if mask is None and entry is not None:
            mask = entry.mask(logic.current_mask_threshold())
    if mask is None:
        mask = np.zeros(pixels.shape[:2], dtype=bool)
    source_path, _ = logic._source_dicom(volume_node)
    return export_pair(
        out_dir,
        class_name,
        pixels,
        mask,
        None if entry is None else entry.mask(logic.current_mask_threshold()),
        source_path,
        index,
        logic.source_info(volume_node).sop_instance_uid,
        logic._model_facts()[3],
        None if entry is None else entry.probability,
    )
