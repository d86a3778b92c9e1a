"""Temperature scaling and ECE on synthetic scores with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from busassist.training.calibration import expected_calibration_error, fit_temperature


def synthetic(temperature: float, shift: float, n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits z whose true posterior is sigmoid((z - shift) / temperature)."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0, 2, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(float)
    return true_logit * temperature + shift, labels


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_true_temperature(temperature: float) -> None:
    shift = np.log(3.0)  # the ln W_p offset of a model trained with W_p = 3
    logits, labels = synthetic(temperature, shift)
    assert fit_temperature(logits, labels, shift) == pytest.approx(temperature, rel=0.06)


def test_fit_temperature_degenerate_inputs() -> None:
    assert fit_temperature(np.array([]), np.array([])) == 1.0
    assert fit_temperature(np.array([1.0, 2.0]), np.array([1.0, 1.0])) == 1.0


def test_ece_small_when_calibrated_large_when_not() -> None:
    logits, labels = synthetic(1.0, 0.0)
    calibrated = 1 / (1 + np.exp(-logits))
    overconfident = 1 / (1 + np.exp(-4 * logits))
    assert expected_calibration_error(calibrated, labels) < 0.02
    assert expected_calibration_error(overconfident, labels) > 0.05
    assert expected_calibration_error(np.array([0.9, 0.9]), np.array([1.0, 1.0])) == pytest.approx(0.1)
