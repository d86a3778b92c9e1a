"""Cross-layer equalisation: even out per-channel ranges between consecutive layers, answers unchanged.

MobileNet's depthwise convolutions have output channels whose ranges differ by orders of magnitude,
and an int8 model has one uint8 range per activation tensor: the small channels are rounded away
(on the bundled model the first depthwise layer's output already carries 6.5 % relative error,
and the encoder 10-20 %). Nagel et al. (ICCV 2019, "Data-free quantization through weight
equalization and bias correction") move scale between two layers with a ReLU between them:
ReLU(x / s) = ReLU(x) / s for s > 0, so dividing channel c of the first layer (weights and bias)
by s_c and multiplying the matching input channel of the second by s_c changes nothing in float,
and with s_c = sqrt(r1_c / r2_c) both layers' channel c ends with range sqrt(r1_c r2_c).

Only pairs whose middle tensor feeds nothing else are touched: inside each depthwise-separable block,
between blocks that are not skip sources, inside each decoder block and in the head. The network
must hold folded batch norms (``onnx_weights.network_from_onnx`` then
``onnx_weights.fold_transposed_norms``): a norm after the first layer then only adds the bias being scaled.

**Shrink only (s_c >= 1).** The paper's two-sided rule also *enlarges* a first-layer channel whose
weights are small. On the bundled model some such channels are nearly constant (tiny weights, a
large positive bias): divided by s_c << 1 they became huge constants that set the whole tensor's
uint8 range, and the int8 model answered nothing (AUC 0.5). The int8 models here quantise weights
per channel anyway, so what equalisation must buy is an activation range not dominated by a few
channels: scaling only the large channels down does that and cannot create such a constant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from busassist.training.model import SKIP_BLOCKS


@dataclass(frozen=True)
class Layer:
    """A weight layer, the axis of its output channels, the axis of its input channels, its bias holder."""

    module: nn.Module
    out_axis: int
    in_axis: int
    bias: nn.Module | None  # the bias-only batch norm after it, or None when the layer has its own bias


def _layer(sequential: nn.Sequential, index: int) -> Layer:
    module = sequential[index]
    following = sequential[index + 1] if index + 1 < len(sequential) else None
    norm = following if isinstance(following, nn.BatchNorm2d) else None
    if isinstance(module, nn.ConvTranspose2d):
        return Layer(module, 1, 0, norm)
    depthwise = module.groups == module.in_channels and module.groups > 1
    return Layer(module, 0, 0 if depthwise else 1, norm)


def _conv_index(block: nn.Sequential) -> int:
    return next(i for i, m in enumerate(block) if isinstance(m, nn.Conv2d))


def equalisable_pairs(network: nn.Module) -> list[tuple[Layer, Layer]]:
    """(first, second) layer pairs with only a ReLU (and zero padding) between them and no other reader."""
    encoder, segmenter = network.encoder, network.segmenter
    pairs = []
    chain = [(encoder.stem, None)]
    for index, block in enumerate(encoder.blocks):
        chain += [(block[0], None), (block[1], index)]
    for (first, first_block), (second, _) in zip(chain, chain[1:]):
        if first_block is not None and first_block in SKIP_BLOCKS:
            continue  # its output is also a skip into the decoder: rescaling it would change the decoder
        pairs.append((_layer(first, _conv_index(first)), _layer(second, _conv_index(second))))
    for decoder in segmenter.decoders:
        pairs.append((_layer(decoder, 0), _layer(decoder, 3)))
        pairs.append((_layer(decoder, 3), _layer(decoder, 6)))
    pairs.append((_layer(segmenter.head, 0), _layer(segmenter.head, 3)))
    return pairs


def _ranges(weight: torch.Tensor, axis: int) -> torch.Tensor:
    return weight.abs().amax(dim=[d for d in range(weight.ndim) if d != axis])


def _scale(weight: torch.Tensor, axis: int, factors: torch.Tensor) -> None:
    shape = [1] * weight.ndim
    shape[axis] = -1
    weight.mul_(factors.view(shape))


def refuse_bounded_activations(network: nn.Module, source: Path | str = "network") -> None:
    """Equalisation moves scale through ReLU(x / s) = ReLU(x) / s; ReLU6 has no such identity."""
    activation = network.encoder.activation
    if activation != "relu":  # the one activation with ReLU(x / s) = ReLU(x) / s
        raise ValueError(
            f"{source}: the encoder uses {activation}; equalisation needs ReLU between the layers it scales "
            "(ReLU6(x / s) is not ReLU6(x) / s)"
        )


@torch.no_grad()
def equalise(network: nn.Module, rounds: int = 4) -> dict:
    """Equalise every pair in place (shrinking only), ``rounds`` times over.

    Returns the number of pairs and, per round, how many channels were scaled and the largest
    factor applied: a last round near 1 means the rounds have converged.
    """
    refuse_bounded_activations(network)
    pairs = equalisable_pairs(network)
    history = []
    for _ in range(rounds):
        scaled, largest = 0, 1.0
        for first, second in pairs:
            r1 = _ranges(first.module.weight, first.out_axis)
            r2 = _ranges(second.module.weight, second.in_axis)
            usable = (r1 > 0) & (r2 > 0)
            factors = torch.where(usable, torch.sqrt(r1 / r2.clamp_min(1e-30)), torch.ones_like(r1)).clamp_min(1.0)
            _scale(first.module.weight, first.out_axis, 1 / factors)
            holder = first.bias if first.bias is not None else first.module
            holder.bias.div_(factors)
            _scale(second.module.weight, second.in_axis, factors)
            scaled += int((factors > 1).sum())
            largest = max(largest, float(factors.max()))
        history.append({"channels_scaled": scaled, "largest_factor": largest})
    return {"pairs": len(pairs), "rounds": history}


def equalised_model(model: Path, out: Path, data_root: Path, rounds: int = 4) -> Path:
    """``out/emtnet.onnx``: the exported ``model`` (exporter's graph) equalised, in the fast form, and
    ``out/split.json``; the answers stay the float32 model's (to float rounding). Then
    ``tools quantize OUT --reduce-range --float-op Gemm --bias-correction 64 --against ORIGINAL``.
    """
    from busassist.core.model_store import read_metadata
    from busassist.training.export import export_onnx
    from busassist.training.onnx_weights import fold_transposed_norms, network_from_onnx
    from busassist.training.trainer import write_recipe_split

    out = Path(out)
    metadata = read_metadata(Path(model))  # a bad model is refused before the data are read
    network = network_from_onnx(Path(model))
    refuse_bounded_activations(network, Path(model))  # before the data are read
    write_recipe_split(out, data_root)
    fold_transposed_norms(network)
    record = equalise(network, rounds)
    metadata.model_version += "-cle"
    metadata.extra = {**metadata.extra, "equalization": {"from": Path(model).name, **record}}
    (out / "equalization.json").write_text(json.dumps(metadata.extra["equalization"], indent=1) + "\n")
    return export_onnx(network.eval(), out / "emtnet.onnx", metadata, metadata.input_size)
