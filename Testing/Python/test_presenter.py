"""The panel's presenter walked through as a radiologist and an annotator use it, on slicer-core.

Load sample → Analyze → W' slider → edit the segment → mask slider (drag, release) → frame change
→ scene reload. The presenter is Qt-free; the Slicer widget only draws its ``Readout``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from busassist import slicer as sl  # noqa: E402
from busassist.core.io import read_frames  # noqa: E402
from busassist.presenter import NOTHING, Presenter  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
SAMPLE = SAMPLES / "sample_1_benign.dcm"


pytest_plugins = ["slicer_fixtures"]


def sample_as_sample_data_loads_it(scene):
    """What Slicer's Sample Data does: load the file, then remove the storage node."""

    def load():
        volume = sl.load_volume_file(SAMPLE, scene)
        storage = volume.GetStorageNode()
        volume.SetAndObserveStorageNodeID(None)
        scene.RemoveNode(storage)
        return volume

    return load


def test_walk_through_load_analyze_weight_edit_threshold(headless, analyzer):
    presenter = Presenter(sl.BUSAssistMRMLLogic(analyzer), sample_as_sample_data_loads_it(headless.scene))
    empty = presenter.readout()
    assert empty.score == NOTHING and not empty.can_analyze

    loaded = presenter.load_sample()
    assert loaded.can_analyze and loaded.can_export and not loaded.can_analyze_all  # one frame
    assert loaded.model.startswith("Model ") and "SHA-256" in loaded.model

    shown = presenter.analyze()
    core = analyzer.analyze(next(read_frames(SAMPLE)))
    reading = core.reading(analyzer.threshold())
    assert shown.score == f"{core.probability:.3f}"
    assert shown.decision.startswith(reading.decision.text)
    assert shown.status.startswith("Analysed in") and shown.warning == ""  # the region is known
    assert f"{reading.largest.area:.1f}" in shown.measurements  # the same numbers as results.csv

    sensitive = presenter.set_effective_weight(9.0)  # threshold 3 / (3 + 9) = 0.25
    assert "threshold 0.250" in sensitive.decision and sensitive.operating_point != shown.operating_point

    session = presenter.session
    corrected = np.zeros(core.mask.shape, dtype=bool)
    corrected[300:340, 400:470] = True  # the annotator's correction in Segment Editor
    segmentation = session.find_output(presenter.volume, sl.ROLE_SEGMENTATION)
    matrix, k = session._frame_geometry(presenter.volume, 0)
    session._write_segment(segmentation, presenter.volume, corrected, matrix, k)
    presenter.set_mask_threshold(0.3, dragging=True)
    presenter.set_mask_threshold(0.3)  # released
    assert np.array_equal(session.segment_mask(presenter.volume, 0), corrected), "the correction survives"

    with pytest.raises(ValueError, match="export folder"):  # the face shows the refusal in one dialog
        presenter.export("", "benign")

    own = session.find_output(presenter.volume, sl.ROLE_SEGMENTATION)
    chosen = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reader's segmentation")
    moved = presenter.choose_output(chosen)  # the Output segmentation selector
    assert session.find_output(presenter.volume, sl.ROLE_SEGMENTATION) is chosen
    assert np.array_equal(session.segment_mask(presenter.volume, 0, chosen), corrected)
    assert own.GetAttribute(sl.ROLE_ATTRIBUTE) is None, "the previous output is no longer written to"
    assert any("Analysed in" in line for line in moved.log) and "reader's segmentation" in moved.log[-1]


def test_walk_through_a_cine_frame_change_and_a_scene_reload(headless, analyzer):
    frames = [next(read_frames(path)).pixels for path in sorted(SAMPLES.glob("*.dcm"))]
    height, width = min(f.shape[0] for f in frames), min(f.shape[1] for f in frames)
    cine = np.stack([f[:height, :width] for f in frames])
    volume = sl.add_volume_from_frame(cine[0], headless.scene, "cine")
    sl.update_volume_from_array(volume, cine)
    presenter = Presenter(sl.BUSAssistMRMLLogic(analyzer))
    assert presenter.select_volume(volume).can_analyze_all

    presenter.start_all()
    steps = []
    while True:
        readout, done, total = presenter.step_all()
        if not readout.running:
            break
        steps.append((done, total))
    assert steps == [(1, 3), (2, 3), (3, 3)] and readout.status == "All frames analysed."
    first = presenter.frame_changed(0)
    second = presenter.frame_changed(2)
    assert first.frame == "1 of 3" and second.frame == "3 of 3" and first.score != second.score
    assert "whole frame" in second.warning  # a volume without DICOM: the panel says it is analysed whole

    reloaded = Presenter(sl.BUSAssistMRMLLogic(analyzer))  # File > Load scene: nodes, no memory
    reloaded.select_volume(volume, shown_frame=2)
    after = reloaded.frame_changed(1)
    assert after.score != NOTHING and after.frame == "2 of 3"
    assert "press Analyze" in after.warning
    assert not reloaded.session.segment_mask(volume, 1).any(), "no outline of another frame"
