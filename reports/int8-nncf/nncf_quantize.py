"""One NNCF form of PLAN.md; runs in NNCF's own environment (nncf==3.4.0, onnx, onnxruntime).

    python reports/int8-nncf/nncf_quantize.py GRAPH CALIBRATION.npy OUT.onnx fast|full

Keeps the source graph's metadata (the product reads its input size and thresholds from it) and prints one
JSON line with the network time of OUT and of GRAPH.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nncf
import numpy as np
import onnx
import onnxruntime as ort
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "int8-dynamic"))
from probe import median_seconds  # noqa: E402  (the same timing as the dynamic probe; NNCF's environment has no busassist)


def main(graph: str, calibration: str, out: str, bias_correction: str) -> None:
    model = onnx.load(graph)
    feed = ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    images = np.load(calibration)
    dataset = nncf.Dataset(list(images), lambda image: {feed: image[None]})
    quantized = nncf.quantize(
        model,
        dataset,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(images),
        fast_bias_correction=bias_correction == "fast",
        ignored_scope=nncf.IgnoredScope(types=["Gemm"]),
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE),
    )
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(model.metadata_props)
    onnx.save(quantized, out)
    seconds, float_seconds = median_seconds(out), median_seconds(graph)
    print(
        json.dumps(
            {
                "form": out,
                "bias_correction": bias_correction,
                "network_s": round(seconds, 4),
                "float32_network_s": round(float_seconds, 4),
                "time_ratio": round(seconds / float_seconds, 3),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
