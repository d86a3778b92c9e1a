"""Did a training walk the same trajectory as an earlier one (another CPU, or another keep rule)?

Usage: python trajectories.py NEW_HISTORY OLD_HISTORY [NEW OLD ...]   (history.csv files, in pairs)
Prints, per pair: the epochs compared, how many have an equal training loss to every printed digit
(the trainer writes it as a float64 repr), the first epoch that differs and the largest difference.
Equal losses at every epoch mean the same sequence of weights to within what a loss can show; the
weights themselves are compared by the model checksum where both runs kept them.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def losses(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return [row["train_loss"] for row in csv.DictReader(handle)]


def compare(new: Path, old: Path) -> str:
    a, b = losses(new), losses(old)
    n = min(len(a), len(b))
    equal = sum(x == y for x, y in zip(a[:n], b[:n]))
    first = next((i + 1 for i in range(n) if a[i] != b[i]), None)
    largest = max((abs(float(x) - float(y)) for x, y in zip(a[:n], b[:n])), default=0.0)
    where = "none" if first is None else f"epoch {first}"
    return f"{new} vs {old}: {n} epochs, {equal} equal losses, first difference: {where}, largest {largest:.3g}"


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]]
    if not paths or len(paths) % 2:
        sys.exit("usage: python trajectories.py NEW_HISTORY OLD_HISTORY [NEW OLD ...]")
    for new, old in zip(paths[::2], paths[1::2]):
        print(compare(new, old))
