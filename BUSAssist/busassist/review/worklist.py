"""What the reviewer opens: files and folders (each file a worklist row), or a batch output folder.

A batch output folder (one with ``results.csv``) opens as the worklist of what it analysed, with
its scores, decisions and masks, without running the model again. Every other input is listed
with its frame count read from the header only; one that cannot be an input is listed as
unreadable with its one-line reason, never a crash.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from busassist.core.io import InputError, frame_count
from busassist.core.scan import expand_inputs


@dataclass
class WorkItem:
    """One worklist row: a file with its frames, or the reason it cannot be opened."""

    path: Path
    frames: int = 1
    error: str = ""  # one-line reason when unreadable
    batch_rows: dict[int, dict] = field(default_factory=dict)  # frame -> results.csv row (batch folders)
    batch_root: Path | None = None  # the batch folder its mask paths are relative to

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def readable(self) -> bool:
        return not self.error

    @property
    def key(self) -> str:
        """Identity of the file (absolute path), as the review log records it."""
        return os.path.abspath(self.path)


def is_batch_folder(path: Path) -> bool:
    return path.is_dir() and (path / "results.csv").is_file()


def open_inputs(inputs) -> list[WorkItem]:
    """Worklist rows for files, folders and batch output folders, in the order found."""
    items: list[WorkItem] = []
    plain = []
    for item in inputs:
        path = Path(item)
        if is_batch_folder(path):
            items.extend(batch_items(path))
        else:
            plain.append(path)
    for found in expand_inputs(plain):
        if isinstance(found, InputError):
            items.append(WorkItem(Path(found.path), 0, found.reason))
            continue
        try:
            items.append(WorkItem(found, frame_count(found)))
        except InputError as error:
            items.append(WorkItem(found, 0, error.reason))
    return items


def batch_items(folder: Path) -> list[WorkItem]:
    """The files a batch run analysed, with their rows (scores, decisions, masks) by frame."""
    by_file: dict[str, WorkItem] = {}
    with open(folder / "results.csv", newline="", encoding="utf-8", errors="replace") as handle:
        for row in csv.DictReader(handle):
            try:
                index = int(row["frame"])
                float(row["malignancy_probability"])
            except (KeyError, ValueError, TypeError):
                continue  # a row cut short by a killed run: the rest of the folder opens
            item = by_file.setdefault(row["file"], WorkItem(Path(row["file"]), 0, batch_root=folder))
            item.batch_rows[index] = row
            item.frames = max(item.frames, index + 1)
    for item in by_file.values():
        if not item.path.is_absolute() and not item.path.exists():
            # a relative path as the batch command was given it: try beside the batch folder
            beside = folder.parent / item.path
            if beside.exists():
                item.path = beside
        if not item.path.exists():
            item.error = "source file of this batch row is no longer there"
    return list(by_file.values())
