"""``busassist-train tools``: the occasional tools (quantize, equalize, qat, cv-rescore, mask-study,
experiments-report), kept out of the eight verbs of ``cli``; each handler imports its module when run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from busassist.training.cli_parts import UsageError, model_command, run_command
from busassist.training.quantize import BIAS_CORRECTION_PICKS, CALIBRATION_METHODS, QAT_OBJECTIVES, WEIGHT_TYPES


def _cv_rescore(args: argparse.Namespace) -> int:
    from busassist.training.experiments import rescore_cv

    try:
        summary = rescore_cv(args.out)
    except ValueError as error:  # an unfinished run
        raise UsageError(str(error)) from error
    print(json.dumps(summary, indent=1))
    return 0


def _experiments_report(args: argparse.Namespace) -> int:
    from busassist.training.experiments_report import write_experiments_report

    folders = {"cv": args.cv, "sweep-wp": args.sweep_wp, "grid": args.grid, "ablation": args.ablation}
    preamble = args.preamble.read_text() if args.preamble else ""
    print(f"report written to {write_experiments_report(args.out, folders, preamble)}")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from busassist.training.quantize import compare_int8, failing_drops, quantize_run

    try:
        target = quantize_run(
            args.run,
            args.data,
            args.calibration_images,
            args.calibration,
            tuple(args.float_op),
            reduce_range=args.reduce_range,
            weight_type=args.weights,
            bias_correction_images=args.bias_correction,
            bias_correction_pick=args.bias_correction_pick,
            float_nodes=tuple(args.float_node),
            full_range_depthwise=args.full_range_depthwise,
            percentile=args.percentile,
        )
    except ValueError as error:  # a setting it refuses, or nothing left to correct
        raise UsageError(str(error)) from error
    print(f"wrote {target}")
    figures = compare_int8(args.run, args.data, reference=args.against)
    print(json.dumps(figures, indent=1))
    if args.check and not figures["ship_int8"]:
        failing = failing_drops(figures)
        drops = ", ".join(
            f"{part} {metric.removesuffix('_drop').upper()} {drop:+.4f}" for part, metric, drop in failing
        )
        rule = f"AUC and Dice drop <= {figures['max_drop']} on validation and test"
        print(f"busassist-train: {target}: fails the int8 rule ({rule}): {drops}", file=sys.stderr)
        return 3
    return 0


def _prepared_for_int8(make, args: argparse.Namespace, wrote: str, quantize_options: str) -> int:
    """Run a tool that prepares an exported model for int8, and say what to run next."""
    try:
        model = make()
    except ValueError as error:  # not the exporter's graph, not an EMT-Net, a setting it refuses
        raise UsageError(str(error)) from error
    print(
        f"wrote {model}{wrote}; next: busassist-train tools quantize {args.out} --reduce-range --float-op Gemm "
        f"{quantize_options}--against ORIGINAL_FAST_FORM_MODEL"
    )
    return 0


def _qat(args: argparse.Namespace) -> int:
    from busassist.training.qat import fine_tune

    def make() -> Path:
        return fine_tune(
            args.model, args.out, args.data, epochs=args.epochs, learning_rate=args.lr, objective=args.objective
        )

    return _prepared_for_int8(make, args, "", "")


def _equalize(args: argparse.Namespace) -> int:
    from busassist.training.equalize import equalised_model

    return _prepared_for_int8(
        lambda: equalised_model(args.model, args.out, args.data), args, " (answers unchanged)", "--bias-correction 64 "
    )


def _mask_study(args: argparse.Namespace) -> int:
    from busassist.training.mask_study import mask_study

    print(json.dumps(mask_study(args.run, args.data), indent=1))
    print(f"all variants (validation only): {Path(args.run) / 'mask_study.csv'}")
    return 0


def add_tools(sub: argparse._SubParsersAction) -> None:
    """The ``tools`` verb and its sub-commands, on the trainer's top-level ``sub``."""
    tools = sub.add_parser(
        "tools", help="occasional tools: quantize, equalize, qat, cv-rescore, mask-study, experiments-report"
    )
    tools_sub = tools.add_subparsers(dest="tool", required=True)
    quantize = run_command(tools_sub, "quantize", "int8 ONNX beside the fp32 one, with its cost in AUC/Dice", _quantize)
    quantize.add_argument("--calibration", choices=list(CALIBRATION_METHODS), default="percentile")
    quantize.add_argument("--calibration-images", type=int, default=200, help="training images to calibrate on")
    quantize.add_argument(
        "--percentile",
        type=float,
        default=None,
        metavar="SHARE",
        help="with --calibration percentile: the share of each activation's values (in %%) its range keeps "
        "(default: onnxruntime's 99.999)",
    )
    quantize.add_argument(
        "--float-op",
        action="append",
        default=[],
        metavar="OP",
        help="ONNX operator type kept in float32 (repeatable), e.g. Gemm for the classifier's dense layers",
    )
    quantize.add_argument(
        "--float-node",
        action="append",
        default=[],
        metavar="PREFIX",
        help="nodes whose name starts with PREFIX kept in float32 (repeatable), e.g. /network/segmenter/head/",
    )
    quantize.add_argument(
        "--reduce-range",
        action="store_true",
        help="7-bit weights: no int16 saturation on CPUs without VNNI, so the same answers on every x86-64",
    )
    quantize.add_argument(
        "--full-range-depthwise",
        action="store_true",
        help="with --reduce-range, 8-bit weights for the depthwise convolutions, whose kernels add in 32 bits "
        "and cannot saturate",
    )
    quantize.add_argument(
        "--weights",
        choices=list(WEIGHT_TYPES),
        default="int8",
        help="weight type; uint8 takes onnxruntime's u8u8 kernels, which cannot saturate either",
    )
    quantize.add_argument(
        "--bias-correction",
        type=int,
        default=0,
        metavar="IMAGES",
        help="correct each int8 convolution's bias so its mean output matches float32 on IMAGES training "
        "images, layer by layer (0: off; see --bias-correction-pick)",
    )
    quantize.add_argument(
        "--check",
        action="store_true",
        help="exit 3 when the int8 model fails its rule (AUC or Dice drop > 0.005 on validation or test; make int8)",
    )
    quantize.add_argument(
        "--against",
        type=Path,
        default=None,
        metavar="MODEL",
        help="judge the int8 model against this float32 model instead of the run's (after tools qat: the original)",
    )
    quantize.add_argument(
        "--bias-correction-pick",
        choices=list(BIAS_CORRECTION_PICKS),
        default="unused",
        help="take those images from the training images the range calibration did not use, or from all",
    )
    model_command(
        tools_sub,
        "equalize",
        "cross-layer equalisation of an exported model before int8 (answers unchanged)",
        _equalize,
        "equalised",
    )
    qat = model_command(
        tools_sub,
        "qat",
        "quantisation-aware fine-tuning of an exported model for 7-bit int8 (then tools quantize)",
        _qat,
        "fine-tuned, fp32",
    )
    qat.add_argument("--epochs", type=int, default=3)
    qat.add_argument("--lr", type=float, default=2e-5)
    qat.add_argument(
        "--objective",
        choices=list(QAT_OBJECTIVES),
        default="teacher",
        help="fit the float32 model's own probabilities (teacher, the default), its mask logits weighted "
        "towards the border and its malignancy probability (logits), or the training labels",
    )
    rescore = tools_sub.add_parser(
        "cv-rescore", help="score a finished cross-validation's folds again with today's metrics (no training)"
    )
    rescore.add_argument("out", type=Path, help="output folder of the cross-validation")
    rescore.set_defaults(handler=_cv_rescore)
    run_command(
        tools_sub,
        "mask-study",
        "would a mask threshold or dropping small components raise validation Dice?",
        _mask_study,
    )
    summary = tools_sub.add_parser(
        "experiments-report", help="one Markdown report over the cv, sweep-wp, grid and ablation output folders"
    )
    summary.add_argument("--out", type=Path, required=True)
    for name in ("cv", "sweep-wp", "grid", "ablation"):
        summary.add_argument(f"--{name}", type=Path, help=f"output folder of the {name} study")
    summary.add_argument("--preamble", type=Path, help="Markdown file placed under the title")
    summary.set_defaults(handler=_experiments_report)
