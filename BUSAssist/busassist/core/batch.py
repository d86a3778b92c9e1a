"""One input in, its outputs and rows out: ``analyze_file``, the per-file unit of every batch.

For every analysed frame: a row in ``results.csv`` (the reading of ``core.results``, region,
spacing, model version and SHA-256), the mask as a PNG in the source frame's geometry (0
background, 255 lesion), optionally an overlay PNG, and per DICOM instance one DICOM Segmentation.
Whatever goes wrong with an input or one of its frames becomes one errors.csv row; nothing is
raised. Rerunning skips frames already in ``results.csv`` for the same model (keyed by SOP
Instance UID, file, frame and model SHA-256), so an interrupted run finishes the rest, and a kill
loses at most the frame in flight (for a multi-frame DICOM with SEG output, whose rows wait for
its SEG, the file in flight).

Slicer-free and torch-free: the ``busassist analyze`` command (``apps.analyze``) runs it over a
folder in worker processes, and cluster engines (Dask, Ray) map it over files.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from busassist.constants import MAX_PIXELS
from busassist.core.identifiers import IDENTIFYING_KEYWORDS, Redactor, is_valid_uid
from busassist.core.inference import Analyzer, FrameResult
from busassist.core.io import ALL_FRAMES, Frame, FrameSelection, InputError, is_dicom, iter_frames
from busassist.core.limits import inflated_size_problem
from busassist.core.lookahead import Lookahead
from busassist.core.model_store import sha256_of
from busassist.core.outputs import (
    OVERLAY_PNG_COMPRESSION,
    OutputError,
    append_row,
    ensure_csv,
    frame_key,
    inside,
    load_png,
    overlay_image,
    path_text,
    png_is_intact,
    read_rows,
    resolved,
    safe_stem,
    save_png,
)
from busassist.core.results import READING_COLUMN_NAMES

RESULT_COLUMNS = [
    "file",
    "frame",
    "sop_instance_uid",
    "study_instance_uid",
    "series_instance_uid",
    *READING_COLUMN_NAMES,  # scores, decision, lesion count and the largest lesion's measurements
    "region",
    "pixel_spacing_mm",
    "mask_path",
    "overlay_path",
    "seg_path",
    "model_version",
    "volume_paths",
    "patient_id",
    "patient_name",
    "model_sha256",
    "notes",
    "resume_key",
]
#: Run the network of the next frame while this frame's outputs are written (``core.lookahead``). Read at
#: call time, so the benchmark can compare both.
NETWORK_AHEAD = True

#: ``frame`` is 0-based like results.csv's, empty when the whole input was refused.
ERROR_COLUMNS = ["file", "frame", "stage", "reason"]
__all__ = ["AnalyzeOptions", "FileReport", "analyze_file", "prepare_output", "RESULT_COLUMNS", "ERROR_COLUMNS"]


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
    max_pixels: int = MAX_PIXELS  # largest frame (rows x columns) decoded; larger ones are refused unread


@dataclass
class FileReport:
    """What ``analyze_file`` did with one input."""

    path: str
    analysed: int = 0
    skipped: int = 0
    error: InputError | None = None  # the first refusal (of the input or of one of its frames)
    seg_error: InputError | None = None  # analysed, but its DICOM SEG could not be written
    errors: list[InputError] = field(default_factory=list)  # every errors.csv row this input produced
    warnings: list[str] = field(default_factory=list)  # scrubbed library warnings, each once
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
    row = {
        "file": path_text(frame.source),
        "frame": frame.index,
        "sop_instance_uid": frame.sop_instance_uid or "",
        "study_instance_uid": frame.study_instance_uid or "",
        "series_instance_uid": frame.series_instance_uid or "",
        **result.reading(threshold).columns(),  # the row every face shows (core.results)
        "region": "" if region is None else f"{region.x0},{region.y0},{region.x1},{region.y1}",
        "pixel_spacing_mm": "" if spacing is None else f"{spacing[0]:.6g}\\{spacing[1]:.6g}",
        "mask_path": str(mask_path.relative_to(out)),
        "overlay_path": "" if overlay_path is None else str(overlay_path.relative_to(out)),
        "seg_path": "",  # filled in once the SEG is written
        "model_version": analyzer.metadata.model_version,
        "model_sha256": model_sha256,
        "notes": "; ".join(frame.notes),
        "resume_key": frame_key(frame.source, frame.sop_instance_uid, frame.index, model_sha256),
    }
    return row


def analyze_file(
    path: str | Path | InputError,
    analyzer: Analyzer,
    out: str | Path,
    options: AnalyzeOptions | None = None,
    done: set[str] | frozenset[str] = frozenset(),
) -> FileReport:
    """Analyse one file (every selected frame) and write its outputs into ``out``; never raises for the input.

    This is the unit of work of the batch command and the function to map over files with a
    cluster engine (Dask, Ray, ...): it needs only the file, an ``Analyzer`` (create one per
    worker process and reuse it), the output folder and the keys of frames already done. Rows are
    appended to ``out/results.csv`` (which must exist with its header: call ``prepare_output``),
    and returned in the report. Whatever goes wrong with the file or one of its frames, while
    reading, decoding, analysing or writing, becomes one errors.csv row and ``report.errors``;
    ``path`` may itself be a refusal from ``expand_inputs``, which is recorded the same way.
    """
    options = options or AnalyzeOptions()
    out = resolved(out)
    if isinstance(path, InputError):
        report = FileReport(path.path)
        record_error(out, report, path, Redactor())
        return report
    report = FileReport(str(path))
    redact = Redactor()
    with captured_diagnostics() as diagnostics:
        try:
            redact = _redactor_for(Path(path))
            _analyze_frames(Path(path), analyzer, out, options, done, report, redact)
        except InputError as error:
            record_error(out, report, error, redact)
        except Exception as error:  # anything else about this input: one row, never the run
            record_error(out, report, InputError(path, _describe(error), "analyze"), redact)
    report.warnings += sorted({redact(_without_links(message)) for message in diagnostics})
    return report


def _without_links(message: str) -> str:
    """pydicom's validation warnings end with "Please see <link> ..."; the first sentence says it all."""
    return message.split(" Please see <", 1)[0]


def _describe(error: BaseException) -> str:
    """One line naming the exception type, for a failure nobody planned a message for."""
    text = " ".join(str(error).split())
    return f"{error.__class__.__name__}: {text}" if text else error.__class__.__name__


def _analyze_frames(
    path: Path,
    analyzer: Analyzer,
    out: Path,
    options: AnalyzeOptions,
    done: set[str] | frozenset[str],
    report: FileReport,
    redact: Redactor,
) -> None:
    model_sha256 = analyzer.sha256 or sha256_of(analyzer.model_path)
    threshold = analyzer.threshold(options.effective_weight)
    masks: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}  # bit-packed: 1/8 of a byte mask per frame
    pending: list[dict] = []  # rows of a DICOM whose SEG is written at the end (their seg_path waits for it)
    wants_seg = options.dicom_seg and is_dicom(path)
    first: Frame | None = None
    frames = iter_frames(path, options.any_modality, options.frames, options.max_pixels, luma=True)

    def wanted(item: object) -> bool:  # frames not done before: a done frame is only re-analysed if damaged
        if not NETWORK_AHEAD or not isinstance(item, Frame):
            return False
        return frame_key(item.source, item.sop_instance_uid, item.index, model_sha256) not in done

    with Lookahead(analyzer.analyze) as network:
        for item, ahead in network.ahead(frames, wanted):
            if isinstance(item, InputError):
                record_error(out, report, item, redact)
                continue
            first = first or item
            try:
                analyze = ahead.result if ahead is not None else (lambda frame=item: network.now(frame))
                row, mask = _analyze_frame(item, analyze, analyzer, out, options, done, model_sha256, threshold)
            except Exception as error:  # this frame only: the next one may be fine
                stage = "write" if isinstance(error, (OSError, OutputError)) else "analyze"
                record_error(out, report, InputError(path, _describe(error), stage, item.index), redact)
                continue
            masks[item.index] = _pack(mask)
            if row is None:
                report.skipped += 1
                continue
            if options.keep_identifiers:
                row.update(patient_identifiers(path))
            if wants_seg:
                pending.append(row)
            else:
                _append_result(out, report, row)
    if not (wants_seg and masks and first is not None):
        return
    seg_path = ""
    try:
        seg = _write_seg(path, first, masks, analyzer, out, done, all_skipped=not pending)
        seg_path = str(seg.relative_to(out))
    except Exception as error:  # the frames are analysed and saved; only the SEG is missing
        if not isinstance(error, InputError):
            error = InputError(path, f"DICOM SEG not written: {_describe(error)}", "seg")
        report.seg_error = error
        record_error(out, report, error, redact, counts_as_refusal=False)
    for row in pending:  # each row on its own: one that cannot be written does not cost the others
        row["seg_path"] = seg_path
        try:
            _append_result(out, report, row)
        except Exception as error:
            record_error(out, report, InputError(path, _describe(error), "write", int(row["frame"])), redact)


def _analyze_frame(
    frame: Frame,
    analyze: Callable[[], FrameResult],
    analyzer: Analyzer,
    out: Path,
    options: AnalyzeOptions,
    done: set[str] | frozenset[str],
    model_sha256: str,
    threshold: float,
) -> tuple[dict | None, np.ndarray]:
    """``(row, mask)`` of one frame; ``row`` is None when the frame was done before and its files are intact.

    ``analyze()`` gives the frame's model result (already running when the batch looked ahead); it is
    only called when the frame needs the model.

    A finished frame whose mask or overlay is missing or damaged (zero bytes, cut short) is
    computed again and its files rewritten; its row is already in results.csv.
    """
    stem = safe_stem(frame)
    mask_path = inside(out, out / "masks" / f"{stem}_mask.png")
    overlay_path = inside(out, out / "overlays" / f"{stem}_overlay.png") if options.overlays else None
    key = frame_key(frame.source, frame.sop_instance_uid, frame.index, model_sha256)
    if key in done:
        mask = load_png(mask_path)
        if mask is not None and mask.shape[:2] == frame.pixels.shape[:2]:
            if overlay_path is not None and not png_is_intact(overlay_path):
                save_png(overlay_path, overlay_image(frame.pixels, mask), OVERLAY_PNG_COMPRESSION)
            return None, mask
    result = analyze()
    if not np.isfinite(result.probability):
        raise InputError(frame.source, "the model returned a non-finite score", "analyze", frame.index)
    save_png(mask_path, result.mask)
    if overlay_path is not None:
        save_png(overlay_path, overlay_image(frame.pixels, result.mask), OVERLAY_PNG_COMPRESSION)
    if key in done:  # recomputed to repair its files: the row is there already
        return None, result.mask
    row = _result_row(frame, result, threshold, out, mask_path, overlay_path, analyzer, model_sha256)
    row["volume_paths"] = ";".join(
        str(p.relative_to(out)) for p in save_volumes(out, mask_path, result, options.volume_formats)
    )
    return row, result.mask


def _append_result(out: Path, report: FileReport, row: dict) -> None:
    """One results.csv row, unless another run or worker sharing the folder wrote this frame already."""
    if append_row(out / "results.csv", RESULT_COLUMNS, row, unique_by=("resume_key",)):
        report.rows.append(row)
        report.analysed += 1
    else:
        report.skipped += 1


def _redactor_for(path: Path) -> Redactor:
    """The identifiers of a DICOM file (read raw, without validation warnings); an empty one otherwise."""
    if not is_dicom(path):
        return Redactor()
    import pydicom

    try:
        if inflated_size_problem(path) is not None:
            return Redactor()
        tags = ["SpecificCharacterSet", *IDENTIFYING_KEYWORDS]
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
    except Exception:  # the reader reports an unreadable header
        return Redactor()
    return Redactor.from_dataset(header)


class _Collector(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


#: Warning categories that speak of the program (garbage collection, deprecations), not of the input.
_NOT_ABOUT_THE_INPUT = (ResourceWarning, DeprecationWarning, PendingDeprecationWarning, FutureWarning)


@contextmanager
def captured_diagnostics():
    """Collect the warnings and library log messages of one input instead of printing them raw.

    pydicom's value validation and highdicom quote header values (a birth date, a name) in their
    warnings; they are gathered here and printed scrubbed, once per kind per file.
    """
    messages: list[str] = []
    handler = _Collector(messages)
    loggers = [logging.getLogger(name) for name in ("pydicom", "highdicom")]
    saved = [(logger.propagate, logger.level) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
            messages.extend(str(w.message) for w in caught if not issubclass(w.category, _NOT_ABOUT_THE_INPUT))
    finally:
        for logger, (propagate, _) in zip(loggers, saved):
            logger.removeHandler(handler)
            logger.propagate = propagate


def record_error(
    out: Path, report: FileReport, error: InputError, redact: Redactor, counts_as_refusal: bool = True
) -> None:
    """One errors.csv row (once, also across reruns and runs sharing the folder) and the report's list."""
    error = InputError(error.path, redact(error.reason), error.stage, error.frame)
    report.errors.append(error)
    if counts_as_refusal and report.error is None:
        report.error = error
    row = {"file": path_text(error.path), "frame": "" if error.frame is None else error.frame, "stage": error.stage}
    row["reason"] = path_text(error.reason)
    try:
        append_row(out / "errors.csv", ERROR_COLUMNS, row, unique_by=tuple(ERROR_COLUMNS))
    except Exception as failure:  # errors.csv itself cannot be written: the report and stderr still say it
        report.warnings.append(f"errors.csv not written ({failure.__class__.__name__})")


def patient_identifiers(path: Path) -> dict[str, str]:
    """Patient ID and name of a DICOM file: written only with --keep-identifiers."""
    if not is_dicom(path):
        return {}
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "PatientName"])
        return {"patient_id": str(header.get("PatientID", "")), "patient_name": str(header.get("PatientName", ""))}
    except Exception:  # a malformed value: the columns stay empty, the analysis stands
        return {}


def save_volumes(out: Path, mask_path: Path, result: FrameResult, formats: tuple[str, ...]) -> list[Path]:
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
        target = inside(out, mask_path.with_name(mask_path.stem + {"nifti": ".nii.gz", "nrrd": ".nrrd"}[name]))
        suffix = "".join(target.suffixes[-2:] if name == "nifti" else target.suffixes[-1:])
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp{suffix}")  # unique per process
        sitk.WriteImage(image, str(temporary), useCompression=True)
        temporary.replace(target)
        written.append(target)
    return written


def seg_path_for(frame: Frame, out: Path) -> Path:
    """``seg/<study>/<series>/<SOP UID>.seg.dcm`` from checked UIDs only, resolved inside ``out``."""
    parts = (frame.study_instance_uid, frame.series_instance_uid, frame.sop_instance_uid)
    if not all(is_valid_uid(part) for part in parts):
        raise InputError(
            frame.source, "no DICOM SEG: the source's study, series or instance UID is missing or invalid", "seg"
        )
    study, series, instance = parts
    return inside(out, out / "seg" / study / series / f"{instance}.seg.dcm")


def _pack(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    return np.packbits(np.asarray(mask) > 0), mask.shape[:2]


class _UnpackedMasks(Mapping):
    """Frame index -> bool mask, unpacked only when asked for: a long cine never holds all its masks unpacked."""

    def __init__(self, packed: dict[int, tuple[np.ndarray, tuple[int, int]]]) -> None:
        self._packed = packed

    def __getitem__(self, index: int) -> np.ndarray:
        bits, shape = self._packed[index]
        return np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)

    def __iter__(self):
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


def seg_is_intact(path: Path, frames: int) -> bool:
    """True when ``path`` is a readable SEG with the pixel data of ``frames`` frames (a cut file is not)."""
    import pydicom

    try:
        seg = pydicom.dcmread(path)
        expected = (int(seg.Rows) * int(seg.Columns) * frames + 7) // 8
        return int(getattr(seg, "NumberOfFrames", 1)) == frames and len(seg.PixelData) >= expected
    except Exception:
        return False


def _write_seg(
    path: Path,
    frame: Frame,
    masks: dict[int, tuple[np.ndarray, tuple[int, int]]],
    analyzer: Analyzer,
    out: Path,
    done: set[str] | frozenset[str] = frozenset(),
    all_skipped: bool = False,
) -> Path:
    """One DICOM Segmentation per analysed instance, with every analysed frame of it; returns its path.

    "Every analysed frame" includes frames an earlier run into the same folder analysed with another
    ``--frames`` selection (their masks are read back), so a rerun never shrinks a SEG that earlier
    rows point to. Masks wait for the SEG bit-packed (a 1,000-frame 640 x 480 cine: 38 MB) and are
    unpacked one at a time while it is written. A rerun that found every frame done keeps an intact
    SEG instead of building it again.
    """
    import pydicom

    from busassist.core.dicom_seg import SegmentationError, write_segmentation

    target = seg_path_for(frame, out)
    try:
        source = pydicom.dcmread(path, stop_before_pixels=True)
        masks = {**_earlier_masks(source, frame, masks, analyzer, out, done), **masks}
        if all_skipped and seg_is_intact(target, len(masks)):
            return target
        return write_segmentation(source, _UnpackedMasks(masks), analyzer.metadata.model_version, target)
    except SegmentationError as error:
        raise InputError(path, f"DICOM SEG not written: {error}", "seg") from None
    except Exception as error:  # a header value highdicom or pydicom cannot take: the frames stay
        raise InputError(path, f"DICOM SEG not written: {_describe(error)}", "seg") from None


def _earlier_masks(source, frame: Frame, masks: dict, analyzer: Analyzer, out: Path, done) -> dict:
    """Packed masks of this instance's frames that earlier runs analysed but this run did not select."""
    try:
        count = int(source.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return {}
    model_sha256 = analyzer.sha256 or sha256_of(analyzer.model_path)
    earlier = {}
    for index in range(count):
        if index in masks or frame_key(frame.source, frame.sop_instance_uid, index, model_sha256) not in done:
            continue
        stand_in = Frame(frame.source, index, frame.pixels, None, frame.sop_instance_uid)
        mask = load_png(inside(out, out / "masks" / f"{safe_stem(stand_in)}_mask.png"))
        if mask is not None and mask.shape[:2] == (int(source.Rows), int(source.Columns)):
            earlier[index] = _pack(mask)
    return earlier


def prepare_output(out: Path) -> set[str]:
    """Create the output folder and CSV headers; return the resume keys of frames already in results.csv.

    An output folder that cannot be used (read-only file system, a file where the folder should
    be, no permission) raises ``OutputError`` with one line.
    """
    out = resolved(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not out.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(out))
        ensure_csv(out / "results.csv", RESULT_COLUMNS)
        ensure_csv(out / "errors.csv", ERROR_COLUMNS)
        return {row["resume_key"] for row in read_rows(out / "results.csv") if row.get("resume_key")}
    except (csv.Error, UnicodeError) as error:
        raise OutputError(
            f"{out}: results.csv or errors.csv is damaged ({error}); move it aside to start afresh"
        ) from None
    except OSError as error:
        raise OutputError(
            f"{out}: output folder cannot be written ({error.strerror or error.__class__.__name__})"
        ) from None
