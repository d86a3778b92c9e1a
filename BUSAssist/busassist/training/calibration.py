"""Temperature scaling of the malignancy logit and expected calibration error (numpy only).

The fitted temperature T is stored in the model's metadata; ``Analyzer.calibrate`` applies
sigmoid((z - ln W_p) / T) so the reported posterior is not inflated by the training weight W_p.
"""

from __future__ import annotations

import numpy as np


def _nll(logits: np.ndarray, labels: np.ndarray) -> float:
    # -[y log s(z) + (1 - y) log(1 - s(z))] = softplus(z) - y z, computed stably
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, shift: float = 0.0) -> float:
    """T minimising the validation NLL of sigmoid((z - shift) / T), searched on a log grid then refined."""
    z = np.asarray(logits, dtype=np.float64) - shift
    y = np.asarray(labels, dtype=np.float64)
    if z.size == 0 or y.min() == y.max():
        return 1.0
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 200))
    best = grid[int(np.argmin([_nll(z / t, y) for t in grid]))]
    fine = best * np.exp(np.linspace(-0.05, 0.05, 101))
    return float(fine[int(np.argmin([_nll(z / t, y) for t in fine]))])


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE: mean |accuracy - confidence| over equal-width probability bins, weighted by bin size."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.size == 0:
        return float("nan")
    index = np.minimum((p * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            error += members.mean() * abs(y[members].mean() - p[members].mean())
    return float(error)
