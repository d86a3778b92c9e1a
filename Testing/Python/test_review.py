"""BUSAssist Review, the desktop reviewer: Qt-free parts, then the window on Qt's offscreen platform.

Open the sample → analyse → move W' (decision changes, the model is not run again) → paint and
erase → undo → save (the DICOM SEG read back equals the painted mask; the trainer reads the pair)
→ verdict in the review log; a batch output folder as a worklist; a cine cancelled halfway; an
unreadable file in the worklist.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from busassist.core.batch import AnalyzeOptions, analyze_file, prepare_output
from busassist.core.inference import Analyzer
from busassist.core.model_store import default_model_path
from busassist.review.edit import MaskEditor
from busassist.review.session import FROM_BATCH, DesktopSession
from busassist.review.verdicts import ReviewLog
from busassist.review.worklist import open_inputs

SAMPLES = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"


class CountingAnalyzer:
    """The bundled model, counting how often it runs."""

    def __init__(self) -> None:
        self.inner = Analyzer(default_model_path(), threads=1)
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def analyze(self, frame, region=None):
        self.calls += 1
        return self.inner.analyze(frame, region)


@pytest.fixture(scope="module")
def counting() -> CountingAnalyzer:
    return CountingAnalyzer()


# ---- Qt-free parts ---------------------------------------------------------------------------


def test_mask_editor_brush_eraser_fill_undo_redo_reset() -> None:
    model = np.zeros((40, 40), bool)
    model[10:20, 10:20] = True
    editor = MaskEditor(model)
    editor.begin_stroke()
    editor.paint(30, 30, 3)
    editor.paint(30, 33, 3)  # one stroke, two dabs
    assert editor.mask[30, 30] and editor.mask[30, 33] and editor.edited
    editor.begin_stroke()
    editor.paint(15, 15, 2, lesion=False)  # eraser: a hole in the lesion
    assert not editor.mask[15, 15]
    editor.fill_holes()
    assert editor.mask[15, 15] and not editor.mask[0, 0]
    editor.undo()
    assert not editor.mask[15, 15]
    editor.undo()
    editor.undo()
    assert np.array_equal(editor.mask, model) and not editor.edited
    editor.redo()
    assert editor.mask[30, 30] and editor.mask[30, 33]
    editor.reset()
    assert np.array_equal(editor.mask, model)
    editor.paint(-50, -50, 5)  # outside the frame: nothing, no error
    assert np.array_equal(editor.mask, model)


def test_review_log_is_durable_and_resumes(tmp_path: Path) -> None:
    log = ReviewLog(tmp_path, "dr-test")
    log.record(SAMPLES / "sample_1_benign.dcm", 0, "accepted", "looks right")
    log.record(SAMPLES / "sample_1_benign.dcm", 0, "corrected", "margin\nfixed")  # the later verdict wins
    with (tmp_path / "review_log.csv").open("a") as handle:
        handle.write("2026-01-01,cut-by-a-crash")  # a row cut short does not cost the others
    again = ReviewLog(tmp_path)
    latest = again.latest()
    row = latest[(os.path.abspath(SAMPLES / "sample_1_benign.dcm"), 0)]
    assert row["verdict"] == "corrected" and row["note"] == "margin fixed" and row["reviewer"] == "dr-test"
    with pytest.raises(ValueError, match="verdict"):
        log.record(SAMPLES / "x.dcm", 0, "maybe")


def test_worklist_marks_an_unreadable_file_and_opens_a_batch_folder(counting, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.dcm").write_bytes(b"DICM but not really" * 20)
    (folder / "sample.dcm").write_bytes((SAMPLES / "sample_1_benign.dcm").read_bytes())
    items = {item.label: item for item in open_inputs([folder])}
    assert items["sample.dcm"].readable and items["sample.dcm"].frames == 1
    assert not items["broken.dcm"].readable and "not a readable DICOM" in items["broken.dcm"].error

    out = tmp_path / "batch"
    prepare_output(out)
    for path in sorted(SAMPLES.glob("*.dcm")):
        analyze_file(path, counting.inner, out, AnalyzeOptions(overlays=False, dicom_seg=False))
    batch = open_inputs([out])
    assert sorted(item.label for item in batch) == sorted(p.name for p in SAMPLES.glob("*.dcm"))
    session = DesktopSession(analyzer=counting)
    before = counting.calls
    report = session.report(batch[0], 0)
    with open(out / "results.csv", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["file"] == str(batch[0].path))
    assert report.probability == pytest.approx(float(row["malignancy_probability"]))
    assert report.warning == FROM_BATCH and counting.calls == before, "a batch folder is not re-analysed"
    assert session.mask(batch[0], 0) is not None


# ---- the window, offscreen ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    widgets = pytest.importorskip("PySide6.QtWidgets", reason="needs PySide6 (pip install 'busassist[gui]')")
    return widgets.QApplication.instance() or widgets.QApplication([])


def wait_for(app, condition, seconds: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    assert condition(), "timed out"


def window_for(paths, counting, out: Path):
    from busassist.apps.review import build_window

    return build_window(open_inputs(paths), DesktopSession(analyzer=counting), ReviewLog(out, "dr-test"), out)


def select(window, name: str):
    for row in range(window.worklist.rowCount()):
        if window.worklist.item(row, 0).text() == name:
            window.worklist.selectRow(row)
            return
    raise AssertionError(f"{name} not in the worklist")


def test_open_analyse_weight_edit_undo_save_verdict(app, counting, tmp_path: Path) -> None:
    import highdicom as hd

    window = window_for([SAMPLES], counting, tmp_path / "out")
    select(window, "sample_1_benign.dcm")
    assert window.labels["score"].text() == "-"
    window.on_analyze()
    calls = counting.calls
    score, decision = window.labels["score"].text(), window.labels["decision"].text()
    assert score != "-" and "threshold 0.500" in decision

    window.weight.setValue(100)  # W' = 10: threshold 3 / 13
    assert "threshold 0.231" in window.labels["decision"].text() and counting.calls == calls
    assert window.operating.text().startswith("W' 10")

    shape = window.session.frame(window.item, 0).pixels.shape[:2]
    before = window.session.editor(window.item, 0).mask.copy()
    window.brush.setChecked(True)
    window.on_stroke(shape[0] / 2, shape[1] / 2, True)
    window.on_stroke(shape[0] / 2, shape[1] / 2 + 10, False)
    painted = window.session.editor(window.item, 0).mask.copy()
    assert painted.sum() > before.sum()
    window.eraser.setChecked(True)
    window.on_stroke(shape[0] / 2, shape[1] / 2, True)
    assert window.session.editor(window.item, 0).mask.sum() < painted.sum()
    window.on_undo()  # back to the painted mask
    assert np.array_equal(window.session.editor(window.item, 0).mask, painted)

    window.export_class.setCurrentText("benign")
    window.on_save()
    saved = list((tmp_path / "out" / "training" / "seg").glob("*.seg.dcm"))
    assert len(saved) == 1, window.statusBar().currentMessage()
    seg = hd.seg.segread(saved[0])
    assert np.array_equal(
        seg.get_total_pixel_matrix()[..., 0] > 0 if seg.NumberOfFrames > 1 else seg.pixel_array.reshape(shape) > 0,
        painted,
    )
    assert "DICOM SEG" in window.statusBar().currentMessage()

    window.note.setText("margin redrawn")
    window.on_verdict("corrected")
    with open(tmp_path / "out" / "review_log.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["verdict"] == "corrected" and row["note"] == "margin redrawn" and row["frame"] == "0"
    assert row["file"].endswith("sample_1_benign.dcm") and row["reviewer"] == "dr-test"
    assert row["export_key"].startswith("benign/images/") and row["seg_path"].endswith(".seg.dcm")
    window.unreviewed.setChecked(True)  # the reviewed frame's row is hidden, the others stay
    hidden = {window.worklist.item(r, 0).text(): window.worklist.isRowHidden(r) for r in range(3)}
    assert hidden == {"sample_1_benign.dcm": True, "sample_2_malignant.dcm": False, "sample_3_normal.dcm": False}


def test_an_unreadable_file_is_marked_and_never_crashes_the_window(app, counting, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 64)
    window = window_for([folder], counting, tmp_path / "out")
    assert window.worklist.item(0, 3).text() == "unreadable"
    select(window, "broken.dcm")
    assert "broken.dcm" in window.statusBar().currentMessage() and window.item is None
    window.on_analyze()  # nothing selected: nothing happens
    window._guard(window.on_fill)()  # the Fill holes button with no mask: one status line, no exception
    assert "analyse the frame first" in window.statusBar().currentMessage()


def test_a_cine_analysis_can_be_cancelled_halfway(app, counting, tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from hostile_inputs import save, tissue, us_dataset

    cine = save(us_dataset(tissue(96, 128), "review-cine", frames=40), tmp_path / "cine.dcm")
    window = window_for([cine], counting, tmp_path / "out")
    select(window, "cine.dcm")
    assert window.analyze_all_button.isEnabled()
    window.on_analyze_all()
    wait_for(app, lambda: window.progress.value() >= 2)
    window.on_cancel()
    wait_for(app, lambda: window.thread is None)
    analysed = sum(
        window.session.state(window.item, i) is not None and window.session.state(window.item, i).result is not None
        for i in range(40)
    )
    assert 2 <= analysed < 40 and "Cancelled." in window.log_view.toPlainText()
    window.frame_slider.setValue(1)  # the analysed frames can be read
    assert window.labels["frame"].text() == "2 of 40" and window.labels["score"].text() != "-"
    window.on_verdict("accepted")  # one frame of the cine reviewed
    assert window.worklist.item(0, 4).text() == "1/40 reviewed"


def test_saved_pairs_train_one_tiny_step(app, counting, tmp_path: Path, shared_dir: Path) -> None:
    """What the reviewer saves is what the trainer's --extra-train reads: one tiny training step on it."""
    from training_fixtures import tiny_config

    from busassist.training.trainer import train

    window = window_for([SAMPLES], counting, tmp_path / "out")
    select(window, "sample_1_benign.dcm")
    window.on_analyze()
    window.export_class.setCurrentText("benign")
    window.on_save()
    exported = tmp_path / "out" / "training"
    config = tiny_config(
        shared_dir / "data" / "busi", tmp_path / "run", tmp_path / "cache", extra_train=[str(exported)]
    )
    config.limit = 8
    run = train(config)
    assert (run / "best.pt").exists()


def test_sorted_worklist_rows_keep_their_own_figures_and_reselecting_starts_at_frame_one(
    app, counting, tmp_path: Path
) -> None:
    from PySide6 import QtCore

    window = window_for([SAMPLES], counting, tmp_path / "out")
    window.worklist.sortItems(2, QtCore.Qt.SortOrder.DescendingOrder)  # by score, as a reader sorts
    for name in ("sample_2_malignant.dcm", "sample_1_benign.dcm", "sample_3_normal.dcm"):
        select(window, name)
        window.on_analyze()
    for row in range(window.worklist.rowCount()):
        item = window.items[window.worklist.item(row, 0).data(QtCore.Qt.ItemDataRole.UserRole)]
        report = window.session.report(item, 0)
        assert window.worklist.item(row, 0).text() == item.label
        assert window.worklist.item(row, 2).text() == f"{report.probability:.3f}", item.label
        assert window.worklist.item(row, 3).text() == report.decision.value, item.label
    select(window, "sample_1_benign.dcm")
    assert window.labels["frame"].text() == "1 of 1" and window.item.label == "sample_1_benign.dcm"


def test_no_training_seg_references_an_invalid_uid(tmp_path: Path) -> None:
    """A frame whose SOP Instance UID is really a name: the pair is written, the SEG refused (as in the batch)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from hostile_inputs import build_all

    from busassist.core.io import read_frames
    from busassist.core.training_pairs import export_pair

    path = build_all(tmp_path / "in", ("uid-is-name",))["uid-is-name"]
    frame = next(read_frames(path))
    mask = np.zeros(frame.pixels.shape[:2], bool)
    mask[20:40, 30:60] = True
    result = export_pair(tmp_path / "out", "benign", frame.pixels, mask, None, path, 0, None, "m1")
    assert result.seg_path is None and "invalid" in result.seg_error
    assert result.mask_path.exists() and not list((tmp_path / "out").rglob("*.seg.dcm"))
