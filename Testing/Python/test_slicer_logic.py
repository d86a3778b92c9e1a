"""The Slicer module's MRML logic against the real MRML classes of the ``slicer-core`` wheel.

No fake ``slicer`` module: each test builds a scene with the application, segmentations,
subject-hierarchy and sequences logic (as Slicer's core and trame-slicer do), sets
``slicer.mrmlScene`` and runs ``busassist.slicer`` on volumes made the way Slicer makes
them: a DICOM read by ITK, an RGB vector volume, a PNG, a multi-frame volume and a cine in a
sequence browser. The model is the bundled ONNX file, one onnxruntime session for the module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
pytest.importorskip("onnxruntime")

from busassist import slicer as sl  # noqa: E402
from busassist.core.inference import Analyzer, Decision  # noqa: E402
from busassist.core.io import read_frames  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "Resources" / "SampleData"
SAMPLE_DICOM = SAMPLES / "sample_1_benign.dcm"  # a frame on which the bundled model outlines a lesion


class CountingAnalyzer:
    """The real analyzer, counting calls; ``score`` replaces the malignancy probability if given.

    Overriding the score puts it between two thresholds of the W' range, so a change of the
    effective weight must flip the decision (the bundled model's scores on the samples are far
    from every threshold).
    """

    def __init__(self, analyzer: Analyzer, score: float | None = None) -> None:
        self.inner = analyzer
        self.metadata = analyzer.metadata
        self.score = score
        self.calls = 0

    def analyze(self, frame, region=None):
        self.calls += 1
        result = self.inner.analyze(frame, region)
        if self.score is not None:
            result.probability = self.score
        return result


pytest_plugins = ["slicer_fixtures"]


def core_result(analyzer: Analyzer, path: Path):
    return analyzer.analyze(next(read_frames(path)))


def ijk_to_ras(node) -> np.ndarray:
    return sl.ijk_to_ras(node)


def exported_labelmap(volume, segmentation) -> np.ndarray:
    """The Tumour segment resampled onto the volume by Slicer's own export (independent of the logic)."""
    import vtk

    scene = volume.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(sl.SEGMENT_ID)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, volume)
    assert np.allclose(ijk_to_ras(labelmap), ijk_to_ras(volume))
    array = sl.array_from_image_data(labelmap.GetImageData()).copy()
    scene.RemoveNode(labelmap)
    return array


def grey_frame(path: Path) -> np.ndarray:
    return next(read_frames(path)).pixels


# ---- volumes as Slicer makes them ------------------------------------------------------------


def test_scalar_dicom_volume_segment_equals_core_mask(headless, analyzer):
    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    assert volume.GetClassName() == "vtkMRMLScalarVolumeNode"
    logic = sl.BUSAssistMRMLLogic(analyzer)
    report = logic.analyze_volume(volume)
    core = core_result(analyzer, SAMPLE_DICOM)

    # The DICOM's tissue region was found through the volume's storage node, as the CLI finds it.
    assert logic.source_info(volume).region == core.region
    segmentation = logic.find_output(volume, sl.ROLE_SEGMENTATION)
    assert segmentation.GetName() == f"{volume.GetName()} BUSAssist"
    expected = core.mask > 0
    assert np.array_equal(logic.segment_mask(volume), expected)
    labelmap = exported_labelmap(volume, segmentation)
    assert labelmap.shape == (1, *expected.shape)
    assert int(np.count_nonzero(labelmap)) == int(np.count_nonzero(expected))
    assert np.array_equal(labelmap[0] > 0, expected)

    assert report.probability == pytest.approx(core.probability, abs=1e-6)
    assert report.decision == core.decision(analyzer.threshold())
    assert report.row["mask_area_px"] == int(np.count_nonzero(expected))
    assert report.row["measurement_units"] == "px"  # the sample DICOM declares no physical units

    # The table's shape columns come from the same code as the CLI's results.csv.
    from busassist.core.measurements import measure_largest

    largest = measure_largest(expected, None)
    table = logic.find_output(volume, sl.ROLE_TABLE).GetTable()
    column = {table.GetColumnName(i): i for i in range(table.GetNumberOfColumns())}
    assert table.GetValue(0, column["lesion_max_diameter"]).ToDouble() == pytest.approx(largest.max_diameter, abs=1e-4)
    assert table.GetValue(0, column["lesion_solidity"]).ToDouble() == pytest.approx(largest.solidity, abs=1e-4)


def test_segment_geometry_terminology_and_outputs(headless, analyzer):
    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    volume.SetSpacing(0.1, 0.1, 1.0)  # a calibrated volume: measurements in mm
    volume.SetOrigin(12.0, -3.0, 7.5)
    logic = sl.BUSAssistMRMLLogic(analyzer)
    report = logic.analyze_volume(volume)
    segmentation = logic.find_output(volume, sl.ROLE_SEGMENTATION)

    internal = segmentation.GetBinaryLabelmapInternalRepresentation(sl.SEGMENT_ID)
    import vtk

    matrix = vtk.vtkMatrix4x4()
    internal.GetImageToWorldMatrix(matrix)
    assert np.allclose(slicer.util.arrayFromVTKMatrix(matrix), ijk_to_ras(volume))
    reference = segmentation.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
    assert reference is not None and reference.GetID() == volume.GetID()

    segment = segmentation.GetSegmentation().GetSegment(sl.SEGMENT_ID)
    assert segment.GetName() == "Tumour"
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(sl.TERMINOLOGY_ENTRY, entry)
    assert entry.GetCategoryObject().GetCodeValue() == "49755003"
    assert entry.GetTypeObject().GetCodeValue() == "4147007"
    assert entry.GetTypeObject().GetCodeMeaning() == "Mass"
    assert segment.HasTag(sl.TERMINOLOGY_TAG)
    assert sl.TERMINOLOGY_ENTRY.split("~")[5] == "SCT^76752008^Breast"

    probability = logic.find_output(volume, sl.ROLE_PROBABILITY)
    assert probability.GetName() == f"{volume.GetName()} BUSAssist probability"
    assert np.allclose(ijk_to_ras(probability), ijk_to_ras(volume))
    core = core_result(analyzer, SAMPLE_DICOM)
    shown = sl.array_from_image_data(probability.GetImageData())[0]
    assert np.allclose(shown, core.probability_map, atol=1e-3)  # float16 storage

    table = logic.find_output(volume, sl.ROLE_TABLE)
    assert table.GetNumberOfRows() == 1
    assert table.GetCellText(0, table.GetColumnIndex("decision")) == report.decision
    assert report.row["measurement_units"] == "mm"
    assert report.row["lesion_area"] == pytest.approx(report.row["lesion_area_px"] * 0.01)


def test_outputs_are_placed_in_the_volume_study(headless, analyzer):
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(headless.scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Anonymous")
    study = hierarchy.CreateStudyItem(patient, "Breast US")
    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    # Slicer's subject hierarchy plugins create the item on load; slicer-core has no plugins.
    hierarchy.CreateItem(study, volume)
    logic = sl.BUSAssistMRMLLogic(analyzer)
    logic.analyze_volume(volume)
    for role in (sl.ROLE_SEGMENTATION, sl.ROLE_PROBABILITY, sl.ROLE_TABLE):
        item = hierarchy.GetItemByDataNode(logic.find_output(volume, role))
        assert item and hierarchy.GetItemParent(item) == study, role


def test_rgb_vector_volume(headless, analyzer):
    grey = grey_frame(SAMPLE_DICOM).astype(np.float32)
    rgb = np.stack([grey, grey * 0.9, grey * 0.8], axis=-1).astype(np.uint8)  # a tinted colour frame
    volume = sl.add_volume_from_frame(rgb, headless.scene, "colour US")
    assert volume.GetClassName() == "vtkMRMLVectorVolumeNode"
    logic = sl.BUSAssistMRMLLogic(analyzer)
    frame = logic.frame_from_volume(volume)
    assert frame.shape == rgb.shape and np.array_equal(frame, rgb)
    report = logic.analyze_volume(volume)
    core = analyzer.analyze(rgb)
    assert np.array_equal(logic.segment_mask(volume), core.mask > 0)
    assert report.probability == pytest.approx(core.probability, abs=1e-6)
    labelmap = exported_labelmap(volume, logic.find_output(volume, sl.ROLE_SEGMENTATION))
    assert np.array_equal(labelmap[0] > 0, core.mask > 0)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_png_loaded_as_volume(headless, analyzer, tmp_path, mode):
    from PIL import Image

    grey = grey_frame(SAMPLE_DICOM)
    path = tmp_path / "frame.png"
    Image.fromarray(grey).convert(mode).save(path)
    volume = sl.load_volume_file(path, headless.scene)
    assert volume.GetClassName() == ("vtkMRMLScalarVolumeNode" if mode == "L" else "vtkMRMLVectorVolumeNode")
    # Slicer's geometry for a 2-D image: LPS identity, i.e. IJKToRAS = diag(-1, -1, 1).
    assert np.allclose(ijk_to_ras(volume), np.diag([-1.0, -1.0, 1.0, 1.0]))
    logic = sl.BUSAssistMRMLLogic(analyzer)
    report = logic.analyze_volume(volume)
    core = core_result(analyzer, path)
    assert np.array_equal(logic.segment_mask(volume), core.mask > 0)
    assert report.probability == pytest.approx(core.probability, abs=1e-6)
    assert report.row["measurement_units"] == "px"


# ---- re-running, thresholds --------------------------------------------------------------------


def test_rerun_reuses_nodes(headless, analyzer):
    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    logic = sl.BUSAssistMRMLLogic(analyzer)
    logic.analyze_volume(volume)
    outputs = {role: logic.find_output(volume, role).GetID() for role in sl.OUTPUT_CLASSES}
    count = headless.scene.GetNumberOfNodes()
    logic.analyze_volume(volume)
    logic.analyze_volume(volume)
    assert headless.scene.GetNumberOfNodes() == count
    assert {role: logic.find_output(volume, role).GetID() for role in sl.OUTPUT_CLASSES} == outputs
    assert logic.find_output(volume, sl.ROLE_TABLE).GetNumberOfRows() == 1
    # A new logic (e.g. after the module is reloaded) finds the same nodes through the scene.
    fresh = sl.BUSAssistMRMLLogic(analyzer)
    fresh.analyze_volume(volume)
    assert headless.scene.GetNumberOfNodes() == count
    # A deleted segment is recreated in the same node.
    segmentation = logic.find_output(volume, sl.ROLE_SEGMENTATION)
    segmentation.GetSegmentation().RemoveSegment(sl.SEGMENT_ID)
    logic.analyze_volume(volume)
    assert segmentation.GetSegmentation().GetSegment(sl.SEGMENT_ID) is not None
    assert headless.scene.GetNumberOfNodes() == count


def test_effective_weight_changes_decision_without_inference(headless, analyzer):
    counting = CountingAnalyzer(analyzer, score=0.40)  # between threshold(W'=4)=0.43 and threshold(W'=5)=0.375
    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    logic = sl.BUSAssistMRMLLogic(counting)
    report = logic.analyze_volume(volume)
    assert counting.calls == 1
    assert report.lesion_detected and report.threshold == pytest.approx(0.5)
    assert report.decision == Decision.BENIGN

    report = logic.set_effective_weight(5.0, volume)
    assert counting.calls == 1
    assert report.threshold == pytest.approx(3.0 / 8.0)
    assert report.decision == Decision.SUSPICIOUS
    assert report.decision_text == "suspicious for malignancy"
    op = report.operating_point
    row = next(r for r in analyzer.metadata.operating_table if r["w_effective"] == 5.0)
    assert op.exact and op.sen == pytest.approx(row["sen"]) and op.spe == pytest.approx(row["spe"])
    table = logic.find_output(volume, sl.ROLE_TABLE)
    assert table.GetCellText(0, table.GetColumnIndex("decision")) == Decision.SUSPICIOUS

    report = logic.set_effective_weight(1.0, volume)
    assert report.decision == Decision.BENIGN and report.threshold == pytest.approx(0.75)
    assert counting.calls == 1
    # A W' between tabulated rows reports the nearest row's validation figures.
    assert logic.operating_point(4.4).table_w == 4.0
    assert "validation SEN" in logic.operating_point(4.4).describe()


def test_threshold_slider_works_from_the_table_after_reload(headless, analyzer):
    """Decisions come from the stored scores: a logic without a model (scene reloaded) still updates them."""
    counting = CountingAnalyzer(analyzer, score=0.40)
    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    sl.BUSAssistMRMLLogic(counting).analyze_volume(volume)
    without_model = sl.BUSAssistMRMLLogic()
    report = without_model.set_effective_weight(5.0, volume)
    assert not without_model.has_analyzer
    assert report.decision == Decision.SUSPICIOUS
    assert report.operating_point.sen is not None  # operating table persisted on the table node


def test_no_lesion_rule_comes_from_the_model_and_its_rows_keep_it_after_a_reload(headless, analyzer):
    """A model whose rule needs a larger mask calls the frame "no lesion"; the saved rows keep that verdict."""
    import dataclasses

    strict = CountingAnalyzer(analyzer)
    strict.metadata = dataclasses.replace(analyzer.metadata, min_lesion_fraction=0.9)
    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    assert sl.BUSAssistMRMLLogic(analyzer).analyze_volume(volume).lesion_detected
    report = sl.BUSAssistMRMLLogic(strict).analyze_volume(volume)
    assert not report.lesion_detected and report.decision == Decision.NO_LESION
    without_model = sl.BUSAssistMRMLLogic()  # a reloaded scene: the facts come from the model file
    assert without_model.current_min_lesion_fraction() == analyzer.metadata.min_lesion_fraction
    assert not without_model.has_analyzer, "reading the model's facts does not load the model"
    assert without_model.set_effective_weight(5.0, volume).decision == Decision.NO_LESION


def test_mask_threshold_rethresholds_without_inference(headless, analyzer):
    counting = CountingAnalyzer(analyzer)
    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    logic = sl.BUSAssistMRMLLogic(counting)
    logic.analyze_volume(volume)
    core = core_result(analyzer, SAMPLE_DICOM)
    for threshold in (0.3, 0.7):
        report = logic.set_mask_threshold(threshold, volume)
        mask = logic.segment_mask(volume)
        expected = core.probability_map >= threshold
        disagree = mask != expected
        # Stored as float16: only pixels within its rounding of the threshold may differ.
        assert np.all(np.abs(core.probability_map[disagree] - threshold) < 2e-3)
        assert report.row["mask_area_px"] == int(np.count_nonzero(mask))
        assert report.mask_threshold == pytest.approx(threshold)
    report = logic.set_mask_threshold(analyzer.metadata.mask_threshold, volume)
    assert np.array_equal(logic.segment_mask(volume), core.mask > 0)
    assert counting.calls == 1


# ---- cine: multi-frame volume and sequence browser --------------------------------------------


def cine_frames() -> list[np.ndarray]:
    frames = [grey_frame(path) for path in sorted(SAMPLES.glob("*.dcm"))]
    height = min(f.shape[0] for f in frames)
    width = min(f.shape[1] for f in frames)
    return [f[:height, :width] for f in frames]


def analysed_cine(headless, analyzer):
    """The three samples as one multi-frame volume, every frame analysed: (frames, volume, logic)."""
    frames = cine_frames()
    volume = sl.add_volume_from_frame(frames[0], headless.scene, "cine volume")
    sl.update_volume_from_array(volume, np.stack(frames))
    logic = sl.BUSAssistMRMLLogic(analyzer)
    list(logic.iter_analyze_frames(volume))
    return frames, volume, logic


def test_multiframe_volume_all_frames(headless, analyzer):
    frames = cine_frames()
    volume = sl.add_volume_from_frame(frames[0], headless.scene, "cine volume")
    sl.update_volume_from_array(volume, np.stack(frames))
    logic = sl.BUSAssistMRMLLogic(analyzer)
    assert logic.frame_count(volume) == 3
    progress = list(logic.iter_analyze_frames(volume))
    assert progress == [(1, 3), (2, 3), (3, 3)]
    table = logic.find_output(volume, sl.ROLE_TABLE)
    assert table.GetNumberOfRows() == 3
    for index, frame in enumerate(frames):
        logic.show_frame(volume, index)
        core = analyzer.analyze(frame)
        assert np.array_equal(logic.segment_mask(volume, index), core.mask > 0)
        labelmap = exported_labelmap(volume, logic.find_output(volume, sl.ROLE_SEGMENTATION))
        assert np.array_equal(labelmap[index] > 0, core.mask > 0)  # on the shown slice only
        assert not np.any(np.delete(labelmap, index, axis=0))
        assert logic.report(volume, index).probability == pytest.approx(core.probability, abs=1e-6)
    ras = ijk_to_ras(volume) @ np.array([10.0, 10.0, 2.0, 1.0])
    assert sl.frame_index_at_ras(volume, tuple(ras[:3])) == 2


def make_cine_browser(scene, frames):
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    for index, frame in enumerate(frames):
        item = slicer.vtkMRMLScalarVolumeNode()
        import vtk

        image = vtk.vtkImageData()
        image.SetDimensions(frame.shape[1], frame.shape[0], 1)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        sl.array_from_image_data(image)[0] = frame
        item.SetAndObserveImageData(image)
        item.SetIJKToRASMatrix(sl._vtk_matrix(np.diag([-1.0, -1.0, 1.0, 1.0])))
        sequence.SetDataNodeAtValue(item, str(index))
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    return browser, sequence


def test_sequence_browser_cine_follows_shown_frame(headless, analyzer):
    frames = cine_frames()
    browser, sequence = make_cine_browser(headless.scene, frames)
    headless.sequences_logic.UpdateAllProxyNodes()
    proxy = browser.GetProxyNode(sequence)
    assert proxy is not None
    counting = CountingAnalyzer(analyzer)
    logic = sl.BUSAssistMRMLLogic(counting)
    assert logic.frame_count(proxy) == 3
    browser.SetSelectedItemNumber(1)
    assert logic.current_frame_index(proxy) == 1
    assert np.array_equal(logic.frame_from_volume(proxy), frames[1])
    assert np.array_equal(logic.frame_from_volume(proxy, 2), frames[2])

    run = logic.iter_analyze_frames(proxy)
    assert next(run) == (1, 3)
    run.close()  # Cancel after the first frame
    assert counting.calls == 1
    assert logic.find_output(proxy, sl.ROLE_TABLE).GetNumberOfRows() == 1

    assert list(logic.iter_analyze_frames(proxy))[-1] == (3, 3)
    assert counting.calls == 4
    table = logic.find_output(proxy, sl.ROLE_TABLE)
    assert table.GetNumberOfRows() == 3
    cores = [analyzer.analyze(frame) for frame in frames]
    # The segment shows the browser's frame, and follows it when the frame changes.
    assert np.array_equal(logic.segment_mask(proxy), cores[1].mask > 0)
    for index in (2, 0):
        browser.SetSelectedItemNumber(index)
        report = logic.show_frame(proxy, logic.current_frame_index(proxy))
        assert np.array_equal(logic.segment_mask(proxy), cores[index].mask > 0)
        assert report.frame_index == index and report.frame_count == 3
        assert report.probability == pytest.approx(cores[index].probability, abs=1e-6)
    assert counting.calls == 4


# ---- edits, storage, export --------------------------------------------------------------------


def paint_segment(volume, segmentation, mask: np.ndarray) -> None:
    """What Segment Editor does to the segment: replace its labelmap on the volume's grid."""
    import vtk

    labelmap = slicer.vtkOrientedImageData()
    labelmap.SetExtent(0, mask.shape[1] - 1, 0, mask.shape[0] - 1, 0, 0)
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    sl.array_from_image_data(labelmap)[0] = mask.astype(np.uint8)
    labelmap.SetImageToWorldMatrix(sl._vtk_matrix(ijk_to_ras(volume)))
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(labelmap, segmentation, sl.SEGMENT_ID, logic.MODE_REPLACE)


def test_segmentation_storage_node_writes_seg_nrrd_read_by_slicerio(headless, analyzer, tmp_path):
    slicerio = pytest.importorskip("slicerio")
    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    volume.SetSpacing(0.2, 0.2, 1.0)
    logic = sl.BUSAssistMRMLLogic(analyzer)
    logic.analyze_volume(volume)
    segmentation = logic.find_output(volume, sl.ROLE_SEGMENTATION)
    segmentation.AddDefaultStorageNode()
    storage = segmentation.GetStorageNode()
    path = tmp_path / "tumour.seg.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(segmentation)

    read = slicerio.read_segmentation(str(path))
    (segment,) = read["segments"]
    assert segment["name"] == "Tumour"
    assert segment["terminology"]["type"] == ["SCT", "4147007", "Mass"]
    assert segment["terminology"]["category"] == ["SCT", "49755003", "Morphologically Altered Structure"]
    voxels = np.asarray(read["voxels"])  # IJK order
    offset = read.get("referenceImageExtentOffset", [0, 0, 0])
    mask = np.zeros(volume.GetImageData().GetDimensions(), dtype=bool)  # (I, J, K)
    x0, y0, z0 = (int(v) for v in offset)
    region = voxels == segment["labelValue"]
    mask[x0 : x0 + region.shape[0], y0 : y0 + region.shape[1], z0 : z0 + region.shape[2]] = region
    expected = core_result(analyzer, SAMPLE_DICOM).mask > 0
    assert np.array_equal(mask[:, :, 0].T, expected)
    # Geometry: slicerio reports IJK to LPS; the volume's IJK to RAS with R and A negated.
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    assert np.allclose(lps_to_ras @ np.asarray(read["ijkToLPS"]), ijk_to_ras(volume))


def test_export_for_training_busi_layout(headless, analyzer, tmp_path):
    from PIL import Image

    from busassist.training.busi import discover

    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    logic = sl.BUSAssistMRMLLogic(analyzer)
    logic.analyze_volume(volume)
    out = tmp_path / "finetune"
    first = logic.export_for_training(volume, out, "malignant")
    assert first.key == "malignant/images/malignant (1).png" and not first.edited
    core = core_result(analyzer, SAMPLE_DICOM)
    assert np.array_equal(np.asarray(Image.open(first.mask_path)) > 0, core.mask > 0)
    assert np.array_equal(np.asarray(Image.open(first.image_path)), grey_frame(SAMPLE_DICOM))

    # The annotator corrects the mask in Segment Editor; the export takes the correction.
    corrected = np.zeros_like(core.mask, dtype=bool)
    corrected[200:260, 300:380] = True
    paint_segment(volume, logic.find_output(volume, sl.ROLE_SEGMENTATION), corrected)
    second = logic.export_for_training(volume, out, "malignant")
    assert second.key == "malignant/images/malignant (2).png" and second.edited
    assert np.array_equal(np.asarray(Image.open(second.mask_path)) > 0, corrected)
    # ... and as a DICOM SEG that references the source instance
    import pydicom

    assert second.seg_error is None and second.seg_path is not None
    seg = pydicom.dcmread(second.seg_path)
    source = pydicom.dcmread(SAMPLE_DICOM, stop_before_pixels=True)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == (
        source.SOPInstanceUID
    )
    assert np.array_equal(seg.pixel_array.reshape(corrected.shape) > 0, corrected)
    assert f"DICOM SEG {second.seg_path}" in second.describe(out)  # the panel reports the SEG

    for nowhere in ("", "relative/folder"):  # would land in Slicer's working directory
        with pytest.raises(ValueError, match="export folder"):
            logic.export_for_training(volume, nowhere, "malignant")
    bare = sl.add_volume_from_frame(grey_frame(SAMPLE_DICOM), headless.scene, "bare")
    logic.analyze_volume(bare)
    without_dicom = logic.export_for_training(bare, tmp_path / "bare-export", "benign")
    assert without_dicom.seg_path is None and "no DICOM SEG (" in without_dicom.describe(tmp_path)

    with pytest.raises(ValueError, match="normal"):
        logic.export_for_training(volume, out, "normal")
    with pytest.raises(ValueError, match="class"):
        logic.export_for_training(volume, out, "cyst")

    cases = discover(out)  # the trainer's BUSI reader accepts the folder
    assert [case.key for case in cases] == [first.key, second.key]
    manifest = (out / sl.EXPORT_MANIFEST).read_text().splitlines()
    assert len(manifest) == 2 and '"edited": true' in manifest[1]


def test_edits_are_kept_when_the_shown_frame_changes(headless, analyzer):
    frames = cine_frames()
    browser, sequence = make_cine_browser(headless.scene, frames)
    headless.sequences_logic.UpdateAllProxyNodes()
    proxy = browser.GetProxyNode(sequence)
    logic = sl.BUSAssistMRMLLogic(analyzer)
    list(logic.iter_analyze_frames(proxy))
    browser.SetSelectedItemNumber(0)
    logic.show_frame(proxy, 0)
    corrected = np.zeros(frames[0].shape, dtype=bool)
    corrected[100:150, 200:260] = True
    paint_segment(proxy, logic.find_output(proxy, sl.ROLE_SEGMENTATION), corrected)
    browser.SetSelectedItemNumber(1)
    logic.show_frame(proxy, 1)
    browser.SetSelectedItemNumber(0)
    logic.show_frame(proxy, 0)
    assert np.array_equal(logic.segment_mask(proxy), corrected)


# ---- small pieces -------------------------------------------------------------------------------


def test_operating_point_without_table():
    point = sl.operating_point(6.0, [], 3.0)
    assert point.threshold == pytest.approx(1.0 / 3.0) and point.sen is None
    assert "no validation figures" in point.describe()


class TwoLesionAnalyzer:
    """The real analyzer, with its mask replaced by two lesions of different sizes inside the region."""

    def __init__(self, analyzer: Analyzer) -> None:
        self.inner = analyzer

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def analyze(self, frame, region=None):
        result = self.inner.analyze(frame, region)
        rows, cols = np.ogrid[: result.mask.shape[0], : result.mask.shape[1]]
        r = result.region
        top, left = r.y0 + 60, r.x0 + 80
        big = ((rows - top - 60) / 40.0) ** 2 + ((cols - left - 200) / 90.0) ** 2 <= 1  # 80 x 180 px ellipse
        small = ((rows - top - 150) / 15.0) ** 2 + ((cols - left - 60) / 15.0) ** 2 <= 1
        mask = big | small
        result.mask = np.where(mask, 255, 0).astype(np.uint8)
        result.probability_map = mask.astype(np.float32) * 0.9
        result.lesion_fraction = float(np.count_nonzero(mask)) / result.analysed_area_px
        return result


def test_one_two_lesion_mask_gives_the_same_row_in_results_csv_and_the_slicer_table(headless, analyzer, tmp_path):
    """Parity of the faces: every column of the reading, CLI path against Slicer logic, on a calibrated DICOM."""
    import csv

    import pydicom

    from busassist.core.batch import AnalyzeOptions, analyze_file, prepare_output
    from busassist.core.results import READING_COLUMNS

    calibrated = tmp_path / "calibrated.dcm"
    ds = pydicom.dcmread(SAMPLE_DICOM)
    item = ds.SequenceOfUltrasoundRegions[0]
    item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3  # cm
    item.PhysicalDeltaX, item.PhysicalDeltaY = 0.012, 0.01  # columns 0.12 mm, rows 0.1 mm
    ds.save_as(calibrated)
    two = TwoLesionAnalyzer(analyzer)

    out = tmp_path / "out"
    prepare_output(out)
    report = analyze_file(calibrated, two, out, AnalyzeOptions(overlays=False, dicom_seg=False))
    assert report.analysed == 1, report.errors
    with open(out / "results.csv", newline="") as handle:
        (cli,) = list(csv.DictReader(handle))

    volume = sl.load_volume_file(calibrated, headless.scene)
    logic = sl.BUSAssistMRMLLogic(analyzer)
    logic.analyze_volume(volume, analyzer=two)
    table = logic.find_output(volume, sl.ROLE_TABLE)
    panel = sl.BUSAssistMRMLLogic._row_values(table, 0)

    assert cli["lesion_count"] == "2" and cli["measurement_units"] == "mm"
    for name, kind, _ in READING_COLUMNS:
        if kind == "string":
            assert panel[name] == cli[name], name
        else:
            assert float(panel[name]) == float(cli[name]), f"{name}: Slicer {panel[name]} vs CLI {cli[name]}"
    # the measurements describe the largest lesion: its area is not the whole mask's
    assert float(cli["lesion_area_px"]) < float(cli["mask_area_px"])


def test_source_survives_a_removed_storage_node_and_a_missing_region_is_said(headless, analyzer):
    """Sample Data removes the storage node after loading: the region crop must not be lost with it."""
    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    storage = volume.GetStorageNode()
    volume.SetAndObserveStorageNodeID(None)  # what SampleDataLogic.loadNode does
    headless.scene.RemoveNode(storage)
    logic = sl.BUSAssistMRMLLogic(analyzer)
    report = logic.analyze_volume(volume)
    core = core_result(analyzer, SAMPLE_DICOM)
    assert logic.source_info(volume).region == core.region
    assert np.array_equal(logic.segment_mask(volume), core.mask > 0)
    assert report.warning == "" and report.row["mask_area_px"] == int(np.count_nonzero(core.mask))

    frame = grey_frame(SAMPLE_DICOM)  # the same pixels without any DICOM behind them
    bare = sl.add_volume_from_frame(frame, headless.scene, "bare")
    bare_report = sl.BUSAssistMRMLLogic(analyzer).analyze_volume(bare)
    assert bare_report.warning == sl.NO_REGION_WARNING
    assert any(line.startswith("Warning:") for line in bare_report.summary_lines())


def test_mask_threshold_keeps_every_manual_correction_and_can_recut_the_shown_frame_only(headless, analyzer):
    frames, volume, logic = analysed_cine(headless, analyzer)
    logic.show_frame(volume, 0)
    table = logic.find_output(volume, sl.ROLE_TABLE)
    corrected = np.zeros(frames[0].shape[:2], dtype=bool)
    corrected[100:140, 200:260] = True  # an annotator's correction of frame 0, still on screen
    segmentation = logic.find_output(volume, sl.ROLE_SEGMENTATION)
    matrix, k = logic._frame_geometry(volume, 0)
    logic._write_segment(segmentation, volume, corrected, matrix, k)

    def row(i: int) -> dict:  # NaN (not measured) compared as a word
        values = sl.BUSAssistMRMLLogic._row_values(table, i)
        return {k: "nan" if isinstance(v, float) and np.isnan(v) else v for k, v in values.items()}

    row_before = {i: row(i) for i in range(3)}

    logic.set_mask_threshold(0.3, volume, shown_only=True)  # while dragging
    assert np.array_equal(logic.segment_mask(volume, 0), corrected), "the shown frame's correction survives"
    after_drag = {i: row(i) for i in range(3)}
    assert after_drag[1] == row_before[1] and after_drag[2] == row_before[2], "other frames wait for the release"

    logic.set_mask_threshold(0.3, volume)  # released
    rows = {i: row(i) for i in range(3)}
    assert rows[0] == row_before[0], "the corrected frame's row is not re-cut"
    assert all(rows[i]["mask_threshold"] == pytest.approx(0.3) for i in (1, 2))
    logic.show_frame(volume, 1)
    logic.show_frame(volume, 0)
    assert np.array_equal(logic.segment_mask(volume, 0), corrected), "and it is still there after a frame change"


def test_low_probabilities_are_transparent_in_the_overlay(headless, analyzer):
    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    logic = sl.BUSAssistMRMLLogic(analyzer)
    logic.analyze_volume(volume)
    display = logic.find_output(volume, sl.ROLE_PROBABILITY).GetDisplayNode()
    assert display.GetApplyThreshold()
    assert display.GetLowerThreshold() == pytest.approx(sl.PROBABILITY_SHOWN_FROM)
    assert display.GetUpperThreshold() == pytest.approx(1.0)


def test_after_a_scene_reload_no_outline_sits_beside_another_frames_score(headless, analyzer):
    """File > Load scene: the results table comes back, the per-frame masks do not; never mix two frames."""
    frames, volume, logic = analysed_cine(headless, analyzer)
    logic.show_frame(volume, 0)
    shown = logic.segment_mask(volume, 0)
    assert shown.any()
    scores = {i: logic.report(volume, i).probability for i in range(3)}

    # A reloaded scene has the nodes, their attributes and the table, and no per-frame memory: a
    # fresh logic on the same scene is that state (slicer-core has no readers for a full .mrb round trip).
    reloaded = volume
    fresh = sl.BUSAssistMRMLLogic(analyzer)  # nothing in memory, as after a restart
    report = fresh.show_frame(reloaded, 2)
    assert report is not None and report.probability == pytest.approx(scores[2])
    assert report.warning == sl.RELOADED_WARNING
    assert not fresh.segment_mask(reloaded, 2).any(), "frame 0's outline must not stay beside frame 2's score"
    segmentation = fresh.find_output(reloaded, sl.ROLE_SEGMENTATION)
    assert segmentation.GetAttribute(sl.SEGMENT_FRAME_ATTRIBUTE) == "2"


def test_the_probability_map_is_not_offered_as_an_input(headless, analyzer):
    volume = sl.load_volume_file(SAMPLE_DICOM, headless.scene)
    logic = sl.BUSAssistMRMLLogic(analyzer)
    logic.analyze_volume(volume)
    probability = logic.find_output(volume, sl.ROLE_PROBABILITY)
    assert probability.GetHideFromEditors()  # node selectors (the input selector too) do not list it
    assert not volume.GetHideFromEditors()
