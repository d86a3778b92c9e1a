"""Is the slider honest? Compare models *trained* at W_p with one model *thresholded* at W' = W_p.

The threshold slider rests on one claim: training with positive weight W_p only shifts the
logit by ln W_p, so a model trained at W_ref and thresholded at W_ref / (W_ref + W') behaves
like a model trained at W_p = W'. The ``sweep-wp`` experiment trains Single-CLF at every W_p
with the same K folds, so the claim can be checked on the same test parts: the reference W_p's
fold models are thresholded at each W' and their K-fold mean SEN/SPE/ACC set beside the
trained models'. The shipped model's validation operating table (what the slider shows) is
drawn on the same figure, marked as a different network, input size and split.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from busassist.constants import threshold_for_effective_weight
from busassist.core.metrics import classification_metrics

PREDICTIONS_FILE = "test_predictions.csv"
METRICS = ("acc", "sen", "spe")


def write_test_predictions(path: Path, keys: list[str], labels: np.ndarray, probabilities: np.ndarray) -> None:
    """Per-image test-part probabilities of one training (labelled images only)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "probability"])
        for key, label, probability in zip(keys, labels, probabilities):
            writer.writerow([key, int(label), f"{probability:.6f}"])


def read_test_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return np.array([int(r["label"]) for r in rows]), np.array([float(r["probability"]) for r in rows])


def fold_test_predictions(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of a finished training on its own test part.

    Read from ``test_predictions.csv``; trainings finished before that file existed are
    predicted once from ``best.pt`` and the file is written, so a rerun costs nothing.
    """
    path = run / PREDICTIONS_FILE
    if not path.exists():
        from busassist.training.trainer import TrainConfig, load_best, load_data, predict, resolve_device

        config = TrainConfig(**json.loads((run / "config.json").read_text())["config"])
        data, split, _, cases = load_data(config)
        device = resolve_device("cpu")
        probabilities, _ = predict(load_best(run, str(device)), data, split.test, device)
        labels = data.labels[split.test]
        labelled = labels >= 0
        keys = [cases[i].key for i, keep in zip(split.test, labelled) if keep]
        write_test_predictions(path, keys, labels[labelled], probabilities[labelled])
    return read_test_predictions(path)


def thresholded_reference(reference_runs: list[Path], reference_wp: float, weights: list[float]) -> list[dict]:
    """K-fold mean and SD of ACC/SEN/SPE of the reference models thresholded at each W'."""
    folds = [fold_test_predictions(run) for run in reference_runs]
    rows = []
    for weight in weights:
        threshold = threshold_for_effective_weight(weight, reference_wp)
        per_fold = [classification_metrics(labels, probabilities, threshold) for labels, probabilities in folds]
        row: dict[str, float] = {"w_effective": weight, "threshold": threshold}
        for key in METRICS:
            values = np.array([fold[key] for fold in per_fold], dtype=float)
            row[f"{key}_mean"], row[f"{key}_sd"] = float(np.nanmean(values)), float(np.nanstd(values))
        rows.append(row)
    return rows


def compare_sweep_with_threshold(sweep_rows: list[dict], reference_rows: list[dict]) -> dict:
    """Per-W_p differences (trained minus thresholded, percentage points) and their summary."""
    by_weight = {row["w_effective"]: row for row in reference_rows}
    pairs = []
    for row in sweep_rows:
        reference = by_weight[row["w_p"]]
        pair = {"w_p": row["w_p"], "threshold": reference["threshold"]}
        for key in METRICS:
            pair[f"{key}_trained"] = row[f"{key}_mean"]
            pair[f"{key}_thresholded"] = reference[f"{key}_mean"]
            pair[f"{key}_difference_pp"] = 100 * (row[f"{key}_mean"] - reference[f"{key}_mean"])
        pairs.append(pair)
    summary = {}
    for key in METRICS:
        differences = np.array([pair[f"{key}_difference_pp"] for pair in pairs])
        summary[f"{key}_mean_abs_difference_pp"] = float(np.mean(np.abs(differences)))
        summary[f"{key}_max_abs_difference_pp"] = float(np.max(np.abs(differences)))
        # Within-fold spread of the trained models: the noise the differences should be read against.
        summary[f"{key}_mean_fold_sd_pp"] = float(100 * np.mean([row[f"{key}_sd"] for row in sweep_rows]))
    return {"pairs": pairs, "summary": summary}


def shipped_operating_table(card_path: Path) -> list[dict]:
    """The shipped model's validation operating table (W' = 1..10), empty if there is no card."""
    if not card_path.exists():
        return []
    return json.loads(card_path.read_text()).get("operating_table_validation", [])


def plot_check(
    sweep_rows: list[dict], reference_rows: list[dict], reference_wp: float, shipped: list[dict], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours = {"sen": "tab:red", "spe": "tab:blue", "acc": "tab:green"}
    for key in METRICS:
        label = key.upper()
        w_p = [row["w_p"] for row in sweep_rows]
        mean = np.array([row[f"{key}_mean"] for row in sweep_rows]) * 100
        sd = np.array([row[f"{key}_sd"] for row in sweep_rows]) * 100
        axis.errorbar(w_p, mean, yerr=sd, fmt="o", capsize=3, color=colours[key], label=f"{label}: trained at W_p")
        weights = [row["w_effective"] for row in reference_rows]
        axis.plot(
            weights,
            [row[f"{key}_mean"] * 100 for row in reference_rows],
            "-",
            color=colours[key],
            label=f"{label}: W_p={reference_wp:g} model at threshold W_p/(W_p+W')",
        )
        if shipped and key != "acc":
            axis.plot(
                [row["w_effective"] for row in shipped],
                [row[key] * 100 for row in shipped],
                ":",
                color=colours[key],
                label=f"{label}: shipped EMT-Net, validation (slider)",
            )
    axis.set_xlabel("W_p (trained)  /  W' (slider)")
    axis.set_ylabel("%")
    axis.set_title("Training at W_p vs thresholding one model at W' = W_p")
    axis.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def check_sweep(out: Path, sweep_rows: list[dict], reference_wp: float, folds: int, shipped_card: Path) -> dict:
    """Write ``operating_check.csv/.json`` and ``sweep_vs_threshold.png`` for a finished sweep."""
    from busassist.training.experiments import write_csv

    runs = [out / f"wp-{reference_wp:g}" / f"fold-{fold}" for fold in range(folds)]
    reference_rows = thresholded_reference(runs, reference_wp, [row["w_p"] for row in sweep_rows])
    comparison = compare_sweep_with_threshold(sweep_rows, reference_rows)
    comparison["reference_w_p"] = reference_wp
    write_csv(out / "operating_check.csv", comparison["pairs"])
    (out / "operating_check.json").write_text(json.dumps(comparison, indent=1) + "\n")
    plot_check(
        sweep_rows, reference_rows, reference_wp, shipped_operating_table(shipped_card), out / "sweep_vs_threshold.png"
    )
    return comparison
