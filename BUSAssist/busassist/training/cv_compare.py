"""Paired, fold-by-fold comparison of two cross-validations of different training recipes.

The fixed validation split has 78 labelled images, too few to see the 0.01-0.03 gains a loss
change may bring (twice such a gain reversed on test). Two `busassist-train cv` runs with the
same seed, folds and data train on identical parts, so the fold-by-fold differences cancel most
of the variation between folds: their mean and standard error say whether a recipe is better.
The comparison refuses runs whose folds are not the same partition.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from busassist.training.operating_check import nan_mean_se

#: Metrics compared (columns of folds.csv), all "higher is better".
COMPARED = ("acc", "sen", "spe", "auc", "dice")
#: Settings that fix the partition and the scale of the task; they must agree between the two runs.
SAME_SETTINGS = ("seed", "image_size", "data_root", "limit", "extra_train")


def _read_run(folder: Path) -> tuple[dict, list[dict]]:
    command = json.loads((folder / "command.json").read_text())
    with (folder / "folds.csv").open(newline="") as handle:
        folds = list(csv.DictReader(handle))
    return command, folds


def compare_cv(candidate: Path, reference: Path) -> dict:
    """Mean ± standard error of candidate - reference per metric, over paired folds."""
    cand_command, cand_folds = _read_run(Path(candidate))
    ref_command, ref_folds = _read_run(Path(reference))
    problems = [
        f"{key} differs ({cand_command['base_config'].get(key)!r} vs {ref_command['base_config'].get(key)!r})"
        for key in SAME_SETTINGS
        if cand_command["base_config"].get(key) != ref_command["base_config"].get(key)
    ]
    if cand_command["data_sha256"] != ref_command["data_sha256"]:
        problems.append("the data differ (data_sha256)")
    if [(f["fold"], f["n_test"]) for f in cand_folds] != [(f["fold"], f["n_test"]) for f in ref_folds]:
        problems.append("the folds differ (fold numbers or test sizes)")
    if problems:
        raise ValueError(f"{candidate} vs {reference}: not the same folds: " + "; ".join(problems))
    changed = {
        key: [ref_command["base_config"].get(key), value]
        for key, value in cand_command["base_config"].items()
        if key not in ("out_dir",) and ref_command["base_config"].get(key) != value
    }
    result: dict = {"candidate": str(candidate), "reference": str(reference), "folds": len(cand_folds)}
    result["changed_settings"] = changed  # what the recipes differ in: [reference, candidate]
    for key in COMPARED:
        differences = [float(c[key]) - float(r[key]) for c, r in zip(cand_folds, ref_folds)]
        mean, se = nan_mean_se(differences)
        result[key] = {
            "reference": float(np.mean([float(r[key]) for r in ref_folds])),
            "candidate": float(np.mean([float(c[key]) for c in cand_folds])),
            "difference": mean,
            "difference_se": se,
            "folds_better": int(sum(d > 0 for d in differences)),
        }
    return result


def format_comparison(result: dict) -> str:
    """A Markdown table of the comparison, for the terminal and the README."""
    lines = [
        f"{result['candidate']} vs {result['reference']} ({result['folds']} paired folds); "
        f"changed: {', '.join(f'{k} {v[0]} -> {v[1]}' for k, v in result['changed_settings'].items()) or 'nothing'}",
        "",
        "| metric | reference | candidate | difference ± SE | folds better |",
        "|---|---|---|---|---|",
    ]
    for key in COMPARED:
        row = result[key]
        lines.append(
            f"| {key} | {row['reference']:.3f} | {row['candidate']:.3f} | "
            f"{row['difference']:+.3f} ± {row['difference_se']:.3f} | {row['folds_better']}/{result['folds']} |"
        )
    return "\n".join(lines)
