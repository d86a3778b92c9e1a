"""``python bench/measurements_speed.py``: ms per ``count_and_measure_largest`` call, old vs new.

"Old" is the image-based implementation that ``busassist.core.measurements`` replaced, kept
frozen in ``Testing/Python/measurements_reference.py`` (the parity test's reference) and imported from
there; "new" is the package. The masks are full-resolution frames of typical ultrasound size
with one or a few lesions, as the batch measures them (0/255 uint8). Each figure is the best of
several repeats, so background load on a shared machine inflates it less; compare the two
columns of one run rather than milliseconds across machines. The script also checks that both
give the same figures on every mask.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from busassist.core.measurements import count_and_measure_largest

TEST_FILE = Path(__file__).resolve().parents[1] / "Testing" / "Python" / "measurements_reference.py"


def load_reference() -> Callable:
    """The frozen ``count_and_measure_largest`` of the parity test."""
    spec = importlib.util.spec_from_file_location("measurements_reference", TEST_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_count_and_measure_largest


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def ellipse(shape, centre, semi_rows, semi_cols, angle_deg, lobes=0, lobe_depth=0.0) -> np.ndarray:
    """A (lobulated) ellipse; its ``semi_cols`` axis is turned ``angle_deg`` from the horizontal."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    y, x = rr + 0.5 - centre[0], cc + 0.5 - centre[1]
    t = math.radians(angle_deg)
    along, across = x * math.cos(t) + y * math.sin(t), -x * math.sin(t) + y * math.cos(t)
    radius = np.sqrt((along / semi_cols) ** 2 + (across / semi_rows) ** 2)
    return radius <= 1 + lobe_depth * np.cos(lobes * np.arctan2(across / semi_rows, along / semi_cols))


def frames() -> dict[str, tuple[np.ndarray, tuple[float, float] | None]]:
    rng = np.random.default_rng(0)
    big = (658, 889)
    small = (480, 640)
    lobulated = ellipse(big, (330, 450), 80, 110, 15, lobes=7, lobe_depth=0.25)
    lobulated &= ~ellipse(big, (330, 450), 20, 25, 0)  # an anechoic centre left out of the mask
    lobulated |= rng.random(big) < 0.001  # speckle
    two = ellipse(small, (240, 300), 35, 60, -35) | ellipse(small, (100, 500), 10, 15, 0)
    return {
        "658x889, one ellipse ~42k px": (ellipse(big, (300, 420), 90, 150, 20), (0.083, 0.121)),
        "658x889, lobulated, hole, speckle": (lobulated, (0.1, 0.1)),
        "480x640, two lesions ~7k px": (two, None),
        "480x640, ~50k px touching the edge": (ellipse(small, (300, 150), 110, 170, 80), (0.1, 0.1)),
        "658x889, empty": (np.zeros(big, dtype=bool), (0.1, 0.1)),
    }


def ms_per_call(function: Callable, mask: np.ndarray, spacing, calls: int, repeats: int) -> float:
    function(mask, spacing)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function(mask, spacing)
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per repeat (default 20)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats; the best is reported (default 5)")
    args = parser.parse_args()
    reference = load_reference()
    print(f"CPU: {cpu_name()}; Python {platform.python_version()}, numpy {np.__version__}")
    print(f"{'mask':<38} {'pixels':>7} {'old ms':>8} {'new ms':>8} {'speed-up':>8}")
    for name, (mask, spacing) in frames().items():
        frame = mask.astype(np.uint8) * 255  # the analyzer's mask format
        new, old = count_and_measure_largest(frame, spacing), reference(frame, spacing)
        same = new[0] == old[0] and (
            dataclasses.astuple(new[1]) == dataclasses.astuple(old[1]) if new[1] else old[1] is None
        )
        if not same:
            raise SystemExit(f"{name}: the new figures differ from the old ones: {new} vs {old}")
        old_ms = ms_per_call(reference, frame, spacing, args.calls, args.repeats)
        new_ms = ms_per_call(count_and_measure_largest, frame, spacing, args.calls, args.repeats)
        print(f"{name:<38} {int(mask.sum()):>7} {old_ms:>8.2f} {new_ms:>8.2f} {old_ms / new_ms:>7.1f}x")


if __name__ == "__main__":
    main()
