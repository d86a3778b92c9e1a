"""The MRML side of the BUSAssist Slicer module, free of Qt so it runs against ``slicer-core``.

``BUSAssistMRMLLogic`` takes the volume Slicer made from an ultrasound DICOM (scalar or RGB
vector volume, single frame, multi-frame volume, or the proxy volume of a sequence browser
over a cine) or from a PNG, runs the core ``Analyzer`` on the frame that is shown, and writes:

- a segmentation node ``"<volume> BUSAssist"`` with one segment ``Tumour`` (DICOM terminology
  Morphologically Altered Structure / Mass, anatomic region Breast), its reference geometry
  taken from the input volume, placed beside the volume in the subject hierarchy (same study);
- a probability-map volume ``"<volume> BUSAssist probability"`` for display;
- a table node ``"<volume> BUSAssist results"`` with one row per analysed frame (score,
  threshold, decision, lesion area and extent in mm when the DICOM is calibrated, else pixels).

Re-running updates the same nodes (found through a node reference to the input volume and a
role attribute). The decision threshold (effective weight W') and the mask threshold can be
changed afterwards without running the model again: the decision is recomputed from the stored
score, the mask from the stored probability map.

Nothing here imports Qt, torch or onnxruntime at import time, and ``slicer`` / ``vtk`` are only
imported inside functions, so the rest of the ``busassist`` package never depends on Slicer.
The module must stay Python 3.9 compatible (Slicer 5.x before 5.7 ships Python 3.9).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from busassist.constants import MASK_THRESHOLD, MIN_LESION_FRACTION, W_P, threshold_for_effective_weight
from busassist.core.results import DECISION_TEXT, READING_COLUMNS, Decision, decide, read_frame

#: ID and name of the one segment BUSAssist writes.
SEGMENT_ID = "Tumour"
SEGMENT_NAME = "Tumour"
SEGMENT_COLOR = (0.93, 0.26, 0.21)
#: Slicer terminology entry (vtkSlicerTerminologyEntry serialisation): context ~ category ~ type ~
#: type modifier ~ anatomic context ~ anatomic region ~ region modifier, codes as scheme^value^meaning.
TERMINOLOGY_ENTRY = (
    "Segmentation category and type - DICOM master list"
    "~SCT^49755003^Morphologically Altered Structure"
    "~SCT^4147007^Mass"
    "~^^"
    "~Anatomic codes - DICOM master list"
    "~SCT^76752008^Breast"
    "~^^"
)
TERMINOLOGY_TAG = "TerminologyEntry"

#: Output nodes carry this attribute (value: one of the roles) and a reference to their input volume.
ROLE_ATTRIBUTE = "BUSAssist.Role"
SOURCE_REFERENCE_ROLE = "BUSAssistSourceVolume"
ROLE_SEGMENTATION = "segmentation"
ROLE_PROBABILITY = "probability"
ROLE_TABLE = "results"
OUTPUT_SUFFIXES = {
    ROLE_SEGMENTATION: " BUSAssist",
    ROLE_PROBABILITY: " BUSAssist probability",
    ROLE_TABLE: " BUSAssist results",
}
OUTPUT_CLASSES = {
    ROLE_SEGMENTATION: "vtkMRMLSegmentationNode",
    ROLE_PROBABILITY: "vtkMRMLScalarVolumeNode",
    ROLE_TABLE: "vtkMRMLTableNode",
}
#: Table-node attributes that keep what the threshold slider needs after a scene is reloaded.
#: The DICOM file a volume came from, kept on the node itself: Sample Data removes the storage node
#: after loading, and a scene reload keeps node attributes, so the tissue region is never lost.
SOURCE_FILE_ATTRIBUTE = "BUSAssist.SourceFile"
#: Shown in the panel when a frame is analysed whole.
#: The frame the Tumour segment was last written for, on the segmentation node (saved with the scene).
SEGMENT_FRAME_ATTRIBUTE = "BUSAssist.SegmentFrame"
#: Shown after a scene reload for a frame whose outline is no longer in memory.
RELOADED_WARNING = (
    "Scores and measurements come from the saved results table; this frame's outline is not in memory "
    "after the scene was loaded: press Analyze to see (and edit or re-threshold) it again."
)
NO_REGION_WARNING = (
    "No ultrasound region is known for this volume (no DICOM source, or the DICOM declares none): "
    "the whole frame is analysed, including any burned-in text and rulers."
)
MODEL_VERSION_ATTRIBUTE = "BUSAssist.ModelVersion"
OPERATING_TABLE_ATTRIBUTE = "BUSAssist.OperatingTable"
W_P_ATTRIBUTE = "BUSAssist.WP"
MIN_LESION_FRACTION_ATTRIBUTE = "BUSAssist.MinLesionFraction"

#: Column descriptions shown in Slicer's table view (the names and order are results.csv's).
READING_DESCRIPTIONS = {
    "malignancy_probability": "Malignancy probability of the lesion in view",
    "calibrated_probability": "Posterior probability of malignancy (W_p removed, temperature-scaled)",
    "threshold": "Decision threshold W_p / (W_p + W')",
    "decision": "suspicious (for malignancy), benign, or no_lesion",
    "lesion_detected": "1 when the mask covers at least the model's minimum lesion fraction",
    "lesion_count": "Separate lesions in the mask (the measurements describe the largest)",
    "mask_area_px": "All lesion pixels of the mask",
    "analysed_area_px": "Pixels of the analysed (tissue) region",
    "measurement_units": "mm when the image is calibrated, else px",
    "lesion_area": "Largest lesion: area (units^2)",
    "lesion_max_diameter": "Largest lesion: maximum diameter",
    "lesion_depth_to_width": "Largest lesion: depth / width (> 1 = taller than wide)",
    "lesion_principal_axis_deg": "Largest lesion: long (inertia) axis vs skin line, 0..90",
    "lesion_solidity": "Largest lesion: area / convex-hull area (margin irregularity)",
}
#: BUSI class folders an exported frame can go to.
EXPORT_CLASSES = ("benign", "malignant", "normal")
EXPORT_MANIFEST = "busassist_exports.jsonl"

#: Columns of the results table: (name, type, unit label, description).
TABLE_COLUMNS = (
    ("frame", "int", "", "Frame number (0-based) within the volume or cine"),
    # the reading every face shows, under results.csv's names (core.results); measurements: largest lesion
    *((name, kind, unit, READING_DESCRIPTIONS.get(name, name)) for name, kind, unit in READING_COLUMNS),
    ("mask_threshold", "double", "", "Probability above which a pixel is lesion"),
    ("model_version", "string", "", "Model that produced the row"),
)

#: Lesion probability from which the probability overlay is drawn; lower values are transparent.
PROBABILITY_SHOWN_FROM = 0.1

#: Colour maps tried, in order, for the probability map (the first present in the scene is used).
PROBABILITY_COLOR_NODE_IDS = (
    "vtkMRMLColorTableNodeFileInferno.txt",
    "vtkMRMLColorTableNodeFileColdToHotRainbow.txt",
    "vtkMRMLPETProceduralColorNodePET-Heat",
    "vtkMRMLColorTableNodeRainbow",
)


# --------------------------------------------------------------------------------------------
# Operating points (validation SEN/SPE per effective weight)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingPoint:
    """The decision threshold for an effective weight W' and the validation figures that go with it.

    ``table_w`` is the tabulated W' whose validation figures are reported: the row of the model's
    operating table nearest to ``w_effective`` (figures are ``None`` when the model has no table).
    """

    w_effective: float
    threshold: float
    table_w: float | None = None
    sen: float | None = None
    spe: float | None = None
    ppv: float | None = None
    npv: float | None = None
    sen_ci: tuple[float, float] | None = None
    spe_ci: tuple[float, float] | None = None

    @property
    def exact(self) -> bool:
        return self.table_w is not None and math.isclose(self.table_w, self.w_effective, abs_tol=1e-6)

    def describe(self) -> str:
        """One line for the panel, e.g. ``W' 3 → threshold 0.500 · validation SEN 85.2 % [70.8–96.6], SPE …``."""
        text = f"W' {self.w_effective:g} \u2192 threshold {self.threshold:.3f}"
        if self.sen is None or self.spe is None:
            return text + " (no validation figures in the model)"
        parts = [_percent_with_ci("SEN", self.sen, self.sen_ci), _percent_with_ci("SPE", self.spe, self.spe_ci)]
        where = "" if self.exact else f" (at W' {self.table_w:g})"
        return f"{text} \u00b7 validation {', '.join(parts)}{where}"


def _percent_with_ci(name: str, value: float, ci: tuple[float, float] | None) -> str:
    text = f"{name} {100 * value:.1f} %"
    if ci is not None:
        text += f" [{100 * ci[0]:.1f}\u2013{100 * ci[1]:.1f}]"
    return text


def operating_point(w_effective: float, operating_table: list[dict] | None, w_p: float = W_P) -> OperatingPoint:
    """Threshold for ``w_effective`` and the validation row nearest to it in ``operating_table``."""
    threshold = threshold_for_effective_weight(float(w_effective), float(w_p))
    rows = [row for row in operating_table or [] if "w_effective" in row]
    if not rows:
        return OperatingPoint(float(w_effective), threshold)
    row = min(rows, key=lambda r: abs(float(r["w_effective"]) - float(w_effective)))

    def ci(name: str) -> tuple[float, float] | None:
        value = row.get(name)
        return (float(value[0]), float(value[1])) if value is not None and len(value) == 2 else None

    def number(name: str) -> float | None:
        value = row.get(name)
        return None if value is None else float(value)

    return OperatingPoint(
        float(w_effective),
        threshold,
        float(row["w_effective"]),
        number("sen"),
        number("spe"),
        number("ppv"),
        number("npv"),
        ci("sen_ci"),
        ci("spe_ci"),
    )


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Per-frame results kept in memory
# --------------------------------------------------------------------------------------------


@dataclass
class FrameEntry:
    """What the model said about one frame; enough to re-threshold without running it again.

    The probability map is kept as float16 (half the memory for a long cine); the mask at the
    model's own mask threshold is kept exactly, so the default segment equals the core mask.
    """

    probability: float
    probability_map: np.ndarray  # (H, W) float16
    model_mask: np.ndarray  # (H, W) bool at ``model_mask_threshold``
    model_mask_threshold: float
    analysed_area: int
    seconds: float = 0.0
    edited_mask: np.ndarray | None = None  # the annotator's correction, captured when leaving the frame
    calibrated_probability: float = float("nan")  # posterior estimate (Analyzer.calibrate)

    def mask(self, threshold: float) -> np.ndarray:
        if math.isclose(threshold, self.model_mask_threshold, abs_tol=1e-9):
            return self.model_mask
        return self.probability_map >= np.float16(threshold)


@dataclass
class SourceInfo:
    """Where a volume came from: its DICOM file (if found), tissue region and calibration."""

    dicom_path: str | None = None
    sop_instance_uid: str | None = None
    region: object | None = None  # busassist.core.io.Region
    spacing_mm: tuple[float, float] | None = None  # (row, column)

    @property
    def warning(self) -> str:
        """What the panel must say about this source ("" when the tissue region is known)."""
        return "" if self.region is not None else NO_REGION_WARNING


@dataclass
class VolumeState:
    source: SourceInfo
    frames: dict[int, FrameEntry] = field(default_factory=dict)
    shown_frame: int | None = None


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
class ExportResult:
    key: str  # "<class>/images/<class> (n).png", as the BUSI loader names cases
    image_path: Path
    mask_path: Path
    edited: bool  # the exported mask differs from the model's
    seg_path: Path | None = None  # DICOM SEG of the corrected mask, when the frame came from DICOM
    seg_error: str | None = None  # why no SEG was written (no DICOM source, highdicom missing, ...)

    def describe(self, folder: str | Path) -> str:
        """One line for the panel: what was written where, the DICOM SEG included (or why not)."""
        mask = "corrected mask" if self.edited else "model mask"
        seg = f"DICOM SEG {self.seg_path}" if self.seg_path is not None else f"no DICOM SEG ({self.seg_error})"
        return f"Exported {self.key} ({mask}) to {folder}; {seg}."


# --------------------------------------------------------------------------------------------
# Small VTK / MRML helpers
# --------------------------------------------------------------------------------------------


def _slicer():
    import slicer

    return slicer


def array_from_image_data(image_data) -> np.ndarray:
    """(K, J, I) or (K, J, I, C) numpy view of a vtkImageData's scalars (C > 1 only)."""
    from vtk.util import numpy_support

    scalars = image_data.GetPointData().GetScalars()
    if scalars is None:
        raise ValueError("the volume has no voxels")
    shape = tuple(reversed(image_data.GetDimensions()))
    components = scalars.GetNumberOfComponents()
    if components > 1:
        shape = shape + (components,)
    return numpy_support.vtk_to_numpy(scalars).reshape(shape)


def update_volume_from_array(volume_node, array: np.ndarray) -> None:
    """Replace a volume's voxels by a (K, J, I) array (deep copy) and notify observers."""
    import vtk
    from vtk.util import numpy_support

    array = np.ascontiguousarray(array)
    image = volume_node.GetImageData()
    if image is None:
        image = vtk.vtkImageData()
        volume_node.SetAndObserveImageData(image)
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.AllocateScalars(numpy_support.get_vtk_array_type(array.dtype), 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = array.ravel()
    image.Modified()
    volume_node.StorableModified()
    volume_node.Modified()
    volume_node.InvokeEvent(_slicer().vtkMRMLVolumeNode.ImageDataModifiedEvent, volume_node)


def ijk_to_ras(volume_node) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _vtk_matrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def frame_index_at_ras(volume_node, ras: tuple[float, float, float]) -> int:
    """The slice (frame) of a multi-frame volume that contains the RAS point, clamped to the volume."""
    ijk = np.linalg.solve(ijk_to_ras(volume_node), np.array([*ras, 1.0]))
    depth = volume_node.GetImageData().GetDimensions()[2]
    return int(min(max(round(float(ijk[2])), 0), depth - 1))


def _node_scene(node):
    scene = node.GetScene()
    if scene is None:
        raise ValueError(f"{node.GetName()}: node is not in a scene")
    return scene


def _nodes_by_class(scene, class_name: str) -> list:
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def find_sequence(volume_node):
    """(browser, sequence) when the volume is the proxy node of a sequence browser, else (None, None)."""
    scene = volume_node.GetScene()
    if scene is None:
        return None, None
    for browser in _nodes_by_class(scene, "vtkMRMLSequenceBrowserNode"):
        sequence = browser.GetSequenceNode(volume_node)
        if sequence is not None:
            return browser, sequence
    return None, None


def _sequence_item(browser, sequence, item: int) -> int:
    """Index into ``sequence`` of the browser's item number ``item`` (the master sequence's index)."""
    master = browser.GetMasterSequenceNode()
    if master is None or master is sequence or master.GetID() == sequence.GetID():
        return item
    value = master.GetNthIndexValue(item)
    found = sequence.GetItemNumberFromIndexValue(value, False)
    return item if found < 0 else found


# --------------------------------------------------------------------------------------------
# Headless helpers (tests, benchmarks): a scene with the logics Slicer would create
# --------------------------------------------------------------------------------------------


@dataclass
class HeadlessSlicer:
    """A scene with application, segmentations, subject hierarchy and sequences logic (no Qt)."""

    scene: object
    application_logic: object
    segmentations_logic: object
    subject_hierarchy_logic: object
    sequences_logic: object


def create_headless_scene() -> HeadlessSlicer:
    """Build a scene like Slicer's core does and make it ``slicer.mrmlScene`` (as trame-slicer does)."""
    slicer = _slicer()
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    segmentations.SetMRMLApplicationLogic(app)
    app.SetModuleLogic("Segmentations", segmentations)
    subject_hierarchy = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    subject_hierarchy.SetMRMLScene(scene)
    subject_hierarchy.SetMRMLApplicationLogic(app)
    app.SetModuleLogic("SubjectHierarchy", subject_hierarchy)
    sequences = slicer.vtkSlicerSequencesLogic()
    sequences.SetMRMLScene(scene)
    sequences.SetMRMLApplicationLogic(app)
    app.SetModuleLogic("Sequences", sequences)
    slicer.mrmlScene = scene
    return HeadlessSlicer(scene, app, segmentations, subject_hierarchy, sequences)


def load_volume_file(path: str | Path, scene=None, name: str | None = None):
    """Load a DICOM or PNG/JPEG file into a volume node the way Slicer's volume reader does.

    DICOM goes through ITK (``vtkMRMLVolumeArchetypeStorageNode``), as drag-and-drop does. The
    ``slicer-core`` wheel has no ITK PNG reader, so images are read with Pillow and given the
    geometry ITK gives them in Slicer (LPS identity → IJKToRAS diag(-1, -1, 1)); colour images
    become vector volumes, as in Slicer.
    """
    slicer = _slicer()
    scene = scene or slicer.mrmlScene
    path = Path(path)
    name = name or path.stem
    from busassist.core.io import is_dicom

    if is_dicom(path):
        volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        storage.SetSingleFile(1)
        volume.SetAndObserveStorageNodeID(storage.GetID())
        if not storage.ReadData(volume):
            scene.RemoveNode(volume)
            raise ValueError(f"{path}: ITK could not read the file as a volume")
        volume.CreateDefaultDisplayNodes()
        remember_source(volume, path)
        return volume
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"))
    return add_volume_from_frame(pixels, scene, name)


def remember_source(volume_node, path: str | Path) -> None:
    """Keep the DICOM file behind ``volume_node`` on the node (see ``SOURCE_FILE_ATTRIBUTE``)."""
    volume_node.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(Path(path).resolve()))


def add_volume_from_frame(pixels: np.ndarray, scene=None, name: str = "frame", spacing=(1.0, 1.0)):
    """A single-slice volume node holding a (H, W) grey or (H, W, 3) colour frame, Slicer geometry."""
    import vtk
    from vtk.util import numpy_support

    slicer = _slicer()
    scene = scene or slicer.mrmlScene
    pixels = np.ascontiguousarray(pixels)
    colour = pixels.ndim == 3
    volume = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode" if colour else "vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    image.SetDimensions(pixels.shape[1], pixels.shape[0], 1)
    components = pixels.shape[2] if colour else 1
    image.AllocateScalars(numpy_support.get_vtk_array_type(pixels.dtype), components)
    target = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    target[:] = pixels.reshape(target.shape)
    volume.SetAndObserveImageData(image)
    volume.SetIJKToRASMatrix(_vtk_matrix(np.diag([-spacing[1], -spacing[0], 1.0, 1.0])))
    volume.CreateDefaultDisplayNodes()
    return volume


# --------------------------------------------------------------------------------------------
# The logic
# --------------------------------------------------------------------------------------------


class BUSAssistMRMLLogic:
    """Analyse ultrasound volumes in a MRML scene and keep the output nodes up to date.

    One instance per Slicer session (the module logic owns it): the onnxruntime session inside
    ``analyzer`` is created on first use and reused. ``effective_weight`` (W') and
    ``mask_threshold`` are the slider values; change them with ``set_effective_weight`` and
    ``set_mask_threshold``, which never run the model.
    """

    def __init__(
        self,
        analyzer=None,
        model_path: str | Path | None = None,
        dicom_file_for_instance: Callable[[str], str | None] | None = None,
    ) -> None:
        self._analyzer = analyzer
        self.model_path = Path(model_path) if model_path else None
        #: Finds a DICOM file by SOP Instance UID (Slicer: ``slicer.dicomDatabase.fileForInstance``).
        self.dicom_file_for_instance = dicom_file_for_instance
        self.effective_weight: float | None = None  # None: the model's W_p
        self.mask_threshold: float | None = None  # None: the model's mask threshold
        self._volumes: dict[str, VolumeState] = {}
        self._card: tuple[float, float, list[dict], str] | None = None

    def forget(self, volume_node=None) -> None:
        """Drop results kept in memory for one volume, or for all (call when the scene closes)."""
        if volume_node is None:
            self._volumes.clear()
        else:
            self._volumes.pop(volume_node.GetID(), None)

    # ---- model --------------------------------------------------------------------------

    @property
    def analyzer(self):
        """The core ``Analyzer`` (model verified by SHA-256, one onnxruntime session), made on first use."""
        if self._analyzer is None:
            from busassist.core.inference import Analyzer

            self._analyzer = Analyzer(self.model_path)
        return self._analyzer

    @property
    def has_analyzer(self) -> bool:
        return self._analyzer is not None

    def _model_facts(self, table_node=None) -> tuple[float, float, list[dict], str]:
        """(W_p, mask threshold, operating table, model version) from the model, else the table node."""
        if self._analyzer is not None:
            meta = self._analyzer.metadata
            return float(meta.w_p), float(meta.mask_threshold), list(meta.operating_table), str(meta.model_version)
        if table_node is not None and table_node.GetAttribute(OPERATING_TABLE_ATTRIBUTE):
            return (
                float(table_node.GetAttribute(W_P_ATTRIBUTE) or W_P),
                MASK_THRESHOLD,
                json.loads(table_node.GetAttribute(OPERATING_TABLE_ATTRIBUTE)),
                table_node.GetAttribute(MODEL_VERSION_ATTRIBUTE) or "unknown",
            )
        return self._card_facts()

    def _card_facts(self) -> tuple[float, float, list[dict], str]:
        """The model card beside the model: lets the slider show SEN/SPE before the model is loaded."""
        if self._card is None:
            from busassist.constants import MODEL_CARD_JSON
            from busassist.core.model_store import default_model_path

            model = self.model_path or default_model_path()
            self._card = (W_P, MASK_THRESHOLD, [], "unknown")
            try:
                card = json.loads(model.with_name(MODEL_CARD_JSON).read_text(encoding="utf-8"))
                self._card = (
                    float(card.get("model", {}).get("w_p", W_P)),
                    MASK_THRESHOLD,
                    list(card.get("operating_table_validation") or []),
                    str(card.get("model", {}).get("version", "unknown")),
                )
            except (OSError, ValueError, TypeError, AttributeError):
                pass
        return self._card

    def current_effective_weight(self, table_node=None) -> float:
        return self._model_facts(table_node)[0] if self.effective_weight is None else float(self.effective_weight)

    def current_min_lesion_fraction(self, table_node=None) -> float:
        """The model's "no lesion" rule: smallest lesion area as a fraction of the analysed region."""
        if self._analyzer is not None:
            return float(self._analyzer.metadata.min_lesion_fraction)
        if table_node is not None and table_node.GetAttribute(MIN_LESION_FRACTION_ATTRIBUTE):
            return float(table_node.GetAttribute(MIN_LESION_FRACTION_ATTRIBUTE))
        return MIN_LESION_FRACTION

    def current_mask_threshold(self, table_node=None) -> float:
        return self._model_facts(table_node)[1] if self.mask_threshold is None else float(self.mask_threshold)

    def operating_point(self, w_effective: float | None = None, table_node=None) -> OperatingPoint:
        w_p, _, table, _ = self._model_facts(table_node)
        weight = self.current_effective_weight(table_node) if w_effective is None else w_effective
        return operating_point(weight, table, w_p)

    # ---- frames -------------------------------------------------------------------------

    def frame_count(self, volume_node) -> int:
        browser, sequence = find_sequence(volume_node)
        if sequence is not None:
            return max(1, sequence.GetNumberOfDataNodes())
        image = volume_node.GetImageData()
        return 1 if image is None else image.GetDimensions()[2]

    def current_frame_index(self, volume_node) -> int:
        """The frame a sequence browser shows; 0 for a volume (pass the slice for multi-frame volumes)."""
        browser, sequence = find_sequence(volume_node)
        if sequence is None:
            state = self._volumes.get(volume_node.GetID())
            return state.shown_frame if state is not None and state.shown_frame is not None else 0
        return _sequence_item(browser, sequence, max(0, browser.GetSelectedItemNumber()))

    def frame_from_volume(self, volume_node, frame_index: int | None = None) -> np.ndarray:
        """The (H, W) grey or (H, W, C) colour pixels of one frame (a copy).

        A Slicer 2-D ultrasound volume is a single-slice 3-D volume, array (1, H, W) or
        (1, H, W, 3); a multi-frame volume has one slice per frame; the proxy volume of a
        sequence browser shows the selected item, other items are read from the sequence.
        """
        browser, sequence = find_sequence(volume_node)
        if sequence is not None:
            shown = _sequence_item(browser, sequence, max(0, browser.GetSelectedItemNumber()))
            node = volume_node
            if frame_index is not None and frame_index != shown:
                if not 0 <= frame_index < sequence.GetNumberOfDataNodes():
                    raise IndexError(f"frame {frame_index} outside 0..{sequence.GetNumberOfDataNodes() - 1}")
                node = sequence.GetNthDataNode(frame_index)
            array = array_from_image_data(node.GetImageData())
            frame = array[0]
        else:
            image = volume_node.GetImageData()
            if image is None:
                raise ValueError(f"{volume_node.GetName()}: the volume has no voxels")
            array = array_from_image_data(image)
            index = 0 if frame_index is None else int(frame_index)
            if not 0 <= index < array.shape[0]:
                raise IndexError(f"frame {index} outside 0..{array.shape[0] - 1}")
            frame = array[index]
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[..., 0]
        if frame.ndim == 3 and frame.shape[2] not in (3, 4):
            raise ValueError(f"{volume_node.GetName()}: {frame.shape[2]}-component voxels are not an image")
        return np.array(frame, copy=True)

    def _frame_geometry(self, volume_node, frame_index: int) -> tuple[np.ndarray, int]:
        """IJKToRAS and the slice index that a frame's mask occupies in the volume's grid."""
        browser, sequence = find_sequence(volume_node)
        return ijk_to_ras(volume_node), 0 if sequence is not None else int(frame_index)

    # ---- source DICOM: tissue region and calibration ---------------------------------------

    def source_info(self, volume_node) -> SourceInfo:
        """The DICOM file behind a volume (storage node file or DICOM instance UID) and its region."""
        state = self._volumes.get(volume_node.GetID())
        if state is not None:
            return state.source
        info = SourceInfo()
        path, uid = self._source_dicom(volume_node)
        if path is not None:
            info.dicom_path, info.sop_instance_uid = path, uid
            try:
                import pydicom

                from busassist.core.io import tissue_region

                dataset = pydicom.dcmread(path, stop_before_pixels=True)
                info.sop_instance_uid = info.sop_instance_uid or str(getattr(dataset, "SOPInstanceUID", "")) or None
                height, width = _frame_shape(volume_node)
                info.region = tissue_region(dataset, height, width)
                if info.region is not None and info.region.spacing_mm is not None:
                    info.spacing_mm = tuple(float(s) for s in info.region.spacing_mm)
            except Exception:  # noqa: BLE001 - an unreadable header only costs the region crop
                info.region = None
        if info.spacing_mm is None:
            spacing = volume_node.GetSpacing()
            if not (math.isclose(spacing[0], 1.0) and math.isclose(spacing[1], 1.0)):
                info.spacing_mm = (float(spacing[1]), float(spacing[0]))
        self._volumes[volume_node.GetID()] = VolumeState(info)
        return info

    def _source_dicom(self, volume_node) -> tuple[str | None, str | None]:
        from busassist.core.io import is_dicom

        candidates = [volume_node]
        browser, sequence = find_sequence(volume_node)
        if sequence is not None:
            candidates.append(sequence)
            if sequence.GetNumberOfDataNodes():
                candidates.append(sequence.GetNthDataNode(0))
        for node in candidates:  # the reference kept on the node survives a removed storage node
            name = node.GetAttribute(SOURCE_FILE_ATTRIBUTE)
            if name and Path(name).is_file() and is_dicom(Path(name)):
                return name, None
        for node in candidates:
            storage = node.GetStorageNode() if hasattr(node, "GetStorageNode") else None
            name = storage.GetFileName() if storage is not None else None
            if name and Path(name).is_file() and is_dicom(Path(name)):
                volume_node.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(Path(name).resolve()))
                return name, None
        for node in candidates:
            uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
            if uids and self.dicom_file_for_instance is not None:
                path = self.dicom_file_for_instance(uids[0])
                if path and Path(path).is_file():
                    return str(path), uids[0]
        return None, None

    # ---- analysis -----------------------------------------------------------------------

    def analyze_volume(self, volume_node, frame_index: int | None = None, analyzer=None) -> FrameReport:
        """Run the model on one frame (default: the one shown) and update the output nodes."""
        index = self.current_frame_index(volume_node) if frame_index is None else int(frame_index)
        self._analyze_frame(volume_node, index, analyzer)
        self.show_frame(volume_node, index)
        return self.report(volume_node, index)

    def iter_analyze_frames(
        self, volume_node, frames: list[int] | None = None, analyzer=None
    ) -> Iterator[tuple[int, int]]:
        """Analyse every frame (or ``frames``), yielding (frames done, total) after each one.

        The caller drives the loop (and keeps the UI responsive between frames); closing the
        generator early cancels. Either way the segment ends on the frame that is shown.
        """
        indices = list(range(self.frame_count(volume_node))) if frames is None else [int(f) for f in frames]
        try:
            for done, index in enumerate(indices, 1):
                self._analyze_frame(volume_node, index, analyzer)
                yield done, len(indices)
        finally:
            state = self._volumes.get(volume_node.GetID())
            if state is not None and state.frames:
                shown = self.current_frame_index(volume_node)
                self.show_frame(volume_node, shown if shown in state.frames else min(state.frames))

    def _analyze_frame(self, volume_node, index: int, analyzer=None) -> FrameEntry:
        analyzer = analyzer or self.analyzer
        if self._analyzer is None:
            self._analyzer = analyzer
        start = time.perf_counter()
        pixels = self.frame_from_volume(volume_node, index)
        source = self.source_info(volume_node)
        result = analyzer.analyze(pixels, source.region)
        height, width = result.mask.shape
        region = result.region
        analysed_area = region.area if region is not None else height * width
        entry = FrameEntry(
            float(result.probability),
            result.probability_map.astype(np.float16),
            result.mask > 0,
            float(analyzer.metadata.mask_threshold),
            int(analysed_area),
            time.perf_counter() - start,
            calibrated_probability=float(result.calibrated_probability),
        )
        state = self._volumes[volume_node.GetID()]
        state.frames[index] = entry
        table = self._output(volume_node, ROLE_TABLE)
        self._write_row(volume_node, table, index, entry)
        return entry

    # ---- showing a frame ----------------------------------------------------------------

    def show_frame(self, volume_node, frame_index: int, capture_edits: bool = True) -> FrameReport | None:
        """Put frame ``frame_index``'s mask into the segment and its probability map on display.

        Call when the shown frame changes (sequence browser, slice offset). Corrections an
        annotator made to the previously shown frame are kept with that frame first. A frame not
        analysed yet clears the segment, so no outline from another frame is ever shown.
        """
        state = self._volumes.get(volume_node.GetID())
        if state is None:
            return self._show_reloaded_frame(volume_node, frame_index)
        if capture_edits and state.shown_frame is not None and state.shown_frame != frame_index:
            self._capture_edits(volume_node, state)
        entry = state.frames.get(frame_index)
        threshold = self.current_mask_threshold()
        segmentation = self._output(volume_node, ROLE_SEGMENTATION)
        matrix, k = self._frame_geometry(volume_node, frame_index)
        if entry is None:
            mask = np.zeros(_frame_shape(volume_node), dtype=bool)
            probability_map = np.zeros(mask.shape, dtype=np.float32)
        else:
            mask = entry.edited_mask if entry.edited_mask is not None else entry.mask(threshold)
            probability_map = entry.probability_map.astype(np.float32)
        self._write_segment(segmentation, volume_node, mask, matrix, k)
        segmentation.SetAttribute(SEGMENT_FRAME_ATTRIBUTE, str(frame_index))
        self._write_probability(volume_node, probability_map, matrix, k)
        state.shown_frame = frame_index
        return None if entry is None else self.report(volume_node, frame_index)

    def _show_reloaded_frame(self, volume_node, frame_index: int) -> FrameReport | None:
        """A volume analysed before the scene was loaded: its table rows are in the scene, its masks are not.

        The segment is cleared when it was saved for another frame, so an outline never sits beside
        another frame's score; the report says how to get the outline back.
        """
        segmentation = self.find_output(volume_node, ROLE_SEGMENTATION)
        if segmentation is None:
            return None
        if segmentation.GetAttribute(SEGMENT_FRAME_ATTRIBUTE) != str(frame_index):
            matrix, k = self._frame_geometry(volume_node, frame_index)
            self._write_segment(segmentation, volume_node, np.zeros(_frame_shape(volume_node), bool), matrix, k)
            segmentation.SetAttribute(SEGMENT_FRAME_ATTRIBUTE, str(frame_index))
        report = self.report(volume_node, frame_index)
        if report is None:
            return None
        from dataclasses import replace

        return replace(report, warning=RELOADED_WARNING)

    def _capture_edits(self, volume_node, state: VolumeState) -> None:
        entry = state.frames.get(state.shown_frame)
        if entry is None:
            return
        current = self.segment_mask(volume_node, state.shown_frame)
        if current is not None and not np.array_equal(current, entry.mask(self.current_mask_threshold())):
            entry.edited_mask = current

    # ---- thresholds (no inference) ------------------------------------------------------

    def set_effective_weight(self, w_effective: float, volume_node=None) -> FrameReport | None:
        """Move the decision threshold to W' = ``w_effective``: every BUSAssist table gets the new
        threshold and decisions, from the stored scores; the model is not run."""
        self.effective_weight = float(w_effective)
        for table in self._all_tables(volume_node):
            self._refresh_decisions(table)
        return self._current_report(volume_node)

    def set_mask_threshold(self, threshold: float, volume_node=None, shown_only: bool = False) -> FrameReport | None:
        """Re-threshold the stored probability maps (the model is not run); manual corrections are kept.

        A frame an annotator corrected keeps its correction, including the shown frame's (captured
        first). With ``shown_only`` only the shown frame is re-cut: live feedback while a slider is
        dragged, cheap for a long cine; call again without it when the drag ends to re-cut the
        other unedited frames and their table rows.
        """
        scene = getattr(_slicer(), "mrmlScene", None) if volume_node is None else _node_scene(volume_node)
        volumes = []
        for volume_id, state in list(self._volumes.items()):
            volume = scene.GetNodeByID(volume_id) if scene is not None else None
            if volume is None or not state.frames or (volume_node is not None and volume is not volume_node):
                continue
            if state.shown_frame is not None:
                self._capture_edits(volume, state)  # at the old threshold, before it changes
            volumes.append((volume, state))
        self.mask_threshold = float(threshold)
        for volume, state in volumes:
            table = self._output(volume, ROLE_TABLE)
            indices = [state.shown_frame] if shown_only else list(state.frames)
            for index in indices:
                entry = state.frames.get(index)
                if entry is not None and entry.edited_mask is None:
                    self._write_row(volume, table, index, entry)
            if state.shown_frame is not None:
                self.show_frame(volume, state.shown_frame, capture_edits=False)
        return self._current_report(volume_node)

    def _current_report(self, volume_node) -> FrameReport | None:
        if volume_node is None:
            return None
        state = self._volumes.get(volume_node.GetID())
        frame = state.shown_frame if state is not None and state.shown_frame is not None else None
        return self.report(volume_node, frame)

    # ---- reading results back -----------------------------------------------------------

    def report(self, volume_node, frame_index: int | None = None) -> FrameReport | None:
        """The panel's figures for a frame, from the results table (works after a scene reload)."""
        table = self.find_output(volume_node, ROLE_TABLE)
        if table is None:
            return None
        index = self.current_frame_index(volume_node) if frame_index is None else int(frame_index)
        row = self._find_row(table, index)
        if row is None:
            return None
        values = self._row_values(table, row)
        state = self._volumes.get(volume_node.GetID())
        entry = state.frames.get(index) if state is not None else None
        return FrameReport(
            volume_node.GetName(),
            index,
            self.frame_count(volume_node),
            values,
            values["mask_threshold"],
            self.operating_point(table_node=table),
            values["model_version"],
            entry.seconds if entry is not None else 0.0,
            self.source_info(volume_node).warning,
        )

    def segment_mask(self, volume_node, frame_index: int | None = None, segmentation_node=None) -> np.ndarray | None:
        """The Tumour segment (possibly corrected in Segment Editor) on a frame's pixel grid, (H, W) bool."""
        segmentation_node = segmentation_node or self.find_output(volume_node, ROLE_SEGMENTATION)
        if segmentation_node is None:
            return None
        segmentation = segmentation_node.GetSegmentation()
        segment_id = SEGMENT_ID if segmentation.GetSegment(SEGMENT_ID) is not None else None
        if segment_id is None:
            segment_id = segmentation.GetSegmentIdBySegmentName(SEGMENT_NAME) or None
        if segment_id is None:
            return None
        index = self.current_frame_index(volume_node) if frame_index is None else int(frame_index)
        matrix, k = self._frame_geometry(volume_node, index)
        return _segment_on_grid(segmentation_node, segment_id, volume_node, matrix, k, _frame_shape(volume_node))

    # ---- export for training ------------------------------------------------------------

    def export_for_training(
        self, volume_node, out_dir: str | Path, class_name: str, frame_index: int | None = None
    ) -> ExportResult:
        """Write the shown (or given) frame and its current segment as a BUSI image/mask pair.

        Layout ``<out>/<class>/images/<class> (n).png`` and ``<out>/<class>/mask/<class> (n)_mask.png``
        (0 background, 255 lesion), n the next free number; the three class folders are created so
        the trainer's BUSI reader accepts the folder. A line per export goes to
        ``busassist_exports.jsonl`` (SOP Instance UID, frame, model version; no patient data).
        """
        from PIL import Image

        from busassist.core.preprocessing import to_uint8_range

        if class_name not in EXPORT_CLASSES:
            raise ValueError(f"class must be one of {', '.join(EXPORT_CLASSES)}, not {class_name!r}")
        if not str(out_dir or "").strip() or not Path(out_dir).is_absolute():
            # an empty or relative folder would land in Slicer's working directory
            raise ValueError("choose an export folder first (a full path)")
        index = self.current_frame_index(volume_node) if frame_index is None else int(frame_index)
        pixels = self.frame_from_volume(volume_node, index)
        state = self._volumes.get(volume_node.GetID())
        entry = state.frames.get(index) if state is not None else None
        shown = state is None or state.shown_frame in (None, index)
        if shown:
            mask = self.segment_mask(volume_node, index)
        else:
            mask = entry.edited_mask if entry is not None and entry.edited_mask is not None else None
            if mask is None and entry is not None:
                mask = entry.mask(self.current_mask_threshold())
        if mask is None:
            mask = np.zeros(pixels.shape[:2], dtype=bool)
        if class_name == "normal" and mask.any():
            raise ValueError("a 'normal' image has no lesion: erase the segment or choose benign / malignant")
        if class_name != "normal" and not mask.any():
            raise ValueError(f"a '{class_name}' image needs the lesion outlined: the segment is empty")
        if pixels.dtype != np.uint8:
            grey_or_rgb = pixels[..., :3] if pixels.ndim == 3 else pixels
            pixels = np.rint(np.clip(to_uint8_range(grey_or_rgb.astype(np.float32)), 0, 255)).astype(np.uint8)
        elif pixels.ndim == 3:
            pixels = pixels[..., :3]

        out = Path(out_dir)
        for name in EXPORT_CLASSES:
            (out / name / "images").mkdir(parents=True, exist_ok=True)
            (out / name / "mask").mkdir(parents=True, exist_ok=True)
        number = _next_case_number(out / class_name / "images", class_name)
        stem = f"{class_name} ({number})"
        image_path = out / class_name / "images" / f"{stem}.png"
        mask_path = out / class_name / "mask" / f"{stem}_mask.png"
        _save_png(mask_path, np.where(mask, 255, 0).astype(np.uint8), Image)
        _save_png(image_path, pixels, Image)
        edited = entry is not None and not np.array_equal(mask, entry.mask(self.current_mask_threshold()))
        source = self.source_info(volume_node)
        record = {
            "key": f"{class_name}/images/{stem}.png",
            "sop_instance_uid": source.sop_instance_uid,
            "frame": index,
            "model_version": self._model_facts(self.find_output(volume_node, ROLE_TABLE))[3],
            "malignancy_probability": None if entry is None else round(entry.probability, 6),
            "edited": bool(edited),
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        seg_path, seg_error = self._export_seg(
            volume_node, index, mask, out / "seg" / f"{stem}.seg.dcm", f"{record['model_version']}+annotator"
        )
        record["seg_path"] = None if seg_path is None else str(seg_path.relative_to(out))
        with open(out / EXPORT_MANIFEST, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        return ExportResult(record["key"], image_path, mask_path, bool(edited), seg_path, seg_error)

    def _export_seg(self, volume_node, index: int, mask: np.ndarray, path: Path, version: str):
        """The corrected mask as a DICOM Segmentation referencing the source frame, if there is one."""
        source_path, _ = self._source_dicom(volume_node)
        if source_path is None:
            return None, "the volume was not loaded from a DICOM file"
        try:
            import pydicom

            from busassist.core.dicom_seg import SegmentationError, write_segmentation
        except ImportError as error:
            return None, f"DICOM SEG export needs highdicom ({error})"
        try:
            source = pydicom.dcmread(source_path, stop_before_pixels=True)
            return write_segmentation(source, {index: mask}, version, path), None
        except (SegmentationError, OSError, ValueError) as error:
            return None, str(error)

    # ---- output nodes -------------------------------------------------------------------

    def find_output(self, volume_node, role: str):
        """The output node of ``role`` made for ``volume_node`` (by reference, then by name), or None."""
        scene = volume_node.GetScene()
        if scene is None:
            return None
        class_name = OUTPUT_CLASSES[role]
        named = None
        expected_name = volume_node.GetName() + OUTPUT_SUFFIXES[role]
        for node in _nodes_by_class(scene, class_name):
            if node.GetAttribute(ROLE_ATTRIBUTE) != role:
                continue
            source = node.GetNodeReference(SOURCE_REFERENCE_ROLE)
            if source is not None and source.GetID() == volume_node.GetID():
                return node
            if source is None and named is None and node.GetName() == expected_name:
                named = node
        return named

    def _output(self, volume_node, role: str):
        node = self.find_output(volume_node, role)
        if node is None:
            scene = _node_scene(volume_node)
            node = scene.AddNewNodeByClass(OUTPUT_CLASSES[role], volume_node.GetName() + OUTPUT_SUFFIXES[role])
            node.SetAttribute(ROLE_ATTRIBUTE, role)
            node.SetNodeReferenceID(SOURCE_REFERENCE_ROLE, volume_node.GetID())
            if role == ROLE_SEGMENTATION:
                node.CreateDefaultDisplayNodes()
            elif role == ROLE_TABLE:
                _create_columns(node)
            elif role == ROLE_PROBABILITY:
                # a display layer of this module, not an input: kept out of volume selectors (ours included)
                node.SetHideFromEditors(True)
            self._place_beside(volume_node, node)
        elif node.GetNodeReference(SOURCE_REFERENCE_ROLE) is None:
            node.SetNodeReferenceID(SOURCE_REFERENCE_ROLE, volume_node.GetID())
        if hasattr(node, "SetAndObserveTransformNodeID"):
            node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        if role == ROLE_SEGMENTATION:
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
            _ensure_segment(node)
        elif role == ROLE_TABLE:
            w_p, _, table, version = self._model_facts()
            if self._analyzer is not None:
                node.SetAttribute(W_P_ATTRIBUTE, repr(w_p))
                node.SetAttribute(OPERATING_TABLE_ATTRIBUTE, json.dumps(table))
                node.SetAttribute(MODEL_VERSION_ATTRIBUTE, version)
                node.SetAttribute(MIN_LESION_FRACTION_ATTRIBUTE, repr(self.current_min_lesion_fraction()))
        return node

    def _place_beside(self, volume_node, node) -> None:
        """Put ``node`` under the volume's parent in the subject hierarchy (the study, for DICOM)."""
        slicer = _slicer()
        scene = _node_scene(volume_node)
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        if hierarchy is None:
            return
        invalid = 0
        scene_item = hierarchy.GetSceneItemID()
        parent = scene_item
        volume_item = hierarchy.GetItemByDataNode(volume_node)
        if volume_item != invalid:
            parent = hierarchy.GetItemParent(volume_item)
        if parent in (invalid, scene_item):
            browser, sequence = find_sequence(volume_node)
            for owner in (browser, sequence):
                item = hierarchy.GetItemByDataNode(owner) if owner is not None else invalid
                if item != invalid and hierarchy.GetItemParent(item) not in (invalid, scene_item):
                    parent = hierarchy.GetItemParent(item)
                    break
        if parent == invalid:
            parent = scene_item
        item = hierarchy.GetItemByDataNode(node)
        if item == invalid:
            hierarchy.CreateItem(parent, node)
        else:
            hierarchy.SetItemParent(item, parent)

    def _write_segment(self, segmentation_node, volume_node, mask: np.ndarray, matrix: np.ndarray, k: int) -> None:
        import vtk
        from vtk.util import numpy_support

        slicer = _slicer()
        height, width = mask.shape
        labelmap = slicer.vtkOrientedImageData()
        labelmap.SetExtent(0, width - 1, 0, height - 1, k, k)
        labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
        labelmap.SetImageToWorldMatrix(_vtk_matrix(matrix))
        _ensure_segment(segmentation_node)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.SetBinaryLabelmapToSegment(labelmap, segmentation_node, SEGMENT_ID, logic.MODE_REPLACE):
            raise RuntimeError(f"{segmentation_node.GetName()}: could not write the {SEGMENT_NAME} segment")

    def _write_probability(self, volume_node, probability_map: np.ndarray, matrix: np.ndarray, k: int) -> None:
        node = self._output(volume_node, ROLE_PROBABILITY)
        origin_shift = matrix @ np.array([0.0, 0.0, float(k), 1.0])
        frame_matrix = matrix.copy()
        frame_matrix[:3, 3] = origin_shift[:3]
        node.SetIJKToRASMatrix(_vtk_matrix(frame_matrix))
        update_volume_from_array(node, probability_map.astype(np.float32)[None])
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            if display is not None:
                display.AutoWindowLevelOff()
                display.SetWindowLevelMinMax(0.0, 1.0)
                scene = _node_scene(volume_node)
                for color_id in PROBABILITY_COLOR_NODE_IDS:
                    if scene.GetNodeByID(color_id) is not None:
                        display.SetAndObserveColorNodeID(color_id)
                        break
        display = node.GetDisplayNode()
        if display is not None and not display.GetApplyThreshold():
            # Below PROBABILITY_SHOWN_FROM the overlay is transparent, so it tints the suspect tissue
            # instead of darkening the whole image.
            display.SetLowerThreshold(PROBABILITY_SHOWN_FROM)
            display.SetUpperThreshold(1.0)
            display.ApplyThresholdOn()

    # ---- results table ------------------------------------------------------------------

    def _all_tables(self, volume_node=None) -> list:
        scene = volume_node.GetScene() if volume_node is not None else getattr(_slicer(), "mrmlScene", None)
        if scene is None:
            return []
        return [t for t in _nodes_by_class(scene, "vtkMRMLTableNode") if t.GetAttribute(ROLE_ATTRIBUTE) == ROLE_TABLE]

    def _write_row(self, volume_node, table_node, index: int, entry: FrameEntry) -> None:
        state = self._volumes[volume_node.GetID()]
        threshold_mask = self.current_mask_threshold(table_node)
        reading = read_frame(  # the one function every face uses (core.results)
            entry.mask(threshold_mask),
            entry.probability,
            entry.calibrated_probability,
            self.operating_point(table_node=table_node).threshold,
            entry.analysed_area,
            self.current_min_lesion_fraction(table_node),
            state.source.spacing_mm,
        )
        values = {
            "frame": index,
            **reading.columns(),
            "mask_threshold": threshold_mask,
            "model_version": self._model_facts(table_node)[3],
        }
        row = self._find_row(table_node, index)
        table = table_node.GetTable()
        if row is None:
            row = table.InsertNextBlankRow()
        _set_row(table, row, values)
        table.Modified()
        table_node.Modified()

    def _refresh_decisions(self, table_node) -> None:
        op = self.operating_point(table_node=table_node)
        table = table_node.GetTable()
        if table.GetColumnByName("decision") is None:
            return
        for row in range(table.GetNumberOfRows()):
            values = self._row_values(table_node, row)
            decision = decide(values["malignancy_probability"], bool(values["lesion_detected"]), op.threshold)
            _set_row(table, row, {"threshold": round(op.threshold, 6), "decision": decision.value})
        table.Modified()
        table_node.Modified()

    @staticmethod
    def _find_row(table_node, index: int) -> int | None:
        column = table_node.GetTable().GetColumnByName("frame")
        if column is None:
            return None
        for row in range(column.GetNumberOfTuples()):
            if int(column.GetValue(row)) == index:
                return row
        return None

    @staticmethod
    def _row_values(table_node, row: int) -> dict:
        table = table_node.GetTable()
        values = {}
        for name, kind, _, _ in TABLE_COLUMNS:
            if table.GetColumnByName(name) is None:
                continue
            variant = table.GetValueByName(row, name)
            if kind == "int":
                values[name] = variant.ToInt()
            elif kind == "double":
                values[name] = variant.ToDouble()
            else:
                values[name] = variant.ToString()
        return values


# --------------------------------------------------------------------------------------------
# Module-level helpers of the logic
# --------------------------------------------------------------------------------------------


def _create_columns(table_node) -> None:
    import vtk

    table = table_node.GetTable()
    arrays = {"int": vtk.vtkIntArray, "double": vtk.vtkDoubleArray, "string": vtk.vtkStringArray}
    for name, kind, unit, description in TABLE_COLUMNS:
        if table.GetColumnByName(name) is not None:
            continue
        column = arrays[kind]()
        column.SetName(name)
        table.AddColumn(column)
        if hasattr(table_node, "SetColumnDescription"):
            table_node.SetColumnDescription(name, description)
        if unit and hasattr(table_node, "SetColumnUnitLabel"):
            table_node.SetColumnUnitLabel(name, unit)


def _set_row(table, row: int, values: dict) -> None:
    import vtk

    for name, value in values.items():
        column = table.GetColumnByName(name)
        if column is None:
            continue
        if value == "" and isinstance(column, vtk.vtkDoubleArray):
            value = float("nan")  # not measured (no lesion): empty in results.csv, NaN in the table, never 0
        table.SetValueByName(row, name, vtk.vtkVariant(value))


def _ensure_segment(segmentation_node) -> None:
    """Create the Tumour segment (fixed ID, name, colour, terminology) if the user removed it."""
    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(SEGMENT_ID)
    if segment is None:
        segmentation.AddEmptySegment(SEGMENT_ID, SEGMENT_NAME, list(SEGMENT_COLOR))
        segment = segmentation.GetSegment(SEGMENT_ID)
        if hasattr(segment, "SetNameAutoGenerated"):
            segment.SetNameAutoGenerated(False)
            segment.SetColorAutoGenerated(False)
        segment.SetTag(TERMINOLOGY_TAG, TERMINOLOGY_ENTRY)
    elif not segment.HasTag(TERMINOLOGY_TAG):
        segment.SetTag(TERMINOLOGY_TAG, TERMINOLOGY_ENTRY)


def _frame_shape(volume_node) -> tuple[int, int]:
    """(rows, columns) of the volume's frames."""
    image = volume_node.GetImageData()
    if image is None:
        raise ValueError(f"{volume_node.GetName()}: the volume has no voxels")
    columns, rows, _ = image.GetDimensions()
    return rows, columns


def _segment_on_grid(segmentation_node, segment_id: str, volume_node, matrix: np.ndarray, k: int, shape) -> np.ndarray:
    """A segment as a (H, W) bool array on slice ``k`` of the grid ``matrix`` (the frame's grid).

    Fast path: the internal labelmap already lies on that grid (it does unless someone changed
    the segmentation geometry), so its extent is pasted into the frame. Otherwise the segment is
    exported through a temporary labelmap node resampled to the volume.
    """
    import vtk

    slicer = _slicer()
    height, width = shape
    internal = segmentation_node.GetBinaryLabelmapInternalRepresentation(segment_id)
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if internal is not None:
        internal_matrix = vtk.vtkMatrix4x4()
        internal.GetImageToWorldMatrix(internal_matrix)
        same_grid = np.allclose(
            [[internal_matrix.GetElement(r, c) for c in range(4)] for r in range(4)], matrix, atol=1e-6
        )
        if same_grid:
            mask = np.zeros((height, width), dtype=bool)
            x0, x1, y0, y1, z0, z1 = internal.GetExtent()
            if x1 < x0 or y1 < y0 or z1 < z0 or not z0 <= k <= z1 or internal.GetPointData().GetScalars() is None:
                return mask
            voxels = array_from_image_data(internal)[k - z0] == segment.GetLabelValue()
            xa, xb = max(x0, 0), min(x1, width - 1)
            ya, yb = max(y0, 0), min(y1, height - 1)
            if xb >= xa and yb >= ya:
                mask[ya : yb + 1, xa : xb + 1] = voxels[ya - y0 : yb - y0 + 1, xa - x0 : xb - x0 + 1]
            return mask
    scene = _node_scene(volume_node)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__BUSAssist_temp__")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, volume_node):
            raise RuntimeError(f"{segmentation_node.GetName()}: could not read the segment back")
        array = array_from_image_data(labelmap.GetImageData())
        return np.array(array[k if array.shape[0] > k else 0] > 0)
    finally:
        display = labelmap.GetDisplayNode()
        color = display.GetColorNode() if display is not None else None
        scene.RemoveNode(labelmap)
        if display is not None:
            scene.RemoveNode(display)
        if color is not None and color.GetName().startswith("__BUSAssist_temp__"):
            scene.RemoveNode(color)


_CASE_NAME = re.compile(r"^(?P<cls>benign|malignant|normal) \((?P<n>\d+)\)\.png$")


def _next_case_number(image_dir: Path, class_name: str) -> int:
    numbers = [
        int(match.group("n"))
        for path in image_dir.glob("*.png")
        if (match := _CASE_NAME.match(path.name)) and match.group("cls") == class_name
    ]
    return max(numbers, default=0) + 1


def _save_png(path: Path, array: np.ndarray, image_module) -> None:
    temporary = path.with_name(path.name + ".tmp")
    image_module.fromarray(array).save(temporary, format="PNG")
    temporary.replace(path)


def module_resource(module_dir: str | Path, *parts: str) -> Path:
    """A resource of the Slicer module: ``<module>/Resources/...`` in an installed extension,
    ``<module>/../Resources/...`` in the source tree (the module folder is ``BUSAssist/``)."""
    module_dir = Path(module_dir)
    installed = module_dir.joinpath("Resources", *parts)
    if installed.exists():
        return installed
    source_tree = module_dir.parent.joinpath("Resources", *parts)
    return source_tree if source_tree.exists() else installed


def bench_click_to_segment(path: str | Path, repeats: int = 5, analyzer=None) -> dict:
    """Median and worst milliseconds from "Analyze" to the segment for one frame, through this logic.

    Builds a headless scene (``slicer-core``), loads ``path`` as Slicer would, and times
    ``analyze_volume`` after one warm-up call (the first call also verifies and loads the model).
    """
    headless = create_headless_scene()
    volume = load_volume_file(path, headless.scene)
    logic = BUSAssistMRMLLogic(analyzer)
    start = time.perf_counter()
    logic.analyze_volume(volume)
    first = time.perf_counter() - start
    timings = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        logic.analyze_volume(volume)
        timings.append(time.perf_counter() - start)
    return {
        "file": str(path),
        "first_call_ms": round(first * 1000, 1),
        "median_ms": round(float(np.median(timings)) * 1000, 1),
        "max_ms": round(max(timings) * 1000, 1),
        "repeats": len(timings),
    }
