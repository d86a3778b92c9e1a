"""DICOM Segmentation export (``busassist.core.dicom_seg``): codes, references, pixels, UIDs, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

hd = pytest.importorskip("highdicom")

from busassist.core.dicom_seg import (  # noqa: E402
    SEGMENTATION_STORAGE,
    SegmentationError,
    build_segmentation,
    write_segmentation,
)
from busassist.training.sample_study import framed, ultrasound_dataset  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
BUSI_SAMPLE = REPO_ROOT / "Resources" / "SampleData" / "sample_1_benign.dcm"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
VERSION = "emtnet-test-1.0"


# ---------------------------------------------------------------------------------------------
# Synthetic sources


def tissue(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def mono_source(seed: int = 0) -> Dataset:
    """Single-frame US Image Storage, MONOCHROME2 8-bit; its frame size (121 x 165) is not a multiple of 8."""
    frame, region = framed(tissue((41, 53), seed))
    return ultrasound_dataset(frame, region, f"mono-{seed}", 1, compress=False)


def rgb_source() -> Dataset:
    image = np.stack([tissue((40, 50), 1), tissue((40, 50), 2), tissue((40, 50), 3)], axis=-1)
    frame, region = framed(image)
    return ultrasound_dataset(frame, region, "rgb", 2, compress=False)


def multiframe_source(frames: int = 3) -> Dataset:
    """US Multi-frame Image Storage (cine) with ``frames`` MONOCHROME2 frames and no Frame of Reference."""
    first, region = framed(tissue((41, 53), 4))
    stack = np.stack([np.roll(first, shift, axis=1) for shift in range(frames)])
    ds = ultrasound_dataset(first, region, "cine", 3, compress=False)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME
    ds.NumberOfFrames = frames
    ds.FrameTime = 33.3
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.PixelData = stack.tobytes()
    return ds


def secondary_capture_source() -> Dataset:
    frame, region = framed(tissue((30, 45), 5))
    ds = ultrasound_dataset(frame, region, "sc", 4, compress=False)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    del ds.SequenceOfUltrasoundRegions
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    return ds


def busi_source() -> Dataset:
    return pydicom.dcmread(BUSI_SAMPLE)


def lesion(ds: Dataset, seed: int = 0, dtype=bool) -> np.ndarray:
    """A blob plus scattered pixels, so a bit-packing or orientation error changes the mask."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    yy, xx = np.mgrid[:rows, :columns]
    mask = (yy - rows * 0.55) ** 2 / (rows * 0.2) ** 2 + (xx - columns * 0.4) ** 2 / (columns * 0.15) ** 2 < 1
    mask |= np.random.default_rng(seed).random((rows, columns)) > 0.97
    return mask.astype(dtype) * (255 if dtype == np.uint8 else 1)


SOURCES = {"us-mono": mono_source, "us-rgb": rgb_source, "secondary-capture": secondary_capture_source}


def roundtrip(seg: Dataset, tmp_path: Path) -> Dataset:
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def code_of(item: Dataset) -> tuple[str, str]:
    return str(item.CodeValue), str(item.CodingSchemeDesignator)


# ---------------------------------------------------------------------------------------------
# Single-frame sources


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_single_frame_seg_is_binary_with_one_breast_mass_segment(kind: str, tmp_path: Path) -> None:
    source = SOURCES[kind]()
    seg = roundtrip(build_segmentation(source, {0: lesion(source)}, VERSION), tmp_path)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.file_meta.MediaStorageSOPClassUID == SEGMENTATION_STORAGE
    assert seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY"
    assert (seg.Rows, seg.Columns, int(seg.NumberOfFrames)) == (source.Rows, source.Columns, 1)
    (segment,) = seg.SegmentSequence
    assert segment.SegmentNumber == 1
    assert segment.SegmentLabel == "Tumour"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert code_of(segment.SegmentedPropertyCategoryCodeSequence[0]) == ("49755003", "SCT")
    assert code_of(segment.SegmentedPropertyTypeCodeSequence[0]) == ("4147007", "SCT")
    assert [code_of(item) for item in segment.AnatomicRegionSequence] == [("76752008", "SCT")]
    (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
    assert algorithm.AlgorithmName == "BUSAssist EMT-Net"
    assert algorithm.AlgorithmVersion == VERSION
    assert code_of(algorithm.AlgorithmFamilyCodeSequence[0]) == ("123110", "DCM")  # Artificial Intelligence


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_single_frame_seg_references_the_source_instance(kind: str, tmp_path: Path) -> None:
    source = SOURCES[kind]()
    seg = roundtrip(build_segmentation(source, {0: lesion(source)}, VERSION), tmp_path)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.PatientID == source.PatientID
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    (instance,) = series.ReferencedInstanceSequence
    assert (instance.ReferencedSOPInstanceUID, instance.ReferencedSOPClassUID) == (
        source.SOPInstanceUID,
        source.SOPClassUID,
    )
    (frame,) = seg.PerFrameFunctionalGroupsSequence
    (reference,) = frame.DerivationImageSequence[0].SourceImageSequence
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    assert "ReferencedFrameNumber" not in reference  # a single-frame IOD has no frame numbers
    # One segment: highdicom puts its identification in the shared functional groups.
    assert seg.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence[0].ReferencedSegmentNumber == 1


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_single_frame_seg_pixels_equal_the_mask(kind: str, tmp_path: Path) -> None:
    source = SOURCES[kind]()
    mask = lesion(source, seed=7)
    seg = roundtrip(build_segmentation(source, {0: mask}, VERSION), tmp_path)
    assert np.array_equal(seg.pixel_array.astype(bool), mask)
    decoded = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
        [source.SOPInstanceUID], combine_segments=True
    )
    assert decoded.shape == (1, source.Rows, source.Columns)
    assert np.array_equal(decoded[0].astype(bool), mask)


def test_uint8_0_255_and_bool_masks_give_the_same_pixels() -> None:
    source = mono_source()
    from_bool = build_segmentation(source, {0: lesion(source)}, VERSION)
    from_uint8 = build_segmentation(source, {0: lesion(source, dtype=np.uint8)}, VERSION)
    assert lesion(source, dtype=np.uint8).max() == 255
    assert from_bool.PixelData == from_uint8.PixelData


def test_busi_sample_source(tmp_path: Path) -> None:
    source = busi_source()
    mask = np.zeros((source.Rows, source.Columns), dtype=np.uint8)
    mask[200:330, 250:420] = 255
    path = write_segmentation(source, {0: mask}, VERSION, tmp_path / "busi_seg.dcm")
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == (
        source.SOPInstanceUID
    )
    decoded = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=True)
    assert np.array_equal(decoded[0].astype(bool), mask > 0)
    assert int(decoded.sum()) == 130 * 170


# ---------------------------------------------------------------------------------------------
# Multi-frame source


def test_multiframe_seg_references_the_analysed_frames(tmp_path: Path) -> None:
    source = multiframe_source(3)
    masks = {2: lesion(source, seed=2), 0: lesion(source, seed=0)}  # not in frame order on purpose
    seg = roundtrip(build_segmentation(source, masks, VERSION), tmp_path)
    assert seg.SegmentationType == "BINARY" and int(seg.NumberOfFrames) == 2
    frame_numbers = []
    for frame in seg.PerFrameFunctionalGroupsSequence:
        (reference,) = frame.DerivationImageSequence[0].SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == US_MULTIFRAME
        frame_numbers.append(int(reference.ReferencedFrameNumber))
    assert frame_numbers == [1, 3]
    (image_reference,) = seg.SourceImageSequence
    assert image_reference.ReferencedSOPClassUID == US_MULTIFRAME
    assert [int(n) for n in image_reference.ReferencedFrameNumber] == [1, 3]
    (instance,) = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert (instance.ReferencedSOPInstanceUID, instance.ReferencedSOPClassUID) == (
        source.SOPInstanceUID,
        US_MULTIFRAME,
    )
    assert "ReferencedFrameNumber" not in instance  # a SOP Instance Reference has no frame numbers
    # No trace of the single-frame stand-in the SEG was built from.
    assert US_IMAGE not in {str(e.value) for e in seg.iterall() if e.keyword == "ReferencedSOPClassUID"}


def test_multiframe_seg_pixels_equal_the_masks_per_frame(tmp_path: Path) -> None:
    source = multiframe_source(3)
    masks = {0: lesion(source, seed=0), 2: lesion(source, seed=2, dtype=np.uint8)}
    path = write_segmentation(source, masks, VERSION, tmp_path / "cine_seg.dcm")
    raw = pydicom.dcmread(path).pixel_array  # frames are bit-packed back to back
    assert raw.shape == (2, source.Rows, source.Columns)
    assert np.array_equal(raw[0].astype(bool), masks[0])
    assert np.array_equal(raw[1].astype(bool), masks[2] > 0)
    seg = hd.seg.segread(path)
    decoded = seg.get_pixels_by_source_frame(source.SOPInstanceUID, [1, 3], combine_segments=True)
    assert np.array_equal(decoded[0].astype(bool), masks[0])
    assert np.array_equal(decoded[1].astype(bool), masks[2] > 0)


def test_multiframe_seg_of_a_single_analysed_frame(tmp_path: Path) -> None:
    source = multiframe_source(3)
    mask = lesion(source, seed=5)
    seg = roundtrip(build_segmentation(source, {1: mask}, VERSION), tmp_path)
    (frame,) = seg.PerFrameFunctionalGroupsSequence
    assert int(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber) == 2
    assert np.array_equal(seg.pixel_array.astype(bool), mask)


# ---------------------------------------------------------------------------------------------
# UIDs, empty masks, writing, errors


def test_uids_are_deterministic() -> None:
    source = multiframe_source(3)
    masks = {0: lesion(source), 2: lesion(source, seed=1)}
    first = build_segmentation(source, masks, VERSION)
    again = build_segmentation(source, {k: v.copy() for k, v in masks.items()}, VERSION)
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.SeriesInstanceUID == again.SeriesInstanceUID
    assert first.DimensionOrganizationSequence[0].DimensionOrganizationUID == (
        again.DimensionOrganizationSequence[0].DimensionOrganizationUID
    )
    assert first.SOPInstanceUID != source.SOPInstanceUID
    assert pydicom.uid.UID(first.SOPInstanceUID).is_valid
    other_version = build_segmentation(source, masks, VERSION + "b")
    other_frames = build_segmentation(source, {0: masks[0]}, VERSION)
    assert len({first.SOPInstanceUID, other_version.SOPInstanceUID, other_frames.SOPInstanceUID}) == 3
    assert other_frames.SeriesInstanceUID == first.SeriesInstanceUID  # same source series and model
    assert other_version.SeriesInstanceUID != first.SeriesInstanceUID


def test_segs_of_different_sources_differ() -> None:
    one, two = mono_source(0), mono_source(1)
    assert one.SOPInstanceUID != two.SOPInstanceUID
    seg_one = build_segmentation(one, {0: lesion(one)}, VERSION)
    seg_two = build_segmentation(two, {0: lesion(two)}, VERSION)
    assert seg_one.SOPInstanceUID != seg_two.SOPInstanceUID


def test_empty_mask_still_gives_a_readable_seg(tmp_path: Path) -> None:
    source = mono_source()
    empty = np.zeros((source.Rows, source.Columns), dtype=np.uint8)
    path = write_segmentation(source, {0: empty}, VERSION, tmp_path / "empty.dcm")
    seg = pydicom.dcmread(path)
    assert seg.SegmentationType == "BINARY" and int(seg.NumberOfFrames) == 1
    assert len(seg.SegmentSequence) == 1
    assert not seg.pixel_array.any()
    decoded = hd.seg.segread(path).get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=True)
    assert decoded.shape == (1, source.Rows, source.Columns) and not decoded.any()


def test_empty_analysed_frame_of_a_multiframe_source_is_kept(tmp_path: Path) -> None:
    source = multiframe_source(3)
    masks = {0: np.zeros((source.Rows, source.Columns), dtype=bool), 1: lesion(source)}
    seg = roundtrip(build_segmentation(source, masks, VERSION), tmp_path)
    referenced = [
        int(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
        for frame in seg.PerFrameFunctionalGroupsSequence
    ]
    assert referenced == [1, 2]
    assert not seg.pixel_array[0].any() and np.array_equal(seg.pixel_array[1].astype(bool), masks[1])


def test_source_pixel_data_is_not_needed() -> None:
    source = mono_source()
    mask = lesion(source)
    with_pixels = build_segmentation(source, {0: mask}, VERSION)
    del source.PixelData
    without_pixels = build_segmentation(source, {0: mask}, VERSION)
    assert without_pixels.PixelData == with_pixels.PixelData


def test_source_dataset_is_not_modified() -> None:
    source = multiframe_source(3)
    before = source.to_json_dict()
    build_segmentation(source, {0: lesion(source)}, VERSION)
    assert source.to_json_dict() == before


def test_write_is_atomic_and_overwrites(tmp_path: Path) -> None:
    source = mono_source()
    target = tmp_path / "out" / "seg.dcm"
    target.parent.mkdir()
    target.write_bytes(b"old")
    written = write_segmentation(source, {0: lesion(source)}, VERSION, target)
    assert written == target
    assert pydicom.dcmread(target).SOPClassUID == SEGMENTATION_STORAGE
    assert sorted(p.name for p in target.parent.iterdir()) == ["seg.dcm"]  # no temporary file left


def test_write_failure_is_a_segmentation_error_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    source = mono_source()
    target = tmp_path / "taken"
    target.mkdir()  # a directory where the file should go: os.replace fails
    with pytest.raises(SegmentationError) as caught:
        write_segmentation(source, {0: lesion(source)}, VERSION, target)
    assert "taken" in str(caught.value) and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == [target] and not any(target.iterdir())


def test_source_without_sop_instance_uid_is_a_one_line_error() -> None:
    source = mono_source()
    del source.SOPInstanceUID
    with pytest.raises(SegmentationError) as caught:
        build_segmentation(source, {0: lesion(source)}, VERSION)
    message = str(caught.value)
    assert "SOP Instance UID" in message
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s, m: (s, {}), "no analysed frames"),
        (lambda s, m: (s, {1: m}), "outside the source's 1 frame"),
        (lambda s, m: (s, {0: m[:-1]}), "has shape"),
        (lambda s, m: (s, {0: m.astype(np.float32)}), "float32"),
        (lambda s, m: (s, {0: m.astype(np.uint8) * 2}), "values other than"),
        (lambda s, m: (s, {"0": m}), "not an integer"),
        (lambda s, m: (_without(s, "StudyInstanceUID"), {0: m}), "Study Instance UID"),
        (lambda s, m: (_without(s, "Rows"), {0: m}), "Rows"),
    ],
)
def test_invalid_input_is_a_one_line_error(change, expected: str) -> None:
    source = mono_source()
    source, masks = change(source, lesion(source))
    with pytest.raises(SegmentationError) as caught:
        build_segmentation(source, masks, VERSION)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_multiframe_frame_index_out_of_range() -> None:
    source = multiframe_source(3)
    with pytest.raises(SegmentationError, match="outside the source's 3 frames"):
        build_segmentation(source, {3: lesion(source)}, VERSION)


def _without(ds: Dataset, keyword: str) -> Dataset:
    delattr(ds, keyword)
    return ds


def test_an_older_highdicom_or_pydicom_skips_the_seg_and_names_the_versions(monkeypatch) -> None:
    """Inside Slicer the module never upgrades pydicom/highdicom: with older ones the SEG says why it is skipped."""
    import pydicom

    from busassist.core import dicom_seg

    monkeypatch.setattr(dicom_seg, "hd", None)
    reason = dicom_seg.unavailable_reason()
    assert "highdicom >= 0.28" in reason and f"pydicom {pydicom.__version__}" in reason
    with pytest.raises(dicom_seg.SegmentationError, match="highdicom >= 0.28"):
        dicom_seg.build_segmentation(pydicom.Dataset(), {0: np.zeros((4, 4), bool)}, "m")
