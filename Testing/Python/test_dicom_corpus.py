"""Every ultrasound file of pydicom's test files and of the pydicom-data package.

Each one must decode to its declared size with a photometric-correct image, checked against the
same picture stored another way (uncompressed vs JPEG 2000, little vs big endian, RLE, 8- vs
16-bit palette), or be refused with a one-line reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

from busassist.core.io import FrameSelection, InputError, read_frames
from busassist.core.preprocessing import to_grey, to_uint8_range

data_store = pytest.importorskip("data_store", reason="pydicom-data (dev extra) provides the external test files")


def corpus_dirs() -> list[Path]:
    import pydicom.data

    return [Path(pydicom.data.__file__).parent / "test_files", Path(data_store.__file__).parent / "data"]


def find(name: str) -> Path:
    for folder in corpus_dirs():
        if (folder / name).exists():
            return folder / name
    pytest.fail(f"{name} is missing from the pydicom test corpus")


#: name -> (frames, rows, columns, has a tissue region with mm spacing)
ULTRASOUND = {
    "ExplVR_BigEnd.dcm": (1, 60, 80, False),
    "JPGLosslessP14SV1_1s_1f_8b.dcm": (1, 768, 1024, True),
    "OBXXXX1A.dcm": (1, 600, 800, True),
    "OBXXXX1A_2frame.dcm": (2, 600, 800, True),
    "OBXXXX1A_expb.dcm": (1, 600, 800, True),
    "OBXXXX1A_expb_2frame.dcm": (2, 600, 800, True),
    "OBXXXX1A_rle.dcm": (1, 600, 800, True),
    "OBXXXX1A_rle_2frame.dcm": (2, 600, 800, True),
    "US1_J2KI.dcm": (1, 480, 640, False),
    "US1_J2KR.dcm": (1, 480, 640, False),
    "US1_UNCI.dcm": (1, 480, 640, False),
    "US1_UNCR.dcm": (1, 480, 640, False),
    "color-pl.dcm": (1, 120, 256, False),
    "color-px.dcm": (1, 120, 256, False),
    "color3d_jpeg_baseline.dcm": (120, 480, 640, True),
    "examples_jpeg2k.dcm": (1, 480, 640, False),
    "examples_palette.dcm": (1, 350, 800, True),
    "examples_rgb_color.dcm": (1, 240, 320, False),
    "examples_ybr_color.dcm": (30, 240, 320, True),
    "gdcm-US-ALOKA-16.dcm": (1, 480, 640, True),
    "gdcm-US-ALOKA-16_big.dcm": (1, 480, 640, True),
}


def grey(name: str, frames: str = "first") -> np.ndarray:
    return to_uint8_range(to_grey(next(read_frames(find(name), frames=FrameSelection(frames))).pixels))


@pytest.mark.parametrize("name", sorted(ULTRASOUND))
def test_every_ultrasound_file_decodes_to_its_size(name: str) -> None:
    count, rows, columns, calibrated = ULTRASOUND[name]
    selection = FrameSelection(f"1,2,{count // 2 + 1}") if count > 2 else FrameSelection()
    frames = list(read_frames(find(name), frames=selection))
    dataset = pydicom.dcmread(find(name), stop_before_pixels=True)
    assert int(getattr(dataset, "NumberOfFrames", 1) or 1) == count
    for frame in frames:
        assert frame.pixels.shape[:2] == (rows, columns)
        image = to_uint8_range(to_grey(frame.pixels))
        assert image.min() >= 0 and image.max() <= 255
        assert image.std() > 1, "a decoded ultrasound frame is not flat"
    if calibrated:
        region = frames[0].region
        assert region is not None and region.spacing_mm is not None
        assert 0.05 < region.spacing_mm[0] < 2.0, "spacing converted from cm to mm"
        assert 0 <= region.x0 < region.x1 <= columns and 0 <= region.y0 < region.y1 <= rows


@pytest.mark.parametrize(
    ("stored", "reference", "tolerance"),
    [
        ("US1_J2KR.dcm", "US1_UNCR.dcm", 0.0),  # lossless JPEG 2000 (YBR_RCT) = uncompressed RGB
        ("US1_J2KI.dcm", "US1_UNCI.dcm", 3.0),  # lossy JPEG 2000 (YBR_ICT): close, not equal
        # big endian palette = little endian; this file's 16-bit table stores round 8-bit values
        # (37 * 257) where the other stores e.g. 36.86 * 257, hence up to one grey level apart
        ("OBXXXX1A_expb.dcm", "OBXXXX1A.dcm", 0.5),
        ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm", 0.0),  # RLE = uncompressed
        ("gdcm-US-ALOKA-16_big.dcm", "gdcm-US-ALOKA-16.dcm", 0.0),  # 16-bit palette, both endians
        ("color-pl.dcm", "color-px.dcm", 0.0),  # planar configuration 1 = 0
    ],
)
def test_same_picture_stored_differently_decodes_the_same(stored: str, reference: str, tolerance: float) -> None:
    difference = np.abs(grey(stored) - grey(reference))
    assert difference.mean() <= tolerance + 1e-6


def test_palette_frames_are_expanded_to_colour() -> None:
    frame = next(read_frames(find("OBXXXX1A.dcm")))
    assert frame.pixels.ndim == 3 and frame.pixels.shape[2] == 3


def test_ybr_jpeg_is_converted_to_rgb_not_left_as_ybr() -> None:
    # In YBR the grey background would have chroma near 128 in channels 1 and 2; after conversion to
    # RGB a grey ultrasound pixel has three nearly equal channels.
    pixels = next(read_frames(find("color3d_jpeg_baseline.dcm"))).pixels.astype(float)
    tissue = pixels[pixels.sum(axis=2) > 60]
    assert np.median(np.abs(tissue[:, 0] - tissue[:, 1])) < 10


def test_frame_selection_streams_only_the_chosen_frames() -> None:
    path = find("color3d_jpeg_baseline.dcm")
    chosen = [frame.index for frame in read_frames(path, frames=FrameSelection("1,5-7,500"))]
    assert chosen == [0, 4, 5, 6]
    assert [f.index for f in read_frames(path, frames=FrameSelection("every:40"))] == [0, 40, 80]
    assert [f.index for f in read_frames(path, frames=FrameSelection("middle"))] == [60]
    with pytest.raises(ValueError):
        FrameSelection("7-3")


def test_non_ultrasound_files_of_the_corpus_are_refused_in_one_line() -> None:
    refused = 0
    for folder in corpus_dirs():
        for name in ("CT_small.dcm", "MR_small.dcm", "liver.dcm"):
            if (folder / name).exists():
                with pytest.raises(InputError) as caught:
                    next(read_frames(folder / name))
                assert "\n" not in str(caught.value) and name in str(caught.value)
                refused += 1
    assert refused >= 2


def test_whole_corpus_never_raises_anything_but_input_error() -> None:
    """Every file in both folders is either read or refused with InputError, never another exception."""
    read = refused = 0
    for folder in corpus_dirs():
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.stat().st_size > 20_000_000 or not os.access(path, os.R_OK):
                continue
            try:
                for _ in read_frames(path, frames=FrameSelection("first")):
                    read += 1
            except InputError as error:
                assert "\n" not in str(error)
                refused += 1
    assert read >= len(ULTRASOUND) and refused > 0


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless (pyjpegls)
        ("image_dfl.dcm", None),  # deflated explicit VR little endian
        ("SC_rgb_jls_lossy_line.dcm", None),  # JPEG-LS near-lossless, RGB
    ],
)
def test_jpeg_ls_and_deflate_decode(name: str, reference: str | None) -> None:
    """No ultrasound file in the corpus uses JPEG-LS or deflate, so other modalities stand in
    (``any_modality``): the codecs are the same whatever the modality."""
    frame = next(read_frames(find(name), any_modality=True))
    dataset = pydicom.dcmread(find(name), stop_before_pixels=True)
    assert frame.pixels.shape[:2] == (dataset.Rows, dataset.Columns)
    assert np.ptp(frame.pixels) > 0
    if reference is not None:
        expected = next(read_frames(find(reference), any_modality=True)).pixels
        assert np.array_equal(frame.pixels, expected), "lossless JPEG-LS equals the uncompressed original"


@pytest.mark.parametrize("name", ["color3d_jpeg_baseline.dcm", "SC_ybr_full_uncompressed.dcm"])
def test_ybr_decoded_straight_to_luma_gives_the_same_analysis(name: str) -> None:
    """The batch reads YBR colour as its Y plane: the same picture, the same masks and scores (issue 16)."""
    from busassist.core.inference import Analyzer
    from busassist.core.io import iter_frames
    from busassist.core.preprocessing import to_grey

    path = find(name)
    selection = FrameSelection("1-6")
    luma = [f for f in iter_frames(path, frames=selection, luma=True, any_modality=True)]
    rgb = [f for f in iter_frames(path, frames=selection, luma=False, any_modality=True)]
    assert len(luma) == len(rgb) > 0
    analyzer = Analyzer(threads=1)
    for fast, slow in zip(luma, rgb):
        assert fast.pixels.ndim == 2 and slow.pixels.ndim == 3
        # Y equals the luma of the RGB pydicom converts to, but where saturated colour (Doppler) clips
        # in RGB; the mean difference is a fraction of a grey level
        assert np.abs(fast.pixels.astype(np.float32) - to_grey(slow.pixels)).mean() <= 0.5
        if name != "color3d_jpeg_baseline.dcm":
            continue  # a 100 x 100 test card, not ultrasound: its few-pixel specks say nothing about Dice
        # Downstream, the tolerance is the model's own noise floor rounded out (reports/ema-agreement/clean-seed-3/
        # noise_floor.py), not a model-specific pin: +-1 grey level
        # on a fifth of the pixels of 40 BUSI test images moves the bundled models' probability by up to
        # 0.021 (98770c53; 804d8d00: 0.019) and their masks to Dice 0.968 (0.982). This cine frame is far
        # from BUSI (a 640 x 480 colour cine of pydicom's test files): 98770c53 moves by up to 0.026, Dice 0.983.
        a, b = analyzer.analyze(fast), analyzer.analyze(slow)
        assert abs(a.probability - b.probability) <= 0.03
        ma, mb = a.mask > 0, b.mask > 0
        union = np.count_nonzero(ma) + np.count_nonzero(mb)
        assert union == 0 or 2 * np.count_nonzero(ma & mb) / union >= 0.96
