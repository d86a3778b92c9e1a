"""Is the slider honest? Compare models *trained* at W_p with one model *thresholded* at W' = W_p.

The threshold slider rests on one claim: training with positive weight W_p only shifts the
logit by ln W_p, so a model trained at W_ref and thresholded at W_ref / (W_ref + W') behaves
like a model trained at W_p = W'. The ``sweep-wp`` experiment trains Single-CLF at every W_p
with the same K folds, so the claim can be checked on the same test parts: on every fold the
reference W_p's model is thresholded at W' and compared with the model trained at W_p = W'.
The comparison is paired (same fold, same images), so its noise is the standard error of the
per-fold differences, not the spread of single trainings. The shipped model's validation
operating table (what the slider shows) is drawn on the same figure, marked as a different
network, input size and split.
"""

from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from busassist.constants import threshold_for_effective_weight
from busassist.training.metrics import classification_metrics
from busassist.training.model_card import strict_json
from busassist.training.paired_compare import fold_paired_differences
from busassist.training.tables import read_rows, write_csv

PREDICTIONS_FILE = "test_predictions.csv"
METRICS = ("acc", "sen", "spe")


def write_test_predictions(path: Path, keys: list[str], labels: np.ndarray, probabilities: np.ndarray) -> None:
    """Per-image test-part probabilities of one training (labelled images only), at full precision."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "probability"])
        for key, label, probability in zip(keys, labels, probabilities):
            writer.writerow([key, int(label), repr(float(probability))])


def read_test_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = read_rows(path)
    return np.array([int(r["label"]) for r in rows]), np.array([float(r["probability"]) for r in rows])


def run_config(run: Path):
    """The TrainConfig a run recorded, ignoring keys this version no longer has."""
    from busassist.training.trainer import TrainConfig

    recorded = json.loads((run / "config.json").read_text())["config"]
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in recorded.items() if k in known})


def fold_test_predictions(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of a finished training on its own test part.

    Read from ``test_predictions.csv``; trainings finished before that file existed are
    predicted once from ``best.pt`` and the file is written, so a rerun costs nothing.
    """
    path = run / PREDICTIONS_FILE
    if not path.exists():
        from busassist.training.trainer import load_best, load_data, predict, resolve_device

        data, split, _, cases = load_data(run_config(run))
        device = resolve_device("cpu")
        probabilities, _ = predict(load_best(run, str(device)), data, split.test, device)
        labels = data.labels[split.test]
        labelled = labels >= 0
        keys = [cases[i].key for i, keep in zip(split.test, labelled) if keep]
        write_test_predictions(path, keys, labels[labelled], probabilities[labelled])
    return read_test_predictions(path)


def paired_comparison(
    out: Path, weights: list[float], reference_wp: float, folds: int, prefix: str = "wp-"
) -> list[dict]:
    """For each W_p: fold by fold, the model trained at W_p against the reference model thresholded at W'.

    Both are scored on the same test part of the same fold; a row holds the K-fold means of
    the trained and thresholded ACC/SEN/SPE and the mean and standard error of their paired
    differences (percentage points).
    """
    reference = [fold_test_predictions(out / f"{prefix}{reference_wp:g}" / f"fold-{k}") for k in range(folds)]
    rows = []
    for weight in weights:
        threshold = threshold_for_effective_weight(weight, reference_wp)
        trained = [
            json.loads((out / f"{prefix}{weight:g}" / f"fold-{k}" / "metrics.json").read_text()) for k in range(folds)
        ]
        thresholded = [classification_metrics(labels, probabilities, threshold) for labels, probabilities in reference]
        row: dict[str, float] = {"w_p": weight, "threshold": threshold}
        paired = fold_paired_differences(trained, thresholded, METRICS)  # the one fold-paired comparison
        for key in METRICS:
            row[f"{key}_trained"] = paired[key]["candidate"]
            row[f"{key}_thresholded"] = paired[key]["reference"]
            row[f"{key}_difference_pp"] = 100 * paired[key]["difference"]
            row[f"{key}_difference_se_pp"] = 100 * paired[key]["difference_se"]
        rows.append(row)
    return rows


def summarise_comparison(rows: list[dict], reference_wp: float) -> dict:
    """Mean and largest absolute difference over W_p != reference (equal there by construction).

    ``within_2se`` counts the W_p values whose difference is within two standard errors of zero.
    """
    others = [row for row in rows if row["w_p"] != reference_wp]
    summary: dict[str, float] = {"compared_values": len(others)}
    for key in METRICS:
        differences = np.array([row[f"{key}_difference_pp"] for row in others], dtype=float)
        errors = np.array([row[f"{key}_difference_se_pp"] for row in others], dtype=float)
        finite = np.isfinite(differences)
        summary[f"{key}_mean_abs_difference_pp"] = float(np.mean(np.abs(differences[finite]))) if finite.any() else None
        summary[f"{key}_max_abs_difference_pp"] = float(np.max(np.abs(differences[finite]))) if finite.any() else None
        summary[f"{key}_mean_se_pp"] = float(np.nanmean(errors)) if np.isfinite(errors).any() else None
        summary[f"{key}_within_2se"] = int(np.sum(np.abs(differences) <= 2 * errors))
    return summary


def shipped_operating_table(card_path: Path) -> list[dict]:
    """The shipped model's validation operating table (W' = 1..10), empty if there is no card."""
    if not card_path.exists():
        return []
    return json.loads(card_path.read_text()).get("operating_table_validation", [])


def plot_check(sweep_rows: list[dict], pairs: list[dict], reference_wp: float, shipped: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.5))
    colours = {"sen": "tab:red", "spe": "tab:blue", "acc": "tab:green"}
    for key in METRICS:
        label = key.upper()
        w_p = [row["w_p"] for row in sweep_rows]
        mean = np.array([row[f"{key}_mean"] for row in sweep_rows]) * 100
        sd = np.array([row[f"{key}_sd"] for row in sweep_rows]) * 100
        axis.errorbar(w_p, mean, yerr=sd, fmt="o", capsize=3, color=colours[key], label=f"{label}: trained at W_p")
        axis.plot(
            [pair["w_p"] for pair in pairs],
            [pair[f"{key}_thresholded"] * 100 for pair in pairs],
            "-",
            color=colours[key],
            label=f"{label}: W_p={reference_wp:g} model at threshold {reference_wp:g}/({reference_wp:g}+W')",
        )
        points = [(row["w_effective"], row.get(key)) for row in shipped if row.get(key) is not None]
        if points:
            axis.plot(
                [w for w, _ in points],
                [value * 100 for _, value in points],
                ":",
                color=colours[key],
                label=f"{label}: shipped EMT-Net, validation (slider)",
            )
    axis.set_xlabel("W_p (trained)  /  W' (slider)")
    axis.set_ylabel("%")
    axis.set_title("Training at W_p vs thresholding one model at W' = W_p")
    # Outside the axes: the markers fill the whole plot area.
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def check_sweep(
    out: Path, sweep_rows: list[dict], reference_wp: float, folds: int, shipped_card: Path, prefix: str = "wp-"
) -> dict:
    """Write ``operating_check.csv/.json`` and ``sweep_vs_threshold.png`` for a finished sweep."""
    pairs = paired_comparison(out, [row["w_p"] for row in sweep_rows], reference_wp, folds, prefix)
    comparison = {
        "reference_w_p": reference_wp,
        "folds": folds,
        "pairs": pairs,
        "summary": summarise_comparison(pairs, reference_wp),
    }
    write_csv(out / "operating_check.csv", pairs)
    (out / "operating_check.json").write_text(json.dumps(strict_json(comparison), indent=1) + "\n")
    plot_check(sweep_rows, pairs, reference_wp, shipped_operating_table(shipped_card), out / "sweep_vs_threshold.png")
    return comparison
