"""The one paired comparison: by bootstrap over the same test images, or fold by fold over replicates.

Every study, recipe check and the int8 rule reads its differences from here (``busassist-train compare``
runs both forms). By images: a run's model against the shipped one on one test split, below. By folds
(``fold_paired_differences``): two cross-validations or seed studies whose replicates train on the
same parts, or a trained model against a thresholded one on the same fold.

Two models scored on the same 93 test images differ by less than either card's own interval
suggests, because the hard images are hard for both. `busassist-train compare` used to subtract
two cards' point values, which cannot say whether SEN 77.8 vs 85.2 % (two of 27 malignant images)
is a real loss. Resampling the *images*, and scoring both models on every resample, gives a
95 % interval of each difference: the figure a shipping decision should read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from busassist.constants import MODEL_CARD_JSON, MODEL_FILENAME
from busassist.training.metrics import auc, bootstrap_interval, classification_metrics
from busassist.training.reference import REFERENCE_RUNTIME

#: Metrics compared, each computed from per-image results (see ``metric``).
PAIRED_METRICS = ("acc", "sen", "spe", "auc", "dice", "lesion_found", "normal_no_lesion")


def metric(name: str, results: dict[str, np.ndarray], ix: np.ndarray, threshold: float) -> float:
    """One metric of one model on the images ``ix`` (indices may repeat: a bootstrap resample).

    ``results`` is ``evaluate.analyse_cases``'s output (labels, probabilities, dice, detected).
    """
    labels = results["labels"][ix]
    labelled, normal = labels >= 0, labels < 0
    if name in ("acc", "sen", "spe"):
        return classification_metrics(labels[labelled], results["probabilities"][ix][labelled], threshold)[name]
    if name == "auc":
        return auc(labels[labelled], results["probabilities"][ix][labelled])
    if name == "dice":
        return float(results["dice"][ix][labelled].mean()) if labelled.any() else float("nan")
    if name == "lesion_found":
        return float(results["detected"][ix][labelled].mean()) if labelled.any() else float("nan")
    if name == "normal_no_lesion":
        return float((~results["detected"][ix][normal]).mean()) if normal.any() else float("nan")
    raise ValueError(f"unknown metric {name!r}")


def paired_differences(
    new: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    new_threshold: float,
    reference_threshold: float,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """new - reference per metric, with a 95 % percentile interval over resampled images."""
    if not np.array_equal(new["labels"], reference["labels"]):
        raise ValueError("the two models' results are not for the same images in the same order")
    count = len(new["labels"])
    everything = np.arange(count)
    report = {}
    for name in PAIRED_METRICS:

        def difference(ix: np.ndarray, name: str = name) -> float:
            return metric(name, new, ix, new_threshold) - metric(name, reference, ix, reference_threshold)

        low, high = bootstrap_interval(difference, count, resamples, seed)
        report[name] = {
            "new": metric(name, new, everything, new_threshold),
            "reference": metric(name, reference, everything, reference_threshold),
            "difference": difference(everything),
            "ci_low": low,
            "ci_high": high,
        }
    return report


def nan_mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean, ignoring undefined (NaN) replicates."""
    array = np.array(values, dtype=float)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return float("nan"), float("nan")
    se = float(np.std(finite, ddof=1) / np.sqrt(finite.size)) if finite.size > 1 else float("nan")
    return float(np.mean(finite)), se


def _number(value: object) -> float:
    """A replicate's figure; an empty CSV cell (undefined in that fold, e.g. no normal image) is NaN."""
    return float(value) if value not in ("", None) else float("nan")


def fold_paired_differences(
    candidate: list[dict], reference: list[dict], metrics: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """candidate - reference per metric, paired replicate by replicate (same fold or seed, same images).

    The pairing cancels most of the variation between folds, so the noise is the standard error of the
    per-replicate differences. A replicate undefined in either side drops out of both. Metrics missing
    from either side (a single-task run has no Dice, or no ACC) are left out.
    """
    result = {}
    for key in metrics:
        if not candidate or not reference or key not in candidate[0] or key not in reference[0]:
            continue
        pairs = np.array([(_number(c[key]), _number(r[key])) for c, r in zip(candidate, reference)]).reshape(-1, 2)
        pairs = pairs[np.isfinite(pairs).all(axis=1)]
        differences = pairs[:, 0] - pairs[:, 1]
        mean, se = nan_mean_se(list(differences))
        result[key] = {
            "reference": float(np.mean(pairs[:, 1])) if len(pairs) else float("nan"),
            "candidate": float(np.mean(pairs[:, 0])) if len(pairs) else float("nan"),
            "difference": mean,
            "difference_se": se,
            "folds_better": int(np.sum(differences > 0)),
            "folds_compared": int(len(pairs)),
        }
    return result


def excludes_zero(row: dict[str, float]) -> bool:
    """A paired 95 % interval that excludes 0: a difference beyond resampling noise on these images."""
    return row["ci_low"] > 0 or row["ci_high"] < 0


def format_paired(report: dict[str, dict[str, float]], new_label: str = "this run") -> str:
    """Terminal table; an interval that excludes 0 is marked as a real difference."""
    lines = [f"{'metric':<18}{new_label:>10}{'shipped':>10}{'change':>10}   95 % interval (paired)"]
    for name, row in report.items():
        significant = excludes_zero(row)
        lines.append(
            f"{name.replace('_', ' '):<18}{row['new']:>10.3f}{row['reference']:>10.3f}{row['difference']:>+10.3f}"
            f"   [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]{'  *' if significant else ''}"
        )
    lines.append("* the interval excludes 0: a difference beyond resampling noise on these images")
    return "\n".join(lines)


def beyond_noise(report: dict[str, dict[str, float]]) -> list[str]:
    """The metrics whose paired 95 % interval excludes 0: where a rebuild does not reproduce the reference.

    ``make reproduce`` passes when this is empty: the rebuilt model is inside the shipped card's paired
    intervals on every metric (bit-identical weights are only promised on the same CPU type). Each of
    the seven metrics is tested at 95 % without a multiplicity correction, so the check leans towards
    flagging a difference, and an interval that includes 0 on ~90 test images says "no difference this
    test set can see", not "equivalent".
    """
    # an undefined figure (NaN) cannot show a reproduction either
    undefined = [name for name, row in report.items() if not np.isfinite([row["ci_low"], row["ci_high"]]).all()]
    return [name for name, row in report.items() if name in undefined or excludes_zero(row)]


#: The one rule for replacing the shipped model (docs/training.md, "Replacing the shipped model"), on the paired
#: test comparison: how far below the shipped model each point estimate may fall. Sensitivity may not fall at
#: all (each malignant test image is a patient); normal images left quiet are reported, not ruled on.
REPLACEMENT_MARGINS = {"sen": 0.0, "acc": 0.05, "spe": 0.05, "auc": 0.02, "lesion_found": 0.05}
#: A replacement's reason, when it is a better card: the paired 95 % interval of one of these lies above 0.
REPLACEMENT_GAINS = ("dice", "auc")


def replacement_failures(report: dict[str, dict[str, float]]) -> list[str]:
    """Why a candidate's card is not "better or equal" to the shipped one (empty: it is), from ``paired_differences``.

    One rule for every candidate, fixed before any is judged by it. The replacements before it were judged
    by three different rules ("nothing lower", non-inferiority margins, "no interval wholly below 0"), and
    the last of those let test sensitivity fall from 23 to 20 of 27 cancers; this rule would not have.
    An undefined figure (NaN) fails, since a rule that cannot be checked is not met. The other half of a
    replacement, a reason to change (``real_gains``, or a more stable recipe shown by a study), is reported
    beside it.
    """
    failures = []
    for name, margin in REPLACEMENT_MARGINS.items():
        difference = report[name]["difference"]
        if not difference >= -margin - 1e-12:  # NaN fails; the tolerance keeps "equal" equal
            failures.append(f"{name.replace('_', ' ')} {difference:+.3f} (at most {margin:.2f} lower)")
    return failures


def real_gains(report: dict[str, dict[str, float]]) -> list[str]:
    """The ``REPLACEMENT_GAINS`` metrics whose paired interval lies above 0: a better card, not only an equal one."""
    return [name for name in REPLACEMENT_GAINS if report[name]["ci_low"] > 0]


def compare_with_shipped(run: Path, models_dir: Path, data_root: Path) -> tuple[dict, str]:
    """Paired differences of ``run``'s exported model against the shipped one on the run's test split.

    Both models are scored afresh, as their cards were, rather than read from
    ``predictions_test.csv``, whose rounded probabilities tie small scores and shift the AUC in
    the third decimal, and whose detections follow whatever "no lesion" rule the run was exported
    with. Refuses (ValueError) when the two cards were made on different data, where pairing means
    nothing.
    """
    from busassist.core.inference import Analyzer
    from busassist.training.busi import discover
    from busassist.training.evaluate import analyse_cases

    run, models_dir = Path(run), Path(models_dir)
    new_card = json.loads((run / MODEL_CARD_JSON).read_text())
    shipped_card = json.loads((models_dir / MODEL_CARD_JSON).read_text())
    if new_card["data"]["sha256"] != shipped_card["data"]["sha256"]:
        raise ValueError(f"{run}: trained on other data than the shipped model; no paired comparison")
    keys = json.loads((run / "split.json").read_text())["test"]
    cases = {case.key: case for case in discover(Path(data_root))}
    missing = [key for key in keys if key not in cases]
    if missing:
        raise ValueError(f"{data_root}: {len(missing)} test images of the run are missing (e.g. {missing[0]})")
    test_cases = [cases[key] for key in keys]
    new = analyse_cases(Analyzer(run / MODEL_FILENAME, backend=REFERENCE_RUNTIME), test_cases)
    shipped = analyse_cases(Analyzer(models_dir / MODEL_FILENAME, backend=REFERENCE_RUNTIME), test_cases)
    report = paired_differences(
        new, shipped, new_card["decision_threshold"]["threshold"], shipped_card["decision_threshold"]["threshold"]
    )
    return report, format_paired(report)
