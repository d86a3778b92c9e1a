"""One Markdown report over the paper's experiments (cv, sweep-wp, grid, ablation).

Each experiment command leaves its tables, plots and ``command.json`` in its own folder under
``runs/`` beside gigabytes of checkpoints. This gathers the small, readable part of each into
one folder (for ``reports/``, readable on GitHub) and writes a README that states how every
figure was made: command, preset, device, threads and seconds per epoch.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from busassist.training.operating_check import METRICS

#: Files an experiment folder contributes to the report (checkpoints never).
ARTEFACTS = (
    "command.json",
    "cv.json",
    "folds.csv",
    "sweep_wp.csv",
    "sweep_wp.png",
    "operating_check.csv",
    "operating_check.json",
    "sweep_vs_threshold.png",
    "grid.csv",
    "grid.png",
    "ablation.csv",
    "ablation.md",
)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _pct(value: float | str) -> str:
    return f"{float(value) * 100:.1f}"


def training_speed(folder: Path) -> list[dict]:
    """Seconds per epoch of every training under ``folder``, grouped by task, size and threads."""
    groups: dict[tuple, list[float]] = {}
    for history in sorted(folder.rglob("history.csv")):
        record = json.loads((history.parent / "config.json").read_text())
        config = record["config"]
        key = (config["task"], config["image_size"], record["device"], record.get("threads"))
        groups.setdefault(key, []).extend(float(row["seconds"]) for row in _read_csv(history))
    return [
        {
            "task": task,
            "image_size": size,
            "device": device,
            "threads": threads,
            "epochs": len(seconds),
            "median_s_per_epoch": float(np.median(seconds)),
        }
        for (task, size, device, threads), seconds in groups.items()
    ]


def best_validation_score(run: Path) -> float:
    """The run's best validation selection score (AUC + Dice for EMT-Net): what may pick a setting."""
    return max(float(row["val_score"]) for row in _read_csv(run / "history.csv"))


def _command_line(folder: Path) -> str:
    record = json.loads((folder / "command.json").read_text())
    arguments = " ".join(record["argv"][1:])
    return f"`busassist-train {arguments}` (code {record['code_version']}, data {record['data_sha256'][:8]})"


def _cv_section(folder: Path) -> list[str]:
    summary = json.loads((folder / "cv.json").read_text())
    cells = []
    for key in ("acc", "sen", "spe", "auc", "dice", "iou"):
        mean, sd = summary.get(f"{key}_mean"), summary.get(f"{key}_sd")
        if mean is None:
            cells.append("-")
        elif key in ("acc", "sen", "spe"):
            cells.append(f"{mean * 100:.1f} ± {sd * 100:.1f} %")
        else:
            cells.append(f"{mean:.3f} ± {sd:.3f}")
    return [
        "## Cross-validation (paper 3.2): EMT-Net, K = 4",
        "",
        _command_line(folder),
        "",
        "Mean ± SD over the 4 test parts (75 / 12.5 / 12.5, near-duplicate groups kept whole).",
        "",
        "| ACC | SEN | SPE | AUC | Dice | IoU |",
        "|---|---|---|---|---|---|",
        "| " + " | ".join(cells) + " |",
        "",
        "Per fold: [`cv/folds.csv`](cv/folds.csv).",
        "",
    ]


def _sweep_section(folder: Path) -> list[str]:
    rows = _read_csv(folder / "sweep_wp.csv")
    lines = [
        "## W_p sweep (paper Fig. 2): Single-CLF, K = 4",
        "",
        _command_line(folder),
        "",
        "![sweep](sweep-wp/sweep_wp.png)",
        "",
        "| W_p | ACC | SEN | SPE | AUC |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {float(row['w_p']):g} | {_pct(row['acc_mean'])} ± {_pct(row['acc_sd'])} | "
            f"{_pct(row['sen_mean'])} ± {_pct(row['sen_sd'])} | {_pct(row['spe_mean'])} ± {_pct(row['spe_sd'])} | "
            f"{float(row['auc_mean']):.3f} |"
        )
    check_path = folder / "operating_check.json"
    if check_path.exists():
        check = json.loads(check_path.read_text())
        summary = check["summary"]
        reference = check["reference_w_p"]
        lines += [
            "",
            "### Does thresholding one model equal training at W_p? (the slider's claim)",
            "",
            f"The W_p = {reference:g} fold models, thresholded at W_p / (W_p + W') = {reference:g} / "
            f"({reference:g} + W'), against the models trained at W_p = W' on the same test parts "
            "(trained minus thresholded, percentage points):",
            "",
            "![check](sweep-wp/sweep_vs_threshold.png)",
            "",
            "| W_p = W' | threshold | ACC trained / thresholded | SEN trained / thresholded | "
            "SPE trained / thresholded |",
            "|---|---|---|---|---|",
        ]
        for pair in check["pairs"]:
            cells = [f"{pair[f'{k}_trained'] * 100:.1f} / {pair[f'{k}_thresholded'] * 100:.1f}" for k in METRICS]
            lines.append(f"| {pair['w_p']:g} | {pair['threshold']:.3f} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "| | ACC | SEN | SPE |",
            "|---|---|---|---|",
            "| mean abs. difference (pp) | "
            + " | ".join(f"{summary[f'{k}_mean_abs_difference_pp']:.1f}" for k in METRICS)
            + " |",
            "| max abs. difference (pp) | "
            + " | ".join(f"{summary[f'{k}_max_abs_difference_pp']:.1f}" for k in METRICS)
            + " |",
            "| mean fold SD of the trained models (pp) | "
            + " | ".join(f"{summary[f'{k}_mean_fold_sd_pp']:.1f}" for k in METRICS)
            + " |",
        ]
    lines.append("")
    return lines


def _grid_section(folder: Path) -> list[str]:
    rows = _read_csv(folder / "grid.csv")
    for row in rows:
        run = folder / f"wclf-{float(row['w_clf']):g}_wp-{float(row['w_p']):g}"
        has_history = (run / "history.csv").exists()
        row["val_score"] = f"{best_validation_score(run):.4f}" if has_history else ""
    lines = [
        "## W_clf × W_p grid (paper 3.4): EMT-Net, fixed 70/15/15 split",
        "",
        _command_line(folder),
        "",
        "![grid](grid/grid.png)",
        "",
        "Test-part figures at threshold 0.5. `val AUC+Dice` is the best validation selection score of "
        "each training: the only column a setting may be chosen on (choosing on the test columns would "
        "tune on the test split).",
        "",
        "| W_clf | W_p | ACC | SEN | SPE | AUC | Dice | val AUC+Dice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {float(row['w_clf']):g} | {float(row['w_p']):g} | {_pct(row['acc'])} | {_pct(row['sen'])} | "
            f"{_pct(row['spe'])} | {float(row['auc']):.3f} | {float(row['dice']):.3f} | {row['val_score']} |"
        )
    scored = [row for row in rows if row["val_score"]]
    if scored:
        best = max(scored, key=lambda row: float(row["val_score"]))
        lines += [
            "",
            f"Best on validation: W_clf = {float(best['w_clf']):g}, W_p = {float(best['w_p']):g} "
            f"(val AUC+Dice {best['val_score']}).",
        ]
    lines.append("")
    return lines


def _ablation_section(folder: Path) -> list[str]:
    return [
        "## Ablation (paper Table 1): EMT-Net vs Single-CLF vs Single-SGM, fixed split",
        "",
        _command_line(folder),
        "",
        (folder / "ablation.md").read_text().rstrip(),
        "",
    ]


def _speed_section(folders: dict[str, Path]) -> list[str]:
    lines = [
        "## Trainer speed",
        "",
        "Median seconds per epoch (training + validation) over every epoch of every training.",
        "",
        "| experiment | task | input | device | threads | epochs | s / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, folder in folders.items():
        for row in training_speed(folder):
            lines.append(
                f"| {name} | {row['task']} | {row['image_size']} px | {row['device']} | {row['threads']} | "
                f"{row['epochs']} | {row['median_s_per_epoch']:.1f} |"
            )
    lines.append("")
    return lines


SECTIONS = {"cv": _cv_section, "sweep-wp": _sweep_section, "grid": _grid_section, "ablation": _ablation_section}


def write_experiments_report(out: Path, folders: dict[str, Path], preamble: str = "") -> Path:
    """Copy each experiment's small artefacts into ``out/<name>/`` and write ``out/README.md``."""
    out.mkdir(parents=True, exist_ok=True)
    present = {name: Path(f) for name, f in folders.items() if f and Path(f, "command.json").exists()}
    lines = ["# The paper's experiments", ""]
    if preamble:
        lines += [preamble.strip(), ""]
    for name, folder in present.items():
        target = out / name
        target.mkdir(exist_ok=True)
        for artefact in ARTEFACTS:
            if (folder / artefact).exists():
                shutil.copy2(folder / artefact, target / artefact)
        lines += SECTIONS[name](folder)
    lines += _speed_section(present)
    readme = out / "README.md"
    readme.write_text("\n".join(lines))
    return readme
