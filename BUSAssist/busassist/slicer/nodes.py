"""MRML nodes and VTK data as BUSAssist writes them: names, roles, attributes, and small helpers.

Everything the scene holds for BUSAssist (the Tumour segment and its terminology, the probability
map, the results table and the attributes that survive a scene reload) is named here; the helpers
move arrays in and out of VTK and build volumes the way Slicer's readers do. ``slicer`` and
``vtk`` are imported inside functions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from busassist.core.results import READING_COLUMNS
from busassist.core.training_pairs import EXPORT_CLASSES, EXPORT_MANIFEST  # noqa: F401 - names of the package

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


def module_resource(module_dir: str | Path, *parts: str) -> Path:
    """A resource of the Slicer module: ``<module>/Resources/...`` in an installed extension,
    ``<module>/../Resources/...`` in the source tree (the module folder is ``BUSAssist/``)."""
    module_dir = Path(module_dir)
    installed = module_dir.joinpath("Resources", *parts)
    if installed.exists():
        return installed
    source_tree = module_dir.parent.joinpath("Resources", *parts)
    return source_tree if source_tree.exists() else installed
