"""Exact rewrites of the exported ONNX graph that make it faster on a CPU without changing its answers.

The decoder's five stride-2 transposed convolutions (3x3, padding 1, output padding 1) cost about
40 % of the network on onnxruntime, and the batch norm that follows each one is not folded into it.
Each of them equals four "phase" convolutions on the un-upsampled input followed by ``DepthToSpace``
(the sub-pixel form, Shi et al. 2016): output pixel (2i + a, 2j + b) only ever sees input pixels
(i, j), (i, j + 1), (i + 1, j) and (i + 1, j + 1), through the kernel taps listed in ``PHASE_TAPS``.
The four phases are written as one 2x2 convolution with four times the output channels (the taps a
phase does not use are zero) and the following batch norm is folded into its weights and bias.

Only the arithmetic order changes, so the logits agree to float rounding (the parity test holds them
to 1e-4 and to no flipped mask pixel). Export applies this; the inference path never needs ``onnx``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: For output phase ``a`` (row parity) and input offset ``d`` (0: row i, 1: row i + 1), the row of the
#: 3x3 transposed kernel that connects them, or None: an even output row 2i sees only input row i through
#: kernel row 1; an odd row 2i + 1 sees row i through kernel row 2 and row i + 1 through kernel row 0.
PHASE_TAPS: dict[tuple[int, int], int | None] = {(0, 0): 1, (0, 1): None, (1, 0): 2, (1, 1): 0}

#: The attributes of the transposed convolutions this rewrite handles (every one EMT-Net has).
_REWRITABLE = {"strides": [2, 2], "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}

#: Recorded in the model's metadata (``busassist.graph_form``) by the export.
GRAPH_FORM = "subpixel-v1"


def subpixel_weights(transposed: np.ndarray) -> np.ndarray:
    """(Cin, Cout, 3, 3) ConvTranspose weights -> (4 * Cout, Cin, 2, 2) phase-convolution weights.

    Output channel ``(2 * a + b) * Cout + c`` holds phase (a, b) of channel c: the order ONNX's
    ``DepthToSpace`` in DCR mode reads them back in.
    """
    cin, cout = transposed.shape[:2]
    phases = np.zeros((2, 2, cout, cin, 2, 2), dtype=transposed.dtype)
    for a in (0, 1):
        for b in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    ky, kx = PHASE_TAPS[(a, dy)], PHASE_TAPS[(b, dx)]
                    if ky is not None and kx is not None:
                        phases[a, b, :, :, dy, dx] = transposed[:, :, ky, kx].T
    return phases.reshape(4 * cout, cin, 2, 2)


def interleave_weights(channels: int) -> np.ndarray:
    """Weights of a per-channel 2x2 stride-2 ConvTranspose that places phase p of channel c at (p // 2, p % 2).

    Every output pixel receives exactly one input value times 1.0, so the interleave is exact. It does
    what ``DepthToSpace`` does, at a quarter of onnxruntime's ``DepthToSpace`` time.
    """
    weights = np.zeros((4 * channels, 1, 2, 2), dtype=np.float32)
    for phase in range(4):
        weights[phase::4, 0, phase // 2, phase % 2] = 1.0
    return weights


def _attributes(node: onnx.NodeProto) -> dict:
    return {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every tensor whose value the graph fixes: initializers, Constant outputs and Identity copies of them.

    The PyTorch exporter shares identical weights (e.g. untrained batch norms) through Identity nodes.
    """
    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


@dataclass
class _Graph:
    """What a rewrite may read and change: the graph, its constants, readers and outputs, the nodes it took."""

    graph: onnx.GraphProto
    constants: dict[str, np.ndarray]
    consumers: dict[str, list[onnx.NodeProto]]
    outputs: set[str]
    taken: set[int] = field(default_factory=set)  # ids of later nodes a rewrite absorbed

    def only_reader(self, tensor: str, op_type: str) -> onnx.NodeProto | None:
        """The single node reading ``tensor`` if it is an ``op_type`` and ``tensor`` is not a graph output."""
        readers = self.consumers.get(tensor, [])
        if len(readers) == 1 and readers[0].op_type == op_type and tensor not in self.outputs:
            return readers[0]
        return None


#: A rewrite: a node -> the nodes that replace it, or None to keep it.
Rewrite = Callable[[_Graph, onnx.NodeProto], Optional[list]]


def _apply(model: onnx.ModelProto, rewrite: Rewrite) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with ``rewrite`` applied to every node, and how many nodes it replaced."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    state = _Graph(graph, _constants(graph), consumers, {output.name for output in graph.output})
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in list(graph.node):
        if id(node) in state.taken:
            continue
        replacement = rewrite(state, node)
        nodes.extend([node] if replacement is None else replacement)
        count += replacement is not None
    del graph.node[:]
    graph.node.extend(nodes)
    _prune(graph)
    del graph.value_info[:]  # shapes of the removed intermediate tensors would now be stale
    onnx.checker.check_model(model)
    return model, count


def _phase_conv(
    graph: onnx.GraphProto, prefix: str, source: str, output: str, weights: np.ndarray, bias: np.ndarray, pads: list
) -> onnx.NodeProto:
    """A stride-1 Conv node computing the phase channels, its float32 weights and bias added to ``graph``."""
    graph.initializer.extend(
        [
            numpy_helper.from_array(weights.astype(np.float32), f"{prefix}_w"),
            numpy_helper.from_array(bias.astype(np.float32), f"{prefix}_b"),
        ]
    )
    kernel = list(weights.shape[2:])
    return helper.make_node(
        "Conv", [source, f"{prefix}_w", f"{prefix}_b"], [output], name=f"{prefix}_conv", kernel_shape=kernel, pads=pads
    )


def _interleave(graph: onnx.GraphProto, prefix: str, source: str, output: str, channels: int) -> onnx.NodeProto:
    """The exact per-channel 2x2 stride-2 scatter from phase channels to the doubled grid."""
    graph.initializer.append(numpy_helper.from_array(interleave_weights(channels), f"{prefix}/interleave_w"))
    return helper.make_node(
        "ConvTranspose",
        [source, f"{prefix}/interleave_w"],
        [output],
        name=f"{prefix}/interleave",
        kernel_shape=[2, 2],
        strides=[2, 2],
        group=channels,
    )


def _prune(graph: onnx.GraphProto) -> None:
    """Drop initializers and constant-producing nodes nothing reads any more (repeatedly, for chains)."""
    outputs = {output.name for output in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [
            node
            for node in graph.node
            if node.op_type in ("Constant", "Identity") and not any(name in used for name in node.output)
        ]
        for node in dead:
            graph.node.remove(node)
        if not dead:
            break
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _rewritable(node: onnx.NodeProto) -> bool:
    attributes = _attributes(node)
    if attributes.get("group", 1) != 1 or list(attributes.get("dilations", [1, 1])) != [1, 1]:
        return False
    return all(list(attributes.get(name, [])) == value for name, value in _REWRITABLE.items())


def subpixel_transposed_convs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every rewritable ConvTranspose (+ its batch norm) in sub-pixel form.

    Returns the new model and how many layers were rewritten.
    """
    return _apply(model, _subpixel)


def _subpixel(state: _Graph, node: onnx.NodeProto) -> list | None:
    constants = state.constants
    has_bias = len(node.input) > 2 and bool(node.input[2])
    if (
        node.op_type != "ConvTranspose"
        or not _rewritable(node)
        or node.input[1] not in constants
        or (has_bias and node.input[2] not in constants)
    ):
        return None
    weights = constants[node.input[1]].astype(np.float64)
    cout = weights.shape[1]
    bias = constants[node.input[2]].astype(np.float64) if has_bias else np.zeros(cout)
    scale, shift = np.ones(cout), np.zeros(cout)
    output = node.output[0]
    norm = state.only_reader(output, "BatchNormalization")
    if norm is not None and all(name in constants for name in norm.input[1:5]):
        gamma, beta, mean, var = (constants[name].astype(np.float64) for name in norm.input[1:5])
        scale = gamma / np.sqrt(var + _attributes(norm).get("epsilon", 1e-5))
        shift = beta - mean * scale
        output = norm.output[0]
        state.taken.add(id(norm))
    prefix = node.name or node.output[0]
    # channel c * 4 + phase: the order a grouped (per channel) 2x2 stride-2 interleave reads
    phase_weights = subpixel_weights(weights) * np.tile(scale, 4)[:, None, None, None]
    phase_weights = phase_weights.reshape(4, cout, *phase_weights.shape[1:]).swapaxes(0, 1)
    phase_bias = np.tile(bias * scale + shift, 4).reshape(4, cout).T
    phases = f"{prefix}/subpixel_phases"
    nodes = [
        _phase_conv(
            state.graph,
            f"{prefix}/subpixel",
            node.input[0],
            phases,
            phase_weights.reshape(4 * cout, -1, 2, 2),
            phase_bias.reshape(-1),
            pads=[0, 0, 1, 1],
        )
    ]
    relu = state.only_reader(output, "Relu")
    if relu is not None:
        # ReLU commutes with the interleave; before it, onnxruntime fuses it into the convolution
        nodes.append(helper.make_node("Relu", [phases], [f"{prefix}/subpixel_relu"], name=f"{prefix}/relu"))
        phases, output = f"{prefix}/subpixel_relu", relu.output[0]
        state.taken.add(id(relu))
    nodes.append(_interleave(state.graph, prefix, phases, output, cout))
    return nodes


#: A convolution after an interleave is moved into the phase domain only when it has at most this many
#: output channels: there it does 4x the multiply-adds, which pays only for thin layers (the 32 -> 1 head)
#: whose full-resolution form is memory-bound.
PHASE_DOMAIN_MAX_OUTPUTS = 8


def phase_domain_kernel(kernel: np.ndarray) -> np.ndarray:
    """(Cout, C, 3, 3) stride-1 kernel on the full grid -> (4 * Cout, 4 * C, 3, 3) kernel on the phase grid.

    Full-resolution pixel (2i + a, 2j + b) of channel c is phase-grid pixel (i, j) of channel c * 4 + 2a + b.
    Output phase (a', b') reads full row 2i + a' + ky - 1 = 2(i + di) + a, so each tap lands on one
    phase-grid offset (di, dj) in {-1, 0, 1}^2 and one input phase (a, b).
    """
    cout, cin = kernel.shape[:2]
    folded = np.zeros((cout, 4, cin, 4, 3, 3), dtype=np.float64)
    for out_a in (0, 1):
        for out_b in (0, 1):
            for ky in range(3):
                for kx in range(3):
                    row, col = out_a + ky - 1, out_b + kx - 1
                    a, di = row % 2, row // 2
                    b, dj = col % 2, col // 2
                    folded[:, 2 * out_a + out_b, :, 2 * a + b, di + 1, dj + 1] += kernel[:, :, ky, kx]
    return folded.reshape(4 * cout, 4 * cin, 3, 3)


def fold_convs_into_phases(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Move a thin 3x3 convolution that follows an interleave to before it (see ``phase_domain_kernel``).

    The big interleave of the wide tensor disappears; a cheap one of the thin result takes its place.
    """
    return _apply(model, _fold_into_phases)


def _fold_into_phases(state: _Graph, node: onnx.NodeProto) -> list | None:
    conv = state.only_reader(node.output[0], "Conv") if node.name.endswith("/interleave") else None
    if conv is None:
        return None
    attributes = _attributes(conv)
    has_bias = len(conv.input) > 2 and bool(conv.input[2])
    if (
        conv.input[1] not in state.constants
        or (has_bias and conv.input[2] not in state.constants)
        or list(attributes.get("kernel_shape", [])) != [3, 3]
        or list(attributes.get("pads", [0, 0, 0, 0])) != [1, 1, 1, 1]
        or list(attributes.get("strides", [1, 1])) != [1, 1]
        or list(attributes.get("dilations", [1, 1])) != [1, 1]
        or attributes.get("group", 1) != 1
    ):
        return None
    kernel = state.constants[conv.input[1]].astype(np.float64)
    cout = kernel.shape[0]
    if cout > PHASE_DOMAIN_MAX_OUTPUTS:
        return None
    bias = state.constants[conv.input[2]].astype(np.float64) if has_bias else np.zeros(cout)
    prefix = conv.name or conv.output[0]
    folded = f"{prefix}/phase_out"
    state.taken.add(id(conv))
    return [
        _phase_conv(
            state.graph,
            f"{prefix}/phase",
            node.input[0],
            folded,
            phase_domain_kernel(kernel),
            np.repeat(bias, 4),
            [1] * 4,
        ),
        _interleave(state.graph, prefix, folded, conv.output[0], cout),
    ]


def fast_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """Both rewrites, in order. A model already in this form has nothing left to rewrite and comes back unchanged."""
    model, _ = subpixel_transposed_convs(model)
    model, _ = fold_convs_into_phases(model)
    return model
