"""Export for training: the shown frame and its (corrected) segment as a BUSI image/mask pair and a DICOM SEG."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from busassist.slicer.nodes import EXPORT_CLASSES, EXPORT_MANIFEST


@dataclass(frozen=True)
class ExportResult:
    key: str  # "<class>/images/<class> (n).png", as the BUSI loader names cases
    image_path: Path
    mask_path: Path
    edited: bool  # the exported mask differs from the model's
    seg_path: Path | None = None  # DICOM SEG of the corrected mask, when the frame came from DICOM
    seg_error: str | None = None  # why no SEG was written (no DICOM source, highdicom missing, ...)

    def describe(self, folder: str | Path) -> str:
        """One line for the panel: what was written where, the DICOM SEG included (or why not)."""
        mask = "corrected mask" if self.edited else "model mask"
        seg = f"DICOM SEG {self.seg_path}" if self.seg_path is not None else f"no DICOM SEG ({self.seg_error})"
        return f"Exported {self.key} ({mask}) to {folder}; {seg}."


# --------------------------------------------------------------------------------------------

_CASE_NAME = re.compile(r"^(?P<cls>benign|malignant|normal) \((?P<n>\d+)\)\.png$")


def _next_case_number(image_dir: Path, class_name: str) -> int:
    numbers = [
        int(match.group("n"))
        for path in image_dir.glob("*.png")
        if (match := _CASE_NAME.match(path.name)) and match.group("cls") == class_name
    ]
    return max(numbers, default=0) + 1


def _save_png(path: Path, array: np.ndarray, image_module) -> None:
    temporary = path.with_name(path.name + ".tmp")
    image_module.fromarray(array).save(temporary, format="PNG")
    temporary.replace(path)


def export_for_training(
    logic, volume_node, out_dir: str | Path, class_name: str, frame_index: int | None = None
) -> ExportResult:
    """Write the shown (or given) frame and its current segment as a BUSI image/mask pair.

    Layout ``<out>/<class>/images/<class> (n).png`` and ``<out>/<class>/mask/<class> (n)_mask.png``
    (0 background, 255 lesion), n the next free number; the three class folders are created so
    the trainer's BUSI reader accepts the folder. A line per export goes to
    ``busassist_exports.jsonl`` (SOP Instance UID, frame, model version; no patient data).
    """
    from PIL import Image

    from busassist.core.preprocessing import to_uint8_range

    if class_name not in EXPORT_CLASSES:
        raise ValueError(f"class must be one of {', '.join(EXPORT_CLASSES)}, not {class_name!r}")
    if not str(out_dir or "").strip() or not Path(out_dir).is_absolute():
        # an empty or relative folder would land in Slicer's working directory
        raise ValueError("choose an export folder first (a full path)")
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
    if class_name == "normal" and mask.any():
        raise ValueError("a 'normal' image has no lesion: erase the segment or choose benign / malignant")
    if class_name != "normal" and not mask.any():
        raise ValueError(f"a '{class_name}' image needs the lesion outlined: the segment is empty")
    if pixels.dtype != np.uint8:
        grey_or_rgb = pixels[..., :3] if pixels.ndim == 3 else pixels
        pixels = np.rint(np.clip(to_uint8_range(grey_or_rgb.astype(np.float32)), 0, 255)).astype(np.uint8)
    elif pixels.ndim == 3:
        pixels = pixels[..., :3]

    out = Path(out_dir)
    for name in EXPORT_CLASSES:
        (out / name / "images").mkdir(parents=True, exist_ok=True)
        (out / name / "mask").mkdir(parents=True, exist_ok=True)
    number = _next_case_number(out / class_name / "images", class_name)
    stem = f"{class_name} ({number})"
    image_path = out / class_name / "images" / f"{stem}.png"
    mask_path = out / class_name / "mask" / f"{stem}_mask.png"
    _save_png(mask_path, np.where(mask, 255, 0).astype(np.uint8), Image)
    _save_png(image_path, pixels, Image)
    edited = entry is not None and not np.array_equal(mask, entry.mask(logic.current_mask_threshold()))
    source = logic.source_info(volume_node)
    record = {
        "key": f"{class_name}/images/{stem}.png",
        "sop_instance_uid": source.sop_instance_uid,
        "frame": index,
        "model_version": logic._model_facts()[3],
        "malignancy_probability": None if entry is None else round(entry.probability, 6),
        "edited": bool(edited),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    seg_path, seg_error = _export_seg(
        logic, volume_node, index, mask, out / "seg" / f"{stem}.seg.dcm", f"{record['model_version']}+annotator"
    )
    record["seg_path"] = None if seg_path is None else str(seg_path.relative_to(out))
    with open(out / EXPORT_MANIFEST, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    return ExportResult(record["key"], image_path, mask_path, bool(edited), seg_path, seg_error)


def _export_seg(logic, volume_node, index: int, mask: np.ndarray, path: Path, version: str):
    """The corrected mask as a DICOM Segmentation referencing the source frame, if there is one."""
    source_path, _ = logic._source_dicom(volume_node)
    if source_path is None:
        return None, "the volume was not loaded from a DICOM file"
    try:
        import pydicom

        from busassist.core.dicom_seg import SegmentationError, write_segmentation
    except ImportError as error:
        return None, f"DICOM SEG export needs highdicom ({error})"
    try:
        source = pydicom.dcmread(source_path, stop_before_pixels=True)
        return write_segmentation(source, {index: mask}, version, path), None
    except (SegmentationError, OSError, ValueError) as error:
        return None, str(error)
