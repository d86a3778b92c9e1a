"""Float32 `98770c53` with only its input image rounded to an int8 model's uint8 input grid.

    python reports/int8-error-budget/input_grid.py FP32 INT8 OUT

Copies FP32 with a QuantizeLinear/DequantizeLinear pair on the input, using INT8's input scale and zero
point, and seals it, so that ``fidelity.py`` can score what rounding the input alone costs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from onnx import helper

from busassist.training.export import seal_model


def main(fp32: str, int8: str, out: str) -> None:
    quantised = onnx.load(int8)
    name = quantised.graph.input[0].name
    first = next(node for node in quantised.graph.node if node.op_type == "QuantizeLinear" and node.input[0] == name)
    constants = {t.name: t for t in quantised.graph.initializer}
    model = onnx.load(fp32)
    scale, zero = (onnx.TensorProto(), onnx.TensorProto())
    scale.CopyFrom(constants[first.input[1]])
    zero.CopyFrom(constants[first.input[2]])
    scale.name, zero.name = "input_grid_scale", "input_grid_zero_point"
    model.graph.initializer.extend([scale, zero])
    for node in model.graph.node:
        node.input[:] = ["input_grid_dequantised" if x == name else x for x in node.input]
    model.graph.node.insert(
        0, helper.make_node("DequantizeLinear", ["input_grid_q", scale.name, zero.name], ["input_grid_dequantised"])
    )
    model.graph.node.insert(0, helper.make_node("QuantizeLinear", [name, scale.name, zero.name], ["input_grid_q"]))
    onnx.save(model, out)
    seal_model(Path(out))
    grid = onnx.numpy_helper.to_array(scale), onnx.numpy_helper.to_array(zero)
    print(f"{out}: input rounded with scale {grid[0]} zero point {grid[1]}")


if __name__ == "__main__":
    main(*sys.argv[1:])
