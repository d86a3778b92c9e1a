"""The decision threshold for an effective weight W' and what it meant on the validation split."""

from __future__ import annotations

import math
from dataclasses import dataclass

from busassist.constants import W_P, threshold_for_effective_weight

# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingPoint:
    """The decision threshold for an effective weight W' and the validation figures that go with it.

    ``table_w`` is the tabulated W' whose validation figures are reported: the row of the model's
    operating table nearest to ``w_effective`` (figures are ``None`` when the model has no table).
    """

    w_effective: float
    threshold: float
    table_w: float | None = None
    sen: float | None = None
    spe: float | None = None
    ppv: float | None = None
    npv: float | None = None
    sen_ci: tuple[float, float] | None = None
    spe_ci: tuple[float, float] | None = None

    @property
    def exact(self) -> bool:
        return self.table_w is not None and math.isclose(self.table_w, self.w_effective, abs_tol=1e-6)

    def describe(self) -> str:
        """One line for the panel, e.g. ``W' 3 → threshold 0.500 · validation SEN 85.2 % [70.8–96.6], SPE …``."""
        text = f"W' {self.w_effective:g} \u2192 threshold {self.threshold:.3f}"
        if self.sen is None or self.spe is None:
            return text + " (no validation figures in the model)"
        parts = [_percent_with_ci("SEN", self.sen, self.sen_ci), _percent_with_ci("SPE", self.spe, self.spe_ci)]
        parts += [
            _percent_with_ci(name, value, None)
            for name, value in (("PPV", self.ppv), ("NPV", self.npv))
            if value is not None
        ]
        where = "" if self.exact else f" (at W' {self.table_w:g})"
        return f"{text} \u00b7 validation {', '.join(parts)}{where}"


def _percent_with_ci(name: str, value: float, ci: tuple[float, float] | None) -> str:
    text = f"{name} {100 * value:.1f} %"
    if ci is not None:
        text += f" [{100 * ci[0]:.1f}\u2013{100 * ci[1]:.1f}]"
    return text


def operating_point(w_effective: float, operating_table: list[dict] | None, w_p: float = W_P) -> OperatingPoint:
    """Threshold for ``w_effective`` and the validation row nearest to it in ``operating_table``."""
    threshold = threshold_for_effective_weight(float(w_effective), float(w_p))
    rows = [row for row in operating_table or [] if "w_effective" in row]
    if not rows:
        return OperatingPoint(float(w_effective), threshold)
    row = min(rows, key=lambda r: abs(float(r["w_effective"]) - float(w_effective)))

    def ci(name: str) -> tuple[float, float] | None:
        value = row.get(name)
        return (float(value[0]), float(value[1])) if value is not None and len(value) == 2 else None

    def number(name: str) -> float | None:
        value = row.get(name)
        return None if value is None else float(value)

    return OperatingPoint(
        float(w_effective),
        threshold,
        float(row["w_effective"]),
        number("sen"),
        number("spe"),
        number("ppv"),
        number("npv"),
        ci("sen_ci"),
        ci("spe_ci"),
    )


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
