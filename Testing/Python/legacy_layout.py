"""Writers of the experiment folders made before study specs (``busassist-train cv/sweep-wp/grid``).

Those verbs are gone: ``study run`` runs the paper's experiments from spec files. Their folders remain
on disk and in committed reports, and ``tools cv-rescore`` and ``tools experiments-report`` still read
them, so these tests need real folders of that layout: these are the old runners, kept here (not in
the package) to write them with tiny trainings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from busassist.constants import MODEL_CARD_JSON, W_P
from busassist.core.model_store import bundled_models_dir
from busassist.training.experiments import Progress, _write_folds, plot_grid, train_and_score
from busassist.training.operating_check import check_sweep
from busassist.training.tables import write_csv
from busassist.training.trainer import TrainConfig

SWEEP_WP = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)
GRID_VALUES = (1.0, 1.5, 2.0, 2.5, 3.0)


def cross_validate(
    config: TrainConfig, out: Path, folds: int = 4, progress: Progress | None = None
) -> dict[str, float]:
    """K-fold cross-validation of one configuration; folds run (and resume) one after another."""
    progress = progress or Progress(folds)
    rows = []
    for fold in range(folds):
        fold_config = replace(config, out_dir=str(out / f"fold-{fold}"), folds=folds, fold=fold)
        rows.append({"fold": fold, **train_and_score(fold_config, progress)})
    return _write_folds(out, rows)


def sweep_wp(
    config: TrainConfig,
    out: Path,
    values: tuple[float, ...] = SWEEP_WP,
    folds: int = 4,
    reference_wp: float = W_P,
    shipped_card: Path | None = None,
) -> list[dict]:
    """Fig. 2: Single-CLF cross-validated at each W_p; mean ACC/SEN/SPE per W_p and a plot.

    When ``reference_wp`` is one of the swept values, the sweep also checks the slider's claim
    (``operating_check``): the reference W_p's fold models thresholded at W' = W_p against the
    models trained at W_p.
    """
    rows = []
    progress = Progress(len(values) * folds)
    for w_p in values:
        summary = cross_validate(replace(config, task="single-clf", w_p=w_p), out / f"wp-{w_p:g}", folds, progress)
        rows.append({"w_p": w_p, **summary})
        write_csv(out / "sweep_wp.csv", rows)
    plot_sweep(rows, out / "sweep_wp.png")
    if reference_wp in values:
        card = shipped_card if shipped_card is not None else bundled_models_dir() / MODEL_CARD_JSON
        check_sweep(out, rows, reference_wp, folds, card)
    return rows


def grid(config: TrainConfig, out: Path, values: tuple[float, ...] = GRID_VALUES) -> list[dict]:
    """Section 3.4: EMT-Net over W_clf x W_p on the fixed 70/15/15 split; table and heat maps."""
    rows = []
    progress = Progress(len(values) ** 2)
    for w_clf in values:
        for w_p in values:
            run = replace(config, task="emtnet", w_clf=w_clf, w_p=w_p, out_dir=str(out / f"wclf-{w_clf:g}_wp-{w_p:g}"))
            rows.append({"w_clf": w_clf, "w_p": w_p, **train_and_score(run, progress)})
            write_csv(out / "grid.csv", rows)
    plot_grid(rows, values, out / "grid.png")
    return rows


def plot_sweep(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    w_p = [row["w_p"] for row in rows]
    for key, label in (("acc", "ACC"), ("sen", "SEN"), ("spe", "SPE")):
        mean = np.array([row[f"{key}_mean"] for row in rows])
        sd = np.array([row[f"{key}_sd"] for row in rows])
        axis.errorbar(w_p, mean * 100, yerr=sd * 100, marker="o", capsize=3, label=label)
    axis.axvline(W_P, color="grey", linestyle=":", label=f"shipped W_p = {W_P:g}")
    axis.set_xlabel("W_p (positive weight of NS-WBCE)")
    axis.set_ylabel("K-fold mean (%)")
    axis.set_title("Single-CLF: ACC / SEN / SPE against W_p (paper Fig. 2)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
