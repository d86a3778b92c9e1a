"""The review log: one verdict per frame (accepted / corrected / rejected) with reviewer, time and note.

``review_log.csv`` in the output folder, appended one row at a time under a lock and synced to disk
before the reviewer sees it recorded (write-ahead, like the batch's results.csv): a crash never
loses a verdict. The last row of a frame is its verdict; reopening the folder resumes.
"""

from __future__ import annotations

import csv
import getpass
import os
from datetime import datetime, timezone
from pathlib import Path

from busassist.core.outputs import append_row, ensure_csv, path_text

REVIEW_LOG = "review_log.csv"
VERDICTS = ("accepted", "corrected", "rejected")
COLUMNS = [
    "time",
    "reviewer",
    "file",
    "sop_instance_uid",
    "frame",
    "verdict",
    "note",
    "model_version",
    "export_key",
    "seg_path",
]


def default_reviewer() -> str:
    """The OS user (``--reviewer`` overrides it)."""
    try:
        return getpass.getuser()
    except Exception:  # no user database (containers): still a name
        return os.environ.get("USER", "reviewer")


class ReviewLog:
    """Verdicts of one output folder."""

    def __init__(self, out: str | Path, reviewer: str | None = None) -> None:
        self.path = Path(out) / REVIEW_LOG
        self.reviewer = reviewer or default_reviewer()
        ensure_csv(self.path, COLUMNS)

    def record(
        self,
        file: str | Path,
        frame: int,
        verdict: str,
        note: str = "",
        sop_instance_uid: str | None = None,
        model_version: str = "",
        export_key: str = "",
        seg_path: str = "",
    ) -> dict:
        """Append one verdict (durably: synced before returning) and return its row."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        row = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "reviewer": self.reviewer,
            "file": path_text(os.path.abspath(file)),
            "sop_instance_uid": sop_instance_uid or "",
            "frame": int(frame),
            "verdict": verdict,
            "note": " ".join(str(note).split()),
            "model_version": model_version,
            "export_key": export_key,
            "seg_path": seg_path,
        }
        append_row(self.path, COLUMNS, row)
        with open(self.path, "rb+") as handle:
            os.fsync(handle.fileno())
        return row

    def latest(self) -> dict[tuple[str, int], dict]:
        """The verdict of every reviewed frame: (absolute file, frame) -> its last row."""
        verdicts: dict[tuple[str, int], dict] = {}
        with open(self.path, newline="", encoding="utf-8", errors="replace") as handle:
            for row in csv.DictReader(handle):
                try:
                    verdicts[(row["file"], int(row["frame"]))] = row
                except (KeyError, ValueError):
                    continue  # a row cut by a crash: the rest stands
        return verdicts
