"""Training with the int8 export simulated from the first epoch (``fit --qat int8``; tiny network, 64 px)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from training_fixtures import tiny_config

from busassist.training.config import TrainConfig, check_config
from busassist.training.evaluate import fit_command
from busassist.training.graph_rewrite import subpixel_weights
from busassist.training.model import EMTNet, Task
from busassist.training.qat import WEIGHT_LEVELS, PhaseRoundedWeight, RoundedWeight, observe, simulate_int8
from busassist.training.trainer import load_best, train


@pytest.fixture(scope="module")
def qat_config(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    folder = tmp_path_factory.mktemp("qat-training")
    busi = shared_dir / "data" / "busi"
    return tiny_config(busi, folder / "run", folder / "cache", epochs=2, qat="int8", keep="ema")


@pytest.fixture(scope="module")
def qat_run(qat_config: TrainConfig) -> Path:
    """Two epochs of a moving-average run with int8 simulated, exported in the fast (phase) form."""
    from busassist.training.export import export_run

    run = train(qat_config)
    export_run(run)
    return run


def grid_distance(weights: np.ndarray, axis: int) -> float:
    """Largest distance (in grid steps) of any weight from its output channel's 7-bit symmetric grid."""
    rows = np.moveaxis(weights, axis, 0).reshape(weights.shape[axis], -1).astype(np.float64)
    step = np.abs(rows).max(axis=1, keepdims=True) / WEIGHT_LEVELS
    levels = rows / np.where(step == 0, 1, step)
    return float(np.abs(levels - np.round(levels)).max())


def test_a_quantisation_aware_run_ships_an_ordinary_network_and_resumes_from_its_latent_weights(
    qat_run: Path,
) -> None:
    best = torch.load(qat_run / "best.pt", weights_only=False)
    assert best["qat"] == "int8"
    for kept in (best["model"], torch.load(qat_run / "best_validation.pt", weights_only=False)["model"]):
        assert not [key for key in kept if "parametrizations" in key or key.startswith("activation_quantizers")]
    load_best(qat_run)  # an ordinary EMTNet: strict loading, no simulation needed to read it
    last = torch.load(qat_run / "last.pt", weights_only=False)
    assert any(key.endswith("parametrizations.weight.original") for key in last["model"])  # latent, for resuming
    assert any(key.startswith("activation_quantizers.") for key in last["model"])  # with the ranges reached
    assert "--qat int8" in fit_command(json.loads((qat_run / "config.json").read_text())["config"])


def test_its_export_lies_on_the_int8_grid_and_onnxruntime_rounds_it_onto_itself(
    qat_run: Path, shared_dir: Path
) -> None:
    from busassist.training.quantize import quantize_run

    graph = onnx.load(str(qat_run / "emtnet.onnx")).graph
    floats = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    convs = [node.input[1] for node in graph.node if node.op_type == "Conv"]
    assert any("subpixel" in name for name in convs)  # the transposed convolutions, in their phase form
    assert max(grid_distance(floats[name], 0) for name in convs) < 1e-3  # batch norms folded in: still on it

    busi = shared_dir / "data" / "busi"  # make int8's settings: 7-bit weights, the dense layers in float
    int8 = onnx.load(str(quantize_run(qat_run, busi, calibration_images=8, float_ops=("Gemm",), reduce_range=True)))
    integers = {tensor.name: numpy_helper.to_array(tensor) for tensor in int8.graph.initializer}
    compared = 0
    for node in int8.graph.node:
        weights = integers.get(node.input[0])
        if node.op_type != "DequantizeLinear" or weights is None or weights.dtype != np.int8:
            continue
        original = floats[node.input[0].removesuffix("_quantized")]
        axis = next((attribute.i for attribute in node.attribute if attribute.name == "axis"), 1)
        shape = [1] * weights.ndim
        shape[axis] = -1
        restored = weights.astype(np.float64) * integers[node.input[1]].astype(np.float64).reshape(shape)
        assert np.abs(restored - original).max() <= 1e-5 * np.abs(original).max(), node.input[0]
        compared += 1
    interleaves = [node for node in graph.node if node.op_type == "ConvTranspose"]  # the phases' exact 0/1 scatter
    assert compared == len(convs) + len(interleaves)


def test_transposed_convolutions_are_rounded_per_phase_as_the_export_lays_them_out() -> None:
    weights = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    weights[:, :, 1, 1] *= 10  # one phase with far larger taps: a per-channel scale would crush the others
    phases = subpixel_weights(PhaseRoundedWeight()(weights).numpy())
    assert grid_distance(phases, 0) < 1e-4
    plain = subpixel_weights(RoundedWeight(axis=1)(weights).numpy())
    assert grid_distance(plain, 0) > 0.1  # per output channel only: the phase channels leave their grid


def test_nearly_dead_channels_keep_their_own_grid_as_onnxruntime_gives_them() -> None:
    """The ImageNet encoder has channels whose largest weight is about 1e-11: onnxruntime scales them by
    max / 64 like any other (it gives up only below float32's smallest normal number), and so must we."""
    weights = torch.randn(4, 8, 1, 1, generator=torch.Generator().manual_seed(2))
    weights[1] *= 1e-11
    assert grid_distance(RoundedWeight(axis=0)(weights).numpy(), 0) < 1e-3
    transposed = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(3))
    transposed[:, 2] *= 1e-11
    assert grid_distance(subpixel_weights(PhaseRoundedWeight()(transposed).numpy()), 0) < 1e-3


def test_validation_images_do_not_move_the_ranges() -> None:
    network = EMTNet(Task.MULTITASK).eval()
    simulate_int8(network)
    images = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    network(images)

    def ranges() -> list[float]:
        return [float(q.activation_post_process.max_val) for q in network.activation_quantizers]

    before = ranges()
    observe(network, False)
    network(images * 3)
    assert ranges() == before
    observe(network, True)
    network(images * 3)
    assert ranges() != before


def test_the_trainer_holds_ranges_while_validating_and_measures_the_averages_afresh(
    qat_config: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch.ao.quantization import FakeQuantize

    from busassist.training import trainer

    def quantisers(model: torch.nn.Module) -> list[FakeQuantize]:
        return [module for module in model.modules() if isinstance(module, FakeQuantize)]

    validated, refitted = [], []
    real_predict, real_refit = trainer.predict, trainer.fit_batch_norm

    def predict(model, *args, **kwargs):
        validated.append([int(q.observer_enabled) for q in quantisers(model)])
        return real_predict(model, *args, **kwargs)

    def refit(model, *args, **kwargs):
        refitted.append(
            [(int(q.observer_enabled), float(q.activation_post_process.min_val)) for q in quantisers(model)]
        )
        return real_refit(model, *args, **kwargs)

    monkeypatch.setattr(trainer, "predict", predict)
    monkeypatch.setattr(trainer, "fit_batch_norm", refit)
    train(replace(qat_config, out_dir=str(tmp_path / "run"), epochs=1))
    assert len(validated) == 2  # the average, then the trained network
    assert all(flags and not any(flags) for flags in validated)  # every range held
    # AveragedModel copies the trained network's buffers (ranges too) into the average at every step:
    # the refit starts from no range and measures the average's own
    assert len(refitted) == 1 and refitted[0]
    assert all(enabled == 1 and low == float("inf") for enabled, low in refitted[0])


def test_resuming_needs_the_same_qat_setting(qat_run: Path, qat_config: TrainConfig, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(qat_run, copy)
    with pytest.raises(ValueError, match="trained with --qat int8, not off"):
        train(replace(qat_config, out_dir=str(copy), epochs=3, qat="off"))
    train(replace(qat_config, out_dir=str(copy), epochs=3))
    assert len(torch.load(copy / "last.pt", weights_only=False)["state"]["history"]) == 3
    plain = train(replace(qat_config, out_dir=str(tmp_path / "plain"), qat="off", epochs=1))
    with pytest.raises(ValueError, match="trained with --qat off, not int8"):
        train(replace(qat_config, out_dir=str(plain), epochs=2))


def test_qat_settings_are_refused_before_any_data_is_read(tmp_path: Path) -> None:
    config = TrainConfig(data_root=str(tmp_path / "absent"), out_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="--qat 'int4'"):
        check_config(replace(config, qat="int4"))
    with pytest.raises(ValueError, match="needs --task multitask"):
        check_config(replace(config, qat="int8", task=Task.CLASSIFICATION.value))
    check_config(replace(config, qat="int8"))
