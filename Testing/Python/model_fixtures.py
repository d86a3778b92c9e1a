"""Test helpers: a small but realistic EMT-Net ONNX model, and ultrasound test frames.

This is a plain module, not a conftest. ``Testing/Python`` has no ``__init__.py``, so pytest's
default ("prepend") import mode puts the folder on ``sys.path`` and test modules can simply
``from model_fixtures import ...``. A test module that needs the exported model registers the
session fixture with::

    pytest_plugins = ["model_fixtures"]

which provides ``emtnet_onnx`` (a ``FixtureModel``: the ONNX path with its ``.sha256`` beside it,
and the PyTorch network it was exported from). The export takes ~10 s, so it happens once per
test session however many modules use it.

The model is an untrained ``EMTNet`` (``torch.manual_seed(0)``) whose batch-norm statistics are
calibrated by a few train-mode forward passes over real BUSI images (cumulative averages,
``momentum=None``), or over smooth random images when the shared data folder is absent. Without
that calibration the default running statistics (mean 0, variance 1) make activations explode
or vanish through 27 layers and the logits are degenerate; with it the outputs spread around
0.5 like a real model's and parity tests are meaningful.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Same location as ``conftest.SHARED_DIR``.
BUSI_ROOT = REPO_ROOT / ".." / "shared" / "data" / "busi"

#: Real BUSI frames: (category, count) of the test inputs and of the batch-norm calibration set
#: (three forward passes of four images). Images are taken in numeric order of their file names,
#: the test inputs first, so the two sets never overlap and every run sees the same pixels.
#: Numbers are not assumed contiguous: part of BUSI is held out of the shared folder.
BUSI_TEST_COUNTS = (("benign", 2), ("malignant", 2))
BUSI_CALIBRATION_COUNTS = (("benign", 5), ("malignant", 3), ("normal", 4))


def busi_image_paths(category: str) -> list[Path]:
    """``<category>/images/<category> (n).png`` files in increasing n (empty when absent)."""
    folder = BUSI_ROOT / category / "images"
    pattern = re.compile(rf"^{category} \((\d+)\)\.png$")
    numbered = [(int(m.group(1)), p) for p in folder.glob("*.png") if (m := pattern.match(p.name))]
    return [p for _, p in sorted(numbered)]


def busi_selection(calibration: bool) -> list[Path] | None:
    """The test or calibration images, or None when the shared BUSI folder cannot supply them."""
    selected = []
    for category, count in BUSI_CALIBRATION_COUNTS if calibration else BUSI_TEST_COUNTS:
        skip = dict(BUSI_TEST_COUNTS).get(category, 0) if calibration else 0
        paths = busi_image_paths(category)[skip : skip + count]
        if len(paths) < count:
            return None
        selected += paths
    return selected


def busi_available() -> bool:
    return busi_selection(False) is not None and busi_selection(True) is not None


def load_png(path: Path) -> np.ndarray:
    """A PNG as stored: (H, W) grey or (H, W, 3) RGB uint8."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image).copy()


def smooth_random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A speckled, smoothly varying grey image with a dark blob: an ultrasound stand-in (uint8)."""
    from busassist.core.preprocessing import resize

    coarse = rng.random((height // 32 + 2, width // 32 + 2)).astype(np.float32)
    smooth = resize(coarse, height, width)
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    blob = np.exp(-(((yy - cy) / (0.12 * height)) ** 2 + ((xx - cx) / (0.15 * width)) ** 2))
    speckle = rng.gamma(4.0, 0.25, size=(height, width))
    image = (40 + 150 * smooth) * (1 - 0.8 * blob) * speckle
    return np.clip(image, 0, 255).astype(np.uint8)


def sample_frames(calibration: bool = False, seed: int = 0) -> list[np.ndarray]:
    """Real BUSI frames (4 test or 12 calibration images) when the shared data is present, else
    smooth random frames of similar sizes."""
    paths = busi_selection(calibration)
    if paths is not None:
        return [load_png(path) for path in paths]
    count = sum(n for _, n in (BUSI_CALIBRATION_COUNTS if calibration else BUSI_TEST_COUNTS))
    rng = np.random.default_rng(seed + int(calibration))
    shapes = [(int(rng.integers(400, 560)), int(rng.integers(480, 720))) for _ in range(count)]
    return [smooth_random_image(rng, h, w) for h, w in shapes]


def network_batch(frames: list[np.ndarray]) -> np.ndarray:
    """Frames through the shared preprocessing: (N, 1, S, S) float32."""
    from busassist.core.preprocessing import preprocess

    return np.stack([preprocess(frame)[0] for frame in frames]).astype(np.float32)


@dataclass
class FixtureModel:
    """The exported test model and the network it came from."""

    path: Path  # emtnet.onnx, with emtnet.onnx.sha256 beside it
    network: object  # busassist.training.model.EMTNet in eval mode
    training_after_export: bool  # network.training right after export_onnx returned


def build_test_model(path: Path, passes: int = 3, seed: int = 0) -> FixtureModel:
    """Seeded EMT-Net, BN statistics calibrated on ``passes`` batches of 4 frames, exported with checksum."""
    import torch

    from busassist.core.model_store import ModelMetadata, write_checksum
    from busassist.training.export import export_onnx
    from busassist.training.model import EMTNet

    frames = sample_frames(calibration=True, seed=seed)
    batches = [network_batch(frames[i * 4 : i * 4 + 4]) for i in range(passes)]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a training run may be using the CPU
    try:
        torch.manual_seed(seed)
        network = EMTNet()
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative moving average over the calibration passes
                module.reset_running_stats()
        network.train()
        with torch.no_grad():
            for batch in batches:
                network(torch.from_numpy(batch))
        network.eval()
        with warnings.catch_warnings():
            # Noise from the legacy TorchScript exporter that export_onnx deliberately uses.
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message=".*legacy TorchScript", category=DeprecationWarning)
            export_onnx(network, path, ModelMetadata(model_version="test"))
    finally:
        torch.set_num_threads(previous_threads)
    # export_onnx puts the network back into training mode (see test_export_parity); a forward
    # pass in that mode would use batch statistics and silently update the calibrated ones.
    training_after_export = network.training
    network.eval()
    write_checksum(Path(path))
    return FixtureModel(Path(path), network, training_after_export)


@pytest.fixture(scope="session")
def emtnet_onnx(tmp_path_factory: pytest.TempPathFactory) -> FixtureModel:
    """Session-wide test model (see the module docstring)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    return build_test_model(tmp_path_factory.mktemp("model") / "emtnet.onnx")


def build_int8_test_model(
    fp32: Path, path: Path, reduce_range: bool = True, full_range_depthwise: bool = False
) -> Path:
    """A 7-bit int8 form of a fixture model, quantised as ``tools quantize --reduce-range`` does (static QDQ,
    per-channel weights, uint8 activations) and marked and sealed as that tool marks its files.
    ``reduce_range=False``: 8-bit weights everywhere; ``full_range_depthwise``: 8 bits for the depthwise
    convolutions only (``--full-range-depthwise``).

    For the tests of int8 handling (runtime choice, answers without VNNI): a release bundles an int8 model
    only when one passed its rule, so those tests cannot rely on the bundled one.
    """
    import onnx

    from busassist.core.model_store import read_metadata
    from busassist.training.quantize import TrainingImageReader, depthwise_weights, mark_int8, quantize_qdq

    frames = sample_frames(calibration=True)
    metadata = read_metadata(fp32)
    full_range = depthwise_weights(onnx.load(str(fp32)).graph) if full_range_depthwise else []
    reader = TrainingImageReader(frames, metadata.input_size)
    quantize_qdq(fp32, path, reader, "minmax", reduce_range=reduce_range, full_range_weights=full_range)
    quantization = {"method": "minmax", "images": len(frames), "reduce_range": reduce_range, "weight_type": "int8"}
    if full_range_depthwise:
        quantization["full_range_depthwise"] = len(full_range)
    mark_int8(Path(path), metadata, quantization)
    return Path(path)


@pytest.fixture(scope="session")
def int8_onnx(emtnet_onnx: FixtureModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session-wide 7-bit int8 form of ``emtnet_onnx`` (``build_int8_test_model``)."""
    return build_int8_test_model(emtnet_onnx.path, tmp_path_factory.mktemp("int8") / "emtnet.onnx")
