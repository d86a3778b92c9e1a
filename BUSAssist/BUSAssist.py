"""BUSAssist: breast-ultrasound tumour outline and malignancy score (EMT-Net) in 3D Slicer.

A thin shell: the module description, the panel's wiring and drawing. What each control does and
what the panel shows is decided by ``busassist.presenter.Presenter`` (Qt-free); the MRML work by
``busassist.slicer`` (tested against the ``slicer-core`` wheel); the numbers by the core's result
model (``busassist.core.results``), the same as the command line's results.csv.

No ``from __future__ import annotations`` here: ``parameterNodeWrapper`` reads the annotations.
Must stay importable on Python 3.9 (Slicer 5.8).
"""

import os
import pathlib
from typing import Annotated

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from busassist import slicer as busassist_slicer
from busassist.constants import EFFECTIVE_WEIGHT_MAX, EFFECTIVE_WEIGHT_MIN, MASK_THRESHOLD, MODEL_FILENAME, W_P
from busassist.presenter import Presenter
from busassist.slicer.install import ensure_dependencies
from busassist.slicer.sample import SAMPLE_FILE, load_sample_volume, register_sample_data

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))


def resource(*parts):
    """A file of Resources/: beside the module when installed, at the repository root in a checkout."""
    return busassist_slicer.module_resource(MODULE_DIR, *parts)


def registerSampleData():
    register_sample_data(resource("SampleData", SAMPLE_FILE), resource("Icons", "BUSAssist.png"))


class BUSAssist(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and help."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BUSAssist"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["BUSAssist developers"]
        self.parent.helpText = (
            "Outlines the tumour in a breast-ultrasound frame and scores its malignancy with the EMT-Net "
            "multitask network, on the CPU. Load a study (DICOM browser, drag-and-drop, or a PNG), choose it "
            "as input and press <b>Analyze</b>: the tumour appears as the <i>Tumour</i> segment of "
            "'&lt;volume&gt; BUSAssist', the score and measurements in the panel and in the results table. "
            "The <b>effective weight W'</b> slider moves the decision threshold (W' = W_p = 3 is the plain 0.5 "
            "threshold; higher W' favours sensitivity) and shows the validation sensitivity and specificity "
            "of each position. Correct the mask in Segment Editor and use <b>Export for training</b> to add "
            "the frame to a fine-tuning set.<br><br>"
            "BUSAssist is a research tool and a second reader. It is not a medical device; every result "
            "needs a radiologist's review."
        )
        self.parent.acknowledgementText = (
            "EMT-Net: Shi et al., <i>EMT-NET: Efficient multitask network for computer-aided diagnosis of "
            "breast cancer</i>. Training data: BUSI, Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. "
            "<i>Dataset of breast ultrasound images</i>. Data in Brief 28 (2020) 104863, "
            "doi:10.1016/j.dib.2019.104863. Encoder initialised from Google's MobileNetV1 ImageNet weights "
            "(Apache 2.0)."
        )
        icon = resource("Icons", "BUSAssist.png")
        if icon.exists():
            self.parent.icon = qt.QIcon(str(icon))
        slicer.app.connect("startupCompleted()", registerSampleData)


@parameterNodeWrapper
class BUSAssistParameterNode:
    """The panel's settings, saved with the scene."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    outputSegmentation: slicer.vtkMRMLSegmentationNode  # None: BUSAssist creates "<volume> BUSAssist"
    effectiveWeight: Annotated[float, WithinRange(EFFECTIVE_WEIGHT_MIN, EFFECTIVE_WEIGHT_MAX)] = W_P
    maskThreshold: Annotated[float, WithinRange(0.05, 0.95)] = MASK_THRESHOLD
    showProbability: bool = True
    exportClass: Annotated[str, Choice(list(busassist_slicer.EXPORT_CLASSES))] = "benign"
    exportFolder: pathlib.Path = pathlib.Path.home() / "BUSAssist-training"


class BUSAssistWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the panel's controls to the presenter and draws its readout; decides nothing itself."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self.presenter = self._parameterNode = self._guiTag = None
        self._frameSource = None
        self._applied = {}
        self._maskTimer = self._timer(400, self._releaseMaskThreshold, singleShot=True)  # the slider rested
        self._runTimer = self._timer(0, self._runStep)  # one frame per tick: the panel stays responsive

    @staticmethod
    def _timer(interval, slot, singleShot=False):
        timer = qt.QTimer()
        timer.setSingleShot(singleShot)
        timer.setInterval(interval)
        timer.connect("timeout()", slot)
        return timer

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(str(resource("UI", "BUSAssist.ui")))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = BUSAssistLogic()
        self.presenter = Presenter(self.logic.mrml, lambda: load_sample_volume(resource("SampleData", SAMPLE_FILE)))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for button, slot in (
            (self.ui.analyzeButton, self.onAnalyze),
            (self.ui.analyzeAllButton, self.onAnalyzeAll),
            (self.ui.cancelButton, lambda: self._draw(self.presenter.cancel_all())),
            (self.ui.loadSampleButton, self.onLoadSample),
            (self.ui.exportButton, self.onExport),
        ):
            button.connect("clicked(bool)", slot)
        self.initializeParameterNode()

    def cleanup(self):
        self._runTimer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self._runTimer.stop()
        self.presenter.select_volume(None)
        self.setParameterNode(None)
        self.logic.mrml.forget()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if volume and not volume.GetAttribute(busassist_slicer.ROLE_ATTRIBUTE):
                self._parameterNode.inputVolume = volume

    def setParameterNode(self, node):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode, self._applied = node, {}
        if node:
            self._guiTag = node.connectGui(self.ui)
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    # ---- controls -> presenter ----------------------------------------------------------------

    def onParameterNodeModified(self, caller=None, event=None):
        node = self._parameterNode
        if node is None:
            return
        if node.inputVolume is not self.presenter.volume:
            self._observeFrames(node.inputVolume)
            self.presenter.select_volume(node.inputVolume, self.shownFrameIndex(node.inputVolume))
        if self._changed("output", node.outputSegmentation):
            self.presenter.choose_output(node.outputSegmentation)
        if self._changed("weight", node.effectiveWeight):
            self.presenter.set_effective_weight(node.effectiveWeight)
        if self._changed("mask", node.maskThreshold):
            self.presenter.set_mask_threshold(node.maskThreshold, dragging=True)
            self._maskTimer.start()
        if self._changed("probability", node.showProbability):
            self._showProbability()
        self._draw(self.presenter.readout())

    def _changed(self, key, value):
        changed = self._applied.get(key) != value
        self._applied[key] = value
        return changed

    def _releaseMaskThreshold(self):
        self._draw(self.presenter.set_mask_threshold(self._parameterNode.maskThreshold))

    def _observeFrames(self, volume):
        if self._frameSource is not None:
            self.removeObserver(self._frameSource, vtk.vtkCommand.ModifiedEvent, self.onFrameSourceModified)
        self._frameSource = None
        if volume is None:
            return
        browser, _ = busassist_slicer.find_sequence(volume)
        if browser is None and self.logic.mrml.frame_count(volume) > 1:
            browser = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
        if browser is not None:
            self._frameSource = browser
            self.addObserver(browser, vtk.vtkCommand.ModifiedEvent, self.onFrameSourceModified)

    def shownFrameIndex(self, volume):
        """The frame on screen: the sequence browser's item, or the red slice through a multi-frame volume."""
        if volume is None:
            return 0
        browser, _ = busassist_slicer.find_sequence(volume)
        if browser is not None:
            return self.logic.mrml.current_frame_index(volume)
        sliceNode = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
        if self.logic.mrml.frame_count(volume) <= 1 or sliceNode is None:
            return 0
        center = tuple(sliceNode.GetSliceToRAS().GetElement(row, 3) for row in range(3))
        return busassist_slicer.frame_index_at_ras(volume, center)

    def onFrameSourceModified(self, caller=None, event=None):
        if self.presenter.volume is not None:
            self._draw(self.presenter.frame_changed(self.shownFrameIndex(self.presenter.volume)))

    def onLoadSample(self):
        with slicer.util.tryWithErrorDisplay("Could not load the BUSAssist sample.", waitCursor=True):
            readout = self.presenter.load_sample()
            self._parameterNode.inputVolume = self.presenter.volume
            slicer.util.setSliceViewerLayers(background=self.presenter.volume, fit=True)
            self._draw(readout)

    def onAnalyze(self):
        if self.presenter.volume is None or not self.logic.prepare(parent=slicer.util.mainWindow()):
            return
        with slicer.util.tryWithErrorDisplay("BUSAssist analysis failed.", waitCursor=True):
            self._draw(self.presenter.analyze(self.shownFrameIndex(self.presenter.volume)))
            self._showResults()

    def onAnalyzeAll(self):
        if self.presenter.volume is None or not self.logic.prepare(parent=slicer.util.mainWindow()):
            return
        self.ui.progressBar.maximum = self.logic.mrml.frame_count(self.presenter.volume)
        self.ui.progressBar.value = 0
        self._draw(self.presenter.start_all())
        self._runTimer.start()

    def _runStep(self):
        readout, done, _ = self.presenter.step_all()
        if readout.running:
            self.ui.progressBar.value = done
        else:
            self._runTimer.stop()
            self._showResults()
            self._showTable()
        self._draw(readout)

    def _showTable(self):
        """A whole cine analysed: its per-frame results table in a table view of the layout."""
        table = self.logic.mrml.find_output(self.presenter.volume, busassist_slicer.ROLE_TABLE)
        if table is None or slicer.app.layoutManager() is None:
            return
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()

    def onExport(self):
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Export for training failed.", waitCursor=True):
            self._draw(self.presenter.export(node.exportFolder, node.exportClass))

    # ---- drawing --------------------------------------------------------------------------------

    def _showResults(self):
        segmentation = self.logic.mrml.find_output(self.presenter.volume, busassist_slicer.ROLE_SEGMENTATION)
        if segmentation is not None and segmentation.GetDisplayNode() is not None:
            segmentation.GetDisplayNode().SetVisibility(True)
        self._showProbability()

    def _showProbability(self):
        volume = self.presenter.volume
        probability = self.logic.mrml.find_output(volume, busassist_slicer.ROLE_PROBABILITY) if volume else None
        if probability is None:
            return
        show = bool(self._parameterNode.showProbability)
        slicer.util.setSliceViewerLayers(
            background=volume, foreground=probability if show else None, foregroundOpacity=0.35 if show else 0.0
        )

    def _draw(self, readout):
        ui = self.ui
        ui.scoreLabel.text, ui.decisionLabel.text = readout.score, readout.decision
        ui.measurementsLabel.text, ui.frameLabel.text = readout.measurements, readout.frame
        ui.operatingPointLabel.text = readout.operating_point
        ui.statusLabel.text = "\n".join(text for text in (readout.status, readout.warning, readout.model) if text)
        ui.analyzeButton.enabled, ui.exportButton.enabled = readout.can_analyze, readout.can_export
        ui.analyzeAllButton.enabled = readout.can_analyze_all
        ui.progressBar.visible = ui.cancelButton.visible = readout.running
        if ui.logTextEdit.toPlainText() != "\n".join(readout.log):
            ui.logTextEdit.setPlainText("\n".join(readout.log))


def _dicomFileForInstance(uid):
    database = getattr(slicer, "dicomDatabase", None)
    return database.fileForInstance(uid) if database is not None else None


class BUSAssistLogic(ScriptedLoadableModuleLogic):
    """Slicer-side logic: owns the one ``BUSAssistMRMLLogic`` (and so the one onnxruntime session)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.mrml = busassist_slicer.BUSAssistMRMLLogic(
            model_path=resource("Models", MODEL_FILENAME), dicom_file_for_instance=_dicomFileForInstance
        )

    def getParameterNode(self):
        return BUSAssistParameterNode(super().getParameterNode())

    def prepare(self, parent=None):
        """Install onnxruntime if needed (asking first) and load the checksum-verified model once."""
        if not ensure_dependencies(str(resource("requirements.txt")), parent):
            return False
        if self.mrml.has_analyzer:
            return True
        from busassist.core.model_store import ModelError

        try:
            with slicer.util.WaitCursor():
                _ = self.mrml.analyzer  # verifies the SHA-256 and creates the onnxruntime session
        except ModelError as error:
            slicer.util.errorDisplay(f"The BUSAssist model cannot be used: {error}", parent=parent)
            return False
        return True

    def analyze(self, volumeNode, frameIndex=None):
        return self.mrml.analyze_volume(volumeNode, frameIndex)


class BUSAssistTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_AnalyzeSample()

    def test_AnalyzeSample(self):
        import numpy as np

        from busassist.core.io import read_frames

        self.delayDisplay("Loading the BUSAssist sample")
        registerSampleData()
        volume = load_sample_volume(resource("SampleData", SAMPLE_FILE))
        self.assertIsNotNone(volume)
        logic = BUSAssistLogic()
        self.assertTrue(logic.prepare(), "onnxruntime or the model is not available")

        self.delayDisplay("Analysing")
        report = logic.analyze(volume)
        segmentation = logic.mrml.find_output(volume, busassist_slicer.ROLE_SEGMENTATION)
        self.assertEqual(segmentation.GetName(), volume.GetName() + " BUSAssist")
        segment = segmentation.GetSegmentation().GetSegment(busassist_slicer.SEGMENT_ID)
        self.assertIsNotNone(segment)
        self.assertEqual(segment.GetName(), "Tumour")
        mask = logic.mrml.segment_mask(volume)

        core = logic.mrml.analyzer.analyze(next(read_frames(resource("SampleData", SAMPLE_FILE))))
        self.assertTrue(np.array_equal(mask, core.mask > 0))
        self.assertAlmostEqual(report.probability, core.probability, places=6)
        self.assertGreater(int(mask.sum()), 0)

        self.delayDisplay("Moving the decision threshold")
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        low = logic.mrml.set_effective_weight(EFFECTIVE_WEIGHT_MAX, volume)
        high = logic.mrml.set_effective_weight(EFFECTIVE_WEIGHT_MIN, volume)
        self.assertLess(low.threshold, high.threshold)
        logic.analyze(volume)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.delayDisplay("Test passed")
