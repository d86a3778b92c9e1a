"""``busassist``: the user-facing command line (no torch needed)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from busassist.apps.options import add_backend_option
from busassist.constants import EFFECTIVE_WEIGHT_MAX, EFFECTIVE_WEIGHT_MIN, MAX_PIXELS
from busassist.core.io import FrameSelection
from busassist.core.model_store import ModelError


def _effective_weight(text: str) -> float:
    value = float(text)
    if not EFFECTIVE_WEIGHT_MIN <= value <= EFFECTIVE_WEIGHT_MAX:
        raise argparse.ArgumentTypeError(f"must be between {EFFECTIVE_WEIGHT_MIN:g} and {EFFECTIVE_WEIGHT_MAX:g}")
    return value


def _max_pixels(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number of pixels") from None
    if value < 64:
        raise argparse.ArgumentTypeError("must be at least 64 pixels")
    return value


def _frames(text: str) -> FrameSelection:
    try:
        return FrameSelection(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _analyze(args: argparse.Namespace) -> int:
    from busassist.core.inference import Analyzer
    from busassist.core.outputs import OutputError

    if args.workers < 1:
        print("busassist: --workers must be at least 1", file=sys.stderr)
        return 1
    formats = tuple(name for name, wanted in (("nifti", args.nifti), ("nrrd", args.nrrd)) if wanted)
    if formats:
        try:
            import SimpleITK  # noqa: F401
        except ImportError:
            print("busassist: --nifti/--nrrd need SimpleITK (pip install 'busassist[formats]')", file=sys.stderr)
            return 1
    try:  # verify the model once, in this process, before any work starts
        analyzer = Analyzer(args.model, threads=args.threads, backend=args.backend)
    except ModelError as error:
        print(f"busassist: {error}", file=sys.stderr)
        return 1
    try:
        summary = _run_batch(args, analyzer, formats)
    except (OutputError, RuntimeError) as error:  # an unusable --out, or --dask without dask / a scheduler
        print(f"busassist: {error}", file=sys.stderr)
        return 1
    rate = summary.frames / summary.seconds if summary.seconds else 0.0
    refused = (
        f"refused {summary.refused} input(s) (see {args.out / 'errors.csv'})" if summary.refused else "refused none"
    )
    if summary.seg_failures:
        refused += f", DICOM SEG not written for {summary.seg_failures} file(s) (see {args.out / 'errors.csv'})"
    print(
        f"analysed {summary.frames} frame(s), skipped {summary.skipped} already done, {refused}; "
        f"{rate:.1f} frames/s on {analyzer.backend}; results in {args.out / 'results.csv'}"
    )
    return summary.exit_code


def _run_batch(args: argparse.Namespace, analyzer, formats: tuple[str, ...]):
    """The batch with the command line's options (raises ``OutputError`` for an unusable --out)."""
    from busassist.apps.analyze import analyze_paths

    return analyze_paths(
        args.inputs,
        args.out,
        analyzer if args.workers == 1 else None,
        args.effective_weight,
        overlays=not args.no_overlays,
        any_modality=args.any_modality,
        frames=args.frames,
        workers=args.workers,
        dicom_seg=not args.no_seg,
        model_path=analyzer.model_path,
        progress=not args.quiet,
        volume_formats=formats,
        keep_identifiers=args.keep_identifiers,
        max_pixels=args.max_pixels,
        dask=args.dask,
        # worker processes on this machine (--workers, --dask local:N) run the runtime that answers here (with
        # --backend auto: checked once, said once); a remote cluster's nodes are other machines and decide themselves
        backend=args.backend if args.dask and not args.dask.startswith("local:") else analyzer.backend,
    )


class UsageExit1Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with 1: exit status 2 means "some inputs were refused"."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = UsageExit1Parser(prog="busassist", description="Breast-ultrasound CAD with EMT-Net.")
    sub = parser.add_subparsers(dest="command", required=True)
    analyze = sub.add_parser("analyze", help="score and segment DICOM/PNG/JPEG files or folders")
    analyze.add_argument("inputs", nargs="+", type=Path, help="files or folders")
    analyze.add_argument("--out", type=Path, required=True, help="output folder")
    analyze.add_argument(
        "--model",
        type=Path,
        default=None,
        help="ONNX model file, or a bundled one by name: fp32 (the default) or int8 (if the release has one)",
    )
    analyze.add_argument(
        "--effective-weight",
        type=_effective_weight,
        default=None,
        metavar="W",
        help="decision weight W' in 1..10; threshold = W_p / (W_p + W') (default W' = W_p, threshold 0.5)",
    )
    analyze.add_argument("--threads", type=int, default=None, help="threads of the model runtime per worker")
    add_backend_option(analyze)
    analyze.add_argument("--no-overlays", action="store_true", help="skip overlay PNGs")
    analyze.add_argument("--any-modality", action="store_true", help="accept non-ultrasound DICOM")
    analyze.add_argument("--workers", type=int, default=1, help="worker processes (each runs one model copy)")
    analyze.add_argument("--no-seg", action="store_true", help="skip the DICOM Segmentation outputs")
    analyze.add_argument(
        "--dask",
        metavar="ADDRESS",
        default=None,
        help="run on a Dask cluster: local:N (N worker processes here) or a scheduler address (tcp://host:8786)",
    )
    analyze.add_argument("--quiet", action="store_true", help="no progress bar")
    analyze.add_argument("--nifti", action="store_true", help="also write each mask as .nii.gz (needs SimpleITK)")
    analyze.add_argument("--nrrd", action="store_true", help="also write each mask as .nrrd (needs SimpleITK)")
    analyze.add_argument(
        "--keep-identifiers",
        action="store_true",
        help="add patient ID and name columns to results.csv (default: UIDs only)",
    )
    analyze.add_argument(
        "--max-pixels",
        type=_max_pixels,
        default=MAX_PIXELS,
        metavar="N",
        help=f"refuse, before decoding, frames of more than N pixels (rows x columns; default {MAX_PIXELS})",
    )
    analyze.add_argument(
        "--frames",
        type=_frames,
        default="all",
        help="frames of multi-frame files: all, first, middle, N,M-K (1-based) or every:K",
    )
    analyze.set_defaults(handler=_analyze)
    return parser


class _OneLineHandler(logging.StreamHandler):
    """The package's warnings (e.g. ``auto`` not taking OpenVINO) as ``busassist: ...`` lines on stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("busassist: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # the stderr of now (tests capture it per call)
        super().emit(record)


def log_to_stderr() -> None:
    """Send the ``busassist`` loggers' warnings to stderr as one line each (once per process)."""
    logger = logging.getLogger("busassist")
    if not any(isinstance(handler, _OneLineHandler) for handler in logger.handlers):
        logger.addHandler(_OneLineHandler())
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_to_stderr()
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
