"""``busassist-train report``: one Markdown report of a run, with its plots (matplotlib, PNG).

Reads what ``fit --export`` / ``export`` left in the run folder (history.csv,
predictions_test.csv, model_card.json, emtnet.onnx) and writes into the report folder:
ROC and precision-recall curves, the confusion matrix at the shipped threshold, training
curves, example overlays and ``report.md`` tying them together.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from busassist.constants import MODEL_FILENAME
from busassist.training.metrics import auc, confusion
from busassist.training.model_card import render_markdown
from busassist.training.reference import REFERENCE_RUNTIME
from busassist.training.tables import read_rows


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates for every distinct threshold (plus the two corners)."""
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1], [-np.inf]])
    positives, negatives = max(1, labels.sum()), max(1, (1 - labels).sum())
    tpr = np.array([np.sum((scores >= t) & (labels == 1)) / positives for t in thresholds])
    fpr = np.array([np.sum((scores >= t) & (labels == 0)) / negatives for t in thresholds])
    return fpr, tpr


def pr_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    thresholds = np.unique(scores)[::-1]
    recall, precision = [], []
    for t in thresholds:
        tp, fp, _, fn = confusion(labels, scores, t)
        recall.append(tp / max(1, tp + fn))
        precision.append(tp / max(1, tp + fp))
    return np.array(recall), np.array(precision)


def plot_curves(labels: np.ndarray, scores: np.ndarray, out: Path) -> None:
    plt = _plt()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    fpr, tpr = roc_points(labels, scores)
    left.plot(fpr, tpr, marker=".")
    left.plot([0, 1], [0, 1], linestyle=":", color="grey")
    left.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC (test), AUC {auc(labels, scores):.3f}")
    recall, precision = pr_points(labels, scores)
    right.plot(recall, precision, marker=".")
    right.axhline(labels.mean(), linestyle=":", color="grey", label="prevalence")
    right.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall (test)")
    right.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def plot_confusion(labels: np.ndarray, scores: np.ndarray, threshold: float, out: Path) -> None:
    plt = _plt()
    tp, fp, tn, fn = confusion(labels, scores, threshold)
    matrix = np.array([[tn, fp], [fn, tp]])
    figure, axis = plt.subplots(figsize=(4, 3.6))
    axis.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        axis.text(j, i, str(value), ha="center", va="center", fontsize=14)
    axis.set_xticks([0, 1], ["benign", "suspicious"])
    axis.set_yticks([0, 1], ["benign", "malignant"])
    axis.set(xlabel="model", ylabel="truth", title=f"Test confusion at p >= {threshold:.2f}")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def plot_training(history: list[dict[str, str]], out: Path) -> None:
    plt = _plt()
    epochs = [int(row["epoch"]) for row in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(epochs, [float(row["train_loss"]) for row in history], marker=".")
    left.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    for key in ("val_auc", "val_acc", "val_dice"):
        if key in history[0]:
            right.plot(epochs, [float(row[key] or "nan") for row in history], marker=".", label=key[4:].upper())
    right.set(xlabel="epoch", title="Validation")
    right.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def plot_examples(run: Path, data_root: Path, predictions: list[dict[str, str]], out: Path, count: int = 6) -> None:
    """Test images with the expert outline (green) and the model's (red): best, median and worst Dice."""
    from busassist.core.inference import Analyzer
    from busassist.training.busi import discover, load_image, load_mask

    plt = _plt()
    lesion = sorted((r for r in predictions if int(r["label"]) >= 0), key=lambda r: float(r["dice"]))
    if not lesion:
        return
    picks = [lesion[int(i)] for i in np.linspace(0, len(lesion) - 1, min(count, len(lesion)))]
    cases = {case.key: case for case in discover(data_root)}
    analyzer = Analyzer(run / MODEL_FILENAME, verify=False, backend=REFERENCE_RUNTIME)
    figure, axes = plt.subplots(1, len(picks), figsize=(3 * len(picks), 3.2))
    for axis, row in zip(np.atleast_1d(axes), picks):
        case = cases[row["image"]]
        image = load_image(case)
        truth = load_mask(case, image.shape[:2])
        result = analyzer.analyze(image)
        axis.imshow(image, cmap="gray")
        axis.contour(truth, levels=[0.5], colors="lime", linewidths=1)
        if result.mask.any():
            axis.contour(result.mask > 0, levels=[0.5], colors="red", linewidths=1)
        label = "malignant" if int(row["label"]) == 1 else "benign"
        axis.set_title(f"{label}, p={result.probability:.2f}\nDice {float(row['dice']):.2f}", fontsize=8)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def write_report(run: Path, out: Path, data_root: Path) -> Path:
    """Collect a run's figures and card into ``out/report.md``."""
    run, out = Path(run), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    card = json.loads((run / "model_card.json").read_text())
    predictions = read_rows(run / "predictions_test.csv")
    labelled = [r for r in predictions if int(r["label"]) >= 0]
    labels = np.array([int(r["label"]) for r in labelled])
    scores = np.array([float(r["probability"]) for r in labelled])
    threshold = card["decision_threshold"]["threshold"]
    plot_curves(labels, scores, out / "roc_pr.png")
    plot_confusion(labels, scores, threshold, out / "confusion.png")
    plot_training(read_rows(run / "history.csv"), out / "training.png")
    plot_examples(run, data_root, predictions, out / "examples.png")
    command = json.loads((run / "command.json").read_text()) if (run / "command.json").exists() else None
    lines = [
        f"# BUSAssist run report: {run.name}",
        "",
        f"Device: {card['training']['device']} ({card['training']['machine']}).",
        f"Command line: `{' '.join(command['argv'])}`." if command else f"Command: `{card['training']['command']}`.",
        "",
        "![ROC and precision-recall](roc_pr.png)",
        "",
        "![Confusion matrix](confusion.png) ![Training curves](training.png)",
        "",
        "Examples (test split; green = expert mask, red = model), ordered from worst to best Dice:",
        "",
        "![Examples](examples.png)",
        "",
        render_markdown(card).replace("# Model card", "## Model card", 1),
    ]
    if (run / "int8_comparison.json").exists():
        lines += int8_lines(json.loads((run / "int8_comparison.json").read_text()))
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def int8_lines(figures: dict) -> list[str]:
    """The int8 model beside the fp32 one (``busassist-train quantize``), and whether it ships."""
    fp32, int8 = figures["fp32"], figures["int8"]
    limit = figures["max_drop"]
    verdict = (
        "ships as the default"
        if figures["ship_int8"]
        else f"does not ship (the rule: AUC and Dice each drop by at most {limit:g} on validation and on test)"
    )
    calibration = figures.get("calibration") or {}
    speed_up = fp32["network_ms"] / int8["network_ms"]
    lines = [
        "",
        "## int8 model (`busassist-train quantize`)",
        "",
        f"Static quantisation (QDQ, per-channel int8 weights), calibrated with the "
        f"{calibration.get('method', '?')} method on {calibration.get('images', '?')} training images.",
        f"Size {fp32['size_mb']:.1f} MB → {int8['size_mb']:.1f} MB; network time (median, timed in alternation) "
        f"{fp32['network_ms']:.1f} ms → {int8['network_ms']:.1f} ms ({speed_up:.2f}× faster)"
        + (f" on {figures['cpu']} ({figures.get('cpu_isa') or 'ISA unknown'})." if figures.get("cpu") else "."),
        "",
        "| split | model | AUC | Dice | normal images: no lesion |",
        "|---|---|---|---|---|",
    ]
    for part in ("validation", "test"):
        for name in ("fp32", "int8"):
            scores = figures[part][name]
            normal = "-" if scores["normal_no_lesion"] is None else f"{scores['normal_no_lesion'] * 100:.0f} %"
            lines.append(f"| {part} | {name} | {scores['auc']:.4f} | {scores['dice']:.4f} | {normal} |")
    drops = ", ".join(
        f"{part}: AUC drop {figures[part]['auc_drop']:+.4f}, Dice drop {figures[part]['dice_drop']:+.4f}"
        for part in ("validation", "test")
    )
    return lines + ["", f"{drops}. The int8 model {verdict}."]
