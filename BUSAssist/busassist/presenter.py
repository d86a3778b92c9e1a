"""What the panel shows and what each control does, free of Qt: the Slicer widget only draws and wires.

``Presenter`` holds the panel's state (the volume, the shown frame, W', the mask threshold, a
running "analyse all frames") and one method per control; every method returns the ``Readout``
the face draws: label texts and which buttons are enabled. It talks to an analysis session with
the interface of ``busassist.slicer.BUSAssistMRMLLogic`` (analyse, report, thresholds, frames,
export), so the Slicer panel and its tests run the same code, and a desktop reviewer can give it
another session. The numbers in the readout come from the core's result model
(``busassist.core.results``) through the session's report: the same as results.csv.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from busassist.core.operating_point import OperatingPoint
from busassist.core.results import DECISION_TEXT, Decision

NOTHING = "-"
#: Lines the panel's log keeps (oldest dropped first).
LOG_LINES = 200


@dataclass(frozen=True)
class FrameReport:
    """What the panel shows for one analysed frame: the table row (``core.results`` names) and context."""

    volume_name: str
    frame_index: int
    frame_count: int
    row: dict  # the results-table row: READING_COLUMNS of core.results, as stored in the scene
    mask_threshold: float
    operating_point: OperatingPoint
    model_version: str
    seconds: float = 0.0
    warning: str = ""  # e.g. NO_REGION_WARNING: the frame was analysed whole

    @property
    def probability(self) -> float:
        return float(self.row["malignancy_probability"])

    @property
    def threshold(self) -> float:
        return float(self.row["threshold"])

    @property
    def decision(self) -> Decision:
        return Decision(self.row["decision"])

    @property
    def lesion_detected(self) -> bool:
        return bool(self.row["lesion_detected"])

    @property
    def decision_text(self) -> str:
        return DECISION_TEXT.get(self.decision, str(self.decision))

    def measurement_text(self) -> str:
        """The largest lesion in words, with the same numbers as results.csv."""
        row = self.row
        if not int(row.get("mask_area_px", 0) or 0):
            return "no lesion outlined"
        unit = row.get("measurement_units") or "px"
        area_unit = "mm\u00b2" if unit == "mm" else "px"
        count = int(row.get("lesion_count", 1) or 1)
        largest = f"largest of {count} lesions: " if count > 1 else ""
        return (
            f"{largest}{float(row['lesion_area']):.1f} {area_unit}; max diameter "
            f"{float(row['lesion_max_diameter']):.1f} {unit}, width {float(row['lesion_width']):.1f} {unit}, "
            f"depth {float(row['lesion_depth']):.1f} {unit}"
        )

    def summary_lines(self) -> list[str]:
        lines = [f"Malignancy score: {self.probability:.3f}", f"Decision: {self.decision_text}"]
        if self.lesion_detected:
            lines.append(f"Lesion: {self.measurement_text()}")
        lines.append(self.operating_point.describe())
        if self.frame_count > 1:
            lines.append(f"Frame {self.frame_index + 1} of {self.frame_count}")
        if self.warning:
            lines.append(f"Warning: {self.warning}")
        return lines


@dataclass(frozen=True)
class Readout:
    """Everything the panel draws after a reaction."""

    score: str = NOTHING
    decision: str = NOTHING
    measurements: str = NOTHING
    frame: str = NOTHING
    operating_point: str = ""
    status: str = ""  # what the last action did
    warning: str = ""  # what the reader must know about the shown result (no region, reloaded scene)
    model: str = ""  # model version and the first 12 hex digits of its SHA-256
    log: tuple[str, ...] = ()  # this session's actions and warnings, oldest first, time-stamped
    can_analyze: bool = False
    can_analyze_all: bool = False
    can_export: bool = False
    running: bool = False


class Presenter:
    """The panel's state and reactions; ``session`` does the work (see the module docstring)."""

    def __init__(self, session, load_sample: Callable[[], object] | None = None) -> None:
        self.session = session
        self._load_sample = load_sample
        self.volume = None
        self.shown_frame: int | None = None
        self.effective_weight: float | None = None
        self.mask_threshold: float | None = None
        self._status = ""
        self.log: list[str] = []
        self.last_export = None  # the ExportResult of the last export (a verdict can name it)
        self._run: Iterator[tuple[int, int]] | None = None

    @property
    def status(self) -> str:
        return self._status

    @status.setter
    def status(self, message: str) -> None:
        """What the last action did; every new message also goes to the log."""
        self._status = message
        self._log(message)

    def _log(self, message: str) -> None:
        if message and (not self.log or not self.log[-1].endswith(message)):
            self.log.append(f"{time.strftime('%H:%M:%S')} {message}")
            del self.log[:-LOG_LINES]

    # ---- controls -----------------------------------------------------------------------------

    def select_volume(self, volume, shown_frame: int = 0) -> Readout:
        """The *Ultrasound image* selector."""
        if volume is not self.volume:
            self.cancel_all()
            self.volume, self.shown_frame, self.status = volume, shown_frame, ""
        return self.readout()

    def load_sample(self) -> Readout:
        """*Load sample*: the bundled study becomes the selected volume."""
        if self._load_sample is None:
            raise RuntimeError("no sample loader was given to the presenter")
        return self.select_volume(self._load_sample(), 0)

    def analyze(self, shown_frame: int | None = None) -> Readout:
        """*Analyze*: the frame on screen."""
        if self.volume is None:
            return self.readout()
        if shown_frame is not None:
            self.shown_frame = shown_frame
        report = self.session.analyze_volume(self.volume, self.shown_frame or 0)
        self.status = f"Analysed in {1000 * report.seconds:.0f} ms."
        return self.readout()

    def set_effective_weight(self, weight: float) -> Readout:
        """*Effective weight W'*: the threshold and every decision change; the model is not run."""
        self.effective_weight = float(weight)
        self.session.set_effective_weight(self.effective_weight, self.volume)
        return self.readout()

    def set_mask_threshold(self, threshold: float, dragging: bool = False) -> Readout:
        """*Mask threshold*: the shown frame while dragging, every unedited frame once released.

        Frames an annotator corrected keep their correction either way.
        """
        self.mask_threshold = float(threshold)
        self.session.set_mask_threshold(
            self.mask_threshold, self.volume, shown_only=dragging and self.volume is not None
        )
        return self.readout()

    def frame_changed(self, index: int) -> Readout:
        """The sequence browser (or the slice through a multi-frame volume) moved to frame ``index``."""
        if self.volume is None or index == self.shown_frame or self._run is not None:
            return self.readout()
        self.shown_frame = int(index)
        self.session.show_frame(self.volume, self.shown_frame)
        return self.readout()

    def choose_output(self, segmentation) -> Readout:
        """*Output segmentation*: the node the Tumour segment is written to (None: BUSAssist's own)."""
        if self.volume is not None:
            self.session.use_segmentation(self.volume, segmentation)
            name = segmentation.GetName() if segmentation is not None else "a new BUSAssist segmentation"
            self.status = f"Tumour segment goes to {name}."
        return self.readout()

    def export(self, folder, class_name: str) -> Readout:
        """*Export for training*: the shown frame and its current segment."""
        if self.volume is None:
            return self.readout()
        result = self.session.export_for_training(self.volume, folder, class_name, self.shown_frame)
        self.last_export = (self.volume, self.shown_frame, result)
        self.status = result.describe(folder)
        return self.readout()

    # ---- analyse all frames, one step per tick of the face's event loop --------------------------

    def start_all(self) -> Readout:
        """*Analyze all frames*: call ``step_all`` until it returns a readout that is not running."""
        if self.volume is not None:
            self._run = self.session.iter_analyze_frames(self.volume)
            self.status = f"Analysing {self.session.frame_count(self.volume)} frames..."
        return self.readout()

    def step_all(self) -> tuple[Readout, int, int]:
        """One frame of the run: (readout, frames done, frames in all)."""
        if self._run is None:
            return self.readout(), 0, 0
        try:
            done, total = next(self._run)
        except StopIteration:
            self._finish("All frames analysed.")
            return self.readout(), 0, 0
        except Exception as error:  # shown to the user by the face; the run stops
            self._finish(f"Stopped by an error: {error}")
            return self.readout(), 0, 0
        self.status = f"Analysed {done} of {total} frames."
        return self.readout(), done, total

    def cancel_all(self) -> Readout:
        """*Cancel*: the run stops after the frame in progress; the shown frame's outline comes back."""
        if self._run is not None:
            self._finish("Cancelled.")
        return self.readout()

    def _finish(self, message: str) -> None:
        run, self._run = self._run, None
        if run is not None:
            run.close()  # the session puts the segment back on the frame that is shown
        self.status = message
        if self.volume is not None and self.shown_frame is not None:
            self.session.show_frame(self.volume, self.shown_frame)

    # ---- what the face draws --------------------------------------------------------------------

    def readout(self) -> Readout:
        volume = self.volume
        running = self._run is not None
        frames = self.session.frame_count(volume) if volume is not None else 0
        enabled = {
            "can_analyze": volume is not None and not running,
            "can_analyze_all": volume is not None and not running and frames > 1,
            "can_export": volume is not None and not running,
            "running": running,
        }
        operating = self.session.operating_point(self.effective_weight).describe()
        model = self.session.model_description()
        report = self.session.report(volume, self.shown_frame) if volume is not None else None
        if report is None:
            return Readout(operating_point=operating, status=self.status, model=model, log=tuple(self.log), **enabled)
        self._log(report.warning)
        return Readout(
            score=f"{report.probability:.3f}",
            decision=f"{report.decision_text} (threshold {report.threshold:.3f})",
            measurements=report.measurement_text(),
            frame=f"{report.frame_index + 1} of {report.frame_count}",
            operating_point=report.operating_point.describe(),
            status=self.status,
            warning=report.warning,
            model=model,
            log=tuple(self.log),
            **enabled,
        )
