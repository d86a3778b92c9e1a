"""int8 ONNX: onnxruntime static quantisation calibrated on training images, and its cost in accuracy.

The int8 model is written beside the fp32 one as ``emtnet.int8.onnx``. ``compare_int8`` runs
both through the same inference path on the run's test split and reports size, latency and the
change in AUC and Dice; the README's rule is to ship int8 as the default only if AUC and Dice
each drop by at most 0.005.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from busassist.constants import MODEL_FILENAME, ONNX_INPUT
from busassist.core.preprocessing import preprocess
from busassist.training.busi import discover, load_image

INT8_FILENAME = "emtnet.int8.onnx"
MAX_DROP = 0.005


class TrainingImageReader:
    """Feeds preprocessed training images to the quantiser's calibration, one batch at a time."""

    def __init__(self, images: list[np.ndarray], size: int) -> None:
        self.batches = iter([{ONNX_INPUT: preprocess(image, size)[0][None]} for image in images])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def quantize_run(run: Path, data_root: Path, calibration_images: int = 64) -> Path:
    """Write ``run/emtnet.int8.onnx`` (QDQ, per-channel int8 weights, int8 activations)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from busassist.core.model_store import write_checksum
    from busassist.training.export import set_metadata

    run = Path(run)
    split = json.loads((run / "split.json").read_text())
    cases = {case.key: case for case in discover(Path(data_root))}
    step = max(1, len(split["train"]) // calibration_images)
    images = [load_image(cases[key]) for key in split["train"][::step][:calibration_images]]
    fp32 = run / MODEL_FILENAME
    prepared = run / "emtnet.prep.onnx"
    quant_pre_process(str(fp32), str(prepared))
    target = run / INT8_FILENAME
    from busassist.core.inference import Analyzer

    metadata = Analyzer(fp32, verify=False).metadata
    quantize_static(
        str(prepared),
        str(target),
        TrainingImageReader(images, metadata.input_size),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    prepared.unlink()
    metadata.model_version += "-int8"
    set_metadata(target, metadata)
    write_checksum(target)
    return target


def compare_int8(run: Path, data_root: Path, repeats: int = 30) -> dict:
    """Size, network latency, test AUC and Dice of fp32 vs int8, and the shipping decision."""
    from busassist.core.inference import Analyzer
    from busassist.core.metrics import auc
    from busassist.training.evaluate import analyse_cases

    run = Path(run)
    split = json.loads((run / "split.json").read_text())
    cases = {case.key: case for case in discover(Path(data_root))}
    test = [cases[key] for key in split["test"]]
    figures = {}
    for name, filename in (("fp32", MODEL_FILENAME), ("int8", INT8_FILENAME)):
        analyzer = Analyzer(run / filename, verify=False)
        results = analyse_cases(analyzer, test)
        labelled = results["labels"] >= 0
        batch = np.zeros((1, 1, analyzer.metadata.input_size, analyzer.metadata.input_size), np.float32)
        for _ in range(5):
            analyzer.run_network(batch)
        started = time.perf_counter()
        for _ in range(repeats):
            analyzer.run_network(batch)
        figures[name] = {
            "size_mb": (run / filename).stat().st_size / 1e6,
            "network_ms": (time.perf_counter() - started) / repeats * 1000,
            "auc": auc(results["labels"][labelled], results["probabilities"][labelled]),
            "dice": float(np.mean(results["dice"][labelled])),
        }
    figures["auc_drop"] = figures["fp32"]["auc"] - figures["int8"]["auc"]
    figures["dice_drop"] = figures["fp32"]["dice"] - figures["int8"]["dice"]
    figures["ship_int8"] = bool(figures["auc_drop"] <= MAX_DROP and figures["dice_drop"] <= MAX_DROP)
    (run / "int8_comparison.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures
