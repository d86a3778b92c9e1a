"""``busassist analyze``: the batch engine behind the CLI, and ``analyze_file``, its per-file public API.

For every analysed frame: a row in ``results.csv`` (score, decision, region, spacing, lesion
measurements, model version and SHA-256), the mask as a PNG in the source frame's geometry
(0 background, 255 lesion), optionally an overlay PNG, and per DICOM instance one DICOM
Segmentation. A file that cannot be analysed gets a row in ``errors.csv`` and a one-line reason on
stderr; the run goes on. Rerunning the same command skips frames already in ``results.csv`` for
the same model (keyed by SOP Instance UID, frame and model SHA-256), so an interrupted run
finishes the rest, and a kill loses at most the frame in flight.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from busassist.apps.outputs import (
    append_row,
    ensure_csv,
    frame_key,
    load_png,
    overlay_image,
    read_rows,
    safe_stem,
    save_png,
)
from busassist.apps.scan import expand_inputs, series_order
from busassist.core.inference import Analyzer, FrameResult
from busassist.core.io import ALL_FRAMES, Frame, FrameSelection, InputError, is_dicom, read_frames
from busassist.core.measurements import EMPTY_ROW, as_row, measure_largest
from busassist.core.model_store import sha256_of

MEASUREMENT_COLUMNS = list(EMPTY_ROW)
RESULT_COLUMNS = [
    "file",
    "frame",
    "sop_instance_uid",
    "study_instance_uid",
    "series_instance_uid",
    "malignancy_probability",
    "calibrated_probability",
    "threshold",
    "decision",
    "lesion_detected",
    "mask_area_px",
    "region",
    "pixel_spacing_mm",
    *MEASUREMENT_COLUMNS,
    "mask_path",
    "overlay_path",
    "seg_path",
    "model_version",
    "volume_paths",
    "patient_id",
    "patient_name",
    "model_sha256",
    "resume_key",
]
ERROR_COLUMNS = ["file", "stage", "reason"]
__all__ = ["AnalyzeOptions", "FileReport", "analyze_file", "analyze_paths", "expand_inputs"]


@dataclass
class AnalyzeOptions:
    """What to analyse and which outputs to write (shared by the CLI, workers and API users)."""

    effective_weight: float | None = None
    overlays: bool = True
    dicom_seg: bool = True
    any_modality: bool = False
    frames: FrameSelection = ALL_FRAMES
    volume_formats: tuple[str, ...] = ()  # extra mask files: "nifti" (.nii.gz) and/or "nrrd"
    keep_identifiers: bool = False  # add patient ID / name columns (off: UIDs only, the default)


@dataclass
class FileReport:
    """What ``analyze_file`` did with one input."""

    path: str
    analysed: int = 0
    skipped: int = 0
    error: InputError | None = None  # the input was refused
    seg_error: InputError | None = None  # analysed, but its DICOM SEG could not be written
    rows: list[dict] = field(default_factory=list)


def _result_row(
    frame: Frame,
    result: FrameResult,
    threshold: float,
    out: Path,
    mask_path: Path,
    overlay_path: Path | None,
    analyzer: Analyzer,
    model_sha256: str,
) -> dict:
    region = result.region
    spacing = region.spacing_mm if region is not None else None
    measurement = measure_largest(result.mask > 0, spacing)
    row = {
        "file": frame.source,
        "frame": frame.index,
        "sop_instance_uid": frame.sop_instance_uid or "",
        "study_instance_uid": frame.study_instance_uid or "",
        "series_instance_uid": frame.series_instance_uid or "",
        "malignancy_probability": f"{result.probability:.6f}",
        "calibrated_probability": f"{result.calibrated_probability:.6f}",
        "threshold": f"{threshold:.6f}",
        "decision": result.decision(threshold),
        "lesion_detected": int(result.lesion_detected),
        "mask_area_px": int(np.count_nonzero(result.mask)),  # all lesion pixels; lesion_* = largest lesion
        "region": "" if region is None else f"{region.x0},{region.y0},{region.x1},{region.y1}",
        "pixel_spacing_mm": "" if spacing is None else f"{spacing[0]:.6g}\\{spacing[1]:.6g}",
        "mask_path": str(mask_path.relative_to(out)),
        "overlay_path": "" if overlay_path is None else str(overlay_path.relative_to(out)),
        "seg_path": "",
        "model_version": analyzer.metadata.model_version,
        "model_sha256": model_sha256,
        "resume_key": frame_key(frame.source, frame.sop_instance_uid, frame.index, model_sha256),
    }
    row.update(EMPTY_ROW if measurement is None else as_row(measurement))
    return row


def analyze_file(
    path: str | Path,
    analyzer: Analyzer,
    out: str | Path,
    options: AnalyzeOptions | None = None,
    done: set[str] | frozenset[str] = frozenset(),
) -> FileReport:
    """Analyse one file (every selected frame) and write its outputs into ``out``.

    This is the unit of work of the batch command and the function to map over files with a
    cluster engine (Dask, Ray, ...): it needs only the file, an ``Analyzer`` (create one per
    worker process and reuse it), the output folder and the keys of frames already done. Rows are
    appended to ``out/results.csv`` (which must exist with its header: call ``prepare_output``),
    and returned in the report. A bad file gives ``report.error``; nothing is raised.
    """
    options = options or AnalyzeOptions()
    out = Path(out)
    report = FileReport(str(path))
    model_sha256 = analyzer.sha256 or sha256_of(analyzer.model_path)
    threshold = analyzer.threshold(options.effective_weight)
    masks: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}  # bit-packed: 1/8 of a byte mask per frame
    try:
        for frame in read_frames(path, options.any_modality, options.frames):
            stem = safe_stem(frame)
            mask_path = out / "masks" / f"{stem}_mask.png"
            key = frame_key(frame.source, frame.sop_instance_uid, frame.index, model_sha256)
            if key in done and mask_path.exists():
                report.skipped += 1
                masks[frame.index] = _pack(load_png(mask_path))
                continue
            result = analyzer.analyze(frame)
            save_png(mask_path, result.mask)
            overlay_path = None
            if options.overlays:
                overlay_path = out / "overlays" / f"{stem}_overlay.png"
                save_png(overlay_path, overlay_image(frame.pixels, result.mask))
            row = _result_row(frame, result, threshold, out, mask_path, overlay_path, analyzer, model_sha256)
            row["volume_paths"] = ";".join(
                str(p.relative_to(out)) for p in save_volumes(mask_path, result, options.volume_formats)
            )
            if options.keep_identifiers:
                row.update(patient_identifiers(Path(path)))
            if options.dicom_seg and frame.sop_instance_uid:
                row["seg_path"] = str(seg_path_for(frame, out).relative_to(out))
            append_row(out / "results.csv", RESULT_COLUMNS, row)
            report.rows.append(row)
            report.analysed += 1
            masks[frame.index] = _pack(result.mask)
        if options.dicom_seg and masks and is_dicom(Path(path)):
            try:
                _write_seg(Path(path), masks, analyzer, out)
            except InputError as error:  # the frames are analysed and saved; only the SEG is missing
                report.seg_error = error
                _record_error(out, error, done)
    except InputError as error:
        report.error = error
        _record_error(out, error, done)
    return report


def _error_key(file: str, stage: str, reason: str) -> str:
    return f"error|{file}|{stage}|{reason}"


def _record_error(out: Path, error: InputError, done: set[str] | frozenset[str]) -> None:
    """One errors.csv row per refusal; a rerun that meets the same refusal does not repeat it."""
    if _error_key(error.path, error.stage, error.reason) not in done:
        append_row(
            out / "errors.csv", ERROR_COLUMNS, {"file": error.path, "stage": error.stage, "reason": error.reason}
        )


def patient_identifiers(path: Path) -> dict[str, str]:
    """Patient ID and name of a DICOM file: written only with --keep-identifiers."""
    if not is_dicom(path):
        return {}
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "PatientName"])
    return {"patient_id": str(header.get("PatientID", "")), "patient_name": str(header.get("PatientName", ""))}


def save_volumes(mask_path: Path, result: FrameResult, formats: tuple[str, ...]) -> list[Path]:
    """The mask as NIfTI / NRRD beside its PNG, with the region's pixel spacing (SimpleITK)."""
    if not formats:
        return []
    import SimpleITK as sitk

    image = sitk.GetImageFromArray((result.mask > 0).astype(np.uint8))
    spacing = result.region.spacing_mm if result.region is not None else None
    if spacing is not None:
        image.SetSpacing((float(spacing[1]), float(spacing[0])))  # SimpleITK: (x = column, y = row)
    written = []
    for name in formats:
        target = mask_path.with_name(mask_path.stem + {"nifti": ".nii.gz", "nrrd": ".nrrd"}[name])
        temporary = target.with_name("tmp-" + target.name)
        sitk.WriteImage(image, str(temporary), useCompression=True)
        temporary.replace(target)
        written.append(target)
    return written


def seg_path_for(frame: Frame, out: Path) -> Path:
    study = frame.study_instance_uid or "unknown-study"
    series = frame.series_instance_uid or "unknown-series"
    return out / "seg" / study / series / f"{frame.sop_instance_uid}.seg.dcm"


def _pack(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    return np.packbits(np.asarray(mask) > 0), mask.shape[:2]


def _write_seg(path: Path, masks: dict[int, tuple[np.ndarray, tuple[int, int]]], analyzer: Analyzer, out: Path) -> None:
    """One DICOM Segmentation per analysed instance, with every analysed frame of it.

    Masks wait for the SEG bit-packed (a 1,000-frame 640 x 480 cine: 38 MB); the SEG of a long
    cine is still built in memory at the end, so use ``--frames`` or ``--no-seg`` for very long ones.
    """
    import pydicom

    from busassist.core.dicom_seg import SegmentationError, write_segmentation

    source = pydicom.dcmread(path, stop_before_pixels=True)
    frame = Frame(
        str(path),
        0,
        np.zeros((1, 1)),
        None,
        str(source.SOPInstanceUID),
        str(source.get("StudyInstanceUID", "")) or None,
        str(source.get("SeriesInstanceUID", "")) or None,
    )
    try:
        unpacked = {
            index: np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
            for index, (bits, shape) in masks.items()
        }
        write_segmentation(source, unpacked, analyzer.metadata.model_version, seg_path_for(frame, out))
    except SegmentationError as error:
        raise InputError(path, f"DICOM SEG not written: {error}", "seg") from None


def prepare_output(out: Path) -> set[str]:
    """Create the output folder and CSV headers; return the keys of frames and refusals already recorded."""
    out.mkdir(parents=True, exist_ok=True)
    ensure_csv(out / "results.csv", RESULT_COLUMNS)
    ensure_csv(out / "errors.csv", ERROR_COLUMNS)
    done = {row["resume_key"] for row in read_rows(out / "results.csv") if row.get("resume_key")}
    done.update(_error_key(r["file"], r["stage"], r["reason"]) for r in read_rows(out / "errors.csv"))
    return done


# Worker processes: each creates its Analyzer (onnxruntime session) once.
_WORKER: dict = {}


def _init_worker(model_path: str, threads: int, out: str, options: AnalyzeOptions, done: set[str]) -> None:
    _WORKER.update(analyzer=Analyzer(model_path, threads=threads), out=Path(out), options=options, done=done)


def _work(path: Path) -> FileReport:
    report = analyze_file(path, _WORKER["analyzer"], _WORKER["out"], _WORKER["options"], _WORKER["done"])
    report.rows = []  # already on disk; do not ship them back through the pipe
    return report


@dataclass
class Summary:
    frames: int = 0
    skipped: int = 0
    refused: int = 0
    seg_failures: int = 0
    seconds: float = 0.0


def analyze_paths(
    inputs: Iterable[str | Path],
    out: Path,
    analyzer: Analyzer | None = None,
    effective_weight: float | None = None,
    overlays: bool = True,
    any_modality: bool = False,
    log=print,
    frames: FrameSelection = ALL_FRAMES,
    workers: int = 1,
    dicom_seg: bool = True,
    model_path: Path | None = None,
    progress: bool = True,
    volume_formats: tuple[str, ...] = (),
    keep_identifiers: bool = False,
) -> Summary:
    """Analyse every frame of every input, in ``workers`` processes, resuming a previous run in ``out``."""
    started = time.perf_counter()
    out = Path(out)
    done = prepare_output(out)
    options = AnalyzeOptions(
        effective_weight, overlays, dicom_seg, any_modality, frames, volume_formats, keep_identifiers
    )
    paths = series_order(list(expand_inputs(inputs)))
    summary = Summary()
    bar = _progress(len(paths), progress)

    def account(report: FileReport) -> None:
        summary.frames += report.analysed
        summary.skipped += report.skipped
        if report.error is not None:
            summary.refused += 1
            log(f"busassist: {report.error}", file=sys.stderr)
        if report.seg_error is not None:
            summary.seg_failures += 1
            log(f"busassist: {report.seg_error}", file=sys.stderr)
        bar.update(1)
        bar.set_postfix(frames=summary.frames, refused=summary.refused)

    if workers <= 1:
        analyzer = analyzer or Analyzer(model_path)
        for path in paths:
            account(analyze_file(path, analyzer, out, options, done))
    else:
        model = str(model_path or (analyzer.model_path if analyzer else Analyzer(None).model_path))
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, _init_worker, (model, 1, str(out), options, done)) as pool:
            for report in pool.imap_unordered(_work, paths):
                account(report)
    bar.close()
    summary.seconds = time.perf_counter() - started
    return summary


class _NoBar:
    def update(self, _: int) -> None: ...

    def set_postfix(self, **_: object) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, enabled: bool):
    """A tqdm progress bar (files, rate, ETA) on stderr, or a silent stand-in."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    # disable=None: shown on a terminal, silent when stderr is a pipe or a log file
    return tqdm(total=total, unit="file", desc="analysing", file=sys.stderr, dynamic_ncols=True, disable=None)
