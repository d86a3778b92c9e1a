"""Evaluation metrics with bootstrap confidence intervals (numpy only).

Classification: ACC, SEN, SPE, PPV, NPV at a threshold, and AUC (Mann-Whitney statistic).
Segmentation: Dice and IoU per image. Intervals are percentile bootstraps over images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """(TP, FP, TN, FN) of ``score >= threshold`` against binary labels."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    tn = int(np.sum(~predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    return tp, fp, tn, fn


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    tp, fp, tn, fn = confusion(labels, scores, threshold)
    return {
        "acc": _ratio(tp + tn, tp + fp + tn + fn),
        "sen": _ratio(tp, tp + fn),
        "spe": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve as the probability a positive outranks a negative (ties half)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = scores[labels], scores[~labels]
    if positives.size == 0 or negatives.size == 0:
        return float("nan")
    order = np.argsort(np.concatenate([positives, negatives]), kind="mergesort")
    ranks = np.empty(order.size, dtype=np.float64)
    ranks[order] = np.arange(1, order.size + 1)
    combined = np.concatenate([positives, negatives])
    for value in np.unique(combined):  # average ranks of ties
        tied = combined == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    rank_sum = ranks[: positives.size].sum()
    return float((rank_sum - positives.size * (positives.size + 1) / 2) / (positives.size * negatives.size))


def dice_iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two binary masks (both empty counts as a perfect 1.0)."""
    predicted, truth = np.asarray(predicted).astype(bool), np.asarray(truth).astype(bool)
    intersection = np.sum(predicted & truth)
    total = predicted.sum() + truth.sum()
    union = np.sum(predicted | truth)
    if total == 0:
        return 1.0, 1.0
    return float(2 * intersection / total), float(intersection / union)


def bootstrap_values(
    statistic: Callable[[np.ndarray], float], count: int, resamples: int = 2000, seed: int = 0
) -> np.ndarray:
    """``statistic(indices)`` on each of ``resamples`` resamples (with replacement) of ``count`` items, NaN kept.

    The one place the resamples are drawn, so that a figure counted per resample (how often a rule holds,
    reports/int8-rule-resolution) sees exactly the draws behind ``bootstrap_interval``.
    """
    rng = np.random.default_rng(seed)
    return np.array([statistic(rng.integers(0, count, count)) for _ in range(resamples)], dtype=float)


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    count: int,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``count`` items (undefined resamples left out)."""
    values = bootstrap_values(statistic, count, resamples, seed)
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def classification_report(
    labels: np.ndarray, scores: np.ndarray, threshold: float, resamples: int = 2000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Point estimates and 95 % bootstrap intervals of ACC/SEN/SPE/PPV/NPV/AUC."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    point = classification_metrics(labels, scores, threshold)
    point["auc"] = auc(labels, scores)
    report = {}
    for name, value in point.items():
        if name == "auc":

            def stat(ix: np.ndarray) -> float:
                return auc(labels[ix], scores[ix])
        else:

            def stat(ix: np.ndarray, name: str = name) -> float:
                return classification_metrics(labels[ix], scores[ix], threshold)[name]

        low, high = bootstrap_interval(stat, len(labels), resamples, seed)
        report[name] = {"value": value, "ci_low": low, "ci_high": high}
    return report


def mean_report(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of per-image values with a bootstrap interval (used for Dice and IoU)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    low, high = bootstrap_interval(lambda ix: float(values[ix].mean()), values.size, resamples, seed)
    return {"value": float(values.mean()), "ci_low": low, "ci_high": high}
