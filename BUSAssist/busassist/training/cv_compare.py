"""Paired, fold-by-fold comparison of two cross-validations of different training recipes.

The fixed validation split has 78 labelled images, too few to see the 0.01-0.03 gains a loss
change may bring (twice such a gain reversed on test). Two cross-validations (study variants) with the
same seed, folds and data train on identical parts, so the fold-by-fold differences cancel most
of the variation between folds: their mean and standard error say whether a recipe is better.
The comparison refuses runs whose folds are not the same partition.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from busassist.training.paired_compare import fold_paired_differences

#: Metrics compared (columns of folds.csv), all "higher is better"; runs scored before a metric
#: existed lack its column, and it is left out.
COMPARED = ("acc", "sen", "spe", "auc", "dice", "lesion_found", "normal_no_lesion")
#: Settings that fix the partition; they must agree between the two runs (the data themselves are
#: compared by their hash, wherever they were read from). The task does not: EMT-Net against its
#: single-task halves (the paper's Table 1) compares on the metrics both have, on the same images.
SAME_SETTINGS = ("seed", "limit", "extra_train")
#: The input size is a recipe choice too, but the fold scores measure Dice on each run's own network
#: grid: runs of different sizes are compared with that caveat attached, not refused.
SCALE_CAVEAT = (
    "input sizes differ ({reference} vs {candidate} px): ACC/SEN/SPE/AUC and the lesion-found rates "
    "compare directly, but Dice is measured against masks resampled to each run's own grid"
)
#: Settings that say where or how a run was executed, not what it trained.
NOT_RECIPE = ("out_dir", "data_root", "cache_dir", "device")


def _read_run(folder: Path) -> tuple[dict, list[dict]]:
    """A cv run's command record, its settings completed with today's defaults, and its folds.

    Runs recorded before a setting existed trained with its default, so filling it in keeps an
    old reference from showing as "changed" in settings it never had.
    """
    from busassist.training.trainer import TrainConfig

    command = json.loads((folder / "command.json").read_text())
    command["base_config"] = {**asdict(TrainConfig("", "")), **command["base_config"]}
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
        raise ValueError(f"{candidate} vs {reference}: not comparable: " + "; ".join(problems))
    cand_config, ref_config = cand_command["base_config"], ref_command["base_config"]
    changed = {
        key: [ref_config.get(key), cand_config.get(key)]
        for key in sorted(set(cand_config) | set(ref_config))
        if key not in NOT_RECIPE and ref_config.get(key) != cand_config.get(key)
    }
    result: dict = {"candidate": str(candidate), "reference": str(reference), "folds": len(cand_folds)}
    result["changed_settings"] = changed  # what the recipes differ in: [reference, candidate]
    if "image_size" in changed:
        reference_size, candidate_size = changed["image_size"]
        result["caveat"] = SCALE_CAVEAT.format(reference=reference_size, candidate=candidate_size)
    # a single-task run has no Dice (single-clf) or no ACC/SEN/SPE/AUC (single-sgm): left out
    result.update(fold_paired_differences(cand_folds, ref_folds, COMPARED))
    return result


def format_comparison(result: dict) -> str:
    """A Markdown table of the comparison, for the terminal and the README."""
    lines = [
        f"{result['candidate']} vs {result['reference']} ({result['folds']} paired replicates: folds or seeds); "
        f"changed: {', '.join(f'{k} {v[0]} -> {v[1]}' for k, v in result['changed_settings'].items()) or 'nothing'}",
        *([f"Caveat: {result['caveat']}."] if "caveat" in result else []),
        "",
        "| metric | reference | candidate | difference ± SE | folds better |",
        "|---|---|---|---|---|",
    ]
    for key in (key for key in COMPARED if key in result):
        row = result[key]
        lines.append(
            f"| {key} | {row['reference']:.3f} | {row['candidate']:.3f} | "
            f"{row['difference']:+.3f} ± {row['difference_se']:.3f} | {row['folds_better']}/{row['folds_compared']} |"
        )
    return "\n".join(lines)
