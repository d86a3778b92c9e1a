"""Build the bundled sample study: BUSI test-split images wrapped as ultrasound DICOM.

Each image is placed inside a larger frame with scanner-style annotations in the border and a
Sequence of Ultrasound Regions that declares where the tissue image is, as a real scanner does,
so the sample exercises region cropping and mapping the mask back to the full frame. BUSI
carries no calibration, so the regions declare no physical units (measurements stay in pixels).
Images come from the *test* split, never from data the model was trained on.

Run: ``python -m busassist.training.sample_study --data ../shared/data/busi --out Resources/SampleData``
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from busassist.training.busi import discover, load_image, near_duplicate_groups, stratified_group_split

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
BORDER = (48, 64)  # rows above, columns left of the tissue region
UID_ROOT = "1.2.826.0.1.3680043.10.1084."  # sample UIDs derived deterministically below


def _uid(name: str) -> str:
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[name])


def framed(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Put the image in a bigger black frame with bright 'annotation' marks; return frame and region."""
    top, left = BORDER
    height, width = image.shape[:2]
    frame = np.zeros((height + top + 32, width + left + 48) + image.shape[2:], dtype=np.uint8)
    frame[top : top + height, left : left + width] = image
    frame[8:20, 8:120] = 220  # a label box, like a scanner's preset text
    frame[top : top + height, 20:28] = (
        np.linspace(255, 0, height, dtype=np.uint8)[:, None]
        if image.ndim == 2
        else np.linspace(255, 0, height, dtype=np.uint8)[:, None, None]
    )  # a grey bar
    return frame, (left, top, left + width - 1, top + height - 1)


def ultrasound_dataset(
    frame: np.ndarray, region: tuple[int, int, int, int], name: str, number: int, compress: bool
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = _uid(name)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = US_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid("study")
    ds.SeriesInstanceUID = _uid("series")
    ds.PatientName = "BUSAssist^Sample"
    ds.PatientID = "BUSASSIST-SAMPLE"
    ds.StudyDescription = "BUSAssist sample breast ultrasound (BUSI test split)"
    ds.SeriesDescription = "Breast US"
    ds.Modality = "US"
    ds.BodyPartExamined = "BREAST"
    ds.InstanceNumber = number
    ds.ImageComments = f"BUSI {name}"
    ds.Rows, ds.Columns = frame.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if frame.ndim == 3:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
    item = Dataset()
    item.RegionSpatialFormat = 1  # 2D
    item.RegionDataType = 1  # tissue
    item.RegionFlags = 0
    item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1, item.RegionLocationMaxY1 = region
    item.PhysicalUnitsXDirection = 0  # none: BUSI is not calibrated
    item.PhysicalUnitsYDirection = 0
    item.PhysicalDeltaX = 0.0
    item.PhysicalDeltaY = 0.0
    ds.SequenceOfUltrasoundRegions = Sequence([item])
    ds.PixelData = frame.tobytes()
    if compress:
        ds.compress(RLELossless, generate_instance_uid=False)
    return ds


def build(data_root: Path, out: Path) -> list[Path]:
    """Write one benign, one malignant and one normal test-split case as US DICOM into ``out``."""
    cases = discover(data_root)
    _, _, test = stratified_group_split(cases, near_duplicate_groups(data_root / "near_duplicates.json"))
    out.mkdir(parents=True, exist_ok=True)
    written, provenance = [], {}
    for number, category in enumerate(("benign", "malignant", "normal"), start=1):
        case = next(cases[i] for i in test if cases[i].category == category)
        image = load_image(case)
        frame, region = framed(image)
        ds = ultrasound_dataset(frame, region, case.key, number, compress=(category == "malignant"))
        path = out / f"sample_{number}_{category}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
        provenance[path.name] = {
            "busi_image": case.key,
            "region_x0y0x1y1": list(region),
            "transfer_syntax": str(ds.file_meta.TransferSyntaxUID.name),
        }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = os.environ.get("BUSASSIST_DATA")
    parser.add_argument(
        "--data", type=Path, default=Path(data) if data else None, help="BUSI root folder (default: $BUSASSIST_DATA)"
    )
    parser.add_argument("--out", type=Path, default=Path("Resources/SampleData"))
    args = parser.parse_args()
    if args.data is None or not args.data.is_dir():
        where = f"{args.data}: not found" if args.data else "no BUSI folder given"
        parser.error(f"{where} (give --data DIR or set BUSASSIST_DATA)")
    for path in build(args.data, args.out):
        print(path)


if __name__ == "__main__":
    main()
