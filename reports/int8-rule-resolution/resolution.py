"""Step 1: every committed int8 comparison's paired intervals side by side, against the rule's 0.005.

    python reports/int8-rule-resolution/resolution.py > reports/int8-rule-resolution/intervals.md

Reads the ``int8_comparison`` JSONs the int8 reports committed (``compare_int8``'s output: the paired
engine's int8 - float32 change and its 95 % interval over resamples of the same images) and prints one
Markdown row per file and split. No model is run.

"Passes on ≈" is the share of resamples on which that metric's drop stays within the limit, read off the
interval by a normal approximation (SD = interval width / 3.92). ``verdict.py`` counts it exactly for the
files it can rebuild; on its two pairs the two agree within 0.01 for Dice and within 0.06 for AUC, whose
intervals are skewed.
"""

from __future__ import annotations

import json
from math import erf, sqrt
from pathlib import Path

REPORTS = Path(__file__).resolve().parents[1]
FOLDERS = ("int8-98770c53", "int8-fidelity-search", "int8-float-encoder", "int8-border-threshold")
METRICS = ("auc", "dice")


def comparisons() -> list[tuple[str, dict]]:
    """(report/file name, comparison) for every committed int8 comparison, in folder order."""
    found = []
    for folder in FOLDERS:
        for path in sorted((REPORTS / folder).glob("*.json")):
            figures = json.loads(path.read_text())
            if "paired_int8_minus_fp32" in figures.get("test", {}):
                found.append((f"{folder}/{path.stem}", figures))
    return found


def cell(row: dict) -> str:
    return f"{row['difference']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"


def approximate_pass_share(row: dict, limit: float) -> float:
    """P(change >= -limit) for a normal with the row's change and the SD its 95 % interval implies."""
    sd = (row["ci_high"] - row["ci_low"]) / 3.92
    return 0.5 * (1 + erf((row["difference"] + limit) / (sd * sqrt(2))))


def main() -> None:
    limit = None
    columns = ("file", "split", "AUC change [95 % interval]", "Dice change [95 % interval]", "half-widths AUC / Dice")
    print("| " + " | ".join(columns + ("passes on ≈ AUC / Dice",)) + " |")
    print("|---|---|---|---|---|---|")
    widths = {(metric, split): [] for metric in METRICS for split in ("validation", "test")}
    straddles, dice_signs = 0, {"validation": [], "test": []}
    for name, figures in comparisons():
        limit = figures["max_drop"]
        for split in ("validation", "test"):
            paired = figures[split]["paired_int8_minus_fp32"]
            halves = [(paired[m]["ci_high"] - paired[m]["ci_low"]) / 2 for m in METRICS]
            for metric, half in zip(METRICS, halves):
                widths[metric, split].append(half)
            dice_signs[split].append(paired["dice"]["difference"])
            if split == "test":  # does each test interval hold both "no change" and "the limit"?
                straddles += all(paired[m]["ci_low"] <= -limit and paired[m]["ci_high"] >= 0 for m in METRICS)
            cells = " | ".join(cell(paired[m]) for m in METRICS)
            shares = " / ".join(f"{approximate_pass_share(paired[m], limit):.2f}" for m in METRICS)
            print(f"| {name} | {split} | {cells} | {halves[0]:.4f} / {halves[1]:.4f} | {shares} |")
    print()
    files = len(dice_signs["test"])
    print(f"- test intervals holding both 0 and -{limit}, for AUC and Dice: {straddles} of {files} comparisons")
    for split, changes in dice_signs.items():
        print(f"- {split} Dice change: {min(changes):+.4f} to {max(changes):+.4f} over {files} comparisons")
    for (metric, split), halves in widths.items():
        print(f"- {split} {metric.upper()}: interval half-width {min(halves):.4f}–{max(halves):.4f}, limit {limit}")


if __name__ == "__main__":
    main()
