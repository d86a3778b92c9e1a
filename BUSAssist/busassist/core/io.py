"""Reading ultrasound frames from DICOM (pydicom) and from PNG/JPEG files.

Every reader yields ``Frame`` objects: display-ready pixels (grey, or RGB after colour-space
and palette conversion), the frame number, and the ultrasound tissue region the DICOM declares
(Sequence of Ultrasound Regions), which inference crops to. Failures raise ``InputError`` with a
one-line reason that names the file, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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

    def __init__(self, path: str | Path, reason: str, stage: str = "read") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.stage = stage

    def __reduce__(self):  # picklable, so worker processes can report it
        return (type(self), (self.path, self.reason, self.stage))


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
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None


def is_dicom(path: Path) -> bool:
    """True when the file has the DICOM preamble magic 'DICM' at byte 128."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_image_file(path: Path) -> Frame:
    """A PNG or JPEG file as one frame (needs Pillow, which the CLI installs)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as error:  # pragma: no cover - Pillow ships with the package
        raise InputError(path, "reading PNG/JPEG needs Pillow (pip install pillow)") from error
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("L", "RGB"):
                pixels = np.asarray(image)
            elif image.mode in ("I;16", "I;16B", "I"):
                pixels = np.asarray(image, dtype=np.float32)
            else:
                pixels = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InputError(path, f"not a readable image ({error.__class__.__name__})") from None
    _check_size(path, pixels)
    return Frame(str(path), 0, pixels)


def _check_size(path: Path, pixels: np.ndarray) -> None:
    if pixels.ndim < 2 or pixels.shape[0] < 8 or pixels.shape[1] < 8:
        raise InputError(path, f"frame of {pixels.shape[:2]} pixels is too small to analyse", "decode")


def tissue_region(dataset, height: int, width: int) -> Region | None:
    """The largest 2-D tissue region of the Sequence of Ultrasound Regions, if any.

    Several tissue regions (dual view) are reduced to the largest one; the choice is documented
    in the README. Spacing is reported in mm only when the physical units are centimetres.
    """
    best: Region | None = None
    for item in getattr(dataset, "SequenceOfUltrasoundRegions", []) or []:
        if int(getattr(item, "RegionSpatialFormat", 0)) != _SPATIAL_2D:
            continue
        if int(getattr(item, "RegionDataType", _DATA_TISSUE)) != _DATA_TISSUE:
            continue
        try:
            region = Region(
                int(item.RegionLocationMinX0),
                int(item.RegionLocationMinY0),
                int(item.RegionLocationMaxX1) + 1,
                int(item.RegionLocationMaxY1) + 1,
            )
        except AttributeError:
            continue
        spacing = None
        if (
            int(getattr(item, "PhysicalUnitsXDirection", 0)) == _UNITS_CM
            and int(getattr(item, "PhysicalUnitsYDirection", 0)) == _UNITS_CM
        ):
            dx, dy = float(item.PhysicalDeltaX), float(item.PhysicalDeltaY)
            if dx > 0 and dy > 0:
                spacing = (abs(dy) * 10.0, abs(dx) * 10.0)
        clipped = Region(region.x0, region.y0, region.x1, region.y1, spacing).clipped(height, width)
        if clipped is not None and (best is None or clipped.area > best.area):
            best = clipped
    return best


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
        """0-based frame indices to read from a file with ``count`` frames."""
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
            chosen.update(range(int(low) - 1, int(high or low)))
        return sorted(i for i in chosen if i < count)


ALL_FRAMES = FrameSelection("all")


DEFLATED = "1.2.840.10008.1.2.1.99"


def _iter_pixel_arrays(path: Path, indices: list[int], transfer_syntax: str) -> Iterator[np.ndarray]:
    """Decoded frames ``indices``, streamed with pydicom 3's ``iter_pixels``.

    The whole dataset is decoded at once instead (YBR converted to RGB, as pydicom 3 does by
    default) in two cases: with pydicom 2.x, which Slicer 5.8 (Python 3.9) ships and which has no
    ``iter_pixels``, and for deflated files, which ``iter_pixels`` cannot stream from disk.
    """
    try:
        from pydicom.pixels import iter_pixels
    except ImportError:
        iter_pixels = None
    if iter_pixels is not None and transfer_syntax != DEFLATED:
        yield from iter_pixels(path, indices=indices)
        return
    import pydicom

    try:
        from pydicom.pixels import convert_color_space
    except ImportError:
        from pydicom.pixel_data_handlers.util import convert_color_space
    dataset = pydicom.dcmread(path)
    array = dataset.pixel_array
    photometric = str(dataset.PhotometricInterpretation)
    if iter_pixels is None and photometric.startswith("YBR") and int(getattr(dataset, "SamplesPerPixel", 1)) == 3:
        array = convert_color_space(array, photometric, "RGB")
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) == 1:
        array = array[None]
    for index in indices:
        yield array[index]


def read_dicom_frames(path: Path, any_modality: bool = False, frames: FrameSelection = ALL_FRAMES) -> Iterator[Frame]:
    """Frames of a DICOM file, one at a time (a long cine never sits in memory whole)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as error:
        raise InputError(path, f"not a readable DICOM file ({error.__class__.__name__})") from None
    sop_class = str(getattr(dataset, "SOPClassUID", ""))
    modality = str(getattr(dataset, "Modality", ""))
    if not sop_class and not modality and "Rows" not in dataset:
        raise InputError(path, "incomplete DICOM header (truncated file?)", "read")
    if not sop_class:
        sop_class = str(getattr(getattr(dataset, "file_meta", None), "MediaStorageSOPClassUID", ""))
    if not any_modality and sop_class not in ULTRASOUND_SOP_CLASSES and modality != "US":
        kind = getattr(getattr(dataset, "SOPClassUID", None), "name", sop_class) or "unknown"
        raise InputError(path, f"not an ultrasound image (SOP class {kind}, modality {modality or '-'})", "check")
    if "Rows" not in dataset or "Columns" not in dataset:
        raise InputError(path, "DICOM without pixel data", "check")
    height, width = int(dataset.Rows), int(dataset.Columns)
    region = tissue_region(dataset, height, width)
    uid = str(getattr(dataset, "SOPInstanceUID", "")) or None
    study = str(getattr(dataset, "StudyInstanceUID", "")) or None
    series = str(getattr(dataset, "SeriesInstanceUID", "")) or None
    try:
        indices = frames.indices(int(getattr(dataset, "NumberOfFrames", 1) or 1))
        transfer_syntax = str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", ""))
        palette = str(getattr(dataset, "PhotometricInterpretation", "")).upper() == "PALETTE COLOR"
        palette_peak = _palette_peak(dataset) if palette else 255.0  # once per file, not per frame
        for index, array in zip(indices, _iter_pixel_arrays(path, indices, transfer_syntax)):
            pixels = _to_display(path, dataset, array, palette_peak)
            _check_size(path, pixels)
            yield Frame(str(path), index, pixels, region, uid, study, series)
    except InputError:
        raise
    except (AttributeError, KeyError) as error:
        raise InputError(path, f"DICOM without usable pixel data ({error})", "decode") from None
    except (NotImplementedError, RuntimeError, ValueError, OSError, EOFError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = " ".join(lines[:2]) if lines else error.__class__.__name__
        raise InputError(path, f"pixel data cannot be decoded: {reason}", "decode") from None


def read_frames(path: str | Path, any_modality: bool = False, frames: FrameSelection = ALL_FRAMES) -> Iterator[Frame]:
    """Frames of a DICOM, PNG or JPEG file (DICOM recognised by content, not by extension)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, not a file")
    if path.suffix.lower() in IMAGE_SUFFIXES and not is_dicom(path):
        if frames.indices(1):
            yield read_image_file(path)
        return
    yield from read_dicom_frames(path, any_modality, frames)
