"""Quantisation-aware fine-tuning: teach an exported model to live with 7-bit weights and uint8 activations.

Rounding after training (``tools quantize --reduce-range``) costs the bundled model about 0.02 Dice,
and bias correction removes only the *mean* of that error. Fine-tuning with the rounding in the
forward pass (straight-through gradients, Jacob et al. 2018) lets the weights settle where rounding
hurts least. The network is read back from the exported model (``onnx_weights``), so a published
model can be fine-tuned without its training checkpoint.

What is simulated is what ``tools quantize --reduce-range --float-op Gemm`` will do: every
convolution's weights, with the batch norm after it folded in, rounded per output channel to
7 bits (symmetric, scale = max |w| / 64), and every ReLU output and the input image to uint8
(per tensor, ranges tracked by moving min/max). The classifier's dense layers stay in float. After
fine-tuning the rounded weights are kept, so quantising the exported result rounds most of them
onto themselves. The decoder's transposed convolutions are rounded per output channel and phase, as
the export's phase rewrite lays them out (``PhaseRoundedWeight``; until 2026-12-07 they were rounded per
channel and re-rounded on export). ``fit --qat int8`` applies the same simulation from the first epoch.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from busassist.training.quantize import QAT_OBJECTIVES as OBJECTIVES

if TYPE_CHECKING:
    from busassist.training.model import NetworkOutput

WEIGHT_LEVELS = 64  # 7-bit symmetric: -64..64, as onnxruntime's reduce_range for int8 weights
#: The smallest weight scale onnxruntime keeps (``quant_utils.compute_scale_zp``); below it a channel is all zeros.
#: Nearly dead channels of the ImageNet encoder (largest weight about 1e-11) are rounded on their own grid, as there.
SMALLEST_SCALE = torch.finfo(torch.float32).tiny


class RoundedWeight(nn.Module):
    """Parametrisation: the weight rounded per output channel to 7 bits (straight-through gradient)."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        dims = [d for d in range(weight.ndim) if d != self.axis]
        scale = (weight.detach().abs().amax(dim=dims) / WEIGHT_LEVELS).clamp_min(SMALLEST_SCALE)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, self.axis, -WEIGHT_LEVELS, WEIGHT_LEVELS)


class PhaseRoundedWeight(nn.Module):
    """Parametrisation of a 3x3 stride-2 transposed convolution's weight, rounded as its export will be.

    The export writes such a layer as four phase convolutions, one output channel per (channel, phase)
    (``graph_rewrite.subpixel_weights``; which taps feed which phase is its ``PHASE_TAPS``),
    and onnxruntime gives each of those channels its own 7-bit scale. Rounding per output channel
    instead would train other weights than the int8 file holds.
    """

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        from busassist.training.graph_rewrite import PHASE_TAPS

        # the output phase (0 even, 1 odd) each kernel row feeds, as the rewrite reads it: [1, 0, 1]
        row_phase = torch.tensor([next(a for (a, _), tap in PHASE_TAPS.items() if tap == row) for row in range(3)])
        tap_phase = 2 * row_phase[:, None] + row_phase[None, :]  # the phase channel each (row, column) tap is in
        magnitude = weight.detach().abs()
        scale = torch.empty_like(magnitude)
        for phase in range(4):
            taps = tap_phase == phase
            scale[:, :, taps] = magnitude[:, :, taps].amax(dim=(0, 2))[None, :, None] / WEIGHT_LEVELS
        scale = scale.clamp_min(SMALLEST_SCALE)
        rounded = torch.round(weight / scale).clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS) * scale
        return weight + (rounded - weight).detach()  # straight-through gradient


def _weight_rounding(module: nn.Module) -> nn.Module:
    """How the export will round this layer's weights (per output channel, or per phase)."""
    if isinstance(module, nn.ConvTranspose2d):
        rewritten = module.stride == (2, 2) and module.kernel_size == (3, 3) and module.padding == (1, 1)
        if rewritten and module.output_padding == (1, 1):  # every one EMT-Net has (graph_rewrite._REWRITABLE)
            return PhaseRoundedWeight()
        return RoundedWeight(axis=1)
    return RoundedWeight(axis=0)


def _activation_quantizer() -> nn.Module:
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver

    return FakeQuantize(
        observer=MovingAverageMinMaxObserver,
        quant_min=0,
        quant_max=255,
        dtype=torch.quint8,
        qscheme=torch.per_tensor_affine,
    )


@dataclass
class Simulation:
    """The hooks and parametrisations that make a network compute as its int8 export will."""

    handles: list
    rounded: list[nn.Module]


def simulate_int8(network: nn.Module) -> Simulation:
    """Round convolution weights (7 bits) and ReLU (or ReLU6) outputs and the input (uint8) in the forward pass."""
    rounded = []
    for module in list(network.encoder.modules()) + list(network.segmenter.modules()):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            parametrize.register_parametrization(module, "weight", _weight_rounding(module))
            rounded.append(module)
    handles = []
    network.activation_quantizers = nn.ModuleList()
    for module in list(network.encoder.modules()) + list(network.segmenter.modules()):
        if isinstance(module, (nn.ReLU, nn.ReLU6)):  # ReLU6 is no subclass of ReLU
            quantizer = _activation_quantizer()
            network.activation_quantizers.append(quantizer)
            handles.append(module.register_forward_hook(lambda _m, _i, out, q=quantizer: q(out)))
    image = _activation_quantizer()
    network.activation_quantizers.append(image)
    handles.append(network.encoder.register_forward_pre_hook(lambda _m, args, q=image: (q(args[0]), *args[1:])))
    return Simulation(handles, rounded)


def finish(network: nn.Module, simulation: Simulation) -> None:
    """Keep the rounded weights as plain parameters and remove every hook: an ordinary EMTNet again."""
    for module in simulation.rounded:
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    for handle in simulation.handles:
        handle.remove()
    del network.activation_quantizers


def plain_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """The state of a simulating network as an ordinary EMTNet's: each rounded weight under its own name.

    A training that simulates int8 from its first epoch (``fit --qat int8``) keeps its latent weights
    and quantiser ranges in ``last.pt`` (to resume), but ships what the simulation computed: the rounded
    weights, loadable by ``network_from_checkpoint`` and exported like any other run.
    """
    state = {
        key: value
        for key, value in network.state_dict().items()
        if ".parametrizations.weight." not in key and not key.startswith("activation_quantizers.")
    }
    for name, module in network.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            state[f"{name}.weight"] = module.weight.detach().clone()
    return state


def observe(network: nn.Module, enabled: bool, afresh: bool = False) -> None:
    """Let the activation quantisers of ``network`` track their ranges (``afresh``: forgetting the old), or hold them.

    A training that simulates int8 holds them while it scores validation images, so that no validation
    image moves a range. The moving average measures its ranges afresh on its own activations while its
    batch norms are refitted: between refits ``AveragedModel`` overwrites them with the trained network's
    (it keeps every buffer in step with the network's), so nothing of them is worth keeping.
    """
    from torch.ao.quantization import FakeQuantize

    for module in network.modules():
        if isinstance(module, FakeQuantize):
            module.enable_observer(enabled)
            if afresh:
                module.activation_post_process.reset_min_max_vals()


#: ``logits`` objective: weight of a mask pixel's squared logit error far from float32's border (1 more at it).
FAR_FROM_BORDER_WEIGHT = 0.05


def border_weight(target: NetworkOutput) -> torch.Tensor:
    """Per mask pixel: ``FAR_FROM_BORDER_WEIGHT + 4 p (1 - p)``, p the float32 (target) mask probability."""
    from busassist.training.losses import border_band

    return FAR_FROM_BORDER_WEIGHT + border_band(target.mask_logit)


def malignancy_divergence(output: NetworkOutput, target: NetworkOutput) -> torch.Tensor:
    """Mean Bernoulli divergence of the output's malignancy probability from the target's (0 on agreement)."""
    probability = torch.sigmoid(target.class_logit)
    return F.binary_cross_entropy_with_logits(output.class_logit, probability) - F.binary_cross_entropy_with_logits(
        target.class_logit, probability
    )


def logit_matching_loss(output: NetworkOutput, target: NetworkOutput) -> torch.Tensor:
    """Squared error to the float32 model's mask logits, weighted towards the border, plus the divergence
    of the malignancy probability from float32's.

    The mask is float32's logit map cut at 0, so agreement is decided where that map is near 0; a pixel
    weighs ``FAR_FROM_BORDER_WEIGHT + 4 p (1 - p)`` (p float32's probability): 1.05 on the border, little
    where the answer is not in doubt. Matching logits rather than probabilities keeps the border where
    float32 puts it (cross-entropy to the probabilities let the weights drift, reports/int8-error-budget).
    The malignancy is matched as a probability (Bernoulli divergence, 0 on agreement), not as a logit:
    the shipped model's logits run from -35 to +24 on training images, |logit| > 8 on nine in ten, where
    int8 moves them by 1.6 on average (up to 5) and the probability by 0.002, and their squared error was
    30 to 300 times the mask term, so fine-tuning fitted saturated logits through the shared encoder
    (reports/int8-faithful-qat-mask).
    """
    mask = (border_weight(target) * (output.mask_logit - target.mask_logit) ** 2).mean()
    return mask + malignancy_divergence(output, target)


def _freeze_norms(network: nn.Module) -> None:
    """Batch norms stay in inference mode with unit scale: they only carry the folded biases."""
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
            module.weight.requires_grad_(False)


def fine_tune(
    model: Path,
    out: Path,
    data_root: Path,
    epochs: int = 3,
    learning_rate: float = 2e-5,
    batch_size: int = 16,
    seed: int = 42,
    limit: int | None = None,
    objective: str = "teacher",
) -> Path:
    """Fine-tune ``model`` (the exporter's graph) with int8 simulated; write ``out/emtnet.onnx`` and ``out/split.json``.

    ``objective``: ``"teacher"`` (the default) fits the float32 model's own answers (its malignancy
    and mask probabilities, soft targets by binary cross-entropy): the int8 model is judged against
    float32, and fitting the labels instead lets the weights drift (one such run moved test AUC by
    -0.015 before any rounding). ``"logits"`` fits float32's mask logits and malignancy probability
    (``logit_matching_loss``).
    ``"labels"`` fits the training loss.
    The training split is the shipped recipe's (stratified, near-duplicate groups kept whole), so
    validation and test stay unseen. The model's metadata (W_p, rules) is carried over; its version
    gains ``-qat``.
    """
    from busassist.core.model_store import read_metadata
    from busassist.training.augment import AugmentConfig
    from busassist.training.export import export_onnx
    from busassist.training.losses import multitask_loss
    from busassist.training.onnx_weights import fold_transposed_norms, network_from_onnx
    from busassist.training.randomness import seed_everything
    from busassist.training.trainer import TrainingBatches, write_recipe_split

    if objective not in OBJECTIVES:  # refused before the model or the data are read
        raise ValueError(f"objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metadata = read_metadata(Path(model))
    seed_everything(seed)
    network = network_from_onnx(Path(model))  # a bad model is refused before the data are read
    data, split, fingerprint = write_recipe_split(out, data_root, seed, limit)
    teacher = copy.deepcopy(network).eval() if objective != "labels" else None  # the float32 model, untouched
    fold_transposed_norms(network)
    simulation = simulate_int8(network)
    parameters = [p for p in network.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=learning_rate)
    steps = epochs * math.ceil(len(split.train) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(1, steps))
    generator = torch.Generator().manual_seed(seed)
    augment = AugmentConfig()
    train = np.array(split.train)
    history = []
    for epoch in range(epochs):
        started = time.perf_counter()
        network.train()
        _freeze_norms(network)
        order = train[torch.randperm(len(train), generator=generator).numpy()]
        losses = []
        for inputs, masks, labels in TrainingBatches(data, order, batch_size, generator, augment):
            output = network(inputs)
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(inputs)
            if objective == "logits":
                loss = logit_matching_loss(output, target)
            elif objective == "teacher":
                loss = F.binary_cross_entropy_with_logits(
                    output.class_logit, torch.sigmoid(target.class_logit)
                ) + F.binary_cross_entropy_with_logits(output.mask_logit, torch.sigmoid(target.mask_logit))
            else:
                loss, _ = multitask_loss(
                    output.class_logit,
                    labels,
                    output.mask_logit,
                    masks,
                    metadata.w_p,
                    metadata.w_clf,
                    1.0,
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - started})
        print(f"qat epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.4f} ({history[-1]['seconds']:.0f} s)")
    network.eval()
    finish(network, simulation)
    metadata.model_version += "-qat"
    metadata.extra = {
        **metadata.extra,
        "qat": {
            "from": Path(model).name,
            "objective": objective,
            "epochs": epochs,
            "learning_rate": learning_rate,
            "data_sha256": fingerprint,
        },
    }
    (out / "qat.json").write_text(json.dumps({"history": history, **metadata.extra["qat"]}, indent=1) + "\n")
    return export_onnx(network, out / "emtnet.onnx", metadata, metadata.input_size)
