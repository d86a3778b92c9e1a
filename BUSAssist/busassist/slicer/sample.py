"""The bundled sample study in Slicer: registered with Sample Data, loaded with its DICOM reference kept."""

from __future__ import annotations

import logging
from pathlib import Path

from busassist.slicer.nodes import remember_source

SAMPLE_NAME = "BUSAssistSample"
SAMPLE_FILE = "sample_1_benign.dcm"  # a frame on which the shipped model outlines a lesion
#: SHA-256 of the bundled sample study (Resources/SampleData); Testing/Python checks it.
SAMPLE_SHA256 = "bd86dffcc3f14d7259101ea60949aa7c5d21958629d90859d24725200e3c8ac3"

_registered = False


def register_sample_data(sample: Path, icon: Path) -> None:
    """Register the bundled sample study with the Sample Data module (a local file: works offline)."""
    global _registered
    if _registered:
        return
    import SampleData

    if not sample.exists():
        logging.warning(f"BUSAssist: sample study {sample} is missing")
        return
    _registered = True
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="BUSAssist",
        sampleName=SAMPLE_NAME,
        thumbnailFileName=str(icon),
        uris=sample.as_uri(),
        fileNames=SAMPLE_FILE,
        checksums="SHA256:" + SAMPLE_SHA256,
        nodeNames=SAMPLE_NAME,
        loadFileType="VolumeFile",
    )


def load_sample_volume(sample: Path):
    """The sample study as a volume: through Sample Data when registered, else straight from the file.

    Sample Data removes the storage node after loading, so the DICOM reference is kept on the node
    (``remember_source``): without it the ultrasound-region crop is lost and the annotations analysed.
    """
    import slicer

    try:
        import SampleData

        node = SampleData.downloadSample(SAMPLE_NAME)
        if node is not None:
            remember_source(node, sample)
            return node
    except Exception as error:  # noqa: BLE001 - fall back to the bundled file
        logging.info(f"BUSAssist: Sample Data could not provide the sample ({error}); loading the file")
    node = slicer.util.loadVolume(str(sample), {"name": SAMPLE_NAME, "singleFile": True})
    remember_source(node, sample)
    return node
