"""ImageNet initialisation: read TF-slim MobileNetV1 constants from a frozen GraphDef, no TensorFlow.

A frozen graph is a protobuf ``GraphDef`` whose ``Const`` nodes hold the weights as
``TensorProto`` values. Only four message types are needed (GraphDef, NodeDef, AttrValue,
TensorProto and its shape), so a small wire-format reader plus numpy is enough, and the trainer
does not drag TensorFlow in. Field numbers are those of tensorflow/core/framework/*.proto.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from busassist.core.protobuf import ProtobufFormatError, iter_fields
from busassist.training.model import MobileNetV1Encoder

_TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}
PREFIX = "MobilenetV1/"
HEAD_WEIGHTS = "MobilenetV1/Logits/Conv2d_1c_1x1/weights"
HEAD_BIASES = "MobilenetV1/Logits/Conv2d_1c_1x1/biases"


class GraphFormatError(ProtobufFormatError):
    """The file is not a GraphDef with the MobileNetV1 constants this port expects."""


def _parse_tensor(buffer: memoryview) -> np.ndarray:
    dtype_code, dims, content, floats = 0, [], None, []
    for field, wire, value in iter_fields(buffer):
        if field == 1:
            dtype_code = value
        elif field == 2:  # TensorShapeProto
            for shape_field, _, dim in iter_fields(value):
                if shape_field == 2:
                    size = next((v for f, _, v in iter_fields(dim) if f == 1), 0)
                    dims.append(size)
        elif field == 4:
            content = bytes(value)
        elif field == 5:  # float_val: packed (wire 2) or single (wire 5)
            data = bytes(value) if wire == 2 else value
            floats.extend(np.frombuffer(data, dtype="<f4").tolist())
    dtype = _TF_DTYPES.get(dtype_code)
    if dtype is None:
        raise GraphFormatError(f"unsupported tensor dtype {dtype_code}")
    count = int(np.prod(dims)) if dims else 1
    if content is not None:
        array = np.frombuffer(content, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    else:
        array = np.asarray(floats, dtype=dtype)
        if array.size == 1 and count > 1:  # a splat constant
            array = np.full(count, array[0], dtype=dtype)
    return array.reshape(dims)


def read_constants(path: Path, prefix: str = PREFIX) -> dict[str, np.ndarray]:
    """All ``Const`` tensors of a frozen GraphDef whose node name starts with ``prefix``."""
    try:
        return _read_constants(memoryview(Path(path).read_bytes()), path, prefix)
    except ProtobufFormatError as error:
        raise GraphFormatError(f"{path}: {error}") from None
    except (TypeError, ValueError, UnicodeDecodeError) as error:  # well-formed varints, wrong structure
        raise GraphFormatError(f"{path}: malformed GraphDef ({error.__class__.__name__}: {error})") from None


def _read_constants(data: memoryview, path: Path, prefix: str) -> dict[str, np.ndarray]:
    constants: dict[str, np.ndarray] = {}
    for field, _, node in iter_fields(data):
        if field != 1:
            continue
        name = op = ""
        tensor = None
        for node_field, _, value in iter_fields(node):
            if node_field == 1:
                name = bytes(value).decode()
            elif node_field == 2:
                op = bytes(value).decode()
            elif node_field == 5:  # attr map entry {1: key, 2: AttrValue}
                entry = dict((f, v) for f, _, v in iter_fields(value))
                if bytes(entry.get(1, b"")) == b"value" and 2 in entry:
                    tensor = next((v for f, _, v in iter_fields(entry[2]) if f == 8), None)
        if op == "Const" and name.startswith(prefix) and tensor is not None:
            constants[name] = _parse_tensor(tensor)
    if not constants:
        raise GraphFormatError(f"no constants named {prefix}* (not a MobileNetV1 graph)")
    return constants


def _bn(constants: dict[str, np.ndarray], scope: str) -> dict[str, np.ndarray]:
    return {
        "weight": constants[f"{scope}/BatchNorm/gamma"],
        "bias": constants[f"{scope}/BatchNorm/beta"],
        "running_mean": constants[f"{scope}/BatchNorm/moving_mean"],
        "running_var": constants[f"{scope}/BatchNorm/moving_variance"],
    }


def _load_conv_bn(block: torch.nn.Sequential, kernel: np.ndarray, bn: dict[str, np.ndarray]) -> None:
    conv = next(m for m in block if isinstance(m, torch.nn.Conv2d))
    norm = next(m for m in block if isinstance(m, torch.nn.BatchNorm2d))
    if tuple(conv.weight.shape) != kernel.shape:
        raise GraphFormatError(f"shape {kernel.shape} does not fit {tuple(conv.weight.shape)}")
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
        for key, value in bn.items():
            getattr(norm, key).copy_(torch.from_numpy(value.astype(np.float32)))


def load_imagenet_encoder(encoder: MobileNetV1Encoder, constants: dict[str, np.ndarray]) -> None:
    """Copy MobileNetV1 weights into ``encoder``, converting TF layouts to PyTorch's.

    HWIO kernels become OIHW, depthwise [3, 3, C, 1] becomes [C, 1, 3, 3]. For a grey
    (1-channel) encoder the RGB stem kernel is summed over its input channels, which gives
    exactly the response the RGB network has to a grey image repeated on R, G and B.
    """
    try:
        stem = constants[PREFIX + "Conv2d_0/weights"].transpose(3, 2, 0, 1)
        if encoder.in_channels == 1:
            stem = stem.sum(axis=1, keepdims=True)
        _load_conv_bn(encoder.stem, stem, _bn(constants, PREFIX + "Conv2d_0"))
        for index, block in enumerate(encoder.blocks, start=1):
            scope = f"{PREFIX}Conv2d_{index}"
            depthwise = constants[f"{scope}_depthwise/depthwise_weights"].transpose(2, 3, 0, 1)
            pointwise = constants[f"{scope}_pointwise/weights"].transpose(3, 2, 0, 1)
            _load_conv_bn(block[0], depthwise, _bn(constants, f"{scope}_depthwise"))
            _load_conv_bn(block[1], pointwise, _bn(constants, f"{scope}_pointwise"))
    except KeyError as missing:
        raise GraphFormatError(f"the graph lacks the constant {missing}") from None


def imagenet_head(constants: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The original 1001-class logits layer as a (1001, 1024) matrix and bias (class 0: background)."""
    weights = constants[HEAD_WEIGHTS][0, 0].T
    return weights, constants[HEAD_BIASES]
