"""The probe of PLAN.md: dynamic int8 forms of an exporter graph, and their network time against float32.

    python reports/int8-dynamic/probe.py GRAPH OUT_DIR

Writes OUT_DIR/dyn-pc.onnx and OUT_DIR/dyn-pt.onnx (every Conv dynamic, Gemm in float32, uint8 weights per
channel / per tensor) and prints one JSON line per form with the median network time of it and of GRAPH.
Fidelity is scored after, by reports/int8-fidelity-search/fidelity.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic


def median_seconds(path: Path, runs: int = 30, warm: int = 5) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    image = np.random.default_rng(0).standard_normal([1, *feed.shape[1:]]).astype(np.float32)
    times = []
    for index in range(warm + runs):
        started = time.perf_counter()
        session.run(None, {feed.name: image})
        if index >= warm:
            times.append(time.perf_counter() - started)
    return float(np.median(times))


def main(graph: str, out: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    float_time = median_seconds(Path(graph))
    for name, per_channel in (("dyn-pc", True), ("dyn-pt", False)):
        target = out_dir / f"{name}.onnx"
        quantize_dynamic(
            graph, target, op_types_to_quantize=["Conv"], per_channel=per_channel, weight_type=QuantType.QUInt8
        )
        metadata = {p.key for p in onnx.load(str(target), load_external_data=False).metadata_props}
        seconds = median_seconds(target)
        print(
            json.dumps(
                {
                    "form": name,
                    "graph": graph,
                    "network_s": round(seconds, 4),
                    "float32_network_s": round(float_time, 4),
                    "time_ratio": round(seconds / float_time, 3),
                    "size_mb": round(target.stat().st_size / 1e6, 2),
                    "metadata_kept": sorted(metadata)[:3],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
