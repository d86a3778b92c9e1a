"""A generator of hostile batch inputs: pydicom + numpy (+ Pillow for JPEG/PNG), no network, seconds to run.

Each ``Case`` writes one input that once stopped, misled or leaked through ``busassist analyze``
(the classes of issue 13) and says what the batch must do with it now: analyse it (``analysed``)
or refuse it with one errors.csv row (``refused``) at a given stage. Run it by hand to get a
folder to point any tool at::

    python Testing/Python/hostile_inputs.py /tmp/hostile
"""

from __future__ import annotations

import io
import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, generate_uid

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
#: Identifiers planted in every hostile file; none may appear in a file name, a CSV or a log line.
PATIENT_NAME = "Hostile^Harriet"
PATIENT_ID = "PID-HOSTILE-4711"
BIRTH_DATE = "1961-07-23"  # invalid DA on purpose: pydicom's validation quotes it
SECRETS = ("Hostile", "Harriet", "PID-HOSTILE-4711", "1961-07-23", "19610723")


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]  # writes the input into a folder and returns its path
    outcome: str  # "analysed" (a results.csv row per frame) or "refused" (an errors.csv row)
    stage: str = ""  # errors.csv stage of the refusal (or of the SEG failure of an analysed input)
    reason: str = ""  # a word the reason must contain


def tissue(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """Speckle-like grey tissue with a dark round 'lesion': enough for the model to run on."""
    rng = np.random.default_rng(seed)
    image = rng.gamma(2.0, 40.0, (height, width)).clip(0, 255).astype(np.uint8)
    rows, columns = np.ogrid[:height, :width]
    image[(rows - height // 2) ** 2 + (columns - width // 2) ** 2 < (min(height, width) // 5) ** 2] //= 4
    return image


def us_dataset(pixels: np.ndarray, name: str, frames: int = 1) -> Dataset:
    """A valid single- or multi-frame ultrasound dataset (explicit VR little endian, grey or RGB)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME if frames > 1 else US_IMAGE
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["hostile", name])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["hostile-study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["hostile-series"])
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.Modality = "US"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    ds.PhotometricInterpretation = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 4, 4
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = pixels.shape[1] - 5, pixels.shape[0] - 5
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.01
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.PixelData = np.stack([pixels] * frames).tobytes() if frames > 1 else pixels.tobytes()
    return ds


def save(ds: Dataset, path: Path, enforce: bool = True) -> Path:
    """Write a DICOM file with preamble and file meta; ``enforce=False`` also writes what pydicom would refuse."""
    from pydicom.dataset import validate_file_meta

    path.parent.mkdir(parents=True, exist_ok=True)
    if enforce:
        ds.save_as(path, enforce_file_format=True)
        return path
    validate_file_meta(ds.file_meta, enforce_standard=True)  # group length, version, implementation UID
    ds.preamble = b"\x00" * 128
    ds.save_as(path, enforce_file_format=False)
    return path


def _with(name: str, change: Callable[[Dataset], None], pixels: np.ndarray | None = None) -> Callable[[Path], Path]:
    """A builder: the valid dataset, changed by ``change``, saved as ``<name>.dcm``."""

    def build(folder: Path) -> Path:
        ds = us_dataset(tissue() if pixels is None else pixels, name)
        change(ds)
        return save(ds, folder / f"{name}.dcm", enforce=False)

    return build


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_dataset(pixels: np.ndarray, name: str, stream: bytes | None = None) -> Dataset:
    """A JPEG baseline (grey) ultrasound dataset with ``stream`` (default: the pixels encoded) as its one fragment."""
    ds = us_dataset(pixels, name)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([jpeg_bytes(pixels) if stream is None else stream])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def _set(**values) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        for keyword, value in values.items():
            setattr(ds, keyword, value)

    return change


def _region(**values) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        item = ds.SequenceOfUltrasoundRegions[0]
        for keyword, value in values.items():
            if value is None:
                delattr(item, keyword)
            else:
                setattr(item, keyword, value)

    return change


def _delete(keyword: str) -> Callable[[Dataset], None]:
    return lambda ds: delattr(ds, keyword)


def _raw_uid(keyword: str, value: bytes) -> Callable[[Dataset], None]:
    """Put bytes pydicom would refuse to write as a UI value (null bytes, slashes) into the file as they are."""

    def change(ds: Dataset) -> None:
        from pydicom.datadict import tag_for_keyword
        from pydicom.dataelem import RawDataElement

        tag = tag_for_keyword(keyword)
        padded = value + (b"\x00" if len(value) % 2 else b"")
        ds._dict[tag] = RawDataElement(tag, "UI", len(padded), padded, 0, False, True)

    return change


def declared_huge_native(folder: Path) -> Path:
    """3 KB on disk, 65535 x 65535 x 3 declared in the DICOM header (12 GB if believed)."""
    ds = us_dataset(tissue(32, 32), "huge-native")
    ds.Rows = ds.Columns = 65535
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    return save(ds, folder / "huge-native.dcm", enforce=False)


def declared_huge_rle(folder: Path) -> Path:
    """An RLE file whose header declares 65535 x 65535 with one tiny segment."""
    ds = us_dataset(tissue(32, 32), "huge-rle")
    ds.Rows = ds.Columns = 65535
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([header + b"\xff\x00" * 64])
    ds["PixelData"].VR = "OB"
    return save(ds, folder / "huge-rle.dcm", enforce=False)


def declared_huge_jpeg(folder: Path) -> Path:
    """DICOM says 64 x 64; the JPEG stream's start-of-frame says 65535 x 65535."""
    pixels = tissue(64, 64)
    stream = bytearray(jpeg_bytes(pixels))
    sof = stream.find(b"\xff\xc0")
    stream[sof + 5 : sof + 9] = struct.pack(">HH", 65535, 65535)
    return save(jpeg_dataset(pixels, "huge-jpeg", bytes(stream)), folder / "huge-jpeg.dcm", enforce=False)


def truncated_jpeg(folder: Path) -> Path:
    """A JPEG whose only fragment was cut to its first third (lengths fixed, so the file itself parses)."""
    pixels = tissue(96, 128)
    stream = jpeg_bytes(pixels)
    cut = stream[: len(stream) // 3]
    return save(jpeg_dataset(pixels, "cut-jpeg", cut + b"\x00" * (len(cut) % 2)), folder / "cut-jpeg.dcm", False)


def jpeg_file_cut_short(folder: Path) -> Path:
    """A JPEG DICOM file cut in the middle of its fragment (no sequence delimiter after it)."""
    path = save(jpeg_dataset(tissue(96, 128), "cut-file-jpeg"), folder / "cut-file-jpeg.dcm")
    content = path.read_bytes()
    path.write_bytes(content[: len(content) - 700])
    return path


def jpeg_zero_offset_item(folder: Path) -> Path:
    """A JPEG file whose Basic Offset Table item is tagged (0000,0000) instead of (FFFE,E000)."""
    path = save(jpeg_dataset(tissue(96, 128), "zero-item-jpeg"), folder / "zero-item-jpeg.dcm")
    content = bytearray(path.read_bytes())
    pixel_data = content.rfind(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")  # (7FE0,0010) OB, undefined length
    first_item = pixel_data + 12
    assert content[first_item : first_item + 4] == b"\xfe\xff\x00\xe0"
    content[first_item : first_item + 4] = b"\x00\x00\x00\x00"
    path.write_bytes(bytes(content))
    return path


def nan_float_pixels(folder: Path) -> Path:
    """Float Pixel Data whose every value is NaN (scored 'nan' once)."""
    ds = us_dataset(tissue(), "nan-float")
    del ds.PixelData
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    del ds.PixelRepresentation
    ds.FloatPixelData = np.full((96, 128), np.nan, dtype=np.float32).tobytes()
    return save(ds, folder / "nan-float.dcm", enforce=False)


def fewer_frames_than_declared(folder: Path) -> Path:
    ds = us_dataset(tissue(), "short-cine", frames=4)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # two of the four frames
    return save(ds, folder / "short-cine.dcm", enforce=False)


def png_bomb(folder: Path) -> Path:
    """A 20000 x 20000 PNG (over Pillow's decompression-bomb limit) of a few kilobytes."""
    from PIL import Image

    path = folder / "bomb.png"
    Image.new("1", (20000, 20000)).save(path, format="PNG", optimize=True)
    return path


def named_pipe(folder: Path) -> Path:
    path = folder / "pipe.dcm"
    os.mkfifo(path)
    return path


def dicomdir_with_bad_members(folder: Path) -> Path:
    """A DICOMDIR with one good member, one missing member and one that points outside its folder."""
    from pydicom.fileset import FileSet

    media = folder / "media"
    fileset = FileSet()
    for name in ("member-good", "member-missing", "member-escape"):
        ds = us_dataset(tissue(), name)
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20200101", "1200", "1", 1, 1
        fileset.add(ds)
    fileset.write(media)
    import pydicom

    dicomdir = pydicom.dcmread(media / "DICOMDIR")
    images = [r for r in dicomdir.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]
    (media / Path(*images[1].ReferencedFileID)).unlink()  # missing
    images[2].ReferencedFileID = ["..", "..", "ESCAPE"]  # outside the DICOMDIR's folder
    dicomdir.save_as(media / "DICOMDIR", enforce_file_format=True)
    return media / "DICOMDIR"


def _not_ultrasound(ds: Dataset) -> None:
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.Modality = "CT"


CASES: tuple[Case, ...] = (
    # 1. per-input isolation: each of these once stopped the whole run
    Case("empty-rows", _with("empty-rows", _set(Rows=None)), "refused", "check", "Rows"),
    Case("empty-region-format", _with("empty-region-format", _region(RegionSpatialFormat=None)), "analysed"),
    Case("region-cm-no-delta", _with("region-cm-no-delta", _region(PhysicalDeltaX=None)), "analysed"),
    Case("missing-sop-uid", _with("missing-sop-uid", _delete("SOPInstanceUID")), "analysed", "seg", "UID"),
    Case("uid-null-byte", _with("uid-null-byte", _raw_uid("SOPInstanceUID", b"1.2.3\x00rm")), "analysed", "seg"),
    Case("uid-slash", _with("uid-slash", _raw_uid("SOPInstanceUID", b"/etc/passwd")), "analysed", "seg"),
    Case("uid-260", _with("uid-260", _raw_uid("SOPInstanceUID", b"1." * 130)), "analysed", "seg"),
    # 2. nothing from a header in a path
    Case("uid-dotdot", _with("uid-dotdot", _raw_uid("StudyInstanceUID", b"../../../escape")), "analysed", "seg"),
    Case("uid-dotdot-sop", _with("uid-dotdot-sop", _raw_uid("SOPInstanceUID", b"../../../escape")), "analysed", "seg"),
    Case("uid-is-name", _with("uid-is-name", _raw_uid("SOPInstanceUID", b"Hostile^Harriet")), "analysed", "seg"),
    # 3. a resource budget before decoding
    Case("huge-native", declared_huge_native, "refused", "check", "limit"),
    Case("huge-rle", declared_huge_rle, "refused", "check", "limit"),
    Case("huge-jpeg", declared_huge_jpeg, "refused", "check", "stream"),
    Case("png-bomb", png_bomb, "refused", "check", "pixels"),
    # 4. only regular files are opened
    Case("named-pipe", named_pipe, "refused", "scan", "named pipe"),
    # 5. no silent drops
    Case("dicomdir", dicomdir_with_bad_members, "refused", "scan", "DICOMDIR"),
    Case("frames-negative", _with("frames-negative", _set(NumberOfFrames=-3)), "refused", "check", "NumberOfFrames"),
    Case("frames-billion", _with("frames-billion", _set(NumberOfFrames=10**9)), "refused", "check", "frame"),
    Case("short-cine", fewer_frames_than_declared, "refused", "check", "pixel data"),
    Case("cut-jpeg", truncated_jpeg, "refused", "decode", "cut short"),
    Case("cut-file-jpeg", jpeg_file_cut_short, "refused", "decode", ""),
    Case("frames-fraction", _with("frames-fraction", _set(NumberOfFrames="2.5")), "refused", "check", "NumberOfFrames"),
    Case("frames-empty", _with("frames-empty", _set(NumberOfFrames=None)), "analysed"),
    Case("nan-float", nan_float_pixels, "refused", "decode", "NaN"),
    # 6. malformed values and 7. identifiers: analysed, with the birth date nowhere in the outputs
    Case("bad-birth-date", _with("bad-birth-date", _set(PatientBirthDate=BIRTH_DATE)), "analysed"),
    Case("bad-age", _with("bad-age", _set(PatientAge="45")), "analysed"),
    Case("not-ultrasound", _with("not-ultrasound", _not_ultrasound), "refused", "check", "ultrasound"),
    # 10. valid SEG: pixel spacing without slice thickness
    Case("spacing-no-thickness", _with("spacing-no-thickness", _set(PixelSpacing=[0.1, 0.1])), "analysed"),
    # 11. no false refusals
    Case("zero-item-jpeg", jpeg_zero_offset_item, "analysed"),
)


def build_all(folder: Path, names: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Write every case (or those named) into ``folder``; returns name -> input path."""
    import warnings

    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values we write on purpose
        return {case.name: case.build(folder) for case in CASES if names is None or case.name in names}


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-inputs")
    for name, path in build_all(target).items():
        print(f"{name}: {path}")
