"""Port of the ImageNet MobileNetV1 weights from a frozen TF GraphDef (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from busassist.constants import IMAGE_SIZE, NORMALISATION_MEAN, NORMALISATION_STD
from busassist.core.preprocessing import resize
from busassist.training.model import MobileNetV1Encoder
from busassist.training.pretrained import (
    GraphFormatError,
    imagenet_head,
    load_imagenet_encoder,
    read_constants,
)

GRAPH = Path("data/pretrained/mobilenet_v1_1.0_224_imagenet_frozen.pb")
#: 1001-way ImageNet indices (0 = background) of tabby, tiger cat, Persian, Siamese, Egyptian cat.
DOMESTIC_CATS = frozenset({282, 283, 284, 285, 286})


@pytest.fixture(scope="module", autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def graph_path(shared_dir: Path) -> Path:
    path = shared_dir / GRAPH
    if not path.is_file():
        pytest.skip(f"ImageNet MobileNetV1 graph {path} is absent")
    return path


@pytest.fixture(scope="module")
def constants(graph_path: Path) -> dict[str, np.ndarray]:
    return read_constants(graph_path)


def _encoder(constants: dict[str, np.ndarray], channels: int) -> MobileNetV1Encoder:
    encoder = MobileNetV1Encoder(channels)
    load_imagenet_encoder(encoder, constants)
    return encoder.eval()


def _cat_image() -> np.ndarray:
    """skimage's Chelsea, centre-cropped square, each channel resized to 224, as (3, 224, 224) 0..255."""
    skimage_data = pytest.importorskip("skimage.data")
    cat = skimage_data.chelsea().astype(np.float32)
    height, width = cat.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = cat[top : top + side, left : left + side]
    return np.stack([resize(crop[..., c], IMAGE_SIZE, IMAGE_SIZE) for c in range(3)])


def _normalise(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((image - NORMALISATION_MEAN) / NORMALISATION_STD).float()[None]


def test_constants_have_tf_layouts(constants: dict[str, np.ndarray]) -> None:
    assert constants["MobilenetV1/Conv2d_0/weights"].shape == (3, 3, 3, 32)
    assert constants["MobilenetV1/Conv2d_1_depthwise/depthwise_weights"].shape == (3, 3, 32, 1)
    assert constants["MobilenetV1/Conv2d_13_pointwise/weights"].shape == (1, 1, 1024, 1024)
    assert all(v.dtype == np.float32 for k, v in constants.items() if "MobilenetV1/Conv2d" in k)
    weights, biases = imagenet_head(constants)
    assert weights.shape == (1001, 1024)
    assert biases.shape == (1001,)


def test_imagenet_port_recognises_a_cat(constants: dict[str, np.ndarray]) -> None:
    encoder = _encoder(constants, 3)
    with torch.no_grad():
        _, features = encoder(_normalise(_cat_image()))
    assert tuple(features.shape) == (1, 1024, 7, 7)
    pooled = features.mean(dim=(2, 3))[0].numpy().astype(np.float64)
    weights, biases = imagenet_head(constants)
    logits = weights.astype(np.float64) @ pooled + biases
    top5 = [int(i) for i in np.argsort(logits)[::-1][:5]]
    assert DOMESTIC_CATS & set(top5), f"no domestic cat in top-5 {top5}"
    assert top5[0] in DOMESTIC_CATS, f"top-1 {top5[0]} is not a domestic cat (top-5 {top5})"


def test_grey_encoder_equals_rgb_encoder_on_repeated_grey(constants: dict[str, np.ndarray]) -> None:
    grey_encoder = _encoder(constants, 1)
    rgb_encoder = _encoder(constants, 3)
    # A grey (BT.601 luma) version of the cat photograph.
    cat = _cat_image()
    grey = (0.299 * cat[0] + 0.587 * cat[1] + 0.114 * cat[2]).astype(np.float32)
    single = _normalise(grey[None])
    repeated = single.repeat(1, 3, 1, 1)
    with torch.no_grad():
        grey_skips, grey_features = grey_encoder(single)
        rgb_skips, rgb_features = rgb_encoder(repeated)
    assert tuple(grey_features.shape) == (1, 1024, 7, 7)
    assert float(rgb_features.abs().max()) > 0.1  # not a degenerate all-zero comparison
    torch.testing.assert_close(grey_features, rgb_features, atol=1e-3, rtol=1e-4)
    for grey_skip, rgb_skip in zip(grey_skips, rgb_skips):
        torch.testing.assert_close(grey_skip, rgb_skip, atol=1e-3, rtol=1e-4)


def test_loading_copies_batch_norm_statistics(constants: dict[str, np.ndarray]) -> None:
    encoder = _encoder(constants, 3)
    norm = encoder.blocks[12][1][1]
    np.testing.assert_array_equal(
        norm.running_var.numpy(), constants["MobilenetV1/Conv2d_13_pointwise/BatchNorm/moving_variance"]
    )
    depthwise = encoder.blocks[0][0][0]  # stride 1: the conv comes first, no pad
    np.testing.assert_array_equal(
        depthwise.weight.detach().numpy(),
        constants["MobilenetV1/Conv2d_1_depthwise/depthwise_weights"].transpose(2, 3, 0, 1),
    )


def test_missing_constant_raises_graph_format_error(constants: dict[str, np.ndarray]) -> None:
    partial = {k: v for k, v in constants.items() if "Conv2d_7_" not in k}
    with pytest.raises(GraphFormatError):
        load_imagenet_encoder(MobileNetV1Encoder(1), partial)


def test_truncated_graph_raises_graph_format_error(graph_path: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pb"
    truncated.write_bytes(graph_path.read_bytes()[:4097])
    with pytest.raises(GraphFormatError):
        read_constants(truncated)


@pytest.mark.parametrize(
    "payload",
    [
        b"this is not a protobuf graph at all \x00\xff\xfe",
        bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
        b"\x0a\xff\xff\xff\xff\x0f",  # field 1, length-delimited, absurd length
        b"",
    ],
)
def test_garbage_file_raises_graph_format_error(payload: bytes, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(payload)
    with pytest.raises(GraphFormatError):
        read_constants(garbage)


def test_graph_format_error_is_a_value_error() -> None:
    assert issubclass(GraphFormatError, ValueError)


# ---------------------------------------------------------------------------------------------
# The wire-format reader on hand-built GraphDefs (no shared data needed)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field_bytes(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _field_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _const_node(
    name: bytes,
    dims: list[int],
    content: bytes | None = None,
    floats: list[float] | None = None,
    dtype: int = 1,
    op: bytes = b"Const",
) -> bytes:
    shape = b"".join(_field_bytes(2, _field_varint(1, d)) for d in dims)
    tensor = _field_varint(1, dtype) + _field_bytes(2, shape)
    if content is not None:
        tensor += _field_bytes(4, content)
    if floats is not None:
        tensor += _field_bytes(5, np.asarray(floats, dtype="<f4").tobytes())  # packed float_val
    attr_entry = _field_bytes(1, b"value") + _field_bytes(2, _field_bytes(8, tensor))
    dtype_entry = _field_bytes(1, b"dtype") + _field_bytes(2, _field_varint(6, dtype))
    node = _field_bytes(1, name) + _field_bytes(2, op) + _field_bytes(5, dtype_entry) + _field_bytes(5, attr_entry)
    return _field_bytes(1, node)


def test_read_constants_parses_hand_built_graph(tmp_path: Path) -> None:
    kernel = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7.5
    graph = (
        _const_node(b"MobilenetV1/a/weights", [2, 3, 4], content=kernel.astype("<f4").tobytes())
        + _const_node(b"MobilenetV1/b/gamma", [3], floats=[1.5, -2.0, 0.25])
        + _const_node(b"MobilenetV1/c/splat", [2, 2], floats=[0.5])
        + _const_node(b"MobilenetV1/d/shape", [2], content=np.array([-1, 1001], dtype="<i4").tobytes(), dtype=3)
        + _const_node(b"Other/e/weights", [1], floats=[9.0])
        + _const_node(b"MobilenetV1/f/identity", [1], floats=[3.0], op=b"Identity")
        + _field_bytes(4, _field_varint(1, 27))  # a versions message, to be skipped
    )
    path = tmp_path / "tiny.pb"
    path.write_bytes(graph)
    constants = read_constants(path)
    assert set(constants) == {
        "MobilenetV1/a/weights",
        "MobilenetV1/b/gamma",
        "MobilenetV1/c/splat",
        "MobilenetV1/d/shape",
    }
    np.testing.assert_array_equal(constants["MobilenetV1/a/weights"], kernel)
    np.testing.assert_array_equal(constants["MobilenetV1/b/gamma"], np.array([1.5, -2.0, 0.25], dtype=np.float32))
    np.testing.assert_array_equal(constants["MobilenetV1/c/splat"], np.full((2, 2), 0.5, dtype=np.float32))
    np.testing.assert_array_equal(constants["MobilenetV1/d/shape"], np.array([-1, 1001], dtype=np.int32))
    assert constants["MobilenetV1/d/shape"].dtype == np.int32
    assert set(read_constants(path, prefix="Other/")) == {"Other/e/weights"}


def test_read_constants_without_mobilenet_constants_raises(tmp_path: Path) -> None:
    path = tmp_path / "other.pb"
    path.write_bytes(_const_node(b"ResNet/w", [1], floats=[1.0]))
    with pytest.raises(GraphFormatError):
        read_constants(path)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x08\x01", id="node-field-as-varint"),
        pytest.param(_field_bytes(1, _field_bytes(1, b"\xff\xfe")), id="node-name-not-utf8"),
        pytest.param(
            _const_node(b"MobilenetV1/w", [2, 2], content=np.zeros(3, dtype="<f4").tobytes()),
            id="content-size",
        ),
        pytest.param(_const_node(b"MobilenetV1/w", [1], content=b"\x00\x00\x80"), id="content-partial-float"),
    ],
)
def test_malformed_graph_raises_graph_format_error(payload: bytes, tmp_path: Path) -> None:
    path = tmp_path / "malformed.pb"
    path.write_bytes(payload)
    with pytest.raises(GraphFormatError):
        read_constants(path)
