"""Write the predicted tumour mask of analysed ultrasound frames as a DICOM Segmentation (highdicom).

One Segmentation Storage instance (SOP class 1.2.840.10008.5.1.4.1.1.66.4, type BINARY) per analysed
source instance, in the source's study. It has one segment, "Tumour": property category
Morphologically Abnormal (formerly "Altered") Structure (SCT 49755003), property type Mass
(SCT 4147007), anatomic region Breast (SCT 76752008), algorithm type AUTOMATIC, algorithm family
Artificial Intelligence (DCM 123110, CID 7162), algorithm name "BUSAssist EMT-Net" and the model
version. Each SEG frame references the source instance (Derivation Image Sequence) and, for a
multi-frame source, its 1-based frame number.

Every analysed frame gets a SEG frame, also when it is empty (``omit_empty_frames=False``): a SEG
whose frames are empty says "analysed, nothing found", which an annotator can tell apart from a
frame that was not analysed (no SEG frame at all).

highdicom limits worked around here (highdicom 0.28, ImagingDataCommons/highdicom#284):

* A source without a Frame of Reference and patient position (the usual ultrasound or secondary
  capture image) may have only one frame.
* A source of a multi-frame IOD without functional groups (US Multi-frame, multi-frame secondary
  capture) fails even with one frame, since highdicom reads its pixel measures from the Shared
  Functional Groups Sequence.

So a multi-frame source is passed to highdicom as a single-frame stand-in (its own attributes, but
a single-frame SOP class and no Number of Frames); the SEG made for the first analysed frame is then
extended to one frame per analysed frame, the references get the source's SOP class and frame
numbers back, and the pixel data is packed anew. The frames are indexed by Referenced Segment
Number only, as highdicom does for single-frame sources without a Frame of Reference; DICOM allows
index values that repeat (receivers order such frames by frame number, which follows the source).

Type 2 patient and study attributes that the source lacks (birth date, sex, accession number, ...)
are written empty, as DICOM allows; highdicom copies the Patient and Study modules of the source and
nothing else from it. UIDs are deterministic, so a rerun writes the same instance: the SOP Instance
UID comes from the source SOP Instance UID, the analysed frames and the model version; the Series
Instance UID from the source study, series and model version (one SEG series per source series and
model). Failures raise ``SegmentationError`` with a one-line reason.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, TM, validate_value

#: The highdicom this module is written against. Inside Slicer the module uses whatever highdicom and
#: pydicom the running Slicer has (it never upgrades them); with older ones the SEG is skipped, saying why.
HIGHDICOM_MINIMUM = (0, 28)
try:  # highdicom needs pydicom >= 3 and Python >= 3.10; the rest of the package does not need it.
    import highdicom as hd
    from pydicom.pixels import pack_bits
    from pydicom.sr.codedict import codes

    if tuple(int(part) for part in hd.__version__.split(".")[:2]) < HIGHDICOM_MINIMUM:
        raise ImportError(f"highdicom {hd.__version__} is older than {'.'.join(map(str, HIGHDICOM_MINIMUM))}")
except (ImportError, ValueError, AttributeError):  # pragma: no cover - exercised only where highdicom is missing
    hd = None


def unavailable_reason() -> str:
    """Why DICOM SEG output is unavailable here (names the installed versions), or "" when it is available."""
    if hd is not None:
        return ""
    import pydicom

    try:
        import highdicom

        found = f"highdicom {highdicom.__version__}"
    except ImportError:
        found = "no highdicom"
    needed = ".".join(map(str, HIGHDICOM_MINIMUM))
    have = f"{found}, pydicom {pydicom.__version__}"
    return f"DICOM SEG needs highdicom >= {needed} with pydicom >= 3; this Python has {have}"


SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SEGMENT_LABEL = "Tumour"
ALGORITHM_NAME = "BUSAssist EMT-Net"
MANUFACTURER = "BUSAssist"
DEVICE_SERIAL_NUMBER = "0"  # software: no hardware serial number (Type 1 in the Enhanced Equipment module)
CONTENT_LABEL = "BUSASSIST"  # CS, upper case, at most 16 characters
CONTENT_DESCRIPTION = "EMT-Net predicted breast tumour mask"
SERIES_DESCRIPTION = "BUSAssist tumour segmentation"
#: Single-frame image SOP classes: Ultrasound Image Storage (current, retired) and Secondary Capture.
_SINGLE_FRAME_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6", "1.2.840.10008.5.1.4.1.1.7"}
#: The single-frame SOP class the stand-in for a multi-frame source claims (Ultrasound Image Storage).
_STAND_IN_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.6.1"
#: Type 2 attributes highdicom reads from the source; written empty where the source lacks them.
_TYPE2_SOURCE_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_REQUIRED_SOURCE_ATTRIBUTES = {
    "SOPInstanceUID": "SOP Instance UID",
    "SOPClassUID": "SOP Class UID",
    "StudyInstanceUID": "Study Instance UID",
    "SeriesInstanceUID": "Series Instance UID",
    "Rows": "Rows",
    "Columns": "Columns",
}
_MASK_VALUES = (0, 1, 255)
#: Patient and study attributes highdicom copies from the source into the SEG: checked against their VR
#: and emptied when malformed, so one bad value costs that value, not the SEG. (UIDs: checked by the caller.)
_COPIED_SOURCE_ATTRIBUTES = (
    *_TYPE2_SOURCE_ATTRIBUTES,
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientBirthTime",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "EthnicGroup",
    "PatientComments",
    "StudyDescription",
)


def _valid_value(element) -> bool:
    """True when every value of ``element`` obeys its VR (and dates and times parse)."""
    values = element.value if element.VM > 1 else [element.value]
    try:
        for value in values:
            if value is None or str(value) == "":
                continue
            validate_value(element.VR, str(value), 2)  # 2 = config.RAISE
            if element.VR == "DA":
                DA(value)
            elif element.VR == "TM":
                TM(value)
    except (TypeError, ValueError):
        return False
    return True


class SegmentationError(Exception):
    """A DICOM Segmentation that cannot be made or written; ``str()`` is a one-line reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(" ".join(f"cannot make a DICOM Segmentation: {reason}".split()))
        self.reason = reason


def segmentation_uids(source: Dataset, frames: list[int], model_version: str) -> tuple[str, str]:
    """Deterministic (SOP Instance UID, Series Instance UID) of the SEG of ``frames`` (0-based) of ``source``."""
    frame_key = ",".join(str(index + 1) for index in sorted(frames))
    sop_uid = generate_uid(entropy_srcs=["busassist-seg", str(source.SOPInstanceUID), frame_key, model_version])
    series_uid = generate_uid(
        entropy_srcs=[
            "busassist-seg-series",
            str(source.StudyInstanceUID),
            str(source.SeriesInstanceUID),
            model_version,
        ]
    )
    return str(sop_uid), str(series_uid)


def build_segmentation(
    source: Dataset,
    masks: Mapping[int, np.ndarray],
    model_version: str,
    series_number: int = 300,
    instance_number: int = 1,
) -> Dataset:
    """A BINARY DICOM Segmentation of the analysed frames of ``source``.

    ``masks`` maps the 0-based frame index of each analysed frame to its (Rows, Columns) mask:
    bool, or integers 0/1 or 0/255 (non-zero is tumour). A single-frame source takes key 0 only.
    The source's pixel data is not needed (a dataset read with ``stop_before_pixels`` will do).
    Returns a ``highdicom.seg.Segmentation`` (a ``pydicom.Dataset``) with file meta information.
    """
    if hd is None:
        raise SegmentationError(unavailable_reason())
    if not isinstance(source, Dataset):
        raise SegmentationError(f"the source is a {type(source).__name__}, not a pydicom Dataset")
    for keyword, name in _REQUIRED_SOURCE_ATTRIBUTES.items():
        if keyword not in source or source[keyword].value in (None, ""):
            raise SegmentationError(f"the source has no {name}")
    if not str(model_version).strip():
        raise SegmentationError("the model version is empty")
    # A single-frame SOP class with a (malformed) Number of Frames is still single-frame: its SEG
    # must not reference frame numbers.
    multi_frame = "NumberOfFrames" in source and str(source.SOPClassUID) not in _SINGLE_FRAME_SOP_CLASSES
    frames = _checked_masks(source, masks, multi_frame)  # bit-packed: a long cine costs 1/8 byte per pixel
    if multi_frame and hd.spatial.get_image_coordinate_system(source) is not None:
        raise SegmentationError("multi-frame sources with patient or slide coordinates are not supported")
    if "PerFrameFunctionalGroupsSequence" in source or "SharedFunctionalGroupsSequence" in source:
        raise SegmentationError("enhanced (functional-group) multi-frame sources are not supported")

    order = sorted(frames)
    sop_uid, series_uid = segmentation_uids(source, order, model_version)
    stand_in = _stand_in(source, multi_frame)
    with warnings.catch_warnings():
        # highdicom warns about odd-looking patient names by quoting them: keep them out of logs.
        warnings.simplefilter("ignore")
        return _build(
            hd,
            stand_in,
            frames,
            order,
            source,
            multi_frame,
            model_version,
            series_uid,
            sop_uid,
            series_number,
            instance_number,
        )


def _build(
    hd, stand_in, frames, order, source, multi_frame, model_version, series_uid, sop_uid, series_number, instance_number
):
    """highdicom's Segmentation for the stand-in source, extended to every analysed frame."""
    shape = (int(source.Rows), int(source.Columns))
    try:
        seg = hd.seg.Segmentation(
            source_images=[stand_in],
            pixel_array=_unpacked(frames[order[0]], shape),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[_segment_description(model_version)],
            series_instance_uid=series_uid,
            series_number=int(series_number),
            sop_instance_uid=sop_uid,
            instance_number=int(instance_number),
            manufacturer=MANUFACTURER,
            manufacturer_model_name=ALGORITHM_NAME,
            software_versions=str(model_version),
            device_serial_number=DEVICE_SERIAL_NUMBER,
            omit_empty_frames=False,
            content_label=CONTENT_LABEL,
            content_description=CONTENT_DESCRIPTION,
            series_description=SERIES_DESCRIPTION,
        )
        _fix_dimension_organization_uid(seg, sop_uid)
        _fix_pixel_measures(seg, source)
        _fix_patient_orientation(seg, source)
        if multi_frame:
            _extend_to_source_frames(seg, source, [frames[index] for index in order], order, shape)
            # Rebuild highdicom's frame look-up tables for the extended dataset (this also checks
            # that highdicom can read it back).
            seg = hd.seg.Segmentation.from_dataset(seg, copy=False)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise SegmentationError(str(exc) or type(exc).__name__) from exc
    return seg


def write_segmentation(
    source: Dataset,
    masks: Mapping[int, np.ndarray],
    model_version: str,
    path: str | Path,
    series_number: int = 300,
    instance_number: int = 1,
) -> Path:
    """Build the Segmentation and write it to ``path`` atomically (temporary file + ``os.replace``)."""
    seg = build_segmentation(source, masks, model_version, series_number, instance_number)
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(handle, "wb") as stream:
            seg.save_as(stream, enforce_file_format=True)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise SegmentationError(f"writing {path} failed: {exc.strerror or exc}") from exc
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------------


def _unpacked(bits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """One frame's bool mask from its little-endian packed bits."""
    return np.unpackbits(bits, count=shape[0] * shape[1], bitorder="little").reshape(shape).astype(bool)


def _checked_masks(source: Dataset, masks: Mapping[int, np.ndarray], multi_frame: bool) -> dict[int, np.ndarray]:
    """Masks bit-packed (DICOM's little-endian bit order) keyed by 0-based frame index, after checking them.

    Packed as they are checked, so a long cine holds one unpacked mask at a time (``masks`` may be
    a lazy mapping that unpacks on access).
    """
    if not isinstance(masks, Mapping) or not masks:
        raise SegmentationError("no analysed frames: masks must map frame indices to mask arrays")
    try:
        count = int(source.get("NumberOfFrames", 1) or 1) if multi_frame else 1
    except (TypeError, ValueError):
        raise SegmentationError(f"the source's Number of Frames {source.NumberOfFrames!r} is not a number") from None
    shape = (int(source.Rows), int(source.Columns))
    checked = {}
    for key, mask in masks.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise SegmentationError(f"frame index {key!r} is not an integer")
        index = int(key)
        if not 0 <= index < count:
            frames = "1 frame" if count == 1 else f"{count} frames"
            raise SegmentationError(f"frame index {index} is outside the source's {frames} (indices are 0-based)")
        array = np.asarray(mask)
        if array.shape != shape:
            raise SegmentationError(f"the mask of frame {index} has shape {array.shape}, the source frames {shape}")
        if array.dtype != bool:
            if not np.issubdtype(array.dtype, np.integer):
                raise SegmentationError(f"the mask of frame {index} is {array.dtype}, not bool or integer 0/1 or 0/255")
            if not np.isin(array, _MASK_VALUES).all():
                raise SegmentationError(f"the mask of frame {index} has values other than 0, 1 and 255")
        checked[index] = np.packbits(array != 0, bitorder="little")
    return checked


def _stand_in(source: Dataset, multi_frame: bool) -> Dataset:
    """The source's attributes without pixel data; single-frame and with empty Type 2 gaps filled."""
    stand_in = Dataset()
    for element in source:
        if element.keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData", "NumberOfFrames"):
            continue
        stand_in.add(copy.deepcopy(element))
    for keyword in _TYPE2_SOURCE_ATTRIBUTES:
        if keyword not in stand_in:
            setattr(stand_in, keyword, "")
    # A value that breaks its VR (Patient's Birth Date "1961-07-23", Patient's Age "45", Sex "X") would
    # make highdicom raise or be copied into an invalid SEG: such values are written empty instead.
    for keyword in _COPIED_SOURCE_ATTRIBUTES:
        if keyword in stand_in and not _valid_value(stand_in[keyword]):
            stand_in[keyword].value = ""
    if stand_in.PatientSex not in ("", None, "M", "F", "O"):
        stand_in.PatientSex = ""
    if multi_frame:
        stand_in.SOPClassUID = _STAND_IN_SOP_CLASS
    return stand_in


def _segment_description(model_version: str):
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME,
        family=codes.cid7162.ArtificialIntelligence,  # DCM 123110
        version=str(model_version),
    )
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,  # SCT 49755003
        segmented_property_type=codes.SCT.Mass,  # SCT 4147007
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[codes.SCT.Breast],  # SCT 76752008
    )


def _fix_dimension_organization_uid(seg: Dataset, sop_uid: str) -> None:
    """Replace highdicom's random Dimension Organization UID by one derived from the SOP Instance UID."""
    uid = generate_uid(entropy_srcs=["busassist-seg-dimensions", sop_uid])
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = uid
    for item in seg.get("DimensionIndexSequence", []):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = uid


def _fix_pixel_measures(seg: Dataset, source: Dataset) -> None:
    """highdicom writes Pixel Measures without Slice Thickness when the source has none, and then cannot read it.

    Slice Thickness is Type 1C (required only with a Frame of Reference) but highdicom's reader requires it, and
    dciodvfy rejects it empty. Without a thickness to copy, drop the Pixel Measures: it is optional without a Frame
    of Reference, and the SEG frames are pixel-aligned with the source (Spatial Locations Preserved YES), whose Pixel
    Spacing still applies.
    """
    shared = seg.SharedFunctionalGroupsSequence[0]
    measures = shared.get("PixelMeasuresSequence")
    if measures and "SliceThickness" not in measures[0] and "FrameOfReferenceUID" not in seg:
        del shared.PixelMeasuresSequence


def _fix_patient_orientation(seg: Dataset, source: Dataset) -> None:
    """Patient Orientation is Type 2C (General Image) when there is no Plane Orientation; highdicom omits it."""
    if "PatientOrientation" in seg or "FrameOfReferenceUID" in seg:
        return
    value = source.get("PatientOrientation")
    seg.PatientOrientation = value if value is not None and len(value) == 2 else ""


def _extend_to_source_frames(
    seg: Dataset, source: Dataset, masks: list[np.ndarray], order: list[int], shape: tuple[int, int]
) -> None:
    """Turn the one-frame SEG of the stand-in into one frame per analysed frame of the multi-frame source."""
    if len(seg.PerFrameFunctionalGroupsSequence) != 1:
        raise ValueError(f"expected one SEG frame from highdicom, got {len(seg.PerFrameFunctionalGroupsSequence)}")
    template = seg.PerFrameFunctionalGroupsSequence[0]
    frame_items = []
    for index in order:
        item = copy.deepcopy(template)
        for derivation in item.DerivationImageSequence:
            for reference in derivation.SourceImageSequence:
                reference.ReferencedFrameNumber = index + 1
        frame_items.append(item)
    seg.PerFrameFunctionalGroupsSequence = frame_items
    # highdicom puts the same item into the Source Image Sequence and the Referenced Instance Sequence;
    # only the former may list frame numbers (the latter is a SOP Instance Reference), so copy it.
    references = []
    for reference in seg.SourceImageSequence:
        reference = copy.deepcopy(reference)
        if reference.ReferencedSOPInstanceUID == source.SOPInstanceUID:
            reference.ReferencedFrameNumber = [index + 1 for index in order]
        references.append(reference)
    seg.SourceImageSequence = references
    _restore_sop_class(seg, str(source.SOPClassUID))
    seg.NumberOfFrames = len(order)
    # BINARY: one bit per pixel, frames packed back to back (no padding between frames). Frames of a
    # whole number of bytes are joined as packed; others are unpacked and packed again as one run.
    if (shape[0] * shape[1]) % 8 == 0:
        packed = b"".join(bits.tobytes() for bits in masks)
        seg.PixelData = packed + b"\x00" * (len(packed) % 2)
    else:
        seg.PixelData = pack_bits(np.concatenate([_unpacked(bits, shape).ravel() for bits in masks]).astype(np.uint8))


def _restore_sop_class(dataset: Dataset, sop_class_uid: str) -> None:
    """Put the source's SOP class into every reference highdicom made to the stand-in."""
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                _restore_sop_class(item, sop_class_uid)
        elif element.keyword == "ReferencedSOPClassUID" and element.value == _STAND_IN_SOP_CLASS:
            element.value = sop_class_uid
