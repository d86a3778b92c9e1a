"""``busassist analyze``: score and segment DICOM / PNG / JPEG inputs, write CSV, masks, overlays.

Each analysed frame gets a row in ``results.csv``, its mask as a PNG in the source frame's
geometry (0 background, 255 lesion) and an overlay PNG for a person to look at. A file that
cannot be analysed gets a one-line reason on stderr and a row in ``errors.csv``; the run goes on,
and rows are flushed to disk as they are produced so nothing finished is lost.
"""

from __future__ import annotations

import csv
import hashlib
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from busassist.core.inference import Analyzer, FrameResult
from busassist.core.io import ALL_FRAMES, Frame, FrameSelection, InputError, read_frames
from busassist.core.preprocessing import to_grey, to_uint8_range

RESULT_COLUMNS = [
    "file",
    "frame",
    "sop_instance_uid",
    "malignancy_probability",
    "calibrated_probability",
    "threshold",
    "decision",
    "lesion_detected",
    "lesion_area_px",
    "region",
    "mask_path",
    "overlay_path",
    "model_version",
]
ERROR_COLUMNS = ["file", "stage", "reason"]


@dataclass
class Summary:
    frames: int = 0
    refused: int = 0


#: Files found while scanning a folder that are documentation, not images; skipped silently.
NOT_IMAGES = {".json", ".txt", ".md", ".csv", ".xml", ".html", ".pdf", ".py"}


def expand_inputs(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Files named directly, and every file below named folders.

    Folder contents are sorted; hidden files and documentation files (``NOT_IMAGES``) are
    skipped; every other file is tried, so a DICOM without an extension is still found.
    """
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and not hidden and child.suffix.lower() not in NOT_IMAGES:
                    yield child
        else:
            yield path


def safe_stem(frame: Frame) -> str:
    """Output-file stem, unique per source file and frame, free of patient data.

    The SOP Instance UID (or, for PNG/JPEG, the file name) keeps names readable; a short hash of
    the source path keeps two files with the same name or UID from overwriting each other's
    outputs while staying the same when the same command is run again.
    """
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", frame.sop_instance_uid or Path(frame.source).stem)
    source = hashlib.sha1(str(Path(frame.source).resolve()).encode()).hexdigest()[:8]
    return f"{base}_{source}_f{frame.index:04d}"


def overlay_image(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB picture of the frame with the lesion tinted and its outline drawn in yellow."""
    grey = np.clip(to_uint8_range(to_grey(pixels)), 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    inside = mask > 0
    rgb[inside] = rgb[inside] * 0.7 + np.array([255.0, 0.0, 0.0]) * 0.3
    eroded = inside.copy()
    eroded[1:, :] &= inside[:-1, :]
    eroded[:-1, :] &= inside[1:, :]
    eroded[:, 1:] &= inside[:, :-1]
    eroded[:, :-1] &= inside[:, 1:]
    rgb[inside & ~eroded] = (255.0, 255.0, 0.0)
    return rgb.astype(np.uint8)


def save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(temporary, format="PNG")
    temporary.replace(path)


class CsvLog:
    """A CSV file opened for appending, header written once, each row flushed immediately."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        new = not path.exists() or path.stat().st_size == 0
        self.handle = open(path, "a", newline="")  # noqa: SIM115 - held open for the whole run
        self.writer = csv.DictWriter(self.handle, fieldnames=columns)
        if new:
            self.writer.writeheader()
            self.handle.flush()

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def result_row(
    frame: Frame,
    result: FrameResult,
    threshold: float,
    mask_path: Path,
    overlay_path: Path | None,
    out: Path,
    model_version: str,
) -> dict:
    region = result.region
    return {
        "file": frame.source,
        "frame": frame.index,
        "sop_instance_uid": frame.sop_instance_uid or "",
        "malignancy_probability": f"{result.probability:.6f}",
        "calibrated_probability": f"{result.calibrated_probability:.6f}",
        "threshold": f"{threshold:.6f}",
        "decision": result.decision(threshold),
        "lesion_detected": int(result.lesion_detected),
        "lesion_area_px": int(np.count_nonzero(result.mask)),
        "region": "" if region is None else f"{region.x0},{region.y0},{region.x1},{region.y1}",
        "mask_path": str(mask_path.relative_to(out)),
        "overlay_path": "" if overlay_path is None else str(overlay_path.relative_to(out)),
        "model_version": model_version,
    }


def analyze_paths(
    inputs: Iterable[str | Path],
    out: Path,
    analyzer: Analyzer,
    effective_weight: float | None = None,
    overlays: bool = True,
    any_modality: bool = False,
    log=print,
    frames: FrameSelection = ALL_FRAMES,
) -> Summary:
    """Analyse every frame of every input; write results.csv, errors.csv, masks/ and overlays/."""
    out.mkdir(parents=True, exist_ok=True)
    threshold = analyzer.threshold(effective_weight)
    results = CsvLog(out / "results.csv", RESULT_COLUMNS)
    errors = CsvLog(out / "errors.csv", ERROR_COLUMNS)
    summary = Summary()
    try:
        for path in expand_inputs(inputs):
            try:
                for frame in read_frames(path, any_modality, frames):
                    result = analyzer.analyze(frame)
                    stem = safe_stem(frame)
                    mask_path = out / "masks" / f"{stem}_mask.png"
                    save_png(mask_path, result.mask)
                    overlay_path = out / "overlays" / f"{stem}_overlay.png" if overlays else None
                    if overlay_path is not None:
                        save_png(overlay_path, overlay_image(frame.pixels, result.mask))
                    results.write(
                        result_row(
                            frame, result, threshold, mask_path, overlay_path, out, analyzer.metadata.model_version
                        )
                    )
                    summary.frames += 1
            except InputError as error:
                summary.refused += 1
                errors.write({"file": error.path, "stage": error.stage, "reason": error.reason})
                log(f"busassist: {error}", file=sys.stderr)
    finally:
        results.close()
        errors.close()
    return summary
