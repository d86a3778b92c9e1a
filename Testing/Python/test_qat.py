"""Weights read back from an exported model, and quantisation-aware fine-tuning (tiny network, 64 px)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from training_fixtures import tiny_config

from busassist.core.model_store import ModelMetadata, read_metadata
from busassist.training.export import export_onnx
from busassist.training.model import ExportWrapper
from busassist.training.onnx_weights import fold_transposed_norms, network_from_onnx
from busassist.training.qat import WEIGHT_LEVELS, fine_tune
from busassist.training.trainer import load_best, train


@pytest.fixture(scope="module")
def tiny_run(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("qat-run")
    return train(tiny_config(shared_dir / "data" / "busi", folder / "run", folder / "cache", epochs=1))


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-epoch 64 px EMT-Net in the exporter's graph (and in the fast form), trained batch norms."""
    folder = tmp_path_factory.mktemp("qat")
    run = tiny_run
    network = load_best(run)
    metadata = ModelMetadata(model_version="tiny", w_p=3.0, w_clf=1.5, input_size=64)
    plain = export_onnx(network, folder / "plain" / "emtnet.onnx", metadata, 64, fast=False)
    fast = export_onnx(network, folder / "fast" / "emtnet.onnx", metadata, 64)
    return plain, fast


def answers(model: Path, batch: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})


def test_the_network_read_back_answers_as_the_file(exported: tuple[Path, Path]) -> None:
    plain, fast = exported
    batch = np.random.default_rng(0).normal(size=(2, 1, 64, 64)).astype(np.float32)
    network = network_from_onnx(plain)
    with torch.no_grad():
        mine = [t.numpy() for t in ExportWrapper(network).eval()(torch.from_numpy(batch))]
    for ours, theirs in zip(mine, answers(plain, batch), strict=True):
        assert np.abs(ours - theirs).max() <= 1e-4 * max(1.0, np.abs(theirs).max())
    # folding the transposed convolutions' norms changes nothing either
    assert fold_transposed_norms(network) == 5
    with torch.no_grad():
        folded = [t.numpy() for t in ExportWrapper(network).eval()(torch.from_numpy(batch))]
    for ours, theirs in zip(folded, mine, strict=True):
        assert np.abs(ours - theirs).max() <= 1e-4 * max(1.0, np.abs(theirs).max())
    with pytest.raises(ValueError, match="rewritten graph"):
        network_from_onnx(fast)


def test_fine_tuning_leaves_convolution_weights_on_a_7_bit_grid(
    exported: tuple[Path, Path], shared_dir: Path, tmp_path: Path
) -> None:
    plain, _ = exported
    model = fine_tune(plain, tmp_path / "qat", shared_dir / "data" / "busi", epochs=1, limit=40)
    record = json.loads((tmp_path / "qat" / "qat.json").read_text())
    assert len(record["history"]) == 1 and np.isfinite(record["history"][0]["loss"])
    split = json.loads((tmp_path / "qat" / "split.json").read_text())
    assert set(split) == {"train", "val", "test"} and not set(split["train"]) & set(split["test"])
    graph = onnx.load(str(model)).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    encoder = [n for n in graph.node if n.op_type == "Conv" and n.name.startswith("/network/encoder/")]
    assert len(encoder) == 27
    for node in encoder:
        weight = tensors[node.input[1]].astype(np.float64)
        scale = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1) / WEIGHT_LEVELS
        steps = weight / np.maximum(scale, 1e-30).reshape(-1, 1, 1, 1)
        assert np.abs(steps - np.rint(steps)).max() < 1e-3, node.name  # each weight is k x scale, |k| <= 64
    metadata = read_metadata(model)
    assert metadata.model_version.endswith("-qat") and metadata.extra["qat"]["epochs"] == 1


def test_the_int8_of_a_fine_tuned_model_is_judged_against_the_original(
    exported: tuple[Path, Path], shared_dir: Path, tmp_path: Path, capsys
) -> None:
    from busassist.training.cli import main
    from busassist.training.quantize import compare_int8, quantize_run

    plain, fast = exported
    busi = shared_dir / "data" / "busi"
    folder = tmp_path / "qat"
    fine_tune(plain, folder, busi, epochs=1, limit=40, objective="labels")
    assert json.loads((folder / "qat.json").read_text())["objective"] == "labels"
    quantize_run(folder, busi, calibration_images=8, reduce_range=True)
    figures = compare_int8(folder, busi, repeats=2, reference=fast)
    assert figures["reference"] == str(fast) and figures["fp32"]["file"] == fast.name
    own = compare_int8(folder, busi, repeats=2)
    assert own["reference"] is None
    assert own["fp32"]["size_mb"] == (folder / "emtnet.onnx").stat().st_size / 1e6
    assert figures["fp32"]["size_mb"] == fast.stat().st_size / 1e6  # the original, not the fine-tuned one
    with pytest.raises(ValueError, match="objective"):
        fine_tune(plain, tmp_path / "other", busi, epochs=1, limit=40, objective="guess")
    code = main(["tools", "qat", str(fast), "--out", str(tmp_path / "refused"), "--data", str(busi)])
    error = capsys.readouterr().err.strip()
    assert code == 1 and error.count("\n") == 0 and "fast graph form" in error and str(fast) in error


def test_equalisation_shrinks_large_channels_and_keeps_the_answers(
    exported: tuple[Path, Path], shared_dir: Path, tmp_path: Path
) -> None:
    from busassist.training.equalize import equalisable_pairs, equalise, equalised_model

    plain, _ = exported
    network = network_from_onnx(plain)
    fold_transposed_norms(network)
    pairs = equalisable_pairs(network)
    assert len(pairs) == 32  # 13 blocks, stem and the 9 non-skip block joins, 2 per decoder, the head
    holders = [first.bias if first.bias is not None else first.module for first, _ in pairs]
    before = [holder.bias.detach().abs().clone() for holder in holders]
    record = equalise(network)
    assert record["pairs"] == 32 and record["rounds"][0]["channels_scaled"] > 0
    assert all(round_["largest_factor"] >= 1.0 for round_ in record["rounds"])
    # shrink only: biases are only ever divided, so no channel can become a large constant
    for holder, old in zip(holders, before, strict=True):
        assert bool((holder.bias.detach().abs() <= old * (1 + 1e-6)).all())
    assert any(bool((holder.bias.detach().abs() < old * 0.999).any()) for holder, old in zip(holders, before))
    model = equalised_model(plain, tmp_path / "cle", shared_dir / "data" / "busi")
    batch = np.random.default_rng(1).normal(size=(2, 1, 64, 64)).astype(np.float32)
    for ours, theirs in zip(answers(model, batch), answers(plain, batch), strict=True):
        assert np.abs(ours - theirs).max() <= 1e-4 * max(1.0, np.abs(theirs).max())
    assert read_metadata(model).extra["equalization"]["pairs"] == 32
    assert set(json.loads((tmp_path / "cle" / "split.json").read_text())) == {"train", "val", "test"}


def test_an_int8_model_made_from_a_published_one_gets_its_own_card(
    tiny_run: Path, shared_dir: Path, tmp_path: Path
) -> None:
    """export -> calibrate -> evaluate the float32 run, then equalise + quantise, calibrate and evaluate the int8."""
    import shutil

    from busassist.core.model_store import verify_model
    from busassist.training.equalize import equalised_model
    from busassist.training.evaluate import calibrate_run, evaluate_run
    from busassist.training.export import export_onnx, export_run
    from busassist.training.quantize import INT8_FILENAME, quantize_run

    busi = shared_dir / "data" / "busi"
    parent_model = export_run(tiny_run)
    calibrate_run(tiny_run, parent_model, busi)
    parent = evaluate_run(tiny_run, parent_model, busi)
    plain = export_onnx(load_best(tiny_run), tmp_path / "plain.onnx", read_metadata(parent_model), 64, fast=False)
    prepared = tmp_path / "prepared"
    equalised_model(plain, prepared, busi)
    shutil.copyfile(tiny_run / "split.json", prepared / "split.json")  # the run's own (limited) split
    quantize_run(prepared, busi, calibration_images=8, reduce_range=True, bias_correction_images=4)
    derived = tmp_path / "derived"
    derived.mkdir()
    shutil.copyfile(prepared / INT8_FILENAME, derived / "emtnet.onnx")
    shutil.copyfile(tiny_run / "split.json", derived / "split.json")
    calibrate_run(derived, derived / "emtnet.onnx", busi)
    verify_model(derived / "emtnet.onnx")  # sealed by calibrate
    card = evaluate_run(derived, derived / "emtnet.onnx", busi, derived_from=tiny_run / "model_card.json")
    assert card["training"] == parent["training"] and card["data"]["sha256"] == parent["data"]["sha256"]
    assert card["model"]["version"].endswith("-cle-int8")
    steps = card["model"]["derived_from"]["steps"]
    assert card["model"]["derived_from"]["version"] == parent["model"]["version"]
    assert steps["quantization"]["reduce_range"] is True and steps["equalization"]["pairs"] == 32
    assert card["test"]["counts"] == parent["test"]["counts"]
    assert (
        json.loads((derived / "model_card.json").read_text())["model"]["derived_from"] == card["model"]["derived_from"]
    )
    text = (derived / "MODEL_CARD.md").read_text()
    assert f"Made from `{parent['model']['version']}` without training: cross-layer equalisation" in text
    assert "7-bit" in text and "biases corrected on 4 training images" in text


def test_logit_matching_weighs_the_mask_border_and_is_zero_on_agreement() -> None:
    """``--objective logits``: no loss when the logits agree; an error on float32's border (logit 0) costs
    (1 + FAR_FROM_BORDER_WEIGHT) / FAR_FROM_BORDER_WEIGHT times what it costs where float32 is sure (logit -12)."""
    from types import SimpleNamespace

    from busassist.training.qat import FAR_FROM_BORDER_WEIGHT, logit_matching_loss

    def outputs(mask: list[float], class_logit: float = 0.5) -> SimpleNamespace:
        return SimpleNamespace(mask_logit=torch.tensor([[mask]]), class_logit=torch.tensor([class_logit]))

    target = outputs([0.0, -12.0])
    assert float(logit_matching_loss(outputs([0.0, -12.0]), target)) == 0.0
    on_border = float(logit_matching_loss(outputs([1.0, -12.0]), target))
    far_away = float(logit_matching_loss(outputs([0.0, -11.0]), target))
    assert on_border / far_away == pytest.approx((1 + FAR_FROM_BORDER_WEIGHT) / FAR_FROM_BORDER_WEIGHT, rel=1e-3)
    # the malignancy as a probability: Bernoulli divergence from float32's p = sigmoid(0.5) to sigmoid(1.5)
    p, q = torch.sigmoid(torch.tensor(0.5)), torch.sigmoid(torch.tensor(1.5))
    divergence = float(p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q)))
    assert float(logit_matching_loss(outputs([0.0, -12.0], 1.5), target)) == pytest.approx(divergence, rel=1e-4)


def test_logit_matching_ignores_a_saturated_malignancy_logit_that_moves_no_probability() -> None:
    """int8 moves the shipped model's malignancy logits (|logit| > 8 on nine training images in ten) by up to 5
    without moving the probability; as a squared logit error that was 30-300 times the mask term and fine-
    tuning fitted it through the encoder (reports/int8-faithful-qat-mask). It must cost next to nothing,
    far less than a mask logit moved across the border."""
    from types import SimpleNamespace

    from busassist.training.qat import logit_matching_loss

    def outputs(mask: float, class_logit: float) -> SimpleNamespace:
        return SimpleNamespace(mask_logit=torch.tensor([[[mask]]]), class_logit=torch.tensor([class_logit]))

    saturated = float(logit_matching_loss(outputs(0.0, -21.0), outputs(0.0, -22.0)))
    border = float(logit_matching_loss(outputs(0.3, -22.0), outputs(0.0, -22.0)))
    assert 0.0 <= saturated < 1e-8
    assert saturated < border / 1000


def test_fine_tuning_by_logits_runs_against_the_float32_teacher(
    exported: tuple[Path, Path], shared_dir: Path, tmp_path: Path
) -> None:
    """``--objective logits`` end to end: it needs the untouched float32 model as its teacher, and is recorded."""
    plain, _ = exported
    model = fine_tune(plain, tmp_path / "logits", shared_dir / "data" / "busi", epochs=1, limit=40, objective="logits")
    record = json.loads((tmp_path / "logits" / "qat.json").read_text())
    assert record["objective"] == "logits" and np.isfinite(record["history"][0]["loss"])
    assert read_metadata(model).extra["qat"]["objective"] == "logits"


@pytest.fixture(scope="module")
def relu6_run(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch 64 px EMT-Net with MobileNetV1's own ReLU6 in the encoder, exported in the fast form."""
    from busassist.training.export import export_run

    folder = tmp_path_factory.mktemp("relu6-run")
    config = tiny_config(shared_dir / "data" / "busi", folder / "run", folder / "cache", encoder_activation="relu6")
    run = train(config)
    export_run(run)
    return run


def test_a_relu6_encoder_is_exported_read_back_and_kept_out_of_equalisation(
    relu6_run: Path, shared_dir: Path, tmp_path: Path
) -> None:
    from busassist.training.equalize import equalised_model

    network = load_best(relu6_run)
    assert network.encoder.activation == "relu6"
    assert torch.load(relu6_run / "best.pt", weights_only=False)["encoder_activation"] == "relu6"
    metadata = ModelMetadata(model_version="tiny-relu6", w_p=3.0, w_clf=1.5, input_size=64)
    plain = export_onnx(network, tmp_path / "plain" / "emtnet.onnx", metadata, 64, fast=False)
    nodes = onnx.load(str(plain)).graph.node
    clips = [node.name for node in nodes if node.op_type == "Clip"]
    assert len(clips) == 27 and all(name.startswith("/network/encoder/") for name in clips)  # stem + 13 x 2
    assert any(node.op_type == "Relu" for node in nodes)  # the decoder keeps ReLU, as in the paper
    read_back = network_from_onnx(plain)
    assert read_back.encoder.activation == "relu6"
    batch = 4 * np.random.default_rng(1).normal(size=(2, 1, 64, 64)).astype(np.float32)
    with torch.no_grad():
        mine = [t.numpy() for t in ExportWrapper(read_back).eval()(torch.from_numpy(batch))]
    for ours, theirs in zip(mine, answers(plain, batch), strict=True):
        assert np.abs(ours - theirs).max() <= 1e-4 * max(1.0, np.abs(theirs).max())
    with pytest.raises(ValueError, match="equalisation needs ReLU"):
        equalised_model(plain, tmp_path / "cle", tmp_path / "no-data-needed")
    assert not (tmp_path / "cle" / "split.json").exists()
    from busassist.training.equalize import equalise
    from busassist.training.qat import simulate_int8

    with pytest.raises(ValueError, match="equalisation needs ReLU"):
        equalise(read_back)  # the function itself refuses, not only the command's wrapper
    # quantisation-aware fine-tuning rounds every activation the int8 model rounds: ReLU6 is no nn.ReLU subclass
    simulate_int8(read_back)
    assert len(read_back.activation_quantizers) == 27 + 13 + 1  # encoder ReLU6, decoder and head ReLU, the input


def test_bias_correction_of_a_relu6_model_compares_the_clip_inputs(relu6_run: Path, shared_dir: Path) -> None:
    """The quantiser folds ReLU6 (a Clip) into the convolution as it folds ReLU: the int8 convolution's output
    is the float32 graph's pre-activation tensor, so that is what its mean is measured against."""
    from busassist.training.bias_correction import _conv_pairs
    from busassist.training.quantize import quantize_run

    int8 = quantize_run(relu6_run, shared_dir / "data" / "busi", calibration_images=8, reduce_range=True)
    fp32_model, int8_model = onnx.load(str(relu6_run / "emtnet.onnx")), onnx.load(str(int8))
    clip_inputs = {node.input[0] for node in fp32_model.graph.node if node.op_type == "Clip"}
    pairs, unmatched = _conv_pairs(fp32_model, int8_model)
    assert not unmatched
    assert len({reference for _, _, reference in pairs} & clip_inputs) == 27
    corrected = quantize_run(
        relu6_run, shared_dir / "data" / "busi", calibration_images=8, reduce_range=True, bias_correction_images=6
    )
    record = read_metadata(corrected).extra["quantization"]["bias_correction"]
    assert record["relative_mean_error_after"] < record["relative_mean_error_before"]
