"""BUSAssist Review's window (PySide6): the worklist, the frame, the panel; it only draws and wires.

What a control does and what the readout says is the presenter's (``busassist.presenter``, shared
with the Slicer panel) over ``review.session.DesktopSession``; every slot is guarded, so a problem
is one line in the status bar and the log, never a traceback dialog. ``busassist.apps.review`` is
the command line that opens it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from busassist.constants import EFFECTIVE_WEIGHT_MAX, EFFECTIVE_WEIGHT_MIN
from busassist.core.io import InputError
from busassist.core.outputs import outline
from busassist.core.preprocessing import to_grey, to_uint8_range
from busassist.core.training_pairs import EXPORT_CLASSES
from busassist.presenter import Presenter, Readout
from busassist.review.session import DesktopSession
from busassist.review.verdicts import VERDICTS, ReviewLog
from busassist.review.worklist import WorkItem

SHORTCUTS = (
    ("A", "Analyze the shown frame"),
    ("B / E", "Brush / eraser"),
    ("[ / ]", "Smaller / larger brush"),
    ("F", "Fill holes in the mask"),
    ("Ctrl+Z / Ctrl+Y", "Undo / redo"),
    ("R", "Reset to the model's mask"),
    ("1 / 2 / 3", "Verdict: accepted / corrected / rejected"),
    ("Ctrl+S", "Save the corrected mask (training pair and DICOM SEG)"),
    ("Left / Right", "Previous / next frame"),
    ("Space", "Play / pause the cine"),
    ("P", "Probability map on / off"),
    ("F1", "This help"),
)
#: Lesion probability from which the probability map is drawn (as in Slicer).
PROBABILITY_SHOWN_FROM = 0.1


def compose(
    pixels: np.ndarray,
    mask: np.ndarray | None,
    probability: np.ndarray | None,
    window: float = 255.0,
    level: float = 127.5,
    fill: bool = False,
) -> np.ndarray:
    """The RGB picture the viewer shows: window/level grey, probability tint, mask fill or outline."""
    grey = to_uint8_range(to_grey(pixels)).astype(np.float32)
    low = level - window / 2.0
    grey = np.clip((grey - low) * (255.0 / max(window, 1.0)), 0, 255)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if probability is not None:
        shown = probability >= PROBABILITY_SHOWN_FROM
        heat = np.stack([np.full_like(probability, 255.0), 255.0 * probability, np.zeros_like(probability)], axis=2)
        rgb[shown] = rgb[shown] * 0.6 + heat[shown] * 0.4
    if mask is not None and mask.any():
        if fill:
            rgb[mask] = rgb[mask] * 0.65 + np.array([255.0, 0.0, 0.0]) * 0.35
        rgb[outline(mask)] = (255.0, 230.0, 0.0)
    return np.ascontiguousarray(rgb.astype(np.uint8))


def _qt():
    from PySide6 import QtCore, QtGui, QtWidgets

    return QtCore, QtGui, QtWidgets


def build_window(items: list[WorkItem], session: DesktopSession, log: ReviewLog, out: Path):
    """The main window (a ``QMainWindow``); needs a ``QApplication``."""
    QtCore, QtGui, QtWidgets = _qt()

    class ImageView(QtWidgets.QLabel):
        """The frame; mouse strokes become brush or eraser strokes in image coordinates."""

        stroke = QtCore.Signal(float, float, bool)  # row, column, first point of a stroke

        def __init__(self) -> None:
            super().__init__()
            self.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
            self.setMinimumSize(480, 360)
            self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Expanding)
            self._shape: tuple[int, int] | None = None
            self._image = None

        def show_rgb(self, rgb: np.ndarray | None) -> None:
            if rgb is None:
                self._shape, self._image = None, None
                self.setPixmap(QtGui.QPixmap())
                self.setText("Open a file or folder, then choose a row of the worklist.")
                return
            height, width = rgb.shape[:2]
            self._shape = (height, width)
            self._image = QtGui.QImage(rgb.data, width, height, 3 * width, QtGui.QImage.Format.Format_RGB888).copy()
            self._redraw()

        def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
            super().resizeEvent(event)
            self._redraw()

        def _redraw(self) -> None:
            if self._image is not None:
                self.setPixmap(
                    QtGui.QPixmap.fromImage(self._image).scaled(self.size(), QtCore.Qt.AspectRatioMode.KeepAspectRatio)
                )

        def _to_image(self, position) -> tuple[float, float] | None:
            if self._shape is None or self.pixmap() is None or self.pixmap().isNull():
                return None
            shown = self.pixmap().size()
            left = (self.width() - shown.width()) / 2.0
            top = (self.height() - shown.height()) / 2.0
            scale = self._shape[1] / max(shown.width(), 1)
            return (position.y() - top) * scale, (position.x() - left) * scale

        def mousePressEvent(self, event) -> None:  # noqa: N802
            point = self._to_image(event.position())
            if point is not None:
                self.stroke.emit(point[0], point[1], True)

        def mouseMoveEvent(self, event) -> None:  # noqa: N802
            point = self._to_image(event.position())
            if point is not None and event.buttons():
                self.stroke.emit(point[0], point[1], False)

    class AnalyseAll(QtCore.QObject):
        """Analyses every frame of one item off the UI thread; results are stored on the UI thread."""

        done = QtCore.Signal(int, object, object, float)  # index, frame, result, seconds
        failed = QtCore.Signal(int, str)
        finished = QtCore.Signal(bool)  # completed (False: cancelled)

        def __init__(self, item: WorkItem) -> None:
            super().__init__()
            self.item, self.cancelled = item, False

        def run(self) -> None:
            for index in range(session.frame_count(self.item)):
                if self.cancelled:
                    self.finished.emit(False)
                    return
                try:
                    frame, result, seconds = session.analyse_frame(self.item, index)
                    self.done.emit(index, frame, result, seconds)
                except Exception as error:  # one frame: reported, the run goes on
                    self.failed.emit(index, " ".join(str(error).split()))
            self.finished.emit(True)

    class ReviewWindow(QtWidgets.QMainWindow):
        def __init__(self) -> None:
            super().__init__()
            self.setWindowTitle("BUSAssist Review")
            self.items, self.session, self.log, self.out = items, session, log, out
            self.presenter = Presenter(session)
            self.item: WorkItem | None = None
            self.thread = self.worker = None
            self._verdicts = log.latest()
            self._build()
            self._fill_worklist()
            self._draw(self.presenter.readout())

        # ---- layout -----------------------------------------------------------------------

        def _build(self) -> None:
            self.worklist = QtWidgets.QTableWidget(0, 5)
            self.worklist.setHorizontalHeaderLabels(["File", "Frames", "Score", "Decision", "Review"])
            self.worklist.setSortingEnabled(True)
            self.worklist.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
            self.worklist.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
            header = self.worklist.horizontalHeader()
            header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
            for column in range(1, 5):
                header.setSectionResizeMode(column, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
            self.worklist.itemSelectionChanged.connect(self._guard(self.on_select))
            self.unreviewed = QtWidgets.QCheckBox("Only frames not yet reviewed")
            self.unreviewed.toggled.connect(self._guard(self._filter))
            left = QtWidgets.QWidget()
            left_layout = QtWidgets.QVBoxLayout(left)
            left_layout.addWidget(self.worklist)
            left_layout.addWidget(self.unreviewed)

            self.view = ImageView()
            self.view.stroke.connect(self._guard(self.on_stroke))
            self.frame_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
            self.frame_slider.valueChanged.connect(self._guard(self.on_frame))
            self.play_button = QtWidgets.QPushButton("Play")
            self.play_button.setCheckable(True)
            self.play_button.toggled.connect(self._guard(self.on_play))
            self.play_timer = QtCore.QTimer(self)
            self.play_timer.setInterval(100)
            self.play_timer.timeout.connect(self._guard(self._next_frame))
            cine = QtWidgets.QHBoxLayout()
            cine.addWidget(self.play_button)
            cine.addWidget(self.frame_slider)
            center = QtWidgets.QWidget()
            center_layout = QtWidgets.QVBoxLayout(center)
            center_layout.addWidget(self.view, 1)
            center_layout.addLayout(cine)

            panel = QtWidgets.QWidget()
            form = QtWidgets.QFormLayout(panel)
            self.labels = {name: QtWidgets.QLabel("-") for name in ("score", "decision", "measurements", "frame")}
            for name, caption in (
                ("score", "Malignancy score"),
                ("decision", "Decision"),
                ("measurements", "Lesion"),
                ("frame", "Frame"),
            ):
                self.labels[name].setWordWrap(True)
                form.addRow(caption + ":", self.labels[name])
            self.operating = QtWidgets.QLabel()
            self.operating.setWordWrap(True)
            self.weight = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
            self.weight.setRange(int(EFFECTIVE_WEIGHT_MIN * 10), int(EFFECTIVE_WEIGHT_MAX * 10))
            self.weight.setValue(int(round(session.model_metadata.w_p * 10)))
            self.weight.valueChanged.connect(self._guard(self.on_weight))
            form.addRow("Effective weight W':", self.weight)
            form.addRow(self.operating)
            self.mask_threshold = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
            self.mask_threshold.setRange(5, 95)
            self.mask_threshold.setValue(int(round(session.current_mask_threshold() * 100)))
            self.mask_threshold.valueChanged.connect(self._guard(self.on_mask_threshold))
            self.mask_threshold.sliderReleased.connect(self._guard(self.on_mask_threshold))
            form.addRow("Mask threshold:", self.mask_threshold)
            self.window_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
            self.window_slider.setRange(16, 255)
            self.window_slider.setValue(255)
            self.level_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
            self.level_slider.setRange(0, 255)
            self.level_slider.setValue(128)
            for slider in (self.window_slider, self.level_slider):
                slider.valueChanged.connect(self._guard(self._render))
            form.addRow("Window:", self.window_slider)
            form.addRow("Level:", self.level_slider)
            self.show_probability = QtWidgets.QCheckBox("Probability map")
            self.fill = QtWidgets.QCheckBox("Fill the mask")
            for box in (self.show_probability, self.fill):
                box.toggled.connect(self._guard(self._render))
            form.addRow(self.show_probability, self.fill)

            self.analyze_button = QtWidgets.QPushButton("Analyze")
            self.analyze_button.clicked.connect(self._guard(self.on_analyze))
            self.analyze_all_button = QtWidgets.QPushButton("Analyze all frames")
            self.analyze_all_button.clicked.connect(self._guard(self.on_analyze_all))
            self.cancel_button = QtWidgets.QPushButton("Cancel")
            self.cancel_button.clicked.connect(self._guard(self.on_cancel))
            self.progress = QtWidgets.QProgressBar()
            buttons = QtWidgets.QHBoxLayout()
            for button in (self.analyze_button, self.analyze_all_button, self.cancel_button):
                buttons.addWidget(button)
            form.addRow(buttons)
            form.addRow(self.progress)

            self.brush = QtWidgets.QRadioButton("Brush")
            self.eraser = QtWidgets.QRadioButton("Eraser")
            self.brush.setChecked(True)
            self.brush_size = QtWidgets.QSpinBox()
            self.brush_size.setRange(1, 60)
            self.brush_size.setValue(8)
            tools = QtWidgets.QHBoxLayout()
            for widget in (self.brush, self.eraser, self.brush_size):
                tools.addWidget(widget)
            form.addRow("Edit:", tools)
            edits = QtWidgets.QHBoxLayout()
            for text, slot in (
                ("Fill holes", self.on_fill),
                ("Undo", self.on_undo),
                ("Redo", self.on_redo),
                ("Reset", self.on_reset),
            ):
                button = QtWidgets.QPushButton(text)
                button.clicked.connect(self._guard(slot))
                edits.addWidget(button)
            form.addRow(edits)

            self.note = QtWidgets.QLineEdit()
            self.note.setPlaceholderText("Note (optional)")
            form.addRow("Note:", self.note)
            verdicts = QtWidgets.QHBoxLayout()
            for verdict in VERDICTS:
                button = QtWidgets.QPushButton(verdict.capitalize())
                button.clicked.connect(self._guard(functools.partial(self.on_verdict, verdict)))
                verdicts.addWidget(button)
            form.addRow("Verdict:", verdicts)
            self.export_class = QtWidgets.QComboBox()
            self.export_class.addItems(list(EXPORT_CLASSES))
            save = QtWidgets.QPushButton("Save corrected mask")
            save.clicked.connect(self._guard(self.on_save))
            form.addRow(self.export_class, save)
            self.model = QtWidgets.QLabel()
            self.model.setWordWrap(True)
            form.addRow(self.model)

            splitter = QtWidgets.QSplitter()
            for widget in (left, center, panel):
                splitter.addWidget(widget)
            splitter.setSizes([420, 600, 380])
            self.setCentralWidget(splitter)
            self.log_view = QtWidgets.QPlainTextEdit()
            self.log_view.setReadOnly(True)
            dock = QtWidgets.QDockWidget("Log", self)
            dock.setWidget(self.log_view)
            self.addDockWidget(QtCore.Qt.DockWidgetArea.BottomDockWidgetArea, dock)
            self.resizeDocks([dock], [120], QtCore.Qt.Orientation.Vertical)
            self.resize(1400, 860)
            for keys, slot in (
                ("A", self.on_analyze),
                ("B", lambda: self.brush.setChecked(True)),
                ("E", lambda: self.eraser.setChecked(True)),
                ("[", lambda: self.brush_size.setValue(self.brush_size.value() - 2)),
                ("]", lambda: self.brush_size.setValue(self.brush_size.value() + 2)),
                ("F", self.on_fill),
                ("Ctrl+Z", self.on_undo),
                ("Ctrl+Y", self.on_redo),
                ("R", self.on_reset),
                ("1", functools.partial(self.on_verdict, "accepted")),
                ("2", functools.partial(self.on_verdict, "corrected")),
                ("3", functools.partial(self.on_verdict, "rejected")),
                ("Ctrl+S", self.on_save),
                ("Left", lambda: self.frame_slider.setValue(self.frame_slider.value() - 1)),
                ("Right", lambda: self.frame_slider.setValue(self.frame_slider.value() + 1)),
                ("Space", lambda: self.play_button.toggle()),
                ("P", lambda: self.show_probability.toggle()),
                ("F1", self.show_help),
            ):
                shortcut = QtGui.QShortcut(QtGui.QKeySequence(keys), self)
                shortcut.activated.connect(self._guard(slot))

        # ---- reactions (each wrapped: an error is one status line, never a dialog) ---------------

        def _guard(self, slot):
            @functools.wraps(slot)
            def guarded(*args):
                try:
                    return slot(*args)
                except (InputError, ValueError, OSError, RuntimeError) as error:
                    self.say(" ".join(str(error).split()))
                except Exception as error:  # the window stays up whatever happens
                    self.say(f"{error.__class__.__name__}: {' '.join(str(error).split())}")

            return guarded

        def say(self, message: str) -> None:
            self.statusBar().showMessage(message)
            self.log_view.appendPlainText(message)

        def _fill_worklist(self) -> None:
            self.worklist.setSortingEnabled(False)
            self.worklist.setRowCount(len(self.items))
            for row, item in enumerate(self.items):
                cells = [item.label, str(item.frames) if item.readable else "-", "", "", ""]
                if not item.readable:
                    cells[3] = "unreadable"
                    cells[4] = item.error
                elif item.batch_rows:
                    first = item.batch_rows[min(item.batch_rows)]
                    cells[2], cells[3] = f"{float(first['malignancy_probability']):.3f}", first["decision"]
                if item.readable:
                    cells[4] = self._review_text(item)
                for column, text in enumerate(cells):
                    cell = QtWidgets.QTableWidgetItem(text)
                    cell.setData(QtCore.Qt.ItemDataRole.UserRole, row)
                    if not item.readable:
                        cell.setForeground(QtGui.QBrush(QtGui.QColor("gray")))
                        cell.setToolTip(item.error)
                    self.worklist.setItem(row, column, cell)
            self.worklist.setSortingEnabled(True)
            self.worklist.sortItems(0, QtCore.Qt.SortOrder.AscendingOrder)
            for item in self.items:
                if not item.readable:
                    self.log_view.appendPlainText(f"{item.path}: {item.error}")

        def _reviewed(self, item: WorkItem) -> int:
            return sum((item.key, index) in self._verdicts for index in range(max(item.frames, 1)))

        def _review_text(self, item: WorkItem) -> str:
            """A single frame's verdict, or how many frames of a cine have one."""
            if item.frames <= 1:
                verdict = self._verdicts.get((item.key, 0))
                return verdict["verdict"] if verdict else ""
            return f"{self._reviewed(item)}/{item.frames} reviewed"

        def _filter(self, only_unreviewed: bool) -> None:
            for row in range(self.worklist.rowCount()):
                item = self.items[self.worklist.item(row, 0).data(QtCore.Qt.ItemDataRole.UserRole)]
                done = item.readable and self._reviewed(item) >= max(item.frames, 1)
                self.worklist.setRowHidden(row, only_unreviewed and done)

        def on_select(self) -> None:
            selected = self.worklist.selectedItems()
            if not selected:
                return
            item = self.items[selected[0].data(QtCore.Qt.ItemDataRole.UserRole)]
            if not item.readable:
                self.item = None  # nothing is open: no verdict or edit can go to the previous file
                self.presenter.select_volume(None)
                self._render()
                self.say(f"{item.path}: {item.error}")
                return
            self.open_item(item)

        def open_item(self, item: WorkItem) -> None:
            self.play_button.setChecked(False)
            self.item = item
            self.frame_slider.blockSignals(True)
            self.frame_slider.setRange(0, max(0, session.frame_count(item) - 1))
            self.frame_slider.setValue(0)
            self.frame_slider.blockSignals(False)
            self.presenter.select_volume(item, 0)
            self._draw(self.presenter.frame_changed(0) if self.presenter.shown_frame else self.presenter.readout())

        def on_frame(self, index: int) -> None:
            if self.item is not None:
                self._draw(self.presenter.frame_changed(index))

        def _next_frame(self) -> None:
            count = self.frame_slider.maximum() + 1
            self.frame_slider.setValue((self.frame_slider.value() + 1) % max(count, 1))

        def on_play(self, playing: bool) -> None:
            self.play_button.setText("Pause" if playing else "Play")
            (self.play_timer.start if playing else self.play_timer.stop)()

        def on_analyze(self) -> None:
            self._idle()
            if self.item is not None:
                self._draw(self.presenter.analyze(self.frame_slider.value()))
                self._update_row()

        def on_analyze_all(self) -> None:
            if self.item is None or self.thread is not None:
                return
            self.progress.setRange(0, session.frame_count(self.item))
            self.progress.setValue(0)
            self.thread = QtCore.QThread(self)
            self.worker = AnalyseAll(self.item)
            self.worker.moveToThread(self.thread)
            self.thread.started.connect(self.worker.run)
            # Bound methods of the window: Qt queues them to the UI thread (a plain function would run
            # on the worker's thread).
            self.worker.done.connect(self._frame_done)
            self.worker.failed.connect(self._frame_failed)
            self.worker.finished.connect(self._all_done)
            self.thread.start()
            self.say(f"Analysing {session.frame_count(self.item)} frames...")
            self._enable(running=True)

        def _frame_done(self, index: int, frame, result, seconds: float) -> None:
            self._guard(self._store_frame)(index, frame, result, seconds)

        def _store_frame(self, index: int, frame, result, seconds: float) -> None:
            session.store_result(self.worker.item, index, frame, result, seconds)
            self.progress.setValue(index + 1)
            if self.worker.item is self.item and index == self.frame_slider.value():
                self._draw(self.presenter.readout())

        def _frame_failed(self, index: int, reason: str) -> None:
            self.say(f"frame {index + 1}: {reason}")

        def _all_done(self, completed: bool) -> None:
            self._guard(self._finish_all)(completed)

        def _finish_all(self, completed: bool) -> None:
            self.thread.quit()
            self.thread.wait()
            self.thread = self.worker = None
            self.say("All frames analysed." if completed else "Cancelled.")
            self._draw(self.presenter.readout())
            self._update_row()

        def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
            """Closing during *Analyze all frames*: stop the worker first (a running QThread must not be destroyed)."""
            if self.worker is not None:
                self.worker.cancelled = True
            if self.thread is not None:
                self.thread.quit()
                self.thread.wait()
            super().closeEvent(event)

        def _idle(self) -> None:
            if self.thread is not None:
                raise ValueError("wait for Analyze all frames to finish (or Cancel it)")

        def on_cancel(self) -> None:
            if self.worker is not None:
                self.worker.cancelled = True

        def on_weight(self, value: int) -> None:
            self._draw(self.presenter.set_effective_weight(value / 10.0))

        def on_mask_threshold(self, *_value) -> None:
            """Live on the shown frame while the slider is dragged; every unedited frame once it rests."""
            self._idle()
            dragging = self.mask_threshold.isSliderDown()
            self._draw(self.presenter.set_mask_threshold(self.mask_threshold.value() / 100.0, dragging=dragging))

        def _editor(self):
            self._idle()
            editor = session.editor(self.item, self.frame_slider.value()) if self.item else None
            if editor is None:
                raise ValueError("analyse the frame first: there is no mask to edit")
            return editor

        def on_stroke(self, row: float, col: float, first: bool) -> None:
            editor = self._editor()
            if first:
                self.play_button.setChecked(False)  # a stroke stays on the frame it began on
                self._stroke_frame = self.frame_slider.value()
                editor.begin_stroke()
            elif getattr(self, "_stroke_frame", None) != self.frame_slider.value():
                return
            editor.paint(row, col, self.brush_size.value(), lesion=self.brush.isChecked())
            self._draw(self.presenter.readout())

        def _edit(self, action: str) -> None:
            getattr(self._editor(), action)()
            self._draw(self.presenter.readout())

        def on_fill(self) -> None:
            self._edit("fill_holes")

        def on_undo(self) -> None:
            self._edit("undo")

        def on_redo(self) -> None:
            self._edit("redo")

        def on_reset(self) -> None:
            self._edit("reset")

        def on_verdict(self, verdict: str) -> None:
            if self.item is None:
                return
            index = self.frame_slider.value()
            state = session.state(self.item, index)
            uid = state.frame.sop_instance_uid if state is not None else None
            export_key = seg_path = ""
            if self.presenter.last_export is not None:  # the verdict names the mask saved for this frame
                saved_item, saved_frame, result = self.presenter.last_export
                if saved_item is self.item and saved_frame == index:
                    export_key, seg_path = result.key, "" if result.seg_path is None else str(result.seg_path)
            row = self.log.record(
                self.item.path, index, verdict, self.note.text(), uid, session.model_description(), export_key, seg_path
            )
            self._verdicts[(row["file"], index)] = row
            self.note.clear()
            self.say(f"{self.item.label} frame {index + 1}: {verdict} (review log {self.log.path})")
            self._update_row()

        def on_save(self) -> None:
            if self.item is None:
                return
            folder = self.out / "training"
            result = self.presenter.export(str(folder.resolve()), self.export_class.currentText())
            self._draw(result)

        def show_help(self) -> None:
            text = "\n".join(f"{keys:<16} {meaning}" for keys, meaning in SHORTCUTS)
            box = QtWidgets.QMessageBox(self)
            box.setWindowTitle("BUSAssist Review - keyboard shortcuts")
            box.setText(text)
            box.show()
            self.help_box = box

        # ---- drawing ----------------------------------------------------------------------

        def _enable(self, running: bool) -> None:
            has_item = self.item is not None
            self.analyze_button.setEnabled(has_item and not running)
            self.analyze_all_button.setEnabled(has_item and not running and session.frame_count(self.item) > 1)
            self.cancel_button.setEnabled(running)
            self.progress.setVisible(running or self.progress.value() > 0)

        def _draw(self, readout: Readout) -> None:
            for name in ("score", "decision", "measurements", "frame"):
                self.labels[name].setText(getattr(readout, name))
            self.operating.setText(readout.operating_point)
            self.model.setText(readout.model)
            message = " ".join(text for text in (readout.status, readout.warning) if text)
            if message:
                self.statusBar().showMessage(message)
            shown = self.log_view.toPlainText().splitlines()
            for line in readout.log:
                if line not in shown:
                    self.log_view.appendPlainText(line)
            self._enable(running=self.thread is not None)
            self._render()

        def _render(self, *_args) -> None:
            if self.item is None:
                self.view.show_rgb(None)
                return
            index = self.frame_slider.value()
            try:
                frame = session.frame(self.item, index)
            except InputError as error:
                self.say(str(error))
                self.view.show_rgb(None)
                return
            state = session.state(self.item, index)
            probability = (
                state.result.probability_map
                if self.show_probability.isChecked() and state is not None and state.result is not None
                else None
            )
            rgb = compose(
                frame.pixels,
                session.mask(self.item, index),
                probability,
                float(self.window_slider.value()),
                float(self.level_slider.value()),
                self.fill.isChecked(),
            )
            self.view.show_rgb(rgb)

        def _update_row(self) -> None:
            if self.item is None:
                return
            report = session.report(self.item, 0)
            self.worklist.setSortingEnabled(False)  # a changed cell would re-sort the rows mid-update
            for row in range(self.worklist.rowCount()):
                if self.items[self.worklist.item(row, 0).data(QtCore.Qt.ItemDataRole.UserRole)] is self.item:
                    cells = [self.worklist.item(row, column) for column in (2, 3, 4)]
                    if report is not None:
                        cells[0].setText(f"{report.probability:.3f}")
                        cells[1].setText(report.decision.value)
                    cells[2].setText(self._review_text(self.item))
            self.worklist.setSortingEnabled(True)

    return ReviewWindow()
