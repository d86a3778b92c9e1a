"""Fine-tuning under a simulation read from the int8 file itself (PLAN.md of this folder).

    python reports/int8-faithful-qat/faithful.py check   EXPORTER_GRAPH F0_INT8 SPLIT_JSON DATA_ROOT
    python reports/int8-faithful-qat/faithful.py tune    EXPORTER_GRAPH F0_INT8 SPLIT_JSON DATA_ROOT OUT
        [EPOCHS [yes [OBJECTIVE]]]  (one command line; OBJECTIVE: a key of OBJECTIVES)
    python reports/int8-faithful-qat/faithful.py quantize OUT F0_INT8 DATA_ROOT
    python reports/int8-faithful-qat/faithful.py compare EXPORTER_GRAPH F0_INT8 F1_INT8 OUT SPLIT_JSON DATA_ROOT

``check`` (step 0): the simulation, untrained, against F0 under onnxruntime. ``tune`` (step 1): fine-tune,
export ``OUT/emtnet.onnx`` and write ``OUT/ranges.json`` (F0's activation scales and zero points, by tensor
name, for ``quantize``). ``compare``: F1 under onnxruntime against the tuned simulation.
Agreement: mean (and lowest) Dice of network-level masks (224 px logits cut at 0) on the 48 held-out
training images of ``reports/int8-fidelity-search/fidelity.py``; no label is read.

Where onnxruntime rounds (read from F0's QDQ graph, every ``QuantizeLinear`` by the node that writes its
input) and where the simulation rounds the same tensor:
- the graph input: before the encoder;
- an encoder convolution (batch norm folded, ReLU fused): the output of its ``ConvBNReLU``;
- decoder convolution ``decoders.k.m`` (m = 0, 3, 6; 3 is the transposed one, whose phase convolution and
  interleave are rounded in turn): the output of the ReLU after it, ``decoders.k.(m+2)``;
- the skip sums ``Add``: the input of the block that reads them;
- the head: its transposed convolution after its ReLU (``head.2``), its last convolution (phase convolution,
  then interleave) at the head's output, the mask logits;
- ``GlobalAveragePool`` and ``Flatten``: the outputs of the classifier's first two layers.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torch.nn.utils import parametrize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "int8-fidelity-search"))

from fidelity import held_out_training_keys  # noqa: E402

from busassist.training import qat  # noqa: E402
from busassist.training.busi import discover, prepare  # noqa: E402
from busassist.training.equalize import equalise  # noqa: E402
from busassist.training.metrics import dice_iou  # noqa: E402
from busassist.training.onnx_weights import fold_transposed_norms, network_from_onnx  # noqa: E402
from busassist.training.trainer import to_network_input  # noqa: E402

#: The head's last convolution: the export folds it into the phases of the transposed one before it, so its
#: rounded weights are not a per-channel rounding of this kernel. It stays in float here and is not trained.
FROZEN_FLOAT = "segmenter.head.3"


def equalised_network(exporter_graph: Path) -> nn.Module:
    """``98770c53`` as ``make int8`` prepares it: read back, transposed norms folded, equalised (4 rounds)."""
    network = network_from_onnx(exporter_graph)
    fold_transposed_norms(network)
    equalise(network, 4)
    return network.eval()


def rounding_points(int8_file: Path) -> dict[str, list[tuple[str, float, int]]]:
    """F0's activation rounding, as ``{where: [(tensor, scale, zero point), ...]}`` in graph order.

    ``where`` is ``"input"``, ``"out:MODULE"`` (the module's output) or ``"in:MODULE"`` (its input)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(int8_file)).graph
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    readers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    points: dict[str, list] = defaultdict(list)
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in constants:
            continue
        tensor = node.input[0]
        scale, zero = float(constants[node.input[1]]), int(constants[node.input[2]])
        source = producer.get(tensor)
        points[_where(source, node, producer, readers)].append((tensor, scale, zero))
    return dict(points)


def _where(source, quantize, producer, readers) -> str:  # noqa: ANN001
    if source is None:
        return "input"
    parts = source.name.split("/")[2:]  # "/network/encoder/blocks.1/blocks.1.0/blocks.1.0.1/Conv" -> encoder, ...
    if parts[0] == "encoder":
        return f"out:encoder.{parts[-3]}"
    if parts[0] == "classifier":
        return f"out:classifier.{parts[-2]}"
    if source.op_type == "Add":  # the block that reads the sum (through the DequantizeLinear after it)
        (dequantize,) = readers[quantize.output[0]]
        (reader,) = readers[dequantize.output[0]]
        block = reader.name.split("/")[3]  # "/network/segmenter/decoders.2/..." or ".../head/..."
        return f"in:segmenter.{block}"
    if parts[1] == "head":  # "segmenter", "head", "head.0" | "head.3", ...
        return "out:segmenter.head.2" if parts[2] == "head.0" else "out:segmenter.head"
    block, layer = parts[1], parts[2]  # "decoders.0", "decoders.0.3"
    index = int(layer.rsplit(".", 1)[1])
    return f"out:segmenter.{block}.{index + 2}"


def _rounder(grid: list[tuple[str, float, int]]):  # noqa: ANN202
    def apply(x: torch.Tensor) -> torch.Tensor:
        for _, scale, zero in grid:
            x = torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)
        return x

    return apply


def simulate_file(network: nn.Module, points: dict[str, list]) -> list:
    """Round ``network``'s weights as onnxruntime does and its activations where and as F0 does; returns the
    rounded modules (for ``finish``). The hooks stay for the network's lifetime."""
    modules = dict(network.named_modules())
    rounded = []
    for name, module in network.named_modules():
        if not name.startswith(("encoder.", "segmenter.")) or not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        if name == FROZEN_FLOAT:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
            continue
        parametrize.register_parametrization(module, "weight", qat._weight_rounding(module))
        rounded.append(module)
    for where, grid in points.items():
        apply = _rounder(grid)
        if where == "input":
            network.encoder.register_forward_pre_hook(lambda _m, args, f=apply: (f(args[0]), *args[1:]))
        elif where.startswith("in:"):
            modules[where[3:]].register_forward_pre_hook(lambda _m, args, f=apply: (f(args[0]), *args[1:]))
        else:
            modules[where[4:]].register_forward_hook(lambda _m, _i, out, f=apply: f(out))
    return rounded


def correction_inputs(split_json: Path, data_root: Path) -> torch.Tensor:
    """The 64 training images ``make int8``'s bias correction uses (none among the 48 held out)."""
    from busassist.training.quantize import calibration_keys

    _, keys, _ = calibration_keys(json.loads(Path(split_json).read_text())["train"], 200, 64)
    return network_inputs(keys, data_root)


def network_inputs(keys: list[str], data_root: Path) -> torch.Tensor:
    """The network inputs of the training images ``keys``, prepared as the trainer prepares them."""
    cases = {case.key: case for case in discover(Path(data_root))}
    return to_network_input(torch.from_numpy(prepare([cases[key] for key in keys]).images).float().unsqueeze(1))


def _norm_means(network: nn.Module, names: list[str], inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-channel means of the named batch norms' outputs (before the activation) over ``inputs``."""
    modules = dict(network.named_modules())
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def record(name: str, out: torch.Tensor) -> None:
        sums[name] = sums.get(name, 0) + out.sum(dim=(0, 2, 3))
        counts[name] = counts.get(name, 0) + out.shape[0] * out.shape[2] * out.shape[3]

    handles = [modules[name].register_forward_hook(lambda _m, _i, out, n=name: record(n, out)) for name in names]
    with torch.no_grad():
        for i in range(0, len(inputs), 8):
            network(inputs[i : i + 8])
    for handle in handles:
        handle.remove()
    return {name: sums[name] / counts[name] for name in names}


def correct_biases(simulation: nn.Module, teacher: nn.Module, inputs: torch.Tensor) -> dict:
    """Bias correction in the simulation, layer by layer in network order: each rounded convolution's
    batch-norm bias gains the per-channel mean of float minus simulation output, measured with the
    corrections of the layers before it in place. Returns the largest shift (absolute)."""
    modules = dict(simulation.named_modules())
    norms = [
        f"{name.rpartition('.')[0]}.{int(name.rpartition('.')[2]) + 1}"
        for name, module in simulation.named_modules()
        if parametrize.is_parametrized(module, "weight")
    ]
    expected = _norm_means(teacher, norms, inputs)
    largest = 0.0
    for name in norms:
        shift = expected[name] - _norm_means(simulation, [name], inputs)[name]
        with torch.no_grad():
            modules[name].bias.add_(shift)
        largest = max(largest, float(shift.abs().max()))
    return {"layers": len(norms), "largest_shift": round(largest, 5)}


def held_out_inputs(split_json: Path, data_root: Path) -> tuple[list[str], torch.Tensor]:
    keys = held_out_training_keys(split_json)
    return keys, network_inputs(keys, data_root)


def torch_masks(network: nn.Module, inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([(network(inputs[i : i + 8]).mask_logit > 0).numpy() for i in range(0, len(inputs), 8)])


def file_masks(path: Path, inputs: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name, batch = session.get_inputs()[0].name, inputs.numpy()
    return np.concatenate([session.run(None, {name: batch[i : i + 8]})[1] > 0 for i in range(0, len(batch), 8)])


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    dices = [dice_iou(x, y)[0] for x, y in zip(a, b)]
    return {"dice_mean": round(float(np.mean(dices)), 5), "dice_min": round(float(np.min(dices)), 4)}


def check(exporter_graph: str, f0: str, split_json: str, data_root: str) -> None:
    torch.set_num_threads(2)
    _, inputs = held_out_inputs(Path(split_json), Path(data_root))
    network = equalised_network(Path(exporter_graph))
    teacher = torch_masks(network, inputs)
    points = rounding_points(Path(f0))
    simulate_file(network, points)
    simulation, onnx_int8 = torch_masks(network, inputs), file_masks(Path(f0), inputs)
    rows = {
        "simulation against F0 (onnxruntime)": agreement(simulation, onnx_int8),
        "F0 against the float network": agreement(onnx_int8, teacher),
        "simulation against the float network": agreement(simulation, teacher),
    }
    print(json.dumps({"step": 0, "rounding_points": sum(len(grid) for grid in points.values()), "places": len(points)}))
    for measure, row in rows.items():
        print(json.dumps({"step": 0, "measure": measure, **row}))


def squared_logit_loss(output, target) -> torch.Tensor:  # noqa: ANN001
    """Attempts 1 and 2, frozen: ``qat.logit_matching_loss`` as it was when they ran (the malignancy as a squared
    logit error; the product's has since matched it as a probability, reports/int8-faithful-qat-mask)."""
    import torch.nn.functional as F  # noqa: N812

    weight = qat.border_weight(target)
    mask = (weight * (output.mask_logit - target.mask_logit) ** 2).mean()
    return mask + F.mse_loss(output.class_logit, target.class_logit)


def sign_matching_loss(output, target) -> torch.Tensor:  # noqa: ANN001
    """Attempt 3: cross-entropy to the teacher's mask (logit > 0) as hard targets, weighted as in
    ``qat.logit_matching_loss`` (0.05 + 4p(1 - p)), plus the malignancy logit's squared error."""
    import torch.nn.functional as F  # noqa: N812

    weight = qat.border_weight(target)
    hard = (target.mask_logit > 0).float()
    mask = F.binary_cross_entropy_with_logits(output.mask_logit, hard, weight=weight)
    return mask + F.mse_loss(output.class_logit, target.class_logit)


def sign_and_probability_loss(output, target) -> torch.Tensor:  # noqa: ANN001
    """reports/int8-faithful-qat-mask: ``sign_matching_loss`` with the malignancy term a cross-entropy to the
    teacher's probability, flat where int8 moves a saturated logit without moving the probability (the
    squared logit error was 30-300 times the mask term there)."""
    import torch.nn.functional as F  # noqa: N812

    weight = qat.border_weight(target)
    hard = (target.mask_logit > 0).float()
    mask = F.binary_cross_entropy_with_logits(output.mask_logit, hard, weight=weight)
    return mask + F.binary_cross_entropy_with_logits(output.class_logit, torch.sigmoid(target.class_logit))


#: ``tune``'s objectives: attempt 1 and 2 (``logits``), attempt 3 (``sign``), reports/int8-faithful-qat-mask.
OBJECTIVES = {
    "logits": squared_logit_loss,
    "sign": sign_matching_loss,
    "sign-probability": sign_and_probability_loss,
}


def tune(
    exporter_graph: str,
    f0: str,
    split_json: str,
    data_root: str,
    out: str,
    epochs: str = "3",
    correct: str = "no",
    objective: str = "logits",
) -> None:
    """Step 1; ``correct`` ``"yes"``: the simulation's biases corrected before fine-tuning (attempts 2, 3);
    ``objective``: a key of ``OBJECTIVES`` (``"logits"``: ``squared_logit_loss``, attempts 1 and 2)."""
    from busassist.core.model_store import read_metadata
    from busassist.training.augment import AugmentConfig
    from busassist.training.export import export_onnx
    from busassist.training.randomness import seed_everything
    from busassist.training.trainer import TrainingBatches, write_recipe_split

    torch.set_num_threads(2)
    out_dir = Path(out)
    seed_everything(42)
    held_out, inputs = held_out_inputs(Path(split_json), Path(data_root))
    data, split, fingerprint = write_recipe_split(out_dir, Path(data_root), 42)
    shipped_split = json.loads(Path(split_json).read_text())
    if [data.keys[i] for i in split.train] != shipped_split["train"]:
        raise SystemExit(f"{split_json}: the recipe's training split differs from the run's")
    train = np.array([i for i in split.train if data.keys[i] not in set(held_out)])
    network = equalised_network(Path(exporter_graph))
    teacher = copy.deepcopy(network).eval()
    teacher_masks = torch_masks(teacher, inputs)
    points = rounding_points(Path(f0))
    rounded = simulate_file(network, points)
    if correct == "yes":
        correction = correct_biases(network, teacher, correction_inputs(Path(split_json), Path(data_root)))
        print(json.dumps({"step": 1, "bias_correction": correction}))
    parameters = [p for p in network.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=1e-5)
    steps = int(epochs) * math.ceil(len(train) / 16)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(1, steps))
    generator = torch.Generator().manual_seed(42)
    print(
        json.dumps(
            {"step": 1, "epoch": 0, "images": len(train), **agreement(torch_masks(network, inputs), teacher_masks)}
        )
    )
    for epoch in range(int(epochs)):
        started = time.perf_counter()
        network.train()
        qat._freeze_norms(network)
        order = train[torch.randperm(len(train), generator=generator).numpy()]
        losses = []
        for batch, _masks, _labels in TrainingBatches(data, order, 16, generator, AugmentConfig()):
            with torch.no_grad():
                target = teacher(batch)
            loss = OBJECTIVES[objective](network(batch), target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        network.eval()
        row = agreement(torch_masks(network, inputs), teacher_masks)
        seconds = round(time.perf_counter() - started)
        print(
            json.dumps(
                {"step": 1, "epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5), "seconds": seconds, **row}
            )
        )
    torch.save(network.state_dict(), out_dir / "simulation.pt")
    for module in rounded:
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    metadata = read_metadata(Path(exporter_graph))
    metadata.model_version += "-cle-fqat"
    metadata.extra = {
        **metadata.extra,
        "faithful_qat": {
            "epochs": int(epochs),
            "bias_correction": correct == "yes",
            "objective": objective,
            "data_sha256": fingerprint,
        },
    }
    ranges = {tensor: [scale, zero] for grid in points.values() for tensor, scale, zero in grid}
    (out_dir / "ranges.json").write_text(json.dumps(ranges, indent=1) + "\n")
    # the network still carries its activation hooks; export must see the plain network
    plain = equalised_network(Path(exporter_graph))
    plain.load_state_dict(network.state_dict())
    export_onnx(plain, out_dir / "emtnet.onnx", metadata, metadata.input_size)


def quantize(out: str, f0: str, data_root: str) -> None:
    """F1: ``OUT/emtnet.onnx`` quantised as F0 was (``quantize_run``: 7-bit weights, dense layers in float, no
    bias correction), every activation on F0's scale and zero point (onnxruntime's ``TensorQuantOverrides``,
    keyed by the float graph's tensor names). Refuses a file whose grid is not F0's."""
    import onnxruntime.quantization as quantization

    from busassist.training.quantize import quantize_run

    ranges = json.loads((Path(out) / "ranges.json").read_text())
    overrides = {
        tensor.removesuffix("_QuantizeLinear_Input"): [
            {"scale": np.array(scale, np.float32), "zero_point": np.array(zero, np.uint8)}
        ]
        for tensor, (scale, zero) in ranges.items()
    }
    original = quantization.quantize_static

    def with_ranges(*args, extra_options=None, **kwargs):  # noqa: ANN002, ANN003, ANN202
        options = dict(extra_options or {})
        options["TensorQuantOverrides"] = {**options.get("TensorQuantOverrides", {}), **overrides}
        return original(*args, extra_options=options, **kwargs)

    quantization.quantize_static = with_ranges
    try:
        target = quantize_run(Path(out), Path(data_root), float_ops=("Gemm",), reduce_range=True)
    finally:
        quantization.quantize_static = original
    got = [(scale, zero) for grid in rounding_points(target).values() for _, scale, zero in grid]
    expected = [(scale, zero) for grid in rounding_points(Path(f0)).values() for _, scale, zero in grid]
    if got != expected:
        raise SystemExit(f"{target}: its activation grid is not F0's")
    print(json.dumps({"step": 1, "f1": str(target), "activation_grid": "F0's, all " + str(len(got))}))


def compare(exporter_graph: str, f0: str, f1: str, out: str, split_json: str, data_root: str) -> None:
    """F1 (onnxruntime) against the tuned simulation, rebuilt from ``OUT/simulation.pt``."""
    torch.set_num_threads(2)
    _, inputs = held_out_inputs(Path(split_json), Path(data_root))
    network = equalised_network(Path(exporter_graph))
    simulate_file(network, rounding_points(Path(f0)))
    network.load_state_dict(torch.load(Path(out) / "simulation.pt", map_location="cpu"))
    row = agreement(file_masks(Path(f1), inputs), torch_masks(network.eval(), inputs))
    print(json.dumps({"step": 1, "measure": "F1 (onnxruntime) against the tuned simulation", **row}))


if __name__ == "__main__":
    {"check": check, "tune": tune, "quantize": quantize, "compare": compare}[sys.argv[1]](*sys.argv[2:])
