"""Writing batch outputs so that a kill never corrupts or loses finished work.

Images are written to a temporary name and renamed into place; CSV rows are appended one at a
time under an exclusive file lock, with one ``write`` per row, so several worker processes can
share ``results.csv`` and a crash loses at most the frame being analysed.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np

from busassist.core.io import Frame
from busassist.core.preprocessing import to_grey, to_uint8_range


def ensure_csv(path: Path, columns: list[str]) -> None:
    """Create ``path`` with a header row, or repair it: a last row cut short by a kill is dropped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            handle.write((",".join(columns) + "\n").encode())
            return
        handle.seek(0)
        content = handle.read()
        if not content.endswith(b"\n"):
            handle.truncate(content.rfind(b"\n") + 1)


def append_row(path: Path, columns: list[str], row: dict) -> None:
    """Append one CSV row atomically with respect to other processes appending to the same file."""
    buffer = io.StringIO()
    csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore").writerow(row)
    with open(path, "a", newline="") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(buffer.getvalue())
        handle.flush()  # in the OS's hands: survives a kill of this process (not a power cut)


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a results CSV (``ensure_csv`` has already dropped a row cut short by a kill)."""
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def frame_key(frame_source: str, sop_instance_uid: str | None, index: int, model_sha256: str) -> str:
    """Resume key of a frame: the instance (SOP Instance UID, else the file), the frame and the model."""
    instance = sop_instance_uid or os.path.abspath(frame_source)
    return f"{instance}|{index}|{model_sha256}"


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


def load_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)
