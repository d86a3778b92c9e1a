"""PyTorch weights back from an exported EMT-Net ONNX file (the exporter's graph, before the fast-form rewrite).

A published model ships as ONNX; its training checkpoint does not. Quantisation-aware fine-tuning
needs the network in PyTorch, so this reads the weights back. The exporter folds every batch norm
that follows a convolution into the convolution (weight scaled, bias added). That network is loaded
exactly by giving each such batch norm unit scale, zero mean and a variance of 1 - eps, so that it
only adds the folded bias: the loaded EMTNet answers as the file does, and its convolution weights
*are* the folded weights an int8 export quantises. Batch norms after the transposed convolutions are
not folded by the exporter and are read as they are.

The fast graph form (``graph_rewrite``) rewrites the decoder into phase convolutions and cannot be
read back; the exporter's graph of the same weights can (``git show`` of the file before its rewrite,
or ``export --no-fast`` of a run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from busassist.training.model import EMTNet, Task

_PREFIX = "/network/"


def _module_name(node_name: str) -> str:
    """``/network/encoder/blocks.0/blocks.0.0/blocks.0.0.0/Conv`` -> ``encoder.blocks.0.0.0``."""
    parts = node_name[len(_PREFIX) :].split("/")
    return f"{parts[0]}.{parts[-2]}"


def network_from_onnx(path: Path) -> EMTNet:
    """An EMTNet (eval mode) holding the weights of the exported model at ``path``, with its encoder
    activation (ReLU, or ReLU6 where the encoder's graph holds ``Clip``); refuses other graphs."""
    import onnx
    from onnx import numpy_helper

    from busassist.core.model_store import read_metadata
    from busassist.training.graph_rewrite import GRAPH_FORM

    if read_metadata(Path(path)).extra.get("graph_form") == GRAPH_FORM:
        raise ValueError(
            f"{path}: the fast graph form is a rewritten graph and cannot be read back; give the exporter's"
        )
    model = onnx.load(str(path))
    tensors = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    # ReLU6 exports as Clip; the encoder's activation is read from the graph, never assumed.
    clipped = any(node.op_type == "Clip" and node.name.startswith(f"{_PREFIX}encoder/") for node in model.graph.node)
    network = EMTNet(Task.MULTITASK, encoder_activation="relu6" if clipped else "relu")
    modules = dict(network.named_modules())
    state = network.state_dict()
    loaded: set[str] = set()

    def put(name: str, value: np.ndarray) -> None:
        if name not in state or tuple(state[name].shape) != value.shape:
            raise ValueError(f"{path}: {name} does not fit EMT-Net ({value.shape})")
        state[name] = torch.from_numpy(np.array(value, dtype=np.float32))
        loaded.add(name)

    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "BatchNormalization", "Gemm"):
            continue
        if not node.name.startswith(_PREFIX):
            raise ValueError(f"{path}: node {node.name!r} is not the exporter's (a rewritten graph cannot be read)")
        if node.op_type == "Gemm":
            continue  # the dense layers keep their PyTorch names: read below
        module = _module_name(node.name)
        values = [tensors[name] for name in node.input[1:] if name in tensors]
        if node.op_type == "BatchNormalization":
            for key, value in zip(("weight", "bias", "running_mean", "running_var"), values):
                put(f"{module}.{key}", value)
            continue
        put(f"{module}.weight", values[0])
        if node.op_type == "Conv" and isinstance(modules[module], torch.nn.Conv2d) and modules[module].bias is None:
            following = _following_norm(modules, module)
            for key, value in _bias_only_norm(values[1], modules[following].eps).items():
                put(f"{following}.{key}", value)
        elif len(values) > 1:
            put(f"{module}.bias", values[1])
    for name, value in tensors.items():
        if name.startswith("network.classifier."):
            put(name[len("network.") :], value)
    missing = [name for name in state if name not in loaded and not name.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: {len(missing)} weights not found in the file (e.g. {missing[0]})")
    network.load_state_dict(state)
    return network.eval()


def _following_norm(modules: dict, conv: str) -> str:
    """The batch norm right after convolution ``conv`` in its Sequential (``a.b.3`` -> ``a.b.4``)."""
    parent, _, index = conv.rpartition(".")
    name = f"{parent}.{int(index) + 1}"
    if not isinstance(modules.get(name), torch.nn.BatchNorm2d):
        raise ValueError(f"convolution {conv} has no batch norm after it to hold its folded bias")
    return name


def _bias_only_norm(bias: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """A batch norm's state that only adds ``bias``: unit scale, zero mean, variance 1 - eps."""
    return {
        "weight": np.ones_like(bias),
        "bias": bias,
        "running_mean": np.zeros_like(bias),
        "running_var": np.full_like(bias, 1.0 - eps),
    }


def fold_transposed_norms(network: torch.nn.Module) -> int:
    """Fold each batch norm that follows a transposed convolution into it (the exporter does not).

    The norm becomes bias-only (``_bias_only_norm``), so the network answers as before, and every
    weight layer then holds its folded weights: the ones an int8 export rounds.
    """
    folded = 0
    for sequential in [m for m in network.modules() if isinstance(m, torch.nn.Sequential)]:
        children = list(sequential)
        for conv, norm in zip(children, children[1:]):
            if (
                isinstance(conv, torch.nn.ConvTranspose2d)
                and isinstance(norm, torch.nn.BatchNorm2d)
                and conv.bias is None
            ):
                with torch.no_grad():
                    factor = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                    conv.weight.mul_(factor.view(1, -1, 1, 1))
                    bias = (norm.bias - norm.running_mean * factor).numpy()
                    for key, value in _bias_only_norm(bias, norm.eps).items():
                        getattr(norm, key).copy_(torch.from_numpy(value))
                folded += 1
    return folded
