"""``busassist analyze`` end to end with a small exported EMT-Net, and the ``Analyzer`` it uses.

The model is the session fixture ``emtnet_onnx`` from ``model_fixtures`` (untrained but with
calibrated batch norm, so masks are neither empty nor full); the inputs are real BUSI frames
wrapped as ultrasound DICOM by the sample-study builder (smooth stand-ins without shared data).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.register_assert_rewrite("model_fixtures")

from model_fixtures import FixtureModel, sample_frames  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from busassist.apps.cli import main  # noqa: E402
from busassist.constants import MIN_LESION_FRACTION  # noqa: E402
from busassist.core.batch import RESULT_COLUMNS  # noqa: E402
from busassist.core.inference import Analyzer, Decision, FrameResult  # noqa: E402
from busassist.core.io import Region, read_frames  # noqa: E402
from busassist.core.model_store import checksum_path  # noqa: E402
from busassist.core.preprocessing import to_grey  # noqa: E402
from busassist.core.scan import expand_inputs  # noqa: E402
from busassist.training.sample_study import US_IMAGE_STORAGE, framed, ultrasound_dataset  # noqa: E402

pytest_plugins = ["model_fixtures"]

REQUIRED_COLUMNS = ["file", "frame", "malignancy_probability", "decision", "lesion_detected", "mask_path"]
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


# ---------------------------------------------------------------------------------------------
# Inputs and helpers


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """A benign and a malignant BUSI frame (grey or RGB, as stored)."""
    frames = sample_frames()
    return [frames[0], frames[2]]


def write_framed_dicom(path: Path, image: np.ndarray, name: str, compress: bool = False) -> tuple[int, int, int, int]:
    """``image`` inside a bigger frame with a declared tissue region; returns the region (Max inclusive)."""
    frame, region = framed(image)
    ds = ultrasound_dataset(frame, region, name, 1, compress)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    ds.save_as(path, enforce_file_format=True)
    return region


def write_multiframe_dicom(path: Path, images: list[np.ndarray]) -> tuple[int, int, int, int]:
    """Frames of the same size (grey, cropped to the smallest image) as one US multi-frame file."""
    height = min(i.shape[0] for i in images)
    width = min(i.shape[1] for i in images)
    greys = [np.asarray(Image.fromarray(i).convert("L"))[:height, :width] for i in images]
    frames = [framed(g) for g in greys]
    ds = ultrasound_dataset(frames[0][0], frames[0][1], "cine", 1, compress=False)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME
    ds.NumberOfFrames = len(frames)
    ds.PixelData = np.stack([f for f, _ in frames]).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return frames[0][1]


def write_ct(path: Path) -> None:
    frame, region = framed(np.full((64, 64), 100, dtype=np.uint8))
    ds = ultrasound_dataset(frame, region, "ct", 1, compress=False)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.Modality = "CT"
    del ds.SequenceOfUltrasoundRegions
    ds.save_as(path, enforce_file_format=True)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).copy()


def analyze(inputs: list[Path], out: Path, model: Path, *extra: str) -> int:
    return main(["analyze", *map(str, inputs), "--out", str(out), "--model", str(model), "--threads", "1", *extra])


def exclusive(region: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = region
    return x0, y0, x1 + 1, y1 + 1


def assert_decision_consistent(row: dict[str, str]) -> None:
    probability, threshold = float(row["malignancy_probability"]), float(row["threshold"])
    assert 0.0 <= probability <= 1.0
    assert row["lesion_detected"] in ("0", "1")
    if row["lesion_detected"] == "0":
        assert row["decision"] == Decision.NO_LESION
    elif probability >= threshold:
        assert row["decision"] == Decision.SUSPICIOUS
    else:
        assert row["decision"] == Decision.BENIGN


# ---------------------------------------------------------------------------------------------
# One framed DICOM through the CLI


@pytest.fixture(scope="module")
def framed_run(emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("framed")
    dicom = folder / "case.dcm"
    region = write_framed_dicom(dicom, images[0], "case")
    out = folder / "out"
    code = analyze([dicom], out, emtnet_onnx.path)
    return {"code": code, "dicom": dicom, "region": region, "out": out, "rows": read_csv(out / "results.csv")}


def test_framed_dicom_exit_code_and_columns(framed_run: dict) -> None:
    assert framed_run["code"] == 0
    with open(framed_run["out"] / "results.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert set(REQUIRED_COLUMNS) <= set(header)
    assert header == RESULT_COLUMNS
    rows = framed_run["rows"]
    assert len(rows) == 1
    row = rows[0]
    assert row["file"] == str(framed_run["dicom"])
    assert row["frame"] == "0"
    assert row["model_version"] == "test"
    assert row["region"] == ",".join(map(str, exclusive(framed_run["region"])))
    assert read_csv(framed_run["out"] / "errors.csv") == []


def test_framed_dicom_mask_in_source_geometry(framed_run: dict) -> None:
    row = framed_run["rows"][0]
    source = next(read_frames(framed_run["dicom"]))
    mask_path = framed_run["out"] / row["mask_path"]
    assert mask_path.is_file()
    mask = read_png(mask_path)
    assert mask.shape == source.pixels.shape[:2]
    assert mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 255}
    x0, y0, x1, y1 = exclusive(framed_run["region"])
    outside = np.ones(mask.shape, dtype=bool)
    outside[y0:y1, x0:x1] = False
    assert not mask[outside].any(), "mask has lesion pixels outside the declared tissue region"
    assert int(row["mask_area_px"]) == int(np.count_nonzero(mask))
    lesion_fraction = np.count_nonzero(mask) / ((x1 - x0) * (y1 - y0))
    assert row["lesion_detected"] == str(int(lesion_fraction >= MIN_LESION_FRACTION))


def test_framed_dicom_overlay(framed_run: dict) -> None:
    row = framed_run["rows"][0]
    source = next(read_frames(framed_run["dicom"]))
    overlay_path = framed_run["out"] / row["overlay_path"]
    assert overlay_path.is_file()
    overlay = read_png(overlay_path)
    assert overlay.shape == (*source.pixels.shape[:2], 3)
    # Away from the lesion the overlay shows the frame itself, in grey.
    mask = read_png(framed_run["out"] / row["mask_path"])
    background = mask == 0
    assert background.any()
    grey = np.clip(to_grey(source.pixels), 0, 255).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(overlay[..., channel][background], grey[background])
    if (~background).any():  # lesion pixels are tinted red or outlined yellow
        lesion = overlay[~background].astype(int)
        assert np.all(lesion[:, 0] >= lesion[:, 2])


def test_framed_dicom_decision_consistent(framed_run: dict) -> None:
    row = framed_run["rows"][0]
    assert float(row["threshold"]) == pytest.approx(0.5, abs=1e-6)
    assert_decision_consistent(row)


def test_framed_mask_equals_analysis_of_the_bare_image(
    framed_run: dict, emtnet_onnx: FixtureModel, images: list[np.ndarray]
) -> None:
    # Cropping to the declared region must give exactly the BUSI image, so the result inside the
    # region is the result for the bare image, placed at the region's offset.
    analyzer = Analyzer(emtnet_onnx.path, threads=1)
    bare = analyzer.analyze(images[0])
    row = framed_run["rows"][0]
    mask = read_png(framed_run["out"] / row["mask_path"])
    x0, y0, x1, y1 = exclusive(framed_run["region"])
    np.testing.assert_array_equal(mask[y0:y1, x0:x1], bare.mask)
    assert float(row["malignancy_probability"]) == pytest.approx(bare.probability, abs=2e-6)


# ---------------------------------------------------------------------------------------------
# Several frames, thresholds, usage errors


def test_multiframe_one_row_per_frame(emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path) -> None:
    dicom = tmp_path / "cine.dcm"
    region = write_multiframe_dicom(dicom, images)
    out = tmp_path / "out"
    assert analyze([dicom], out, emtnet_onnx.path) == 0
    rows = read_csv(out / "results.csv")
    assert [r["frame"] for r in rows] == ["0", "1"]
    assert len({r["mask_path"] for r in rows}) == 2
    shape = next(read_frames(dicom)).pixels.shape
    for row in rows:
        mask = read_png(out / row["mask_path"])
        assert mask.shape == shape
        x0, y0, x1, y1 = exclusive(region)
        inside = np.zeros(shape, dtype=bool)
        inside[y0:y1, x0:x1] = True
        assert not mask[~inside].any()
        assert_decision_consistent(row)


@pytest.mark.parametrize("weight,threshold", [("10", 3 / 13), ("1", 0.75), ("3", 0.5), (None, 0.5)])
def test_effective_weight_sets_threshold(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path, weight: str | None, threshold: float
) -> None:
    dicom = tmp_path / "case.dcm"
    write_framed_dicom(dicom, images[1], "case2")
    out = tmp_path / "out"
    extra = [] if weight is None else ["--effective-weight", weight]
    assert analyze([dicom], out, emtnet_onnx.path, "--no-overlays", *extra) == 0
    (row,) = read_csv(out / "results.csv")
    assert float(row["threshold"]) == pytest.approx(threshold, abs=1e-6)
    assert_decision_consistent(row)
    assert row["overlay_path"] == ""
    assert not (out / "overlays").exists()


@pytest.mark.parametrize("weight", ["0.5", "10.5", "0", "-3", "abc", "nan"])
def test_effective_weight_out_of_range_is_usage_error(
    emtnet_onnx: FixtureModel, tmp_path: Path, capsys: pytest.CaptureFixture[str], weight: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        analyze([tmp_path], out, emtnet_onnx.path, f"--effective-weight={weight}")
    assert info.value.code == 1, "usage errors exit 1; 2 means some inputs were refused"
    assert "--effective-weight" in capsys.readouterr().err
    assert not out.exists()


def test_folder_input_skips_documentation_and_hidden_files(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path
) -> None:
    folder = tmp_path / "study"
    (folder / "series").mkdir(parents=True)
    write_framed_dicom(folder / "series" / "IM0001", images[0], "no-extension")  # DICOM without a suffix
    (folder / "provenance.json").write_text("{}\n")
    (folder / ".hidden.dcm").write_text("not looked at")
    assert list(expand_inputs([folder])) == [folder / "series" / "IM0001"]
    out = tmp_path / "out"
    assert analyze([folder], out, emtnet_onnx.path, "--no-overlays") == 0
    assert [r["file"] for r in read_csv(out / "results.csv")] == [str(folder / "series" / "IM0001")]


def test_same_stem_in_two_folders_gets_two_masks(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path
) -> None:
    for name, image in zip("ab", images):
        (tmp_path / "in" / name).mkdir(parents=True)
        Image.fromarray(image).save(tmp_path / "in" / name / "scan.png")
    out = tmp_path / "out"
    assert analyze([tmp_path / "in"], out, emtnet_onnx.path, "--no-overlays") == 0
    rows = read_csv(out / "results.csv")
    assert len(rows) == 2
    assert rows[0]["mask_path"] != rows[1]["mask_path"]


# ---------------------------------------------------------------------------------------------
# A batch with bad files: the good ones are analysed, the bad ones reported in one line each


def test_batch_with_bad_files(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.dcm"
    write_framed_dicom(good, images[0], "good")
    text = tmp_path / "notes.txt"
    text.write_text("scanner notes, not an image\n")
    whole = tmp_path / "whole.dcm"
    write_framed_dicom(whole, images[1], "whole")
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    ct = tmp_path / "ct.dcm"
    write_ct(ct)
    bad = [text, truncated, ct]
    out = tmp_path / "out"

    code = analyze([good, text, truncated, ct], out, emtnet_onnx.path)
    captured = capsys.readouterr()

    assert code == 2
    rows = read_csv(out / "results.csv")
    assert [r["file"] for r in rows] == [str(good)]
    errors = read_csv(out / "errors.csv")
    assert sorted(e["file"] for e in errors) == sorted(str(p) for p in bad)  # inputs run in series order
    for error in errors:
        assert set(error) == {"file", "frame", "stage", "reason"}
        assert error["stage"] and error["reason"]
        assert "\n" not in error["reason"]
    assert {e["file"]: e["stage"] for e in errors}[str(ct)] == "check"
    stderr_lines = captured.err.strip().splitlines()
    assert len(stderr_lines) == len(bad)
    assert sorted(next(str(p) for p in bad if str(p) in line) for line in stderr_lines) == sorted(map(str, bad))
    assert "Traceback" not in captured.out + captured.err
    assert "refused 3" in captured.out


def test_any_modality_accepts_ct(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    ct = tmp_path / "ct.dcm"
    write_ct(ct)
    out = tmp_path / "out"
    assert analyze([ct], out, emtnet_onnx.path, "--any-modality", "--no-overlays", "--no-seg") == 0
    assert len(read_csv(out / "results.csv")) == 1
    # With SEG output: this CT has no Frame of Reference, so no SEG can be made. The frame's row
    # stays (with an empty seg_path), the SEG failure is an errors.csv row and the exit status 2.
    with_seg = tmp_path / "with-seg"
    assert analyze([ct], with_seg, emtnet_onnx.path, "--any-modality", "--no-overlays") == 2
    (row,) = read_csv(with_seg / "results.csv")
    assert row["seg_path"] == "" and row["decision"]
    (error,) = read_csv(with_seg / "errors.csv")
    assert error["stage"] == "seg" and "Frame Of Reference" in error["reason"]


# ---------------------------------------------------------------------------------------------
# The model must be verified before use


def copy_model(emtnet_onnx: FixtureModel, folder: Path) -> Path:
    folder.mkdir()
    model = folder / "emtnet.onnx"
    shutil.copyfile(emtnet_onnx.path, model)
    shutil.copyfile(checksum_path(emtnet_onnx.path), checksum_path(model))
    return model


def assert_model_refused(
    model: Path, images: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    dicom = tmp_path / "case.dcm"
    write_framed_dicom(dicom, images[0], "case")
    out = tmp_path / "out"
    code = analyze([dicom], out, model)
    captured = capsys.readouterr()
    assert code == 1
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert str(model) in lines[0]
    assert "Traceback" not in captured.out + captured.err
    assert not (out / "results.csv").exists()
    return lines[0]


def test_checksum_mismatch_refused(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = copy_model(emtnet_onnx, tmp_path / "model")
    checksum_path(model).write_text("0" * 64 + "  emtnet.onnx\n")
    assert "SHA-256" in assert_model_refused(model, images, tmp_path, capsys)


def test_modified_model_refused(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = copy_model(emtnet_onnx, tmp_path / "model")
    with open(model, "ab") as handle:
        handle.write(b"\0")  # one byte more: same model to onnxruntime, different file
    assert_model_refused(model, images, tmp_path, capsys)


def test_missing_checksum_refused(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = copy_model(emtnet_onnx, tmp_path / "model")
    checksum_path(model).unlink()
    assert assert_model_refused(model, images, tmp_path, capsys)


def test_missing_model_refused(images: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_model_refused(tmp_path / "nowhere" / "emtnet.onnx", images, tmp_path, capsys)


# ---------------------------------------------------------------------------------------------
# The Analyzer directly


@pytest.fixture(scope="module")
def analyzer(emtnet_onnx: FixtureModel) -> Analyzer:
    return Analyzer(emtnet_onnx.path, threads=1)


def test_analyzer_threshold(analyzer: Analyzer) -> None:
    assert analyzer.metadata.w_p == 3.0
    assert analyzer.threshold(None) == pytest.approx(0.5)
    assert analyzer.threshold(10) == pytest.approx(3 / 13)
    assert analyzer.threshold(1) == pytest.approx(0.75)


def test_analyzer_with_and_without_region(analyzer: Analyzer, images: list[np.ndarray]) -> None:
    frame_pixels, (x0, y0, x1, y1) = framed(images[0])
    region = Region(x0, y0, x1 + 1, y1 + 1)
    with_region = analyzer.analyze(frame_pixels, region)
    without_region = analyzer.analyze(frame_pixels)
    for result in (with_region, without_region):
        assert result.mask.shape == frame_pixels.shape[:2]
        assert result.probability_map.shape == frame_pixels.shape[:2]
        assert set(np.unique(result.mask).tolist()) <= {0, 255}
        np.testing.assert_array_equal(result.mask, np.where(result.probability_map >= 0.5, 255, 0))
    assert with_region.region == region
    assert without_region.region is None
    outside = np.ones(frame_pixels.shape[:2], dtype=bool)
    outside[region.y0 : region.y1, region.x0 : region.x1] = False
    assert not with_region.mask[outside].any()
    assert with_region.lesion_fraction == pytest.approx(np.count_nonzero(with_region.mask) / region.area)
    assert without_region.lesion_fraction == pytest.approx(
        np.count_nonzero(without_region.mask) / without_region.mask.size
    )
    # The crop matters: the whole frame (border, labels, grey bar) is a different network input.
    assert not np.array_equal(with_region.mask[~outside], without_region.mask[~outside])


def test_analyzer_uses_frame_region(analyzer: Analyzer, images: list[np.ndarray], tmp_path: Path) -> None:
    dicom = tmp_path / "case.dcm"
    write_framed_dicom(dicom, images[0], "case")
    frame = next(read_frames(dicom))
    assert frame.region is not None
    from_frame = analyzer.analyze(frame)
    explicit = analyzer.analyze(frame.pixels, frame.region)
    assert from_frame.region == frame.region
    np.testing.assert_array_equal(from_frame.mask, explicit.mask)
    assert from_frame.probability == explicit.probability


def test_analyzer_region_clipped_to_frame(analyzer: Analyzer, images: list[np.ndarray]) -> None:
    pixels = images[0]
    height, width = pixels.shape[:2]
    result = analyzer.analyze(pixels, Region(10, 20, width + 500, height + 500))
    assert result.region == Region(10, 20, width, height)
    assert result.mask.shape == (height, width)
    assert not result.mask[:20].any() and not result.mask[:, :10].any()


def frame_result(fraction: float, probability: float) -> FrameResult:
    empty = np.zeros((4, 4), dtype=np.uint8)
    return FrameResult(probability, empty.astype(np.float32), empty, None, fraction)


def test_decision_rules() -> None:
    assert frame_result(0.1, 0.9).decision(0.5) == Decision.SUSPICIOUS
    assert frame_result(0.1, 0.5).decision(0.5) == Decision.SUSPICIOUS  # at the threshold
    assert frame_result(0.1, 0.49).decision(0.5) == Decision.BENIGN
    assert frame_result(0.1, 0.3).decision(3 / 13) == Decision.SUSPICIOUS
    assert frame_result(MIN_LESION_FRACTION / 2, 0.99).decision(0.5) == Decision.NO_LESION
    assert frame_result(MIN_LESION_FRACTION, 0.99).lesion_detected


def test_us_sop_class_constant() -> None:
    # The sample-study builder and the reader agree on what ultrasound is.
    from busassist.core.io import ULTRASOUND_SOP_CLASSES

    assert US_IMAGE_STORAGE in ULTRASOUND_SOP_CLASSES
    assert US_MULTIFRAME in ULTRASOUND_SOP_CLASSES
    assert CT_IMAGE not in ULTRASOUND_SOP_CLASSES
