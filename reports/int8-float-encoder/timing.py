"""Step A of PLAN.md: network time of float32, the float-encoder candidate and make int8's file (no labels).

    python reports/int8-float-encoder/timing.py FLOAT32 CANDIDATE FULL_INT8 [RUNS]

Each run times the three in alternation (``quantize._network_ms``: batch 1, 5 warm-ups, 100 repeats) and prints
one JSON line with the medians, the ratios to float32 and the CPU; then the sizes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from busassist.core.inference import Analyzer
from busassist.training.machine import cpu_description
from busassist.training.quantize import _network_ms
from busassist.training.reference import REFERENCE_RUNTIME


def main(float32: str, candidate: str, full_int8: str, runs: str = "3") -> None:
    files = {"float32": Path(float32), "candidate": Path(candidate), "full int8": Path(full_int8)}
    analyzers = {name: Analyzer(path, verify=False, backend=REFERENCE_RUNTIME) for name, path in files.items()}
    for run in range(int(runs)):
        ms = _network_ms(analyzers, 100)
        ratios = {name: round(value / ms["float32"], 3) for name, value in ms.items()}
        print(json.dumps({"run": run + 1, "network_ms": {k: round(v, 2) for k, v in ms.items()}, "ratio": ratios}))
    print(json.dumps({"size_mb": {name: round(path.stat().st_size / 1e6, 2) for name, path in files.items()}}))
    print(json.dumps(cpu_description()))


if __name__ == "__main__":
    main(*sys.argv[1:])
