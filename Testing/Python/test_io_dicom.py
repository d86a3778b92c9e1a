"""Reading frames: DICOM photometric interpretations, bit depths, multi-frame, compression,
the Sequence of Ultrasound Regions, PNG input, and one-line ``InputError``s for bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from busassist.core.io import InputError, Region, read_frames, tissue_region
from busassist.core.preprocessing import to_grey, to_uint8_range
from busassist.training.sample_study import framed, ultrasound_dataset

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


# ---------------------------------------------------------------------------------------------
# Builders


def make_dataset(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 8,
    sop_class: str = US_IMAGE,
    modality: str = "US",
    frames: int | None = None,
    planar: int = 0,
    regions: list[Dataset] | None = None,
) -> Dataset:
    """A minimal valid image dataset; ``pixels`` is (H, W[, 3]) or (frames, H, W[, 3])."""
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = "Test^Patient"
    ds.PatientID = "TEST"
    colour = photometric in ("RGB", "YBR_FULL")
    shape = pixels.shape[1:] if frames else pixels.shape
    ds.Rows, ds.Columns = shape[:2]
    if frames:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    if colour:
        ds.PlanarConfiguration = planar
        if planar == 1:  # colour-by-plane: all R, then all G, then all B (per frame)
            pixels = np.moveaxis(pixels, -1, -3)
    dtype = np.uint8 if bits_stored <= 8 else np.uint16
    ds.PixelData = np.ascontiguousarray(pixels, dtype=dtype).tobytes()
    if regions is not None:
        ds.SequenceOfUltrasoundRegions = Sequence(regions)
    return ds


def region_item(
    x0: int,
    y0: int,
    x1: int,
    y1: int,
    spatial: int = 1,
    data_type: int = 1,
    units: int = 0,
    delta: tuple[float, float] = (0.0, 0.0),
) -> Dataset:
    """One Sequence of Ultrasound Regions item; (x1, y1) are the inclusive Max values."""
    item = Dataset()
    item.RegionSpatialFormat = spatial
    item.RegionDataType = data_type
    item.RegionFlags = 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    item.PhysicalUnitsXDirection = units
    item.PhysicalUnitsYDirection = units
    item.PhysicalDeltaX, item.PhysicalDeltaY = delta
    return item


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def grey_ramp(height: int = 40, width: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width), dtype=np.uint8)


def rgb_image(height: int = 40, width: int = 60, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def only_frame(path: Path, **kwargs) -> object:
    frames = list(read_frames(path, **kwargs))
    assert len(frames) == 1
    return frames[0]


# ---------------------------------------------------------------------------------------------
# Photometric interpretations and bit depths


def test_monochrome2_8bit_exact(tmp_path: Path) -> None:
    pixels = grey_ramp()
    frame = only_frame(save(make_dataset(pixels), tmp_path / "grey.dcm"))
    assert frame.pixels.shape == pixels.shape
    np.testing.assert_array_equal(frame.pixels, pixels)
    assert frame.index == 0
    assert frame.source == str(tmp_path / "grey.dcm")
    assert frame.region is None


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = grey_ramp()
    frame = only_frame(save(make_dataset(pixels, "MONOCHROME1"), tmp_path / "m1.dcm"))
    np.testing.assert_allclose(np.asarray(frame.pixels, dtype=np.float64), 255.0 - pixels, atol=1e-4)


def test_16bit_monochrome2_scaled_by_bit_depth(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    # A dark 12-bit frame (max 1000 of 4095): scaling by the frame's own range would brighten it.
    values = rng.integers(0, 1001, size=(40, 60)).astype(np.uint16)
    values[0, 0], values[0, 1] = 0, 1000
    frame = only_frame(save(make_dataset(values, bits_stored=12), tmp_path / "u12.dcm"))
    grey = to_uint8_range(to_grey(frame.pixels))
    np.testing.assert_allclose(grey, values * 255.0 / 4095.0, atol=1e-3)
    assert grey.max() == pytest.approx(1000 * 255.0 / 4095.0, abs=1e-3)


def test_16bit_full_range_reaches_255(tmp_path: Path) -> None:
    values = np.linspace(0, 4095, 40 * 60).reshape(40, 60).astype(np.uint16)
    frame = only_frame(save(make_dataset(values, bits_stored=12), tmp_path / "u12.dcm"))
    grey = to_uint8_range(to_grey(frame.pixels))
    np.testing.assert_allclose(grey, values * 255.0 / 4095.0, atol=1e-3)
    assert grey.max() == pytest.approx(255.0, abs=1e-3)


def test_16bit_monochrome1_inverted_and_scaled(tmp_path: Path) -> None:
    values = np.linspace(0, 4095, 40 * 60).reshape(40, 60).astype(np.uint16)
    frame = only_frame(save(make_dataset(values, "MONOCHROME1", bits_stored=12), tmp_path / "m1_12.dcm"))
    grey = to_uint8_range(to_grey(frame.pixels))
    np.testing.assert_allclose(grey, (4095.0 - values) * 255.0 / 4095.0, atol=1e-3)


@pytest.mark.parametrize("planar", [0, 1])
def test_rgb_channels(tmp_path: Path, planar: int) -> None:
    rgb = rgb_image()
    frame = only_frame(save(make_dataset(rgb, "RGB", planar=planar), tmp_path / f"rgb{planar}.dcm"))
    assert frame.pixels.shape == (40, 60, 3)
    np.testing.assert_array_equal(frame.pixels, rgb)


def test_ybr_full_returns_rgb(tmp_path: Path) -> None:
    from pydicom.pixels import convert_color_space

    # Smooth colours (YBR round trips are lossy by rounding only).
    yy, xx = np.mgrid[0:40, 0:60]
    rgb = np.stack([xx * 4, yy * 6, 255 - xx * 4], axis=-1).astype(np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    frame = only_frame(save(make_dataset(ybr, "YBR_FULL"), tmp_path / "ybr.dcm"))
    assert frame.pixels.shape == (40, 60, 3)
    difference = np.abs(np.asarray(frame.pixels, dtype=np.int16) - rgb.astype(np.int16))
    assert difference.max() <= 2


@pytest.mark.parametrize("lut_bits", [16, 8])
def test_palette_colour_8bit_returns_lut_colours(tmp_path: Path, lut_bits: int) -> None:
    indices = grey_ramp()
    entries = np.arange(256)
    red, green, blue = entries, 255 - entries, (entries * 7) % 256
    ds = make_dataset(indices, "PALETTE COLOR")
    for name, channel in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, lut_bits])
        # 16-bit LUT entries span 0..65535, as most scanners write them; 8-bit ones 0..255.
        data = (channel * 257).astype("<u2") if lut_bits == 16 else channel.astype(np.uint8)
        setattr(ds, f"{name}PaletteColorLookupTableData", data.tobytes())
    frame = only_frame(save(ds, tmp_path / "palette.dcm"))
    expected = np.stack([red[indices], green[indices], blue[indices]], axis=-1)
    assert frame.pixels.shape == (40, 60, 3)
    np.testing.assert_allclose(np.asarray(frame.pixels, dtype=np.float64), expected, atol=0.5)


# ---------------------------------------------------------------------------------------------
# Multi-frame and compression


def test_multiframe_yields_frames_in_order(tmp_path: Path) -> None:
    stack = np.stack([grey_ramp(seed=s) for s in range(3)])
    ds = make_dataset(stack, sop_class=US_MULTIFRAME, frames=3)
    frames = list(read_frames(save(ds, tmp_path / "cine.dcm")))
    assert [f.index for f in frames] == [0, 1, 2]
    for frame, expected in zip(frames, stack):
        np.testing.assert_array_equal(frame.pixels, expected)
    assert len({f.sop_instance_uid for f in frames}) == 1
    assert frames[0].sop_instance_uid == str(ds.SOPInstanceUID)


def test_multiframe_rgb(tmp_path: Path) -> None:
    stack = np.stack([rgb_image(seed=s) for s in range(3)])
    ds = make_dataset(stack, "RGB", sop_class=US_MULTIFRAME, frames=3)
    frames = list(read_frames(save(ds, tmp_path / "cine_rgb.dcm")))
    assert [f.index for f in frames] == [0, 1, 2]
    for frame, expected in zip(frames, stack):
        np.testing.assert_array_equal(frame.pixels, expected)


def test_rle_lossless_decodes_identically(tmp_path: Path) -> None:
    pixels = grey_ramp()
    ds = make_dataset(pixels)
    ds.compress(RLELossless, generate_instance_uid=False)
    path = save(ds, tmp_path / "rle.dcm")
    frame = only_frame(path)
    np.testing.assert_array_equal(frame.pixels, pixels)


def test_rle_lossless_rgb_from_sample_study_builder(tmp_path: Path) -> None:
    image = rgb_image(60, 80)
    frame_pixels, region = framed(image)
    ds = ultrasound_dataset(frame_pixels, region, "rgb-case", 1, compress=True)
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    frame = only_frame(save(ds, tmp_path / "rle_rgb.dcm"))
    np.testing.assert_array_equal(frame.pixels, frame_pixels)
    x0, y0, x1, y1 = region
    assert frame.region == Region(x0, y0, x1 + 1, y1 + 1, None)
    np.testing.assert_array_equal(
        frame.pixels[frame.region.y0 : frame.region.y1, frame.region.x0 : frame.region.x1], image
    )


# ---------------------------------------------------------------------------------------------
# Sequence of Ultrasound Regions


def read_region(tmp_path: Path, regions: list[Dataset], shape: tuple[int, int] = (100, 120)) -> Region | None:
    ds = make_dataset(np.zeros(shape, dtype=np.uint8), regions=regions)
    return only_frame(save(ds, tmp_path / "regions.dcm")).region


def test_region_bounds_max_inclusive(tmp_path: Path) -> None:
    region = read_region(tmp_path, [region_item(10, 20, 89, 79)])
    assert region == Region(10, 20, 90, 80, None)
    assert region.area == 80 * 60


def test_region_from_sample_study_builder_crops_the_image(tmp_path: Path) -> None:
    image = grey_ramp(50, 70)
    frame_pixels, region = framed(image)
    ds = ultrasound_dataset(frame_pixels, region, "case", 1, compress=False)
    frame = only_frame(save(ds, tmp_path / "framed.dcm"))
    r = frame.region
    assert (r.x0, r.y0, r.x1 - r.x0, r.y1 - r.y0) == (region[0], region[1], 70, 50)
    np.testing.assert_array_equal(frame.pixels[r.y0 : r.y1, r.x0 : r.x1], image)
    assert r.spacing_mm is None  # BUSI sample regions declare no physical units


def test_region_spacing_in_mm_for_centimetres(tmp_path: Path) -> None:
    region = read_region(tmp_path, [region_item(0, 0, 99, 89, units=3, delta=(0.01, 0.02))])
    assert region is not None
    assert region.spacing_mm == pytest.approx((0.2, 0.1))  # (row, column) = (dy, dx) in mm


def test_region_without_units_has_no_spacing(tmp_path: Path) -> None:
    region = read_region(tmp_path, [region_item(0, 0, 99, 89, units=0, delta=(0.01, 0.01))])
    assert region == Region(0, 0, 100, 90, None)


@pytest.mark.parametrize(
    "item",
    [
        region_item(5, 5, 50, 50, data_type=2),  # colour flow, not tissue
        region_item(5, 5, 50, 50, data_type=3),  # PW spectral Doppler
        region_item(5, 5, 50, 50, spatial=2),  # M-mode
        region_item(5, 5, 50, 50, spatial=3),  # spectral
    ],
    ids=["colour-flow", "pw-doppler", "m-mode", "spectral"],
)
def test_non_tissue_or_non_2d_regions_ignored(tmp_path: Path, item: Dataset) -> None:
    assert read_region(tmp_path, [item]) is None
    # ... and they do not displace a tissue region declared beside them, however big they are.
    tissue = region_item(60, 10, 99, 40)
    big = Dataset()
    big.update(item)
    big.RegionLocationMaxX1, big.RegionLocationMaxY1 = 119, 99
    assert read_region(tmp_path, [big, tissue]) == Region(60, 10, 100, 41, None)


def test_largest_tissue_region_chosen(tmp_path: Path) -> None:
    small = region_item(0, 0, 29, 29)
    large = region_item(40, 10, 109, 89, units=3, delta=(0.005, 0.005))
    assert read_region(tmp_path, [small, large]) == Region(40, 10, 110, 90, (0.05, 0.05))
    assert read_region(tmp_path, [large, small]) == Region(40, 10, 110, 90, (0.05, 0.05))


def test_region_partly_outside_frame_is_clipped(tmp_path: Path) -> None:
    region = read_region(tmp_path, [region_item(50, 40, 199, 149)], shape=(100, 120))
    assert region == Region(50, 40, 120, 100, None)


def test_tissue_region_largest_after_clipping() -> None:
    # A region that is huge on paper but mostly outside the frame loses to a smaller one inside.
    ds = Dataset()
    ds.SequenceOfUltrasoundRegions = Sequence([region_item(110, 0, 5000, 5000), region_item(0, 0, 49, 49)])
    assert tissue_region(ds, 100, 120) == Region(0, 0, 50, 50, None)


# ---------------------------------------------------------------------------------------------
# Bad inputs: InputError with a one-line reason naming the file


def assert_refused(path: Path, stage: str | None = None, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        list(read_frames(path, **kwargs))
    error = info.value
    text = str(error)
    assert "\n" not in text
    assert str(path) in text
    assert error.path == str(path)
    assert "Traceback" not in text
    if stage is not None:
        assert error.stage == stage
    return error


def test_text_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not an image\nsecond line\n")
    assert_refused(path, "read")


def test_text_file_with_dicom_extension_refused(tmp_path: Path) -> None:
    path = tmp_path / "fake.dcm"
    path.write_text("not DICOM either")
    assert_refused(path, "read")


def test_truncated_dicom_refused(tmp_path: Path) -> None:
    whole = save(make_dataset(grey_ramp(200, 300)), tmp_path / "whole.dcm").read_bytes()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(whole[: len(whole) // 2])
    assert_refused(path)


def test_truncated_header_refused(tmp_path: Path) -> None:
    whole = save(make_dataset(grey_ramp(200, 300)), tmp_path / "whole.dcm").read_bytes()
    path = tmp_path / "truncated_header.dcm"
    path.write_bytes(whole[:300])  # cut inside the header, before Rows/Columns are complete
    assert_refused(path)


def test_truncated_header_reason_is_not_wrong_modality(tmp_path: Path) -> None:
    whole = save(make_dataset(grey_ramp(200, 300)), tmp_path / "whole.dcm").read_bytes()
    path = tmp_path / "truncated_header.dcm"
    path.write_bytes(whole[:300])
    error = assert_refused(path)
    # The file meta says Ultrasound Image Storage; the file is damaged, not of the wrong modality.
    assert "not an ultrasound image" not in error.reason


def test_dicom_without_pixel_data_refused(tmp_path: Path) -> None:
    ds = make_dataset(grey_ramp())
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(ds, keyword)
    error = assert_refused(save(ds, tmp_path / "nopixels.dcm"))
    assert "pixel" in error.reason.lower()


def test_dicom_with_geometry_but_no_pixel_data_refused(tmp_path: Path) -> None:
    ds = make_dataset(grey_ramp())
    del ds.PixelData
    error = assert_refused(save(ds, tmp_path / "nopixels2.dcm"))
    assert "pixel" in error.reason.lower()


def make_ct(tmp_path: Path) -> Path:
    values = np.linspace(0, 4095, 40 * 60).reshape(40, 60).astype(np.uint16)
    return save(make_dataset(values, bits_stored=12, sop_class=CT_IMAGE, modality="CT"), tmp_path / "ct.dcm")


def test_ct_refused_unless_any_modality(tmp_path: Path) -> None:
    path = make_ct(tmp_path)
    error = assert_refused(path, "check")
    assert "ultrasound" in error.reason.lower()
    frame = only_frame(path, any_modality=True)
    assert frame.pixels.shape == (40, 60)


def test_one_pixel_frame_refused(tmp_path: Path) -> None:
    ds = make_dataset(np.array([[128]], dtype=np.uint8))
    error = assert_refused(save(ds, tmp_path / "tiny.dcm"))
    assert "small" in error.reason


def test_missing_file_refused(tmp_path: Path) -> None:
    assert_refused(tmp_path / "missing.dcm")


def test_folder_refused(tmp_path: Path) -> None:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert_refused(folder)


def test_corrupt_png_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert_refused(path)


# ---------------------------------------------------------------------------------------------
# PNG input


def test_png_grey(tmp_path: Path) -> None:
    pixels = grey_ramp()
    path = tmp_path / "grey.png"
    Image.fromarray(pixels).save(path)
    frame = only_frame(path)
    assert frame.index == 0 and frame.region is None
    np.testing.assert_array_equal(frame.pixels, pixels)


def test_png_rgb(tmp_path: Path) -> None:
    rgb = rgb_image()
    path = tmp_path / "colour.PNG"
    Image.fromarray(rgb).save(path, format="PNG")
    frame = only_frame(path)
    assert frame.pixels.shape == (40, 60, 3)
    np.testing.assert_array_equal(frame.pixels, rgb)


def test_dicom_named_png_read_as_dicom(tmp_path: Path) -> None:
    pixels = grey_ramp()
    frame = only_frame(save(make_dataset(pixels, "MONOCHROME1"), tmp_path / "scan.png"))
    np.testing.assert_allclose(np.asarray(frame.pixels, dtype=np.float64), 255.0 - pixels, atol=1e-4)
    assert frame.sop_instance_uid
