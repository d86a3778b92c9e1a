"""The batch command on a folder of good and bad inputs: nothing lost, everything accounted for.

Covers the issue's list of bad inputs, resuming a run, several workers, DICOMDIR, DICOM SEG and
the no-identifiers rule.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.register_assert_rewrite("model_fixtures")

from model_fixtures import FixtureModel, sample_frames  # noqa: E402

from busassist.apps.cli import main  # noqa: E402
from busassist.core.batch import RESULT_COLUMNS, AnalyzeOptions, analyze_file, prepare_output  # noqa: E402
from busassist.core.inference import Analyzer  # noqa: E402
from busassist.training.sample_study import framed, ultrasound_dataset  # noqa: E402

pytest_plugins = ["model_fixtures"]
SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def good_dicom(path: Path, image: np.ndarray, name: str, frames: int = 1) -> Path:
    frame, region = framed(image)
    ds = ultrasound_dataset(frame, region, name, 1, compress=False)
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-ID-123"
    if frames > 1:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
        ds.NumberOfFrames = frames
        ds.PixelData = np.stack([frame] * frames).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def bad_inputs(folder: Path, template: Path) -> dict[str, Path]:
    """The issue's bad inputs, built from a good ultrasound DICOM ``template``."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    made["not_dicom"] = folder / "notes.bin"
    made["not_dicom"].write_bytes(b"this is not an image at all" * 10)
    whole = template.read_bytes()
    made["truncated"] = folder / "truncated.dcm"
    made["truncated"].write_bytes(whole[: len(whole) // 2])
    ds = pydicom.dcmread(template)
    no_pixels = ds.copy()
    del no_pixels.PixelData
    made["no_pixels"] = folder / "nopixels.dcm"
    no_pixels.save_as(made["no_pixels"], enforce_file_format=True)
    ct = ds.copy()
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ct.Modality = "CT"
    made["ct"] = folder / "ct.dcm"
    ct.save_as(made["ct"], enforce_file_format=True)
    tiny = ds.copy()
    tiny.Rows = tiny.Columns = 1
    tiny.PixelData = b"\x00\x00"
    tiny["PixelData"].VR = "OB"
    tiny.pop("SequenceOfUltrasoundRegions")
    made["one_pixel"] = folder / "onepixel.dcm"
    tiny.save_as(made["one_pixel"], enforce_file_format=True)
    unsupported = ds.copy()
    unsupported.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder
    unsupported["PixelData"].is_undefined_length = True
    from pydicom.encaps import encapsulate

    unsupported.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 100])
    unsupported["PixelData"].VR = "OB"
    made["unsupported"] = folder / "mpeg2.dcm"
    unsupported.save_as(made["unsupported"], enforce_file_format=False)
    made["loop"] = folder / "loop_a"
    os.symlink(folder / "loop_b", made["loop"])
    os.symlink(folder / "loop_a", folder / "loop_b")
    return made


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return sample_frames()


def test_bad_inputs_each_get_an_error_row_and_good_ones_are_kept(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = good_dicom(tmp_path / "in" / "good.dcm", images[0], "good")
    bad_inputs(tmp_path / "in" / "bad", good)
    big = tmp_path / "in" / "big.dcm"
    good_dicom(big, np.tile(images[1], (8, 8))[:3900, :3900], "big")  # ~4000 x 4000 frame
    out = tmp_path / "out"
    code = main(["analyze", str(tmp_path / "in"), "--out", str(out), "--model", str(emtnet_onnx.path), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    results = rows(out / "results.csv")
    assert sorted(Path(r["file"]).name for r in results) == ["big.dcm", "good.dcm"]
    errors = {Path(r["file"]).name: r for r in rows(out / "errors.csv")}
    expected = {"notes.bin", "truncated.dcm", "nopixels.dcm", "ct.dcm", "onepixel.dcm", "mpeg2.dcm"}
    assert expected <= set(errors)
    assert {"loop_a", "loop_b"} & set(errors), "the symlink loop is reported, not followed forever"
    for row in errors.values():
        assert row["reason"] and "\n" not in row["reason"] and row["stage"]
    assert "Traceback" not in captured.err + captured.out
    for line in captured.err.splitlines():
        if line.startswith("busassist:"):
            assert any(name in line for name in errors)
    assert "refused" in captured.out and "2 frame(s)" in captured.out


def test_unreadable_file_is_refused(emtnet_onnx: FixtureModel, images, tmp_path: Path, monkeypatch) -> None:
    path = good_dicom(tmp_path / "in" / "locked.dcm", images[0], "locked")
    real_open = open

    def deny(file, *args, **kwargs):  # root can read a chmod-000 file, so deny it explicitly
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    out = tmp_path / "out"
    prepare_output(out)
    report = analyze_file(path, Analyzer(emtnet_onnx.path), out, AnalyzeOptions(dicom_seg=False))
    assert report.error is not None and "locked.dcm" in str(report.error)


def test_resume_skips_finished_frames_and_finishes_the_rest(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path
) -> None:
    cine = good_dicom(tmp_path / "in" / "cine.dcm", images[0], "cine", frames=4)
    out = tmp_path / "out"
    assert (
        main(["analyze", str(cine), "--out", str(out), "--model", str(emtnet_onnx.path), "--frames", "1-2", "--quiet"])
        == 0
    )
    first = rows(out / "results.csv")
    assert [r["frame"] for r in first] == ["0", "1"]
    # Simulate a kill in the middle of writing a row: a cut last line must not break the resume.
    with (out / "results.csv").open("a") as handle:
        handle.write("half,a,row")
    assert main(["analyze", str(cine), "--out", str(out), "--model", str(emtnet_onnx.path), "--quiet"]) == 0
    complete = [r for r in rows(out / "results.csv") if r.get("resume_key")]
    # a refused input is reported again on a rerun, but recorded once
    (tmp_path / "in" / "junk.bin").write_bytes(b"not an image")
    for _ in range(2):
        main(["analyze", str(tmp_path / "in"), "--out", str(out), "--model", str(emtnet_onnx.path), "--quiet"])
    assert [Path(r["file"]).name for r in rows(out / "errors.csv")] == ["junk.bin"]
    assert sorted(int(r["frame"]) for r in complete) == [0, 1, 2, 3], "frames 0-1 not redone, 2-3 added"
    assert all(set(RESULT_COLUMNS) <= set(r) for r in complete)


def test_two_workers_give_the_same_results_as_one(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path
) -> None:
    for i, image in enumerate(images[:3]):
        good_dicom(tmp_path / "in" / f"im{i}.dcm", image, f"im{i}")
    results = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        assert (
            main(
                [
                    "analyze",
                    str(tmp_path / "in"),
                    "--out",
                    str(out),
                    "--model",
                    str(emtnet_onnx.path),
                    "--workers",
                    str(workers),
                    "--quiet",
                    "--no-overlays",
                ]
            )
            == 0
        )
        results[workers] = {r["sop_instance_uid"]: r["malignancy_probability"] for r in rows(out / "results.csv")}
    assert results[1] == results[2] and len(results[1]) == 3


def test_no_patient_identifiers_in_output_names_or_csv(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path
) -> None:
    good_dicom(tmp_path / "in" / "x.dcm", images[0], "x")
    out = tmp_path / "out"
    main(["analyze", str(tmp_path / "in"), "--out", str(out), "--model", str(emtnet_onnx.path), "--quiet"])
    names = [str(p.relative_to(out)) for p in out.rglob("*")]
    text = (out / "results.csv").read_text() + (out / "errors.csv").read_text()
    for secret in ("Doe", "Jane", "SECRET-ID-123"):
        assert not any(secret in name for name in names)
        assert secret not in text


def test_dicom_seg_written_per_instance_and_dicomdir_is_expanded(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    from pydicom.fileset import FileSet

    fileset = FileSet()
    for path in sorted(SAMPLE.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        # attributes a DICOMDIR's study/series records need, which a scanner writes
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber = "20200101", "120000", "1", 1
        fileset.add(ds)
    fileset.write(tmp_path / "media")
    out = tmp_path / "out"
    code = main(
        [
            "analyze",
            str(tmp_path / "media" / "DICOMDIR"),
            "--out",
            str(out),
            "--model",
            str(emtnet_onnx.path),
            "--quiet",
            "--no-overlays",
        ]
    )
    assert code == 0
    results = rows(out / "results.csv")
    assert len(results) == 3
    for row in results:
        seg = pydicom.dcmread(out / row["seg_path"])
        assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
        assert seg.StudyInstanceUID == row["study_instance_uid"]
    shutil.rmtree(tmp_path / "media")


def test_millimetres_land_on_the_right_pixels(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path
) -> None:
    """A calibrated region (0.01 cm x 0.02 cm pixels): measurements are those of the mask, in mm."""
    from busassist.core.measurements import measure_largest

    path = good_dicom(tmp_path / "in" / "calibrated.dcm", images[0], "calibrated")
    ds = pydicom.dcmread(path)
    region = ds.SequenceOfUltrasoundRegions[0]
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.02, 0.01  # columns 0.2 mm, rows 0.1 mm
    ds.save_as(path, enforce_file_format=True)
    out = tmp_path / "out"
    assert main(["analyze", str(path), "--out", str(out), "--model", str(emtnet_onnx.path), "--quiet"]) == 0
    row = rows(out / "results.csv")[0]
    assert row["pixel_spacing_mm"] == "0.1\\0.2"
    from PIL import Image

    mask = np.asarray(Image.open(out / row["mask_path"])) > 0
    expected = measure_largest(mask, (0.1, 0.2))
    assert expected is not None, "the fixture model outlines a lesion on this image"
    assert row["measurement_units"] == "mm"
    assert float(row["lesion_area"]) == pytest.approx(expected.area, rel=1e-3)
    assert float(row["lesion_area"]) == pytest.approx(expected.area_px * 0.1 * 0.2, rel=1e-3)
    assert float(row["lesion_max_diameter"]) == pytest.approx(expected.max_diameter, rel=1e-3)
    # the lesion lies inside the declared tissue region, in source-frame pixel coordinates
    x0, y0, x1, y1 = map(int, row["region"].split(","))
    assert x0 <= int(row["lesion_bbox_col0"]) and int(row["lesion_bbox_col1"]) <= x1
    assert y0 <= int(row["lesion_bbox_row0"]) and int(row["lesion_bbox_row1"]) <= y1


def test_nifti_nrrd_masks_and_keep_identifiers(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path
) -> None:
    import SimpleITK as sitk

    path = good_dicom(tmp_path / "in" / "x.dcm", images[0], "x")
    out = tmp_path / "out"
    argv = ["analyze", str(path), "--out", str(out), "--model", str(emtnet_onnx.path), "--quiet"]
    assert main([*argv, "--nifti", "--nrrd", "--keep-identifiers"]) == 0
    row = rows(out / "results.csv")[0]
    assert row["patient_id"] == "SECRET-ID-123" and row["patient_name"] == "Doe^Jane"
    from PIL import Image

    mask = np.asarray(Image.open(out / row["mask_path"])) > 0
    volumes = row["volume_paths"].split(";")
    assert sorted(Path(v).suffix for v in volumes) == [".gz", ".nrrd"]
    for volume in volumes:
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / volume))) > 0, mask)
    # without the flag the identifier columns stay empty
    assert (
        main(["analyze", str(path), "--out", str(tmp_path / "plain"), "--model", str(emtnet_onnx.path), "--quiet"]) == 0
    )
    plain = rows(tmp_path / "plain" / "results.csv")[0]
    assert plain["patient_id"] == "" and plain["patient_name"] == ""


def test_no_patient_name_in_warnings_or_stderr(
    emtnet_onnx: FixtureModel, images: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A one-component patient name makes highdicom warn, quoting the name: it must not reach the log."""
    import warnings

    path = good_dicom(tmp_path / "in" / "x.dcm", images[0], "x")
    ds = pydicom.dcmread(path)
    ds.PatientName = "Zeynepova"
    ds.save_as(path, enforce_file_format=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert (
            main(["analyze", str(path), "--out", str(tmp_path / "out"), "--model", str(emtnet_onnx.path), "--quiet"])
            == 0
        )
    captured = capsys.readouterr()
    assert (tmp_path / "out" / rows(tmp_path / "out" / "results.csv")[0]["seg_path"]).exists()
    assert not any("Zeynepova" in str(w.message) for w in caught)
    assert "Zeynepova" not in captured.out + captured.err
