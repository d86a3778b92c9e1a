"""int8 ONNX: onnxruntime static quantisation calibrated on training images, and its cost in accuracy.

The int8 model is written beside the fp32 one as ``emtnet.int8.onnx``. ``compare_int8`` runs
both through the same inference path on the run's validation and test splits and reports size,
latency and the change in AUC, Dice and "no lesion" on normal images. The rule for making int8
the default: AUC and Dice each drop by at most 0.005 on *both* splits. Validation is where
settings are chosen; requiring test as well keeps a lucky test split from deciding alone.

Calibration defaults to the 99.999th-percentile range over 200 training images: on the shipped
run's validation split it lost the least (AUC -0.005, Dice +0.001) of the variants tried
(min-max on 64 or 200 images, entropy, percentile, and keeping the stem, the depthwise
convolutions or the decoder in float).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from busassist.constants import MODEL_FILENAME, ONNX_INPUT
from busassist.core.preprocessing import preprocess
from busassist.training.busi import discover, load_image
from busassist.training.reference import REFERENCE_RUNTIME

if TYPE_CHECKING:
    from onnx import GraphProto

    from busassist.core.model_store import ModelMetadata

INT8_FILENAME = "emtnet.int8.onnx"
#: Weight formats ``quantize_run`` writes: signed int8 (the default) or uint8 (onnxruntime's u8u8 kernels).
WEIGHT_TYPES = ("int8", "uint8")
#: What ``tools qat`` fits: the float32 model's own answers, or the training labels (here: no torch to import).
QAT_OBJECTIVES = ("teacher", "logits", "labels")
#: Where ``--bias-correction`` takes its images from: the training images the ranges did not use, or all.
BIAS_CORRECTION_PICKS = ("unused", "all")
MAX_DROP = 0.005
#: Command-line name -> onnxruntime ``CalibrationMethod`` member (imported only when quantising).
CALIBRATION_METHODS = {"percentile": "Percentile", "minmax": "MinMax", "entropy": "Entropy"}


class TrainingImageReader:
    """Feeds preprocessed training images to the quantiser's calibration, one batch at a time."""

    def __init__(self, images: list[np.ndarray], size: int) -> None:
        self.batches = iter([{ONNX_INPUT: preprocess(image, size)[0][None]} for image in images])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def quantize_qdq(
    source: Path,
    target: Path,
    reader: TrainingImageReader,
    method: str = "percentile",
    weight_type: str = "int8",
    excluded_nodes: list[str] | None = None,
    reduce_range: bool = False,
    full_range_weights: list[str] | None = None,
    percentile: float | None = None,
) -> None:
    """onnxruntime static quantisation in the one form this project uses: QDQ, per-channel weights, uint8
    activations. ``method`` is a ``CALIBRATION_METHODS`` name; ``excluded_nodes`` stay in float32;
    ``full_range_weights`` (weight initialiser names) keep 8 bits when ``reduce_range`` gives the rest 7;
    ``percentile``: the share of each tensor's values (in %) the ``percentile`` method keeps inside its range
    (None: onnxruntime's 99.999)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    # onnxruntime's per-tensor override; axis 0 is a convolution weight's output-channel axis.
    overrides = {name: [{"axis": 0, "reduce_range": False}] for name in full_range_weights or []}

    quantize_static(
        str(source),
        str(target),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8 if weight_type == "int8" else QuantType.QUInt8,
        calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
        nodes_to_exclude=excluded_nodes or [],
        reduce_range=reduce_range,
        extra_options={
            **({"TensorQuantOverrides": overrides} if overrides else {}),
            **({"CalibPercentile": percentile} if percentile is not None else {}),
        },
    )


def depthwise_weights(graph: GraphProto) -> list[str]:
    """Weight initialisers of the depthwise convolutions (one input channel per group, one group per channel).

    onnxruntime computes these with its depthwise kernels, which widen every product to 32 bits before
    adding (MLAS ``MlasConvDepthwiseKernel*``, ``MlasConvSymDepthwiseKernel*``): exact on every x86-64,
    so unlike the GEMM behind the other convolutions they cannot saturate with 8-bit weights.
    """
    shapes = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    names = []
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in shapes:
            continue
        group = next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)
        shape = shapes[node.input[1]]
        if group > 1 and len(shape) == 4 and shape[0] == group and shape[1] == 1:
            names.append(node.input[1])
    return names


def failing_drops(figures: dict) -> list[tuple[str, str, float]]:
    """The int8 rule's failures as ``(split, metric, drop)``: an AUC or Dice drop above ``MAX_DROP`` against
    float32 on validation or test; an undefined (NaN) drop fails, since a rule that cannot be checked is not met."""
    return [
        (part, drop, figures[part][drop])
        for part in ("validation", "test")
        for drop in ("auc_drop", "dice_drop")
        if not figures[part][drop] <= MAX_DROP
    ]


def passes_int8_rule(figures: dict) -> bool:
    """The int8 rule: no ``failing_drops``."""
    return not failing_drops(figures)


def _evenly(keys: list[str], count: int) -> list[str]:
    """``count`` keys spread evenly over ``keys`` (every k-th from the first)."""
    return keys[:: max(1, len(keys) // count)][:count]


def calibration_keys(
    train: list[str], calibration_images: int, bias_correction_images: int, bias_correction_pick: str = "unused"
) -> tuple[list[str], list[str], list[str]]:
    """Which training images ``quantize_run`` uses: (range calibration, bias correction, the pool the
    correction was drawn from). One place, so that a check on held-out training images (the int8 fidelity
    search) can leave out exactly what quantising saw."""
    chosen = _evenly(train, calibration_images)
    calibrating = set(chosen)
    pool = [key for key in train if bias_correction_pick == "all" or key not in calibrating]
    correction = _evenly(pool, bias_correction_images) if bias_correction_images > 0 and pool else []
    return chosen, correction, pool


def quantize_run(
    run: Path,
    data_root: Path,
    calibration_images: int = 200,
    method: str = "percentile",
    float_ops: tuple[str, ...] = (),
    reduce_range: bool = False,
    weight_type: str = "int8",
    bias_correction_images: int = 0,
    bias_correction_pick: str = "unused",
    float_nodes: tuple[str, ...] = (),
    full_range_depthwise: bool = False,
    percentile: float | None = None,
) -> Path:
    """Write ``run/emtnet.int8.onnx`` (QDQ, per-channel 8-bit weights, uint8 activations).

    ``float_ops``: operator types left in float32, e.g. ``("Gemm",)`` keeps the classifier's three
    fully connected layers (a negligible share of the time) out of int8.
    ``float_nodes``: node-name prefixes left in float32, e.g. ``("/network/segmenter/head/",)`` keeps the
    segmentation head (the layers that write the mask logits the mask threshold cuts) in float.
    ``reduce_range``: 7-bit weights. On a CPU without VNNI (AVX2 and AVX-512F alone) onnxruntime and
    OpenVINO multiply uint8 activations by int8 weights with an instruction that adds pairs of
    products into a saturating int16; with |weight| <= 64 a pair (<= 2 x 255 x 64 = 32,640) cannot
    saturate, so the int8 model answers alike on every x86-64 CPU, not only on the VNNI one it was
    checked on.
    ``full_range_depthwise``: with ``reduce_range``, the depthwise convolutions keep 8-bit weights
    (``depthwise_weights``: onnxruntime's depthwise kernels cannot saturate), the rest 7 bits. A 3x3
    depthwise filter has only nine weights per channel, where rounding to 64 levels costs most
    (reports/int8-depthwise).
    ``percentile``: with ``method="percentile"``, the share of values (in %) each activation range keeps;
    lower clips more of the rarest values and rounds the rest more finely (None: onnxruntime's 99.999).
    ``weight_type``: ``"int8"`` (signed, symmetric) or ``"uint8"``: onnxruntime multiplies uint8 by
    uint8 with another kernel that widens to int16 before adding, so it cannot saturate either.
    ``bias_correction_images``: when > 0, that many training images measure each convolution's
    mean output in float32 and int8, and the int8 biases are
    corrected layer by layer (``bias_correction``). ``bias_correction_pick``: ``"unused"`` takes them
    evenly from the training images the range calibration did not see, ``"all"`` evenly from the
    whole training split (docs/benchmarks.md compares both: the choice moves test Dice).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight type {weight_type!r}: expected one of {', '.join(WEIGHT_TYPES)}")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {method!r}: expected one of {', '.join(CALIBRATION_METHODS)}")
    if bias_correction_pick not in BIAS_CORRECTION_PICKS:
        raise ValueError(
            f"bias correction pick {bias_correction_pick!r}: expected one of {', '.join(BIAS_CORRECTION_PICKS)}"
        )
    if bias_correction_images < 0:
        raise ValueError(f"bias correction on {bias_correction_images} images: give a count >= 0 (0: off)")
    float_nodes = tuple(float_nodes)
    if not all(float_nodes):
        raise ValueError("--float-node: an empty prefix would keep every node in float (nothing quantised)")
    if percentile is not None and (method != "percentile" or not 50 < percentile <= 100):
        raise ValueError(f"--percentile {percentile}: needs --calibration percentile and a share in (50, 100]")
    if full_range_depthwise and not reduce_range:
        raise ValueError("--full-range-depthwise keeps 8 bits where --reduce-range gives 7: it needs --reduce-range")
    run = Path(run)
    split = json.loads((run / "split.json").read_text())
    chosen_keys, correction_keys, pool = calibration_keys(
        split["train"], calibration_images, bias_correction_images, bias_correction_pick
    )
    if bias_correction_images and not pool:
        raise ValueError(
            f"{run}: every training image calibrates the ranges; none is left for the bias correction "
            "(fewer --calibration-images, or --bias-correction-pick all)"
        )
    import onnx

    from busassist.core.model_store import read_metadata

    fp32 = run / MODEL_FILENAME
    metadata = read_metadata(fp32)
    prepared = run / "emtnet.prep.onnx"
    quant_pre_process(str(fp32), str(prepared))
    target = run / INT8_FILENAME
    # The node-name settings are checked on the graph that is quantised; a refusal leaves no temporary file.
    graph = onnx.load(str(prepared)).graph
    nodes = graph.node
    full_range = depthwise_weights(graph) if full_range_depthwise else []
    excluded = [node.name for node in nodes if node.op_type in float_ops or node.name.startswith(float_nodes)]
    unmatched = [prefix for prefix in float_nodes if not any(node.name.startswith(prefix) for node in nodes)]
    if unmatched or (full_range_depthwise and not full_range):
        prepared.unlink()
        if unmatched:
            raise ValueError(f"{fp32}: no node's name starts with {unmatched[0]!r} (--float-node)")
        raise ValueError(
            f"{fp32}: --full-range-depthwise: the model has no depthwise convolution with its weights in the file"
        )
    cases = {case.key: case for case in discover(Path(data_root))}
    images = [load_image(cases[key]) for key in chosen_keys]  # read only once the settings are accepted

    def quantize(chosen: str) -> None:
        reader = TrainingImageReader(images, metadata.input_size)
        kept = percentile if chosen == "percentile" else None
        quantize_qdq(prepared, target, reader, chosen, weight_type, excluded, reduce_range, full_range, kept)

    calibration: dict = {
        "method": method,
        **({"percentile": percentile} if percentile is not None else {}),
        "images": len(images),
        "float_ops": list(float_ops),
        **({"float_nodes": list(float_nodes)} if float_nodes else {}),
        "reduce_range": reduce_range,
        **({"full_range_depthwise": len(full_range)} if full_range_depthwise else {}),
        "weight_type": weight_type,
    }
    try:
        quantize(method)
    except ValueError as error:
        # onnxruntime's histogram calibrators (percentile, entropy) cannot bin a tensor whose
        # range is too narrow for their bin count; min-max has no bins. Recorded, never silent.
        if method == "minmax":
            raise
        print(f"{fp32}: {method} calibration failed ({error}); calibrating with minmax instead")
        quantize("minmax")
        if calibration.pop("percentile", None) is not None:  # not used by minmax
            calibration["requested_percentile"] = percentile
        calibration.update(method="minmax", requested=method, reason=str(error))
    prepared.unlink()
    if correction_keys:
        from busassist.training.bias_correction import correct_biases

        feeds = [
            {ONNX_INPUT: preprocess(load_image(cases[key]), metadata.input_size)[0][None]} for key in correction_keys
        ]
        calibration["bias_correction"] = {
            "images": len(feeds),
            "pick": bias_correction_pick,
            **correct_biases(fp32, target, feeds),
        }
    mark_int8(target, metadata, calibration)
    (run / "int8_calibration.json").write_text(json.dumps(calibration) + "\n")
    return target


def mark_int8(target: Path, metadata: ModelMetadata, calibration: dict) -> None:
    """Write the float32 model's ``metadata`` into its int8 file ``target``, marked as int8 and with how it was
    quantised (``calibration``), and seal it. Which int8 this is travels with the file: two formats of one
    model differ in their answers."""
    from busassist.training.export import seal_model, set_metadata

    metadata.model_version += "-int8"
    metadata.extra = {**metadata.extra, "quantization": calibration}
    set_metadata(target, metadata)
    seal_model(target)


def _accuracy(results: dict) -> dict:
    """AUC and Dice on the labelled cases, and the share of normal cases with no lesion found."""
    from busassist.training.metrics import auc

    labelled = results["labels"] >= 0
    normal = ~labelled
    return {
        "auc": auc(results["labels"][labelled], results["probabilities"][labelled]),
        "dice": float(np.mean(results["dice"][labelled])),
        "normal_no_lesion": float(np.mean(~results["detected"][normal])) if normal.any() else None,
    }


def _network_ms(analyzers: dict, repeats: int) -> dict[str, float]:
    """Median network time of each model, timed in alternation so that machine noise hits both alike."""
    size = next(iter(analyzers.values())).metadata.input_size
    batch = np.zeros((1, 1, size, size), np.float32)
    times: dict[str, list[float]] = {name: [] for name in analyzers}
    for _ in range(5):
        for analyzer in analyzers.values():
            analyzer.run_network(batch)
    for _ in range(repeats):
        for name, analyzer in analyzers.items():
            started = time.perf_counter()
            analyzer.run_network(batch)
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: float(np.median(values)) for name, values in times.items()}


def compare_int8(run: Path, data_root: Path, repeats: int = 50, reference: Path | None = None) -> dict:
    """Size, network latency, validation and test AUC/Dice of fp32 vs int8, and the shipping decision.

    ``reference``: the float32 model the int8 one is judged against, when it is not the run's own
    ``emtnet.onnx`` (after quantisation-aware fine-tuning: the model that was fine-tuned).
    """
    from busassist.constants import threshold_for_effective_weight
    from busassist.core.inference import Analyzer
    from busassist.training.evaluate import analyse_cases
    from busassist.training.machine import cpu_description
    from busassist.training.paired_compare import paired_differences

    run = Path(run)
    split = json.loads((run / "split.json").read_text())
    cases = {case.key: case for case in discover(Path(data_root))}
    files = {"fp32": Path(reference) if reference is not None else run / MODEL_FILENAME, "int8": run / INT8_FILENAME}
    analyzers = {name: Analyzer(path, verify=False, backend=REFERENCE_RUNTIME) for name, path in files.items()}
    latency = _network_ms(analyzers, repeats)
    figures: dict = {
        **cpu_description(),  # int8's speed-up rests on the CPU's instruction sets (VNNI)
        "calibration": json.loads((run / "int8_calibration.json").read_text())
        if (run / "int8_calibration.json").exists()
        else None,
        "max_drop": MAX_DROP,
    }
    for name, path in files.items():
        figures[name] = {"size_mb": path.stat().st_size / 1e6, "network_ms": latency[name], "file": path.name}
    figures["reference"] = str(reference) if reference is not None else None
    threshold = threshold_for_effective_weight(analyzers["fp32"].metadata.w_p, analyzers["fp32"].metadata.w_p)
    for part, key in (("validation", "val"), ("test", "test")):
        chosen = [cases[k] for k in split[key]]
        results = {name: analyse_cases(analyzer, chosen) for name, analyzer in analyzers.items()}
        scores = {name: _accuracy(result) for name, result in results.items()}
        # the one paired engine, as `compare`: int8 - fp32 on the same images (and on resamples of them)
        paired = paired_differences(results["int8"], results["fp32"], threshold, threshold)
        figures[part] = {
            **scores,
            "auc_drop": -paired["auc"]["difference"],
            "dice_drop": -paired["dice"]["difference"],
            "paired_int8_minus_fp32": paired,
        }
    figures["ship_int8"] = passes_int8_rule(figures)
    (run / "int8_comparison.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures
