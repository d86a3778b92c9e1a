"""The three-seed table of the EMA study when seed 42 comes from the pilot (PLAN.md's fallback).

Usage (from the checkout that holds the runs):
    python reports/ema-seed-spread/compose.py runs/ema-seed-spread runs/ema-42 OUT_FOLDER

Seeds 1 and 2 are the study's own rows (``study.csv``: the trainer's evaluation of each kept network
on the 93 test images). Seed 42's EMA row is the same evaluation of the pilot's kept average
(``runs/ema-42``, code 5a8ee88: the same code path but for the trained network's extra validation
pass, which draws no random numbers). Seed 42's best-epoch row is the pinned study's
(``reports/seed-spread-pinned-full/study.csv``): the same trajectory, history equal in every digit to
the flushed seed-42 run's (``reports/flushed-recipe``), whose card equals it in every figure.
Writes ``study.csv`` and ``summary.csv`` (mean, SD, min, max per variant) to OUT_FOLDER.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from busassist.training.experiments import test_metrics
from busassist.training.study import summarise_variants
from busassist.training.tables import write_csv
from busassist.training.trainer import TrainConfig

PINNED_STUDY = Path(__file__).resolve().parents[1] / "seed-spread-pinned-full" / "study.csv"


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def main(study: Path, pilot: Path, out: Path) -> None:
    own = [row for row in rows(study / "study.csv") if row["replicate"] in ("seed-1", "seed-2")]
    config = TrainConfig(**json.loads((pilot / "config.json").read_text())["config"])
    ema_42 = {"variant": "keep-ema", "keep": "ema", "replicate": "seed-42", **test_metrics(config, pilot)}
    best_42 = next(row for row in rows(PINNED_STUDY) if row["replicate"] == "seed-42")
    best_42 = {**best_42, "variant": "keep-best", "keep": "best"}
    table = [*own, best_42, ema_42]
    table.sort(key=lambda row: (row["variant"], row["replicate"]))
    write_csv(out / "study.csv", table)
    write_csv(out / "summary.csv", summarise_variants(table))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
