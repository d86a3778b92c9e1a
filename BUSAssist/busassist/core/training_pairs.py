"""Corrected masks back to the trainer: a BUSI-layout image/mask pair, a DICOM SEG, one manifest line.

Every face exports the same way (the Slicer module's *Export for training*, the desktop reviewer's
*Save*): ``<out>/<class>/images/<class> (n).png`` and ``<out>/<class>/mask/<class> (n)_mask.png``
(0 background, 255 lesion), n the next free number, the three class folders created so that the
trainer's BUSI reader (``busassist-train fit --extra-train <out>``) accepts the folder; for a frame
that came from DICOM, a DICOM SEG of the corrected mask referencing the source (``core.dicom_seg``);
and a line in ``busassist_exports.jsonl`` (SOP Instance UID, frame, model version; no patient data).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: BUSI class folders an exported frame can go to.
EXPORT_CLASSES = ("benign", "malignant", "normal")
EXPORT_MANIFEST = "busassist_exports.jsonl"
_CASE_NAME = re.compile(r"^(?P<cls>benign|malignant|normal) \((?P<n>\d+)\)\.png$")


@dataclass(frozen=True)
class ExportResult:
    key: str  # "<class>/images/<class> (n).png", as the BUSI loader names cases
    image_path: Path
    mask_path: Path
    edited: bool  # the exported mask differs from the model's
    seg_path: Path | None = None  # DICOM SEG of the corrected mask, when the frame came from DICOM
    seg_error: str | None = None  # why no SEG was written (no DICOM source, highdicom missing, ...)

    def describe(self, folder: str | Path) -> str:
        """One line for a face: what was written where, the DICOM SEG included (or why not)."""
        mask = "corrected mask" if self.edited else "model mask"
        seg = f"DICOM SEG {self.seg_path}" if self.seg_path is not None else f"no DICOM SEG ({self.seg_error})"
        return f"Exported {self.key} ({mask}) to {folder}; {seg}."


def check_export(out_dir, class_name: str, mask: np.ndarray) -> Path:
    """The export folder, or ``ValueError`` naming what is wrong (class, folder, mask for the class)."""
    if class_name not in EXPORT_CLASSES:
        raise ValueError(f"class must be one of {', '.join(EXPORT_CLASSES)}, not {class_name!r}")
    if not str(out_dir or "").strip() or not Path(out_dir).is_absolute():
        # an empty or relative folder would land in the application's working directory
        raise ValueError("choose an export folder first (a full path)")
    if class_name == "normal" and np.any(mask):
        raise ValueError("a 'normal' image has no lesion: erase the segment or choose benign / malignant")
    if class_name != "normal" and not np.any(mask):
        raise ValueError(f"a '{class_name}' image needs the lesion outlined: the segment is empty")
    return Path(out_dir)


def export_pair(
    out_dir,
    class_name: str,
    pixels: np.ndarray,
    mask: np.ndarray,
    model_mask: np.ndarray | None,
    dicom_source: str | Path | None,
    frame_index: int,
    sop_instance_uid: str | None,
    model_version: str,
    probability: float | None = None,
) -> ExportResult:
    """Write one corrected frame for training (see the module docstring); ``ValueError`` for a refusal."""
    from busassist.core.preprocessing import to_uint8_range

    out = check_export(out_dir, class_name, mask)
    mask = np.asarray(mask) > 0
    if pixels.dtype != np.uint8:
        grey_or_rgb = pixels[..., :3] if pixels.ndim == 3 else pixels
        pixels = np.rint(np.clip(to_uint8_range(grey_or_rgb.astype(np.float32)), 0, 255)).astype(np.uint8)
    elif pixels.ndim == 3:
        pixels = pixels[..., :3]
    for name in EXPORT_CLASSES:
        (out / name / "images").mkdir(parents=True, exist_ok=True)
        (out / name / "mask").mkdir(parents=True, exist_ok=True)
    number = _next_case_number(out / class_name / "images", class_name)
    stem = f"{class_name} ({number})"
    image_path = out / class_name / "images" / f"{stem}.png"
    mask_path = out / class_name / "mask" / f"{stem}_mask.png"
    _save_png(mask_path, np.where(mask, 255, 0).astype(np.uint8))
    _save_png(image_path, pixels)
    edited = model_mask is not None and not np.array_equal(mask, np.asarray(model_mask) > 0)
    record = {
        "key": f"{class_name}/images/{stem}.png",
        "sop_instance_uid": sop_instance_uid,
        "frame": int(frame_index),
        "model_version": model_version,
        "malignancy_probability": None if probability is None else round(float(probability), 6),
        "edited": bool(edited),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    seg_path, seg_error = _export_seg(
        dicom_source, frame_index, mask, out / "seg" / f"{stem}.seg.dcm", f"{model_version}+annotator"
    )
    record["seg_path"] = None if seg_path is None else str(seg_path.relative_to(out))
    with open(out / EXPORT_MANIFEST, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    return ExportResult(record["key"], image_path, mask_path, bool(edited), seg_path, seg_error)


def _export_seg(source_path, index: int, mask: np.ndarray, path: Path, version: str):
    """The corrected mask as a DICOM Segmentation referencing the source frame, if there is one."""
    if source_path is None:
        return None, "the frame was not loaded from a DICOM file"
    try:
        import pydicom

        from busassist.core.dicom_seg import SegmentationError, write_segmentation
    except ImportError as error:
        return None, f"DICOM SEG export needs highdicom ({error})"
    import warnings

    from busassist.core.identifiers import is_valid_uid

    try:
        with warnings.catch_warnings():  # pydicom's validation quotes header values
            warnings.simplefilter("ignore")
            source = pydicom.dcmread(source_path, stop_before_pixels=True)
            uids = [
                str(source.get(k, "")).rstrip("\x00 ")
                for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
            ]
            if not all(is_valid_uid(uid) for uid in uids):  # the batch's rule: no SEG that references garbage
                return None, "the source's study, series or instance UID is missing or invalid"
            return write_segmentation(source, {index: mask}, version, path), None
    except (SegmentationError, OSError, ValueError) as error:
        return None, str(error)


def _next_case_number(image_dir: Path, class_name: str) -> int:
    numbers = [
        int(match.group("n"))
        for path in image_dir.glob("*.png")
        if (match := _CASE_NAME.match(path.name)) and match.group("cls") == class_name
    ]
    return max(numbers, default=0) + 1


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            Image.fromarray(array).save(stream, format="PNG")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
