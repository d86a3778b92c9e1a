"""BUSAssist: breast-ultrasound tumour outline and malignancy score (EMT-Net) in 3D Slicer.

This file is kept thin: the module description, the panel and the Slicer-only glue (dependency
installation, sample data, observers). Everything that touches MRML lives in
``busassist.slicer`` (Qt-free, tested against the ``slicer-core`` wheel); the model runs in
``busassist.core.inference`` (numpy + onnxruntime on the CPU).

No ``from __future__ import annotations`` here: ``parameterNodeWrapper`` reads the annotations.
Must stay importable on Python 3.9 (Slicer before 5.7).
"""

import importlib
import logging
import os
import pathlib
from typing import Annotated, Optional

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

from busassist import slicer as slicer_logic
from busassist.constants import EFFECTIVE_WEIGHT_MAX, EFFECTIVE_WEIGHT_MIN, MASK_THRESHOLD, MODEL_FILENAME, W_P

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
SAMPLE_NAME = "BUSAssistSample"
SAMPLE_FILE = "sample_1_benign.dcm"  # a frame on which the shipped model outlines a lesion
#: SHA-256 of the bundled sample study (Resources/SampleData); Testing/Python checks it.
SAMPLE_SHA256 = "bd86dffcc3f14d7259101ea60949aa7c5d21958629d90859d24725200e3c8ac3"


def resource(*parts):
    """A file of Resources/: beside the module when installed, at the repository root in a checkout."""
    return slicer_logic.module_resource(MODULE_DIR, *parts)


def modelPath():
    return resource("Models", MODEL_FILENAME)


#
# BUSAssist
#


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


_sampleRegistered = False


def registerSampleData():
    """Register the bundled sample study with the Sample Data module (a local file: works offline)."""
    global _sampleRegistered
    if _sampleRegistered:
        return
    import SampleData

    sample = resource("SampleData", SAMPLE_FILE)
    if not sample.exists():
        logging.warning(f"BUSAssist: sample study {sample} is missing")
        return
    _sampleRegistered = True
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="BUSAssist",
        sampleName=SAMPLE_NAME,
        thumbnailFileName=str(resource("Icons", "BUSAssist.png")),
        uris=sample.as_uri(),
        fileNames=SAMPLE_FILE,
        checksums="SHA256:" + SAMPLE_SHA256,
        nodeNames=SAMPLE_NAME,
        loadFileType="VolumeFile",
    )


def loadSampleVolume():
    """The sample study as a volume: through Sample Data when registered, else straight from the file."""
    try:
        import SampleData

        node = SampleData.downloadSample(SAMPLE_NAME)
        if node is not None:
            # Sample Data removes the storage node after loading: keep the DICOM reference on the
            # node, or the ultrasound-region crop is lost and the annotations get analysed.
            from busassist.slicer import remember_source

            remember_source(node, resource("SampleData", SAMPLE_FILE))
            return node
    except Exception as error:  # noqa: BLE001 - fall back to the bundled file
        logging.info(f"BUSAssist: Sample Data could not provide the sample ({error}); loading the file")
    from busassist.slicer import remember_source

    sample = resource("SampleData", SAMPLE_FILE)
    node = slicer.util.loadVolume(str(sample), {"name": SAMPLE_NAME, "singleFile": True})
    remember_source(node, sample)
    return node


def ensureDependencies(parent=None):
    """True when onnxruntime can be imported; otherwise ask, install Resources/requirements.txt, offer a restart.

    requirements.txt lists onnxruntime only: a package Slicer ships is never upgraded. Released
    Slicer 5.12 has ``slicer.packaging.pip_ensure`` (which asks, and reports its own failures: no
    second dialog here); older versions get a confirmation here and ``slicer.util.pip_install``.
    """
    try:
        import onnxruntime  # noqa: F401

        return True
    except ImportError:
        pass
    requirements = str(resource("requirements.txt"))
    packaging = None
    for name in ("slicer.packaging", "slicer.pydeps"):  # pydeps: the name in some 5.11 previews
        try:
            candidate = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(candidate, "pip_ensure") and hasattr(candidate, "load_requirements"):
            packaging = candidate
            break
    try:
        if packaging is not None:
            packaging.pip_ensure(packaging.load_requirements(requirements), requester="BUSAssist")
        else:
            if not slicer.util.confirmOkCancelDisplay(
                "BUSAssist runs its model with onnxruntime, which is not installed in Slicer's Python.\n\n"
                "Install it now (about 15 MB download)?",
                "BUSAssist - install Python packages",
                parent=parent,
            ):
                return False
            with slicer.util.WaitCursor():
                slicer.util.pip_install(["-r", requirements])
    except Exception as error:  # noqa: BLE001 - declined, or pip failed
        if packaging is not None:  # pip_ensure has shown its own message: one dialog per failure
            logging.warning(f"BUSAssist: onnxruntime not installed ({error})")
        else:
            slicer.util.errorDisplay(
                "Installing onnxruntime failed. Check the network connection, or install it from Slicer's "
                f"Python console with: slicer.util.pip_install('onnxruntime')\n\nDetails: {error}",
                parent=parent,
            )
        return False
    if slicer.util.confirmYesNoDisplay(
        "onnxruntime was installed. Restart Slicer now? (recommended: a package installed into a running "
        "application is only reliable after a restart; your scene will be closed)",
        "BUSAssist - restart Slicer",
        parent=parent,
    ):
        slicer.util.restart()
        return False
    importlib.invalidate_caches()
    try:
        import onnxruntime  # noqa: F401
    except ImportError as error:
        slicer.util.errorDisplay(
            f"onnxruntime was installed but cannot be loaded in this session ({error}). Restart Slicer.",
            parent=parent,
        )
        return False
    return True


#
# Parameter node (saved with the scene)
#


@parameterNodeWrapper
class BUSAssistParameterNode:
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    effectiveWeight: Annotated[float, WithinRange(EFFECTIVE_WEIGHT_MIN, EFFECTIVE_WEIGHT_MAX)] = W_P
    maskThreshold: Annotated[float, WithinRange(0.05, 0.95)] = MASK_THRESHOLD
    showProbability: bool = True
    exportClass: Annotated[str, Choice(list(slicer_logic.EXPORT_CLASSES))] = "benign"
    exportFolder: pathlib.Path = pathlib.Path.home() / "BUSAssist-training"


#
# Widget
#


class BUSAssistWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._appliedWeight = None
        self._appliedMaskThreshold = None
        #: Re-cuts all unedited frames once the mask-threshold slider has rested (a cine would freeze
        #: the panel if every frame were re-cut on every step of a drag).
        self._maskThresholdTimer = qt.QTimer()
        self._maskThresholdTimer.setSingleShot(True)
        self._maskThresholdTimer.setInterval(400)
        self._maskThresholdTimer.connect("timeout()", self._applyMaskThresholdToAllFrames)
        self._appliedShowProbability = None
        self._observedVolume = None
        self._observedFrameSource = None
        self._shownFrame = None
        self._run = None
        self._runTimer = None
        self._cancelRequested = False

    def resourcePath(self, filename):
        return str(resource(*filename.split("/")))

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BUSAssist.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = BUSAssistLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.analyzeButton.connect("clicked(bool)", self.onAnalyze)
        self.ui.analyzeAllButton.connect("clicked(bool)", self.onAnalyzeAll)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()
        self.initializeParameterNode()

    def _applyMaskThresholdToAllFrames(self):
        node = self._parameterNode
        if node is not None and node.inputVolume is not None:
            self.logic.mrml.set_mask_threshold(node.maskThreshold, node.inputVolume)
            self._updateResults(node.inputVolume)

    def cleanup(self):
        self._stopRun()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event):
        self._stopRun()
        self.setParameterNode(None)
        self._observeFrames(None)
        self.logic.mrml.forget()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if volume and not volume.GetAttribute(slicer_logic.ROLE_ATTRIBUTE):
                self._parameterNode.inputVolume = volume

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    # ---- parameter changes: thresholds live, no inference ----------------------------------

    def onParameterNodeModified(self, caller=None, event=None):
        node = self._parameterNode
        if node is None:
            return
        volume = node.inputVolume
        running = self._run is not None
        self.ui.analyzeButton.enabled = bool(volume) and not running
        self.ui.analyzeAllButton.enabled = bool(volume) and not running and self.logic.mrml.frame_count(volume) > 1
        self.ui.exportButton.enabled = bool(volume) and not running
        if volume is not self._observedVolume:
            self._observeFrames(volume)
        mrml = self.logic.mrml
        if self._appliedWeight != node.effectiveWeight:
            self._appliedWeight = node.effectiveWeight
            mrml.set_effective_weight(node.effectiveWeight, volume)
        if self._appliedMaskThreshold != node.maskThreshold:
            # Live on the shown frame while the slider moves; every other unedited frame once it rests.
            self._appliedMaskThreshold = node.maskThreshold
            mrml.set_mask_threshold(node.maskThreshold, volume, shown_only=True)
            self._maskThresholdTimer.start()
        if self._appliedShowProbability != node.showProbability:
            self._appliedShowProbability = node.showProbability
            self._showProbability(volume)
        self.ui.operatingPointLabel.text = mrml.operating_point(node.effectiveWeight).describe()
        self._updateResults(volume)

    # ---- frame following (sequence browser item, or slice of a multi-frame volume) ----------

    def _observeFrames(self, volume):
        if self._observedFrameSource is not None:
            self.removeObserver(self._observedFrameSource, vtk.vtkCommand.ModifiedEvent, self.onFrameSourceModified)
        self._observedVolume = volume
        self._observedFrameSource = None
        self._shownFrame = None
        if volume is None:
            return
        browser, _ = slicer_logic.find_sequence(volume)
        if browser is not None:
            self._observedFrameSource = browser
        elif self.logic.mrml.frame_count(volume) > 1:
            self._observedFrameSource = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
        if self._observedFrameSource is not None:
            self.addObserver(self._observedFrameSource, vtk.vtkCommand.ModifiedEvent, self.onFrameSourceModified)

    def shownFrameIndex(self, volume):
        """The frame on screen: the sequence browser's item, or the red slice through a multi-frame volume."""
        browser, _ = slicer_logic.find_sequence(volume)
        if browser is not None or self.logic.mrml.frame_count(volume) <= 1:
            return self.logic.mrml.current_frame_index(volume) if browser is not None else 0
        sliceNode = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
        if sliceNode is None:
            return 0
        sliceToRAS = sliceNode.GetSliceToRAS()
        center = tuple(sliceToRAS.GetElement(row, 3) for row in range(3))
        return slicer_logic.frame_index_at_ras(volume, center)

    def onFrameSourceModified(self, caller=None, event=None):
        volume = self._observedVolume
        if volume is None or self._run is not None:
            return
        index = self.shownFrameIndex(volume)
        if index != self._shownFrame:
            self._shownFrame = index
            self.logic.mrml.show_frame(volume, index)
            self._updateResults(volume)

    # ---- actions ------------------------------------------------------------------------

    def onLoadSample(self):
        with slicer.util.tryWithErrorDisplay("Could not load the BUSAssist sample.", waitCursor=True):
            volume = loadSampleVolume()
            self._parameterNode.inputVolume = volume
            slicer.util.setSliceViewerLayers(background=volume, fit=True)

    def onAnalyze(self):
        volume = self._parameterNode.inputVolume
        if not volume or not self.logic.prepare(parent=slicer.util.mainWindow()):
            return
        with slicer.util.tryWithErrorDisplay("BUSAssist analysis failed.", waitCursor=True):
            index = self.shownFrameIndex(volume)
            self._shownFrame = index
            report = self.logic.analyze(volume, index)
            self.ui.statusLabel.text = f"Analysed in {1000 * report.seconds:.0f} ms."
            self._afterResults(volume)

    def onAnalyzeAll(self):
        volume = self._parameterNode.inputVolume
        if not volume or not self.logic.prepare(parent=slicer.util.mainWindow()):
            return
        count = self.logic.mrml.frame_count(volume)
        self._cancelRequested = False
        self._run = self.logic.mrml.iter_analyze_frames(volume)
        self.ui.progressBar.maximum = count
        self.ui.progressBar.value = 0
        self.ui.progressBar.show()
        self.ui.cancelButton.show()
        self.ui.statusLabel.text = f"Analysing {count} frames..."
        self.onParameterNodeModified()
        # One frame per timer tick: the event loop keeps running between frames (UI responsive).
        self._runTimer = qt.QTimer()
        self._runTimer.setInterval(0)
        self._runTimer.connect("timeout()", self._runStep)
        self._runTimer.start()

    def _runStep(self):
        if self._run is None:
            return
        if self._cancelRequested:
            self._finishRun("Cancelled.")
            return
        try:
            done, total = next(self._run)
        except StopIteration:
            self._finishRun("All frames analysed.")
            return
        except Exception as error:  # noqa: BLE001 - shown to the user, the run stops
            self._finishRun("Stopped by an error.")
            slicer.util.errorDisplay(f"BUSAssist analysis failed: {error}")
            return
        self.ui.progressBar.value = done
        self.ui.statusLabel.text = f"Analysed {done} of {total} frames."

    def onCancel(self):
        self._cancelRequested = True

    def _stopRun(self):
        if self._runTimer is not None:
            self._runTimer.stop()
            self._runTimer = None
        if self._run is not None:
            self._run.close()  # the logic puts the segment back on the frame that is shown
            self._run = None

    def _finishRun(self, message):
        self._stopRun()
        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()
        self.ui.statusLabel.text = message
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        if volume is not None:
            self._shownFrame = self.shownFrameIndex(volume)
            self.logic.mrml.show_frame(volume, self._shownFrame)
            self._afterResults(volume)
        self.onParameterNodeModified()

    def onExport(self):
        volume = self._parameterNode.inputVolume
        if not volume:
            return
        folder = self._parameterNode.exportFolder
        with slicer.util.tryWithErrorDisplay("Export for training failed.", waitCursor=True):
            result = self.logic.mrml.export_for_training(
                volume, folder, self._parameterNode.exportClass, self.shownFrameIndex(volume)
            )
            self.ui.statusLabel.text = result.describe(folder)

    # ---- display --------------------------------------------------------------------------

    def _afterResults(self, volume):
        segmentation = self.logic.mrml.find_output(volume, slicer_logic.ROLE_SEGMENTATION)
        if segmentation is not None and segmentation.GetDisplayNode() is not None:
            segmentation.GetDisplayNode().SetVisibility(True)
        self._showProbability(volume)
        self._updateResults(volume)

    def _showProbability(self, volume):
        if volume is None:
            return
        probability = self.logic.mrml.find_output(volume, slicer_logic.ROLE_PROBABILITY)
        if probability is None:
            return
        show = bool(self._parameterNode.showProbability)
        slicer.util.setSliceViewerLayers(
            background=volume, foreground=probability if show else None, foregroundOpacity=0.35 if show else 0.0
        )

    def _updateResults(self, volume):
        report = self.logic.mrml.report(volume, self._shownFrame) if volume is not None else None
        if report is None:
            for label in (self.ui.scoreLabel, self.ui.decisionLabel, self.ui.measurementsLabel, self.ui.frameLabel):
                label.text = "-"
            return
        self.ui.scoreLabel.text = f"{report.probability:.3f}"
        self.ui.decisionLabel.text = f"{report.decision_text} (threshold {report.threshold:.3f})"
        self.ui.measurementsLabel.text = report.measurement_text()
        self.ui.frameLabel.text = f"{report.frame_index + 1} of {report.frame_count}"
        self.ui.operatingPointLabel.text = report.operating_point.describe()
        if report.warning:
            self.ui.statusLabel.text = report.warning


#
# Logic
#


def _dicomFileForInstance(uid):
    database = getattr(slicer, "dicomDatabase", None)
    return database.fileForInstance(uid) if database is not None else None


class BUSAssistLogic(ScriptedLoadableModuleLogic):
    """Slicer-side logic: owns the one ``BUSAssistMRMLLogic`` (and so the one onnxruntime session)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.mrml = slicer_logic.BUSAssistMRMLLogic(
            model_path=modelPath(), dicom_file_for_instance=_dicomFileForInstance
        )

    def getParameterNode(self):
        return BUSAssistParameterNode(super().getParameterNode())

    def prepare(self, parent=None):
        """Install onnxruntime if needed (asking first) and load the checksum-verified model once."""
        if not ensureDependencies(parent):
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

    def analyze(self, volumeNode, frameIndex: Optional[int] = None):
        return self.mrml.analyze_volume(volumeNode, frameIndex)


#
# Test (runs inside Slicer)
#


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
        volume = loadSampleVolume()
        self.assertIsNotNone(volume)
        logic = BUSAssistLogic()
        self.assertTrue(logic.prepare(), "onnxruntime or the model is not available")

        self.delayDisplay("Analysing")
        report = logic.analyze(volume)
        segmentation = logic.mrml.find_output(volume, slicer_logic.ROLE_SEGMENTATION)
        self.assertEqual(segmentation.GetName(), volume.GetName() + " BUSAssist")
        segment = segmentation.GetSegmentation().GetSegment(slicer_logic.SEGMENT_ID)
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
