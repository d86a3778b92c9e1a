"""Reading ultrasound frames from DICOM (pydicom) and from PNG/JPEG files.

Every reader yields ``Frame`` objects: display-ready pixels (grey, or RGB after colour-space
and palette conversion), the frame number, and the ultrasound tissue region the DICOM declares
(Sequence of Ultrasound Regions), which inference crops to. Failures raise ``InputError`` with a
one-line reason that names the file, never a traceback.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error

import numpy as np

from busassist.constants import MAX_PIXELS
from busassist.core.identifiers import checked_uid
from busassist.core.limits import BudgetError, check_declared_size, damaged_frames, inflated_size_problem

#: SOP classes accepted as ultrasound (current and retired) plus secondary capture.
ULTRASOUND_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
#: RegionSpatialFormat 1 = 2D (B-mode); RegionDataType 1 = tissue.
_SPATIAL_2D = 1
_DATA_TISSUE = 1
_UNITS_CM = 3


def apply_color_lut(array: np.ndarray, dataset) -> np.ndarray:
    """pydicom's palette expansion (``pydicom.pixels`` in pydicom 3, the handler utils in 2.x)."""
    try:
        from pydicom.pixels import apply_color_lut as apply
    except ImportError:
        from pydicom.pixel_data_handlers.util import apply_color_lut as apply
    return apply(array, dataset)


class InputError(Exception):
    """An input that cannot be analysed; ``str()`` is a one-line reason naming the file."""

    def __init__(self, path: str | Path, reason: str, stage: str = "read", frame: int | None = None) -> None:
        reason = " ".join(str(reason).split())  # one line, whatever a library put into it
        where = f"{path}" if frame is None else f"{path} (frame {frame})"
        super().__init__(f"{where}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.stage = stage
        self.frame = frame  # 0-based, like results.csv; None when the whole input is refused

    def __reduce__(self):  # picklable, so worker processes can report it
        return (type(self), (self.path, self.reason, self.stage, self.frame))


@dataclass(frozen=True)
class Region:
    """A rectangle of the frame, inclusive-exclusive pixel bounds, and its pixel spacing in mm."""

    x0: int
    y0: int
    x1: int
    y1: int
    spacing_mm: tuple[float, float] | None = None  # (row, column) spacing

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)

    def clipped(self, height: int, width: int) -> Region | None:
        x0, y0 = max(0, self.x0), max(0, self.y0)
        x1, y1 = min(width, self.x1), min(height, self.y1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        return Region(x0, y0, x1, y1, self.spacing_mm)


@dataclass
class Frame:
    """One analysable frame."""

    source: str
    index: int  # 0-based frame number within the file
    pixels: np.ndarray  # (H, W) grey or (H, W, 3) RGB
    region: Region | None = None
    sop_instance_uid: str | None = None  # only a valid DICOM UID (core.identifiers); None when missing or invalid
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    notes: tuple[str, ...] = ()  # documented fallbacks taken while reading (invalid UID, no calibration, ...)


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be opened as an input without risk, or None for a readable regular file.

    Checked with ``stat`` before any ``open``: opening a named pipe blocks until a writer comes,
    and a device can be endless.
    """
    import errno
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop"
        if error.errno == errno.ENOENT:
            return "broken symbolic link" if os.path.islink(path) else "no such file"
        if error.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        return f"cannot be examined ({error.__class__.__name__})"
    except ValueError:  # e.g. a NUL byte in the name
        return "invalid file name"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        kind = "named pipe" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
        return f"not a regular file ({kind}); skipped without opening it"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def is_dicom(path: Path) -> bool:
    """True when the file has the DICOM preamble magic 'DICM' at byte 128 (never opens a non-regular file)."""
    if regular_file_problem(Path(path)) is not None:
        return False
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_image_file(path: Path, max_pixels: int = MAX_PIXELS) -> Frame:
    """A PNG or JPEG file as one frame (needs Pillow, which the CLI installs); the size is checked before decoding."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as error:  # pragma: no cover - Pillow ships with the package
        raise InputError(path, "reading PNG/JPEG needs Pillow (pip install pillow)") from error
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InputError(
                        path,
                        f"image of {height} x {width} pixels exceeds the limit of {max_pixels} pixels (--max-pixels)",
                        "check",
                    )
                image.load()
                if image.mode in ("L", "RGB"):
                    pixels = np.asarray(image)
                elif image.mode in ("I;16", "I;16B", "I", "F"):
                    pixels = np.asarray(image, dtype=np.float32)
                else:
                    pixels = np.asarray(image.convert("RGB"))
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        reason = f"image exceeds the limit of {max_pixels} pixels (--max-pixels); Pillow: {error.__class__.__name__}"
        raise InputError(path, reason, "check") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct_error, EOFError) as error:
        raise InputError(path, f"not a readable image ({error.__class__.__name__})") from None
    _check_pixels(path, pixels)
    return Frame(str(path), 0, pixels)


def _check_pixels(path: Path, pixels: np.ndarray, frame: int | None = None) -> None:
    """Refuse frames too small to analyse and frames with NaN or infinite values (they would score ``nan``)."""
    if pixels.ndim < 2 or pixels.shape[0] < 8 or pixels.shape[1] < 8:
        raise InputError(path, f"frame of {pixels.shape[:2]} pixels is too small to analyse", "decode", frame)
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise InputError(path, "pixel data holds NaN or infinite values", "decode", frame)


def _as_int(value, default: int | None = None) -> int | None:
    """An integer header value, or ``default`` for a missing, empty or malformed one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def tissue_region(dataset, height: int, width: int, notes: list[str] | None = None) -> Region | None:
    """The largest 2-D tissue region of the Sequence of Ultrasound Regions, if any.

    Several tissue regions (dual view) are reduced to the largest one; the choice is documented
    in the README. Spacing is reported in mm only when the physical units are centimetres and both
    deltas are usable numbers; otherwise the region is kept and measurements stay in pixels (a note
    says why). A malformed region item is skipped, never a reason to refuse the frame.
    """
    best: Region | None = None
    try:
        items = list(getattr(dataset, "SequenceOfUltrasoundRegions", []) or [])
    except Exception:  # a sequence pydicom cannot parse: analyse the whole frame
        items = []
        if notes is not None:
            notes.append("ultrasound regions unreadable; whole frame analysed")
    for item in items:
        try:
            if _as_int(getattr(item, "RegionSpatialFormat", 0), 0) != _SPATIAL_2D:
                continue
            if _as_int(getattr(item, "RegionDataType", _DATA_TISSUE), -1) != _DATA_TISSUE:
                continue
            corners = [
                _as_int(getattr(item, name, None))
                for name in ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1")
            ]
        except Exception:  # a value of the wrong VR that pydicom refuses to convert
            continue
        if any(corner is None for corner in corners):
            continue
        x0, y0, x1, y1 = corners
        spacing = _region_spacing(item)
        in_cm = _as_int(getattr(item, "PhysicalUnitsXDirection", 0), 0) == _UNITS_CM
        if spacing is None and in_cm and notes is not None:
            notes.append("region in cm without usable PhysicalDeltaX/Y; measurements in pixels")
        clipped = Region(x0, y0, x1 + 1, y1 + 1, spacing).clipped(height, width)
        if clipped is not None and (best is None or clipped.area > best.area):
            best = clipped
    return best


def _region_spacing(item) -> tuple[float, float] | None:
    """(row, column) spacing in mm of a region in cm, or None when it is not calibrated in cm."""
    try:
        if _as_int(getattr(item, "PhysicalUnitsXDirection", 0), 0) != _UNITS_CM:
            return None
        if _as_int(getattr(item, "PhysicalUnitsYDirection", 0), 0) != _UNITS_CM:
            return None
        dx, dy = float(item.PhysicalDeltaX), float(item.PhysicalDeltaY)
    except Exception:  # missing, empty or not a number
        return None
    if not (np.isfinite(dx) and np.isfinite(dy)) or dx == 0 or dy == 0:
        return None
    return (abs(dy) * 10.0, abs(dx) * 10.0)


def _palette_peak(dataset) -> float:
    """Full-scale value of a 16-bit palette: 65535, or 255 for tables that hold 8-bit values.

    Judged from the whole table, not from one frame, so a dark frame is not stretched and two
    encodings of the same picture decode identically.
    """
    entries, first = (int(v) for v in dataset.RedPaletteColorLookupTableDescriptor[:2])
    table = apply_color_lut(np.arange(first, first + (entries or 65536)), dataset)
    return 255.0 if table.max() <= 255 else 65535.0


def _to_display(path: Path, dataset, array: np.ndarray, palette_peak: float = 255.0) -> np.ndarray:
    """Photometric-correct pixels: palettes expanded, MONOCHROME1 inverted (pydicom gives RGB for YBR)."""
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(array, dataset)
        if rgb.dtype == np.uint8:
            return rgb
        return rgb.astype(np.float32) * (255.0 / palette_peak)
    bits = int(getattr(dataset, "BitsStored", 8))
    if photometric == "MONOCHROME1":
        array = (2**bits - 1) - array.astype(np.float32)
    if bits > 8 and photometric.startswith("MONOCHROME"):
        # Scale by the stored bit depth, not the frame's own range, so a dark frame stays dark.
        return array.astype(np.float32) * (255.0 / (2**bits - 1))
    return array


class FrameSelection:
    """Which frames of a multi-frame file to analyse: ``all``, ``first``, ``middle``, ``N,M-K`` or ``every:K``.

    Frame numbers in ``N,M-K`` are 1-based like DICOM's Referenced Frame Number; numbers past the
    last frame are ignored. ``every:K`` takes frames 1, 1 + K, 1 + 2K, ...
    """

    def __init__(self, spec: str = "all") -> None:
        self.spec = spec.strip().lower()
        if self.spec in ("all", "first", "middle"):
            return
        try:
            if self.spec.startswith("every:"):
                if int(self.spec[6:]) < 1:
                    raise ValueError
                return
            for part in self.spec.split(","):
                low, _, high = part.partition("-")
                if int(low) < 1 or (high and int(high) < int(low)):
                    raise ValueError
        except ValueError:
            raise ValueError(f"invalid frame selection {spec!r}: use all, first, middle, N,M-K or every:K") from None

    def indices(self, count: int) -> list[int]:
        """0-based frame indices to read from a file with ``count`` frames (never more than ``count``)."""
        if self.spec == "all":
            return list(range(count))
        if self.spec == "first":
            return [0] if count else []
        if self.spec == "middle":
            return [count // 2] if count else []
        if self.spec.startswith("every:"):
            return list(range(0, count, int(self.spec[6:])))
        chosen: set[int] = set()
        for part in self.spec.split(","):
            low, _, high = part.partition("-")
            # clipped to the frame count first: "1-100000000" costs what the file has, not 10^8 numbers
            chosen.update(range(min(int(low) - 1, count), min(int(high or low), count)))
        return sorted(chosen)


ALL_FRAMES = FrameSelection("all")


DEFLATED = "1.2.840.10008.1.2.1.99"
#: Words in decoder warnings that mean the pixel data was cut short or damaged: such a frame is
#: refused rather than analysed on what was left of it.
_DAMAGE_WORDS = (
    "truncat",
    "premature",
    "insufficient",
    "less than expected",
    "fewer",
    "short",
    "missing",
    "corrupt",
    "incomplete",
    "not enough",
    "end of",
    "padded",
)


class _InMemoryDecoder:
    """Frames decoded one at a time from the dataset in memory: the fallback where streaming fails.

    Used for deflated files (``iter_pixels`` cannot stream them), with pydicom 2 (no ``iter_pixels``;
    Slicer 5.8) and for a frame that pydicom's file streaming refuses although its in-memory decoder
    accepts it (e.g. an offset-table item tagged (0000,0000), repaired here). The file is read once,
    on first use, and only when it is at most ``MAX_WHOLE_FILE_BYTES``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dataset = None
        self.whole = None  # pydicom 2: every frame, decoded at once

    def frame(self, index: int) -> np.ndarray | Exception:
        """Frame ``index`` (0-based), or the exception that decoding it raised."""
        try:
            return self._frame(index)
        except Exception as error:  # this frame only; the next one may decode
            return error

    def _frame(self, index: int) -> np.ndarray:
        import pydicom

        from busassist.constants import MAX_WHOLE_FILE_BYTES

        if self.dataset is None:
            if os.path.getsize(self.path) > MAX_WHOLE_FILE_BYTES:
                raise InputError(self.path, f"file over {MAX_WHOLE_FILE_BYTES} bytes cannot be decoded in memory")
            self.dataset = pydicom.dcmread(self.path)
            _repair_offset_table_tag(self.dataset)
        try:
            from pydicom.pixels import pixel_array
        except ImportError:  # pydicom 2: the whole array, YBR converted here
            return self._whole_pydicom2()[index]
        return pixel_array(self.dataset, index=index)

    def _whole_pydicom2(self) -> np.ndarray:
        if self.whole is None:
            from pydicom.pixel_data_handlers.util import convert_color_space

            array = self.dataset.pixel_array
            photometric = str(self.dataset.PhotometricInterpretation)
            if photometric.startswith("YBR") and int(getattr(self.dataset, "SamplesPerPixel", 1)) == 3:
                array = convert_color_space(array, photometric, "RGB")
            if int(getattr(self.dataset, "NumberOfFrames", 1) or 1) == 1:
                array = array[None]
            self.whole = array
        return self.whole


def _repair_offset_table_tag(dataset) -> None:
    """Read a Basic Offset Table item tagged (0000,0000) (a known writer bug) as the item it stands for."""
    data = dataset.get("PixelData")
    transfer_syntax = str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", ""))
    if isinstance(data, bytes) and transfer_syntax.startswith("1.2.840.10008.1.2.4.") and data[:4] == bytes(4):
        dataset.PixelData = b"\xfe\xff\x00\xe0" + data[4:]


def _decoded_frames(
    path: Path, indices: list[int], transfer_syntax: str, luma: bool = False
) -> Iterator[tuple[int, np.ndarray | Exception]]:
    """``(index, array or the exception that decoding this frame raised)``: exactly one per index, in order.

    Streams with pydicom 3's ``iter_pixels`` (one frame in memory at a time). Where streaming fails
    at a frame, that frame alone is decoded from the dataset in memory, and streaming resumes after
    it: one bad frame costs that frame, and what ``pixel_array`` can decode is never refused.
    With ``luma`` (a YBR colour source), streamed frames come as their Y plane: the luma the
    pipeline would compute from RGB, without the YBR -> RGB -> grey round trip.
    """
    try:
        from pydicom.pixels import iter_pixels
    except ImportError:
        iter_pixels = None
    memory = _InMemoryDecoder(path)
    remaining = list(indices)
    while remaining:
        done = 0
        if iter_pixels is not None and transfer_syntax != DEFLATED:
            try:
                for array in iter_pixels(path, indices=remaining, raw=luma):
                    yield remaining[done], array[..., 0] if luma else array
                    done += 1
            except Exception:  # noqa: BLE001 - any decoder failure: this frame from memory, then stream on
                pass
            if done == len(remaining):
                return
            yield remaining[done], memory.frame(remaining[done])
            remaining = remaining[done + 1 :]
        else:
            for index in remaining:
                yield index, memory.frame(index)
            return


def _header(path: Path):
    """The DICOM header without pixel data, or ``InputError``."""
    import pydicom

    problem = regular_file_problem(path) or inflated_size_problem(path)
    if problem is not None:
        raise InputError(path, problem, "read" if "deflated" not in problem else "check")
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except PermissionError:
        raise InputError(path, "permission denied") from None
    except Exception as error:  # InvalidDicomError, struct errors, bad lengths, ...: all mean the same here
        raise InputError(path, f"not a readable DICOM file ({error.__class__.__name__})") from None


def _frame_count(path: Path, dataset, notes: list[str]) -> int:
    """Number of Frames as a positive integer; refused when negative or not a whole number.

    Absent means 1. Empty or 0 is read as 1 frame with a note, as pydicom's own decoder does (a
    refusal there would refuse what ``pixel_array`` decodes).
    """
    if "NumberOfFrames" not in dataset:
        return 1
    try:
        raw = dataset.NumberOfFrames
    except Exception:
        raise InputError(path, "NumberOfFrames is not a positive whole number", "check") from None
    if raw is None or str(raw).strip() in ("", "0"):
        notes.append("NumberOfFrames empty or 0; read as 1 frame")
        return 1
    try:
        count = int(str(raw).strip())
    except ValueError:
        count = None
    if count is None or count < 1:
        raise InputError(path, "NumberOfFrames is not a positive whole number", "check")
    return count


def _checked_header(path: Path, dataset, any_modality: bool, max_pixels: int, notes: list[str]) -> int:
    """Check SOP class, dimensions and the size budget; return the frame count."""
    sop_class = str(getattr(dataset, "SOPClassUID", "") or "")
    modality = str(getattr(dataset, "Modality", "") or "")
    if not sop_class and not modality and "Rows" not in dataset:
        raise InputError(path, "incomplete DICOM header (truncated file?)", "read")
    if not sop_class:
        sop_class = str(getattr(getattr(dataset, "file_meta", None), "MediaStorageSOPClassUID", ""))
    if not any_modality and sop_class not in ULTRASOUND_SOP_CLASSES and modality != "US":
        uid = getattr(dataset, "SOPClassUID", None)
        kind = getattr(uid, "name", sop_class) if sop_class else "unknown"
        raise InputError(path, f"not an ultrasound image (SOP class {kind}, modality {modality or '-'})", "check")
    if "Rows" not in dataset or "Columns" not in dataset:
        raise InputError(path, "DICOM without pixel data", "check")
    rows, columns = _as_int(dataset.Rows), _as_int(dataset.Columns)
    if not rows or not columns or rows < 0 or columns < 0:
        raise InputError(path, "Rows or Columns missing, empty or not positive", "check")
    count = _frame_count(path, dataset, notes)
    try:
        check_declared_size(path, dataset, count, max_pixels)
    except BudgetError as error:
        raise InputError(path, str(error), "check") from None
    except (TypeError, ValueError) as error:
        raise InputError(path, f"malformed Image Pixel attributes ({error.__class__.__name__})", "check") from None
    return count


def _uids(dataset, notes: list[str]) -> tuple[str | None, str | None, str | None]:
    """SOP instance, study and series UIDs, each None (with a note) when missing or not a valid UID."""
    checked = []
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        try:
            raw = dataset.get(keyword)
        except Exception:
            raw = "\x00invalid"
        uid, note = checked_uid(raw, keyword)
        if note:
            notes.append(note)
        checked.append(uid)
    return checked[0], checked[1], checked[2]


def _damage_warning(caught: list) -> str | None:
    for warning in caught:
        message = str(warning.message)
        if any(word in message.lower() for word in _DAMAGE_WORDS):
            return message
    return None


def iter_frames(
    path: str | Path,
    any_modality: bool = False,
    frames: FrameSelection = ALL_FRAMES,
    max_pixels: int = MAX_PIXELS,
    luma: bool = False,
) -> Iterator[Frame | InputError]:
    """Frames of one input, and in place of each frame that cannot be analysed its ``InputError``.

    A problem with the whole file (unreadable, not ultrasound, over the size budget) is raised as
    ``InputError`` before the first frame; a problem with one frame (damaged data, NaN pixels) is
    yielded in that frame's place, so the batch records it and goes on with the next frame. Every
    selected frame ends as exactly one ``Frame`` or one ``InputError``.

    ``luma``: a YBR colour DICOM (the usual JPEG ultrasound cine) yields its Y plane as a grey
    frame instead of RGB: the grey the pipeline would compute anyway (BT.601 luma), about twice
    as fast to decode. For faces that only show grey (the batch, the reviewer).
    """
    path = Path(path)
    problem = regular_file_problem(path)
    if problem is not None:
        raise InputError(path, problem)
    if path.suffix.lower() in IMAGE_SUFFIXES and not is_dicom(path):
        if frames.indices(1):
            yield read_image_file(path, max_pixels)
        return
    yield from _iter_dicom(path, any_modality, frames, max_pixels, luma)


def _iter_dicom(
    path: Path, any_modality: bool, frames: FrameSelection, max_pixels: int, luma: bool = False
) -> Iterator[Frame | InputError]:
    dataset = _header(path)
    try:
        notes: list[str] = []
        count = _checked_header(path, dataset, any_modality, max_pixels, notes)
        height, width = int(dataset.Rows), int(dataset.Columns)
        region = tissue_region(dataset, height, width, notes)
        uid, study, series = _uids(dataset, notes)
        indices = frames.indices(count)
        damaged = damaged_frames(path, dataset, count, indices, max_pixels)
        transfer_syntax = str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", ""))
        palette = str(getattr(dataset, "PhotometricInterpretation", "")).upper() == "PALETTE COLOR"
        palette_peak = _palette_peak(dataset) if palette else 255.0  # once per file, not per frame
    except InputError:
        raise
    except Exception as error:  # a malformed value anywhere in the header: one line, never a traceback
        raise InputError(path, f"malformed DICOM header ({error.__class__.__name__})", "check") from None
    photometric = str(getattr(dataset, "PhotometricInterpretation", "")).upper()
    luma = luma and photometric in ("YBR_FULL", "YBR_FULL_422") and _as_int(dataset.get("SamplesPerPixel"), 1) == 3
    stream = _decoded_frames(path, [index for index in indices if index not in damaged], transfer_syntax, luma)
    for index in indices:  # every selected frame ends as exactly one Frame or one InputError
        if index in damaged:  # refused before decoding: the decoder never sees it
            yield InputError(path, damaged[index], "decode", index)
            continue
        with warnings.catch_warnings(record=True) as caught:  # only around decoding, never across a yield
            warnings.simplefilter("always")
            try:
                _, array = next(stream)
            except StopIteration:
                array = RuntimeError("the decoder returned fewer frames than selected")
            except Exception as error:  # noqa: BLE001 - any decoder failure is this frame's refusal
                array = error
        if isinstance(array, Exception):
            yield InputError(path, _decode_reason(array), "decode", index)
            continue
        damage = _damage_warning(caught)
        if damage is not None:
            yield InputError(path, f"damaged pixel data, frame refused (decoder: {damage})", "decode", index)
            continue
        try:
            pixels = _to_display(path, dataset, array, palette_peak)
            _check_pixels(path, pixels, index)
        except InputError as error:
            yield error
            continue
        except Exception as error:
            yield InputError(path, _decode_reason(error), "decode", index)
            continue
        yield Frame(str(path), index, pixels, region, uid, study, series, tuple(notes))


def _decode_reason(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = " ".join(lines[:2]) if lines else ""
    return f"pixel data cannot be decoded ({error.__class__.__name__}{': ' + detail if detail else ''})"


def frame_count(path: str | Path, any_modality: bool = False, max_pixels: int = MAX_PIXELS) -> int:
    """How many frames an input has (1 for PNG/JPEG), from its header only; ``InputError`` when it cannot be one.

    Runs the same checks as reading (regular file, ultrasound, size budget) without decoding pixels,
    so a worklist can show a whole folder at once.
    """
    path = Path(path)
    problem = regular_file_problem(path)
    if problem is not None:
        raise InputError(path, problem)
    if path.suffix.lower() in IMAGE_SUFFIXES and not is_dicom(path):
        return 1
    dataset = _header(path)
    try:
        return _checked_header(path, dataset, any_modality, max_pixels, [])
    except InputError:
        raise
    except Exception as error:
        raise InputError(path, f"malformed DICOM header ({error.__class__.__name__})", "check") from None


def read_dicom_frames(
    path: Path, any_modality: bool = False, frames: FrameSelection = ALL_FRAMES, max_pixels: int = MAX_PIXELS
) -> Iterator[Frame]:
    """Frames of a DICOM file, one at a time (a long cine never sits in memory whole); the first problem raises."""
    for item in _iter_dicom(Path(path), any_modality, frames, max_pixels):
        if isinstance(item, InputError):
            raise item
        yield item


def read_frames(
    path: str | Path, any_modality: bool = False, frames: FrameSelection = ALL_FRAMES, max_pixels: int = MAX_PIXELS
) -> Iterator[Frame]:
    """Frames of a DICOM, PNG or JPEG file (DICOM recognised by content); the first problem raises ``InputError``."""
    for item in iter_frames(path, any_modality, frames, max_pixels):
        if isinstance(item, InputError):
            raise item
        yield item
