"""CSV tables of the trainer and its experiments: one writer, one reader, and per-epoch timing."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows of dicts as CSV; the header is the union of keys in first-seen order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def seconds_per_epoch(run: Path) -> float:
    """Median wall-clock seconds of one epoch (training + validation) from a run's history.csv.

    The median, because a shared machine adds occasional slow epochs that say nothing about
    the trainer.
    """
    seconds = [float(row["seconds"]) for row in read_rows(Path(run) / "history.csv")]
    return float(np.median(seconds)) if seconds else float("nan")
