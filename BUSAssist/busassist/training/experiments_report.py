"""One Markdown report over the paper's experiments (cv, sweep-wp, grid, ablation).

Each experiment command leaves its tables, plots and ``command.json`` in its own folder under
``runs/`` beside gigabytes of checkpoints. This gathers the small, readable part of each into
one folder (for ``reports/``, readable on GitHub) and writes a README that states how every
figure was made: command, preset, device, threads and seconds per epoch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from busassist.training.operating_check import METRICS
from busassist.training.tables import read_rows, seconds_per_epoch

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


def _pct(value: float | str) -> str:
    return f"{float(value) * 100:.1f}"


def training_speed(folder: Path) -> list[dict]:
    """Seconds per epoch of the trainings under ``folder``, grouped by task, input size and threads.

    Each training contributes its median epoch (``tables.seconds_per_epoch``, the figure its
    ``metrics.json`` records); a group reports the median over its trainings.
    """
    groups: dict[tuple, list[float]] = {}
    for history in sorted(folder.rglob("history.csv")):
        record = json.loads((history.parent / "config.json").read_text())
        config = record["config"]
        key = (config["task"], config["image_size"], record["device"], record.get("threads"))
        groups.setdefault(key, []).append(seconds_per_epoch(history.parent))
    return [
        {
            "task": task,
            "image_size": size,
            "device": device,
            "threads": threads,
            "trainings": len(seconds),
            "median_s_per_epoch": float(np.median(seconds)),
        }
        for (task, size, device, threads), seconds in groups.items()
    ]


def best_validation_score(run: Path) -> float:
    """The run's best validation selection score (AUC + Dice for EMT-Net): what may pick a setting."""
    return max(float(row["val_score"]) for row in read_rows(run / "history.csv"))


def _command_line(folder: Path) -> str:
    record = json.loads((folder / "command.json").read_text())
    arguments = " ".join(record["argv"][1:])
    return f"`busassist-train {arguments}` (code {record['code_version']}, data {record['data_sha256'][:8]})"


def _cv_section(folder: Path) -> list[str]:
    summary = json.loads((folder / "cv.json").read_text())
    folds = len(read_rows(folder / "folds.csv"))
    task = json.loads((folder / "command.json").read_text())["base_config"]["task"]
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
        f"## Cross-validation (paper 3.2): {task}, K = {folds}",
        "",
        _command_line(folder),
        "",
        f"Mean ± SD over the {folds} test parts (near-duplicate groups kept whole).",
        "",
        "| ACC | SEN | SPE | AUC | Dice | IoU |",
        "|---|---|---|---|---|---|",
        "| " + " | ".join(cells) + " |",
        "",
        "Per fold: [`cv/folds.csv`](cv/folds.csv).",
        "",
    ]


def _sweep_section(folder: Path) -> list[str]:
    rows = read_rows(folder / "sweep_wp.csv")
    folds = len(list(folder.glob(f"wp-{float(rows[0]['w_p']):g}/fold-*")))
    lines = [
        f"## W_p sweep (paper Fig. 2): Single-CLF, K = {folds}",
        "",
        _command_line(folder),
        "",
        "![sweep](sweep-wp/sweep_wp.png)",
        "",
        "Mean ± SD over the folds' test parts, threshold 0.5.",
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
        lines += _check_lines(json.loads(check_path.read_text()))
    lines.append("")
    return lines


def _number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _check_lines(check: dict) -> list[str]:
    """The slider check: paired per-fold differences, trained minus thresholded."""
    summary, reference = check["summary"], check["reference_w_p"]
    lines = [
        "",
        "### Does thresholding one model equal training at W_p? (the slider's claim)",
        "",
        f"On each fold, the model trained at W_p = W' against the W_p = {reference:g} model of the same fold "
        f"thresholded at {reference:g} / ({reference:g} + W'), on the same test images. Cells: trained / "
        "thresholded (%), then their paired difference ± its standard error (percentage points).",
        "",
        "![check](sweep-wp/sweep_vs_threshold.png)",
        "",
        "| W_p = W' | threshold | ACC | SEN | SPE | ΔACC | ΔSEN | ΔSPE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pair in check["pairs"]:
        cells = [f"{pair[f'{k}_trained'] * 100:.1f} / {pair[f'{k}_thresholded'] * 100:.1f}" for k in METRICS]
        cells += [f"{_number(pair[f'{k}_difference_pp'])} ± {_number(pair[f'{k}_difference_se_pp'])}" for k in METRICS]
        lines.append(f"| {pair['w_p']:g} | {pair['threshold']:.3f} | " + " | ".join(cells) + " |")
    compared = summary["compared_values"]
    lines += [
        "",
        f"Over the {compared} W_p values other than {reference:g} (where the two are the same model):",
        "",
        "| | ACC | SEN | SPE |",
        "|---|---|---|---|",
        "| mean abs. difference (pp) | "
        + " | ".join(_number(summary[f"{k}_mean_abs_difference_pp"]) for k in METRICS)
        + " |",
        "| max abs. difference (pp) | "
        + " | ".join(_number(summary[f"{k}_max_abs_difference_pp"]) for k in METRICS)
        + " |",
        "| mean standard error (pp) | " + " | ".join(_number(summary[f"{k}_mean_se_pp"]) for k in METRICS) + " |",
        f"| within 2 SE of zero (of {compared}) | "
        + " | ".join(str(summary[f"{k}_within_2se"]) for k in METRICS)
        + " |",
    ]
    return lines


def _grid_section(folder: Path) -> list[str]:
    rows = read_rows(folder / "grid.csv")
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
        "Seconds per epoch (training + validation): each training's median epoch, then the median over trainings.",
        "",
        "| experiment | task | input | device | threads | trainings | s / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, folder in folders.items():
        for row in training_speed(folder):
            lines.append(
                f"| {name} | {row['task']} | {row['image_size']} px | {row['device']} | {row['threads']} | "
                f"{row['trainings']} | {row['median_s_per_epoch']:.1f} |"
            )
    lines.append("")
    return lines


SECTIONS = {"cv": _cv_section, "sweep-wp": _sweep_section, "grid": _grid_section, "ablation": _ablation_section}
#: The file an experiment writes when it has finished (``command.json`` is written at its start).
RESULT_FILE = {"cv": "cv.json", "sweep-wp": "sweep_wp.png", "grid": "grid.png", "ablation": "ablation.md"}


def write_experiments_report(out: Path, folders: dict[str, Path], preamble: str = "") -> Path:
    """Copy each experiment's small artefacts into ``out/<name>/`` and write ``out/README.md``."""
    out.mkdir(parents=True, exist_ok=True)
    present = {name: Path(f) for name, f in folders.items() if f and Path(f, "command.json").exists()}
    lines = ["# The paper's experiments", ""]
    if preamble:
        lines += [preamble.strip(), ""]
    for name, folder in list(present.items()):
        if not (folder / RESULT_FILE[name]).exists():
            lines += [f"## {name}", "", f"Not finished: `{folder}` has no `{RESULT_FILE[name]}` yet.", ""]
            del present[name]
            continue
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
