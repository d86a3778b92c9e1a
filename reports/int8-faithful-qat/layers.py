"""Step 0's diagnosis: where the file-read simulation and onnxruntime part, layer by layer (no labels).

    python reports/int8-faithful-qat/layers.py EXPORTER_GRAPH F0_INT8 SPLIT_JSON DATA_ROOT

On the first 4 of the 48 held-out training images it prints, for each rounding place that draws the mask
(encoder, decoder, sums, logits), the share of values that differ by more than half a rounding step and the
largest difference in steps: through the whole network (each side fed its own previous layer), and, for the
encoder and decoder layers and the head, in isolation (the simulation's layer fed onnxruntime's own input to
it, the dequantised output of the place before; the head's last convolution stays in float, as in faithful.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faithful  # noqa: E402


def onnxruntime_values(int8_file: Path, points: dict, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """The dequantised tensor at each rounding place (its last rounding), as onnxruntime computes it."""
    model = onnx.load(str(int8_file))
    graph = model.graph
    quantized = {node.input[0]: node.output[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    dequantized = {node.input[0]: node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    names = {where: dequantized[quantized[grid[-1][0]]] for where, grid in points.items()}
    for name in names.values():
        graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(list(names.values()), {session.get_inputs()[0].name: inputs})
    return dict(zip(names, values))


def steps_apart(a: np.ndarray, b: np.ndarray, scale: float) -> dict:
    apart = np.abs(a - b) / scale
    return {"share_over_half_step": round(float(np.mean(apart > 0.5)), 5), "largest_steps": float(apart.max())}


def main(exporter_graph: str, f0: str, split_json: str, data_root: str) -> None:
    torch.set_num_threads(2)
    _, inputs = faithful.held_out_inputs(Path(split_json), Path(data_root))
    inputs = inputs[:4]
    points = faithful.rounding_points(Path(f0))
    network = faithful.equalised_network(Path(exporter_graph))
    faithful.simulate_file(network, points)
    modules = dict(network.named_modules())
    encoder = [where for where in points if where.startswith("out:encoder.")]
    captured: dict[str, torch.Tensor] = {}
    for where in points:  # after the rounding hooks, so each sees the rounded tensor
        if where.startswith("out:"):
            modules[where[4:]].register_forward_hook(lambda _m, _i, out, w=where: captured.__setitem__(w, out.detach()))
        elif where.startswith("in:"):
            modules[where[3:]].register_forward_pre_hook(lambda _m, a, w=where: captured.__setitem__(w, a[0].detach()))
    with torch.no_grad():
        network(inputs)
    whole = dict(captured)  # a copy: the isolated runs below fire the same hooks
    reference = onnxruntime_values(Path(f0), points, inputs.numpy())
    alone: dict[str, np.ndarray] = {}  # each place computed by the simulation from onnxruntime's input to it
    with torch.no_grad():
        for before, where in zip(encoder, encoder[1:]):
            alone[where] = modules[where[4:]](torch.from_numpy(reference[before])).numpy()
        block_inputs = ["out:encoder.blocks.12.1", "out:segmenter.decoders.0.8"]
        block_inputs += ["in:segmenter.decoders.2", "in:segmenter.decoders.3"]
        for k, block_input in enumerate(block_inputs):
            block = modules[f"segmenter.decoders.{k}"]
            for start, source in (
                (0, block_input),
                (3, f"out:segmenter.decoders.{k}.2"),
                (6, f"out:segmenter.decoders.{k}.5"),
            ):
                place = f"out:segmenter.decoders.{k}.{start + 2}"
                alone[place] = nn.Sequential(*list(block)[start : start + 3])(
                    torch.from_numpy(reference[source])
                ).numpy()
        head = "out:segmenter.head"  # the mask logits, from onnxruntime's rounded sum; the head's last layer in float
        alone[head] = modules["segmenter.head"](torch.from_numpy(reference["in:segmenter.head"])).numpy()
    for where in points:
        if where == "input" or where.startswith("out:classifier") or whole[where].shape != reference[where].shape:
            continue  # the classifier does not draw masks; the head's phase layout differs from PyTorch's
        scale = points[where][-1][1]
        row = {"place": where, "whole network": steps_apart(whole[where].numpy(), reference[where], scale)}
        if where in alone:
            row["in isolation"] = steps_apart(alone[where], reference[where], scale)
        print(json.dumps(row))


if __name__ == "__main__":
    main(*sys.argv[1:])
