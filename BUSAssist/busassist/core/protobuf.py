"""A small protobuf wire-format reader: enough to read ONNX model metadata and TF constants without their libraries.

Used by ``core.model_store`` (the ONNX model's metadata_props, inside Slicer without onnxruntime
or onnx) and by the trainer's ImageNet port (a TF frozen graph without TensorFlow).
"""

from __future__ import annotations

from collections.abc import Iterator


class ProtobufFormatError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def _varint(buffer: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(buffer):
            raise ProtobufFormatError("truncated varint")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def iter_fields(buffer: memoryview) -> Iterator[tuple[int, int, object]]:
    """Yield (field number, wire type, value) of one protobuf message; values stay raw."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(buffer, position)
        elif wire == 1:
            value, position = bytes(buffer[position : position + 8]), position + 8
        elif wire == 2:
            length, position = _varint(buffer, position)
            value, position = buffer[position : position + length], position + length
        elif wire == 5:
            value, position = bytes(buffer[position : position + 4]), position + 4
        else:
            raise ProtobufFormatError(f"unsupported protobuf wire type {wire}")
        if position > len(buffer):
            raise ProtobufFormatError("truncated message")
        yield field, wire, value
