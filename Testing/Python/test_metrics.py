"""Classification and segmentation metrics and their bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from busassist.training.metrics import (
    auc,
    bootstrap_interval,
    classification_metrics,
    classification_report,
    confusion,
    dice_iou,
    mean_report,
)

# Hand-counted example at threshold 0.5 (score >= threshold is positive):
#   index   0    1    2    3    4    5    6    7
#   label   1    1    1    0    0    0    0    1
#   score  .9   .6   .3   .2   .7   .1   .5   .5
#   pred    1    1    0    0    1    0    1    1
#           TP   TP   FN   TN   FP   TN   FP   TP   -> TP 3, FP 2, TN 2, FN 1
LABELS = np.array([1, 1, 1, 0, 0, 0, 0, 1])
SCORES = np.array([0.9, 0.6, 0.3, 0.2, 0.7, 0.1, 0.5, 0.5])


def test_confusion_hand_counted() -> None:
    assert confusion(LABELS, SCORES, 0.5) == (3, 2, 2, 1)
    # Just above 0.5 the two scores equal to 0.5 flip to negative.
    assert confusion(LABELS, SCORES, 0.5001) == (2, 1, 3, 2)


def test_classification_metrics_hand_counted() -> None:
    metrics = classification_metrics(LABELS, SCORES, 0.5)
    assert metrics["acc"] == pytest.approx(5 / 8)
    assert metrics["sen"] == pytest.approx(3 / 4)
    assert metrics["spe"] == pytest.approx(2 / 4)
    assert metrics["ppv"] == pytest.approx(3 / 5)
    assert metrics["npv"] == pytest.approx(2 / 3)


def test_classification_metrics_undefined_ratios_are_nan() -> None:
    metrics = classification_metrics(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), 0.5)
    assert math.isnan(metrics["sen"])  # no positives
    assert math.isnan(metrics["ppv"])  # nothing predicted positive
    assert metrics["spe"] == 1.0 and metrics["acc"] == 1.0 and metrics["npv"] == 1.0


def _pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """O(n^2) definition: P(score_pos > score_neg) + 0.5 P(tie)."""
    positives = scores[labels.astype(bool)]
    negatives = scores[~labels.astype(bool)]
    total = 0.0
    for p in positives:
        for n in negatives:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(positives) * len(negatives))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auc_matches_pairwise_definition_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 120)
    scores = rng.integers(0, 8, 120).astype(float) + 0.7 * labels  # many ties, some signal
    assert auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", [10, 11])
def test_auc_matches_pairwise_definition_continuous(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 150)
    scores = rng.normal(size=150) + labels
    assert auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)


def test_auc_hand_counted_example() -> None:
    # Positives .9 .6 .3 .5 vs negatives .2 .7 .1 .5: wins 4+3+2+2, ties 0+0+0+1 -> 11.5 / 16.
    assert auc(LABELS, SCORES) == pytest.approx(11.5 / 16)


def test_auc_obvious_cases() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert auc(labels, np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])) == 1.0
    assert auc(labels, np.array([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])) == 0.0
    assert auc(labels, np.full(6, 0.42)) == 0.5
    assert math.isnan(auc(np.ones(4), np.arange(4.0)))


def test_dice_iou_known_values() -> None:
    predicted = np.zeros((4, 4), dtype=bool)
    truth = np.zeros((4, 4), dtype=bool)
    predicted[0, :4] = True  # 4 pixels
    truth[0, 2:] = True  # 2 pixels overlap
    truth[1, :2] = True  # 4 pixels in all
    dice, iou = dice_iou(predicted, truth)
    assert dice == pytest.approx(2 * 2 / 8)
    assert iou == pytest.approx(2 / 6)

    assert dice_iou(truth, truth) == (1.0, 1.0)
    assert dice_iou(np.zeros((3, 3)), np.zeros((3, 3))) == (1.0, 1.0)
    assert dice_iou(np.zeros((3, 3)), np.eye(3)) == (0.0, 0.0)
    assert dice_iou(np.eye(3), np.zeros((3, 3))) == (0.0, 0.0)


def test_dice_iou_accepts_probability_like_integers() -> None:
    # Nonzero counts as foreground.
    dice, iou = dice_iou(np.array([0, 255, 255]), np.array([0, 1, 0]))
    assert dice == pytest.approx(2 / 3)
    assert iou == pytest.approx(1 / 2)


def test_bootstrap_interval_contains_estimate_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(3.0, 1.0, 40)
    large = rng.normal(3.0, 1.0, 4000)
    widths = []
    for values in (small, large):
        low, high = bootstrap_interval(lambda ix, v=values: float(v[ix].mean()), values.size, resamples=400)
        assert low <= values.mean() <= high
        assert low < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 4  # ~1/sqrt(100) = 1/10 in theory

    # Width of a 95 % interval of a mean is about 2 * 1.96 * sigma / sqrt(n).
    assert widths[0] == pytest.approx(2 * 1.96 / math.sqrt(40), rel=0.3)


def test_bootstrap_interval_is_deterministic_and_skips_nan() -> None:
    values = np.arange(30, dtype=float)

    def stat(ix: np.ndarray) -> float:
        return float(values[ix].mean())

    assert bootstrap_interval(stat, 30, 200, seed=3) == bootstrap_interval(stat, 30, 200, seed=3)
    assert bootstrap_interval(stat, 30, 200, seed=3) != bootstrap_interval(stat, 30, 200, seed=4)
    low, high = bootstrap_interval(lambda ix: float("nan"), 10, 50)
    assert math.isnan(low) and math.isnan(high)


def test_mean_report() -> None:
    values = np.array([0.8, 0.9, 0.7, 0.95, 0.85, 0.6, 0.75])
    report = mean_report(values, resamples=300)
    assert report["value"] == pytest.approx(values.mean())
    assert report["ci_low"] <= report["value"] <= report["ci_high"]
    assert values.min() <= report["ci_low"] and report["ci_high"] <= values.max()
    empty = mean_report(np.array([]))
    assert all(math.isnan(v) for v in empty.values())


def test_classification_report_keys_and_values() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 80)
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    report = classification_report(labels, scores, 0.5, resamples=200)
    assert set(report) == {"acc", "sen", "spe", "ppv", "npv", "auc"}
    point = classification_metrics(labels, scores, 0.5)
    point["auc"] = auc(labels, scores)
    for name, entry in report.items():
        assert set(entry) == {"value", "ci_low", "ci_high"}
        assert entry["value"] == pytest.approx(point[name])
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"], name
        assert entry["ci_low"] < entry["ci_high"], name
        assert entry["ci_low"] >= 0.0 and entry["ci_high"] <= 1.0
