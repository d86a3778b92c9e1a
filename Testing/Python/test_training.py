"""Tiny end-to-end trainings: checkpoints, resume, repeatability, export, evaluation and the card.

These train a few images at 64x64 for one or two epochs: they check the machinery, never the
accuracy of the real model (that is the model card's job).
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from training_fixtures import tiny_config

from busassist.constants import threshold_for_effective_weight
from busassist.core.inference import Analyzer
from busassist.training.busi import PreparedData
from busassist.training.trainer import load_best, train, validation_scores


@pytest.fixture(scope="module")
def busi(shared_dir: Path) -> Path:
    return shared_dir / "data" / "busi"


def history(run: Path) -> list[dict]:
    with (run / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_train_writes_checkpoints_and_resumes(busi: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(busi, run, tmp_path / "cache"))
    for name in ("best.pt", "last.pt", "config.json", "history.csv", "split.json"):
        assert (run / name).exists(), name
    first = history(run)
    assert len(first) == 1
    train(tiny_config(busi, run, tmp_path / "cache", epochs=2))
    second = history(run)
    assert len(second) == 2, "resume must continue, not restart"
    assert second[0]["train_loss"] == first[0]["train_loss"]
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])


def test_same_seed_gives_the_same_run(busi: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        train(tiny_config(busi, tmp_path / name, tmp_path / "cache"))
    assert history(tmp_path / "a")[0]["train_loss"] == history(tmp_path / "b")[0]["train_loss"]
    a, b = load_best(tmp_path / "a").state_dict(), load_best(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(tiny_config(busi, tmp_path / "c", tmp_path / "cache", seed=7))
    assert history(tmp_path / "c")[0]["train_loss"] != history(tmp_path / "a")[0]["train_loss"]


@pytest.mark.parametrize("task", ["single-clf", "single-sgm"])
def test_single_task_variants_train(busi: Path, tmp_path: Path, task: str) -> None:
    run = train(tiny_config(busi, tmp_path / task, tmp_path / "cache", task=task))
    row = history(run)[0]
    assert ("val_auc" in row) == (task == "single-clf")
    assert ("val_dice" in row) == (task == "single-sgm")


def test_deep_supervision_trains_and_ships_without_its_heads(busi: Path, tmp_path: Path) -> None:
    """The coarse heads train (they are in best.pt) but the exported network is the plain EMT-Net."""
    from busassist.training.export import export_run
    from busassist.training.model import EMTNet, count_parameters

    run = train(tiny_config(busi, tmp_path / "ds", tmp_path / "cache", deep_supervision=0.5, dice="image"))
    saved = torch.load(run / "best.pt", map_location="cpu", weights_only=False)["model"]
    assert any(key.startswith("segmenter.aux.") for key in saved)
    network = load_best(run)
    assert count_parameters(network) == count_parameters(EMTNet())
    row = history(run)[0]
    assert float(row["train_deep_supervision"]) > 0, "the trainer adds the coarse losses"
    expected = float(row["train_clf"]) * 1.5 + float(row["train_dice"]) + float(row["train_mask_bce"])
    expected += 0.5 * float(row["train_deep_supervision"])  # epoch means of the parts add up to the loss
    assert float(row["train_loss"]) == pytest.approx(expected, rel=1e-4)
    plain = train(tiny_config(busi, tmp_path / "plain", tmp_path / "cache", dice="image"))
    assert "train_deep_supervision" not in history(plain)[0]
    analyzer = Analyzer(export_run(run), verify=False)
    assert analyzer.analyze(np.zeros((80, 96), dtype=np.uint8)).probability_map.shape == (80, 96)


def test_false_lesion_term_is_trained_and_recorded(busi: Path, tmp_path: Path) -> None:
    """The term enters the loss (its epoch mean adds up with the others) and the card's command."""
    from busassist.training.evaluate import fit_command

    config = tiny_config(busi, tmp_path / "fl", tmp_path / "cache", dice="image", false_lesion=0.2)
    run = train(config)
    row = history(run)[0]
    assert float(row["train_false_lesion"]) > 0, "the 40 images include normal ones, so the term is on"
    expected = float(row["train_clf"]) * 1.5 + float(row["train_dice"]) + float(row["train_mask_bce"])
    expected += 0.2 * float(row["train_false_lesion"])
    assert float(row["train_loss"]) == pytest.approx(expected, rel=1e-3)
    assert "--false-lesion 0.2" in fit_command(json.loads((run / "config.json").read_text())["config"])


def test_a_run_never_switches_its_encoder_activation(busi: Path, tmp_path: Path) -> None:
    """ReLU6 has no parameters, so the weights alone would load into either network: resume and --init-from
    compare the recorded activation and refuse, instead of training the other one."""
    run = train(tiny_config(busi, tmp_path / "relu6", tmp_path / "cache", encoder_activation="relu6"))
    assert torch.load(run / "last.pt", weights_only=False)["encoder_activation"] == "relu6"
    with pytest.raises(ValueError, match="was trained with --encoder-activation relu6"):
        train(tiny_config(busi, run, tmp_path / "cache", epochs=2))
    with pytest.raises(ValueError, match="was trained with --encoder-activation relu6, not relu"):
        train(tiny_config(busi, tmp_path / "tuned", tmp_path / "cache", init_from=str(run / "best.pt")))
    resumed = train(tiny_config(busi, run, tmp_path / "cache", epochs=2, encoder_activation="relu6"))
    assert len(history(resumed)) == 2


def test_border_term_is_ramped_in_trained_and_recorded(busi: Path, tmp_path: Path) -> None:
    """Half weight in epoch 1 of 4, full from epoch 2; each epoch's parts add up to its loss."""
    from busassist.training.evaluate import fit_command
    from busassist.training.trainer import border_weight

    config = tiny_config(busi, tmp_path / "border", tmp_path / "cache", epochs=4, border=3.0)
    assert [border_weight(config, epoch) for epoch in range(4)] == [1.5, 3.0, 3.0, 3.0]
    assert border_weight(tiny_config(busi, tmp_path, tmp_path, epochs=1, border=3.0), 0) == 3.0
    run = train(config)
    rows = history(run)
    for epoch, row in enumerate(rows[:2]):
        assert float(row["train_border"]) > 0
        expected = float(row["train_clf"]) * 1.5 + float(row["train_dice"]) + float(row["train_mask_bce"])
        expected += border_weight(config, epoch) * float(row["train_border"])
        assert float(row["train_loss"]) == pytest.approx(expected, rel=1e-3)
    assert "--border 3" in fit_command(json.loads((run / "config.json").read_text())["config"])
    assert "--encoder-activation" not in fit_command(json.loads((run / "config.json").read_text())["config"])
    relu6 = {"out_dir": "runs/x", "task": "emtnet", "learning_rate": 3e-4, "encoder_activation": "relu6"}
    assert "--encoder-activation relu6" in fit_command(relu6)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"dice": "pixel"}, "unknown Dice loss"),
        ({"border": -1.0}, "--border must be >= 0"),
        ({"encoder_activation": "gelu"}, "--encoder-activation 'gelu'"),
        ({"border": float("nan")}, "--border must be >= 0"),
        ({"task": "single-clf", "border": 1.0}, "needs a mask head"),
        ({"deep_supervision": -1.0}, ">= 0"),
        ({"task": "single-clf", "deep_supervision": 0.5}, "needs a mask head"),
        ({"false_lesion": -0.1}, "--false-lesion must be >= 0"),
        ({"false_lesion": float("nan")}, "--false-lesion must be >= 0"),
        ({"task": "single-clf", "false_lesion": 0.1}, "needs a mask head"),
    ],
)
def test_settings_the_trainer_cannot_use_are_refused_before_loading_data(tmp_path: Path, change, reason) -> None:
    config = tiny_config(tmp_path / "no-data-here", tmp_path / "run", tmp_path / "cache", **change)
    with pytest.raises(ValueError, match=reason):
        train(config)
    assert not (tmp_path / "run").exists()


def test_fit_errors_are_one_line(busi: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from busassist.training.cli import main

    common = ["--no-pretrained", "--epochs", "1", "--image-size", "64", "--limit", "40", "--device", "cpu"]
    common += ["--cache-dir", str(tmp_path / "cache")]
    cases = [
        (["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "a")], "BUSI class folder missing"),
        (
            ["--data", str(busi), "--out", str(tmp_path / "b"), "--task", "single-clf", "--deep-supervision", "1"],
            "mask head",
        ),
    ]
    for argv, reason in cases:
        assert main(["fit", *argv, *common]) == 1
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and reason in error and "None" not in error
    assert main(["fit", "--data", str(busi), "--out", str(tmp_path / "c"), *common]) == 0
    capsys.readouterr()  # the progress bars of the successful run
    assert main(["fit", "--data", str(busi), "--out", str(tmp_path / "c"), "--deep-supervision", "1", *common]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "last.pt: was trained with other settings" in error[0]


def test_deep_supervision_fine_tunes_from_a_plain_run_but_not_from_another_task(busi: Path, tmp_path: Path) -> None:
    from busassist.training.trainer import build_network

    base = train(tiny_config(busi, tmp_path / "base", tmp_path / "cache"))
    config = tiny_config(
        busi, tmp_path / "ds", tmp_path / "cache", deep_supervision=0.5, init_from=str(base / "best.pt")
    )
    start, reference = build_network(config).state_dict(), load_best(base).state_dict()
    assert all(torch.equal(start[k], reference[k]) for k in reference)
    assert any(k.startswith("segmenter.aux.") for k in start), "the coarse heads start fresh"
    clf = train(tiny_config(busi, tmp_path / "clf", tmp_path / "cache", task="single-clf"))
    with pytest.raises(ValueError, match="do not fit"):
        build_network(replace(config, init_from=str(clf / "best.pt")))


def test_export_calibrate_and_evaluate_a_run(busi: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from busassist.core.model_store import sha256_of, verify_model
    from busassist.training.evaluate import calibrate_run, evaluate_run
    from busassist.training.export import export_run

    run = train(tiny_config(busi, tmp_path / "run", tmp_path / "cache"))
    onnx_path = export_run(run)
    record = calibrate_run(run, onnx_path, busi)
    assert verify_model(onnx_path) == record["model_sha256"]  # calibration writes the metadata, then seals
    sealed = sha256_of(onnx_path)
    card = evaluate_run(run, onnx_path, busi)
    assert sha256_of(onnx_path) == sealed, "evaluation must never change the model it evaluates"
    analyzer = Analyzer(onnx_path)
    table = analyzer.metadata.operating_table
    assert [row["w_effective"] for row in table] == list(range(1, 11))
    for row in table:
        assert row["threshold"] == pytest.approx(threshold_for_effective_weight(row["w_effective"], 3.0), abs=1e-6)
    sens = [row["sen"] for row in table]
    assert sens == sorted(sens), "sensitivity cannot drop as the threshold falls"
    assert card["model"]["input_size"] == 64
    for name in ("acc", "sen", "spe", "auc", "dice", "iou"):
        entry = card["test"][name]
        assert set(entry) == {"value", "ci_low", "ci_high"}
    rule = card["lesion_rule"]
    assert analyzer.metadata.min_lesion_fraction == rule["min_lesion_fraction"] == 0.002
    assert (
        "| 'no lesion' below | normal images 'no lesion' | lesion images found |" in (run / "MODEL_CARD.md").read_text()
    )
    assert (run / "MODEL_CARD.md").read_text().startswith("# Model card")
    json.loads((run / "model_card.json").read_text())  # strict JSON (no NaN)
    assert card["data"]["counts"]["test"] == len(json.loads((run / "split.json").read_text())["test"])
    test_table = card["operating_table_test"]
    assert [row["w_effective"] for row in test_table] == list(range(1, 11))
    assert [row["sen"] for row in test_table] == sorted(row["sen"] for row in test_table)
    reach = card["slider_reach_test"]
    test_probabilities = np.array(
        [
            float(line.split(",")[2])
            for line in (run / "predictions_test.csv").read_text().splitlines()[1:]
            if not line.split(",")[1].startswith("-")
        ]
    )
    assert reach["of"] == test_probabilities.size
    assert reach["images"] == int(np.sum((test_probabilities >= 3 / 13) & (test_probabilities < 0.75)))
    markdown = (run / "MODEL_CARD.md").read_text()
    for heading in ("## Operating table (test split)", "## Test-time flip averaging", "## Comparison with the paper"):
        assert heading in markdown

    from busassist.training.model_card import compare_cards, publish

    shipped = publish(run, tmp_path / "models")  # what `busassist-train publish` does to Resources/Models
    assert verify_model(shipped / "emtnet.onnx") == card["model"]["sha256"] == sealed
    # Only the sealed model with the card of that very file goes out: not one re-calibrated after its card
    # was written, nor one changed after sealing.
    from busassist.core.model_store import ModelError

    changed = tmp_path / "changed"
    shutil.copytree(run, changed)
    (changed / "model_card.json").write_text(json.dumps({**card, "model": {**card["model"], "sha256": "0" * 64}}))
    with pytest.raises(ValueError, match="describes model 000000000000…, not emtnet.onnx"):
        publish(changed, tmp_path / "refused")
    with (changed / "emtnet.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelError, match="does not match"):
        publish(changed, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    table = compare_cards(run / "model_card.json", shipped / "model_card.json").splitlines()
    assert table[0].split() == ["metric", "this", "run", "shipped", "change"]
    assert len(table) == 11 and all(line.split()[-1] in ("+0.000", "n/a") for line in table[1:])
    assert table[-2].startswith("normal no lesion") and table[-1].startswith("lesion found")
    assert any(line.split()[-1] == "+0.000" for line in table[1:])
    assert "no shipped card" in compare_cards(run / "model_card.json", tmp_path / "missing.json")

    from busassist.training.report import write_report

    report = write_report(run, tmp_path / "report", busi)
    text = report.read_text()
    for picture in ("roc_pr.png", "confusion.png", "training.png", "examples.png"):
        assert f"({picture})" in text
        assert (tmp_path / "report" / picture).stat().st_size > 1000, picture
    rows = (run / "predictions_test.csv").read_text().splitlines()
    assert len(rows) == 1 + card["data"]["counts"]["test"]

    from busassist.training.quantize import compare_int8, quantize_run

    int8 = quantize_run(run, busi, calibration_images=8)
    Analyzer(int8)  # has its own verified checksum
    figures = compare_int8(run, busi, repeats=2)
    assert figures["int8"]["size_mb"] < figures["fp32"]["size_mb"] / 2
    calibration = figures["calibration"]
    assert calibration["images"] == 8
    # The tiny test network may be too flat for percentile histograms; the fallback is recorded.
    assert calibration["method"] == ("minmax" if "requested" in calibration else "percentile")
    drops = [figures[part][drop] for part in ("validation", "test") for drop in ("auc_drop", "dice_drop")]
    assert figures["ship_int8"] == all(drop <= 0.005 for drop in drops)
    for part in ("validation", "test"):
        assert figures[part]["auc_drop"] == figures[part]["fp32"]["auc"] - figures[part]["int8"]["auc"]
        paired = figures[part]["paired_int8_minus_fp32"]["auc"]  # the one paired engine, with an interval
        assert paired["difference"] == pytest.approx(-figures[part]["auc_drop"], abs=1e-9)
        # the rule's drops are the paired engine's differences, equal to the models' own Dice means
        dice_drop = figures[part]["fp32"]["dice"] - figures[part]["int8"]["dice"]
        assert figures[part]["dice_drop"] == pytest.approx(dice_drop, abs=1e-12)
    assert figures["cpu"] and isinstance(figures["cpu_isa"], str)  # timings travel with their CPU
    text = write_report(run, tmp_path / "report", busi).read_text()
    assert "## int8 model" in text and f"{figures['int8']['size_mb']:.1f} MB;" in text
    assert f"| test | int8 | {figures['test']['int8']['auc']:.4f} |" in text

    # The variants that cannot saturate on a CPU without VNNI: 7-bit int8 weights, or uint8 weights.
    import onnx
    from onnx import numpy_helper

    def quantised_weights(path: Path) -> list[np.ndarray]:
        model = onnx.load(str(path))
        tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        dequantised = [node.input[0] for node in model.graph.node if node.op_type == "DequantizeLinear"]
        return [tensors[name] for name in dequantised if name in tensors and tensors[name].ndim == 4]

    seven_bit = quantised_weights(quantize_run(run, busi, calibration_images=8, reduce_range=True))
    assert seven_bit and all(w.dtype == np.int8 and np.abs(w.astype(int)).max() <= 64 for w in seven_bit)
    assert json.loads((run / "int8_calibration.json").read_text())["reduce_range"] is True
    from busassist.core.model_store import read_metadata

    assert read_metadata(run / "emtnet.int8.onnx").extra["quantization"]["reduce_range"] is True

    # --full-range-depthwise: 8 bits for the depthwise convolutions' weights (their kernels add in 32 bits), 7 for
    # the rest; the count is recorded, and without --reduce-range (8 bits everywhere already) it is refused.
    mixed_path = quantize_run(run, busi, calibration_images=8, reduce_range=True, full_range_depthwise=True)
    mixed = onnx.load(str(mixed_path))
    tensors = {t.name: numpy_helper.to_array(t) for t in mixed.graph.initializer}
    weight_of = {
        node.output[0]: tensors.get(node.input[0]) for node in mixed.graph.node if node.op_type == "DequantizeLinear"
    }
    ranges: dict[bool, list[int]] = {True: [], False: []}
    for node in mixed.graph.node:
        weight = weight_of.get(node.input[1]) if node.op_type in ("Conv", "ConvTranspose") else None
        if weight is not None and weight.ndim == 4:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            depthwise = node.op_type == "Conv" and group == weight.shape[0] > 1 and weight.shape[1] == 1
            ranges[depthwise].append(int(np.abs(weight.astype(int)).max()))
    assert ranges[True] and max(ranges[True]) > 64 and max(ranges[True]) <= 127
    assert ranges[False] and max(ranges[False]) <= 64
    assert read_metadata(mixed_path).extra["quantization"]["full_range_depthwise"] == len(ranges[True])
    with pytest.raises(ValueError, match="needs --reduce-range"):
        quantize_run(run, busi, calibration_images=8, full_range_depthwise=True)
    from busassist.training import quantize

    with monkeypatch.context() as patch:  # a model without depthwise convolutions is refused, not quantised plainly
        patch.setattr(quantize, "depthwise_weights", lambda graph: [])
        with pytest.raises(ValueError, match="no depthwise convolution"):
            quantize_run(run, busi, calibration_images=8, reduce_range=True, full_range_depthwise=True)
    assert not (run / "emtnet.prep.onnx").exists()  # no leftover of the refused attempt

    # --percentile (its effect on the ranges: test_quantize_ranges) is recorded as used, or, when this tiny
    # network is too flat for percentile histograms and the minmax fallback runs, as requested only.
    record = read_metadata(quantize_run(run, busi, calibration_images=8, reduce_range=True, percentile=99.0))
    record = record.extra["quantization"]
    if record["method"] == "minmax":
        assert "percentile" not in record and record["requested_percentile"] == 99.0
    else:
        assert record["percentile"] == 99.0
    for method, share in (("minmax", 99.9), ("percentile", 40.0), ("percentile", 100.5)):
        with pytest.raises(ValueError, match="--percentile"):
            quantize_run(run, busi, calibration_images=8, method=method, percentile=share)

    # --float-node: the segmentation head stays in float (its weights are no int8 tensor), the rest does not;
    # the choice is recorded in the file, and a prefix that names no node is refused rather than ignored.
    head = "/network/segmenter/head/"
    float_head = onnx.load(str(quantize_run(run, busi, calibration_images=8, reduce_range=True, float_nodes=(head,))))
    dequantised_by = {node.output[0] for node in float_head.graph.node if node.op_type == "DequantizeLinear"}
    head_convs = [n for n in float_head.graph.node if n.name.startswith(head) and n.op_type.startswith("Conv")]
    other_convs = [n for n in float_head.graph.node if not n.name.startswith(head) and n.op_type == "Conv"]
    assert head_convs and not any(node.input[1] in dequantised_by for node in head_convs)
    assert all(node.input[1] in dequantised_by for node in other_convs)
    assert read_metadata(run / "emtnet.int8.onnx").extra["quantization"]["float_nodes"] == [head]
    with pytest.raises(ValueError, match="no node's name starts with '/nowhere/'"):
        quantize_run(run, busi, calibration_images=8, float_nodes=("/nowhere/",))
    assert not (run / "emtnet.prep.onnx").exists()  # no leftover of the refused attempt
    with pytest.raises(ValueError, match="an empty prefix would keep every node in float"):
        quantize_run(run, busi, calibration_images=8, float_nodes=[""])

    # Bias correction: only the int32 biases change, and the convolutions' mean outputs move towards float32's.
    def biases(path: Path) -> list[np.ndarray]:
        tensors = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
        return [array for array in tensors.values() if array.dtype == np.int32]

    plain_biases = biases(run / "emtnet.int8.onnx")
    corrected = quantize_run(run, busi, calibration_images=8, reduce_range=True, bias_correction_images=6)
    assert all(np.array_equal(a, b) for a, b in zip(quantised_weights(corrected), seven_bit, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(biases(corrected), plain_biases, strict=True))
    record = read_metadata(corrected).extra["quantization"]["bias_correction"]
    from busassist.training.bias_correction import quantised_bias_layers

    assert record["images"] == 6 and record["pick"] == "unused"
    assert record["layers"] == len(quantised_bias_layers(onnx.load(str(corrected)))) > 10  # none skipped

    def scales(path: Path) -> dict[str, np.ndarray]:
        return {
            t.name: numpy_helper.to_array(t)
            for t in onnx.load(str(path)).graph.initializer
            if t.name.endswith("_scale")
        }

    plain = quantize_run(run, busi, calibration_images=8, reduce_range=True)
    plain_scales = scales(plain)
    corrected = quantize_run(run, busi, calibration_images=8, reduce_range=True, bias_correction_images=6)
    assert scales(corrected).keys() == plain_scales.keys()
    assert all(np.array_equal(scales(corrected)[name], plain_scales[name]) for name in plain_scales)
    assert record["relative_mean_error_after"] < record["relative_mean_error_before"]
    Analyzer(corrected)  # sealed after the correction, not before
    with pytest.raises(ValueError, match="bias correction pick"):
        quantize_run(run, busi, calibration_images=8, bias_correction_images=2, bias_correction_pick="test")
    unsigned = quantised_weights(quantize_run(run, busi, calibration_images=8, weight_type="uint8"))
    assert unsigned and all(w.dtype == np.uint8 for w in unsigned)
    with pytest.raises(ValueError, match="weight type"):
        quantize_run(run, busi, calibration_images=8, weight_type="int4")


def test_lesion_rule_stays_the_smallest_and_tabulates_larger_ones() -> None:
    from busassist.constants import MIN_LESION_FRACTION
    from busassist.training.evaluate import LESION_RULE_CANDIDATES, lesion_rule

    labels = np.array([-1, -1, -1, 0, 1, 0, 1])
    fractions = np.array([0.0, 0.003, 0.005, 0.011, 0.05, 0.2, 0.02])  # normal blobs of 0.3 % and 0.5 %
    rule = lesion_rule(labels, fractions)
    assert rule["min_lesion_fraction"] == MIN_LESION_FRACTION
    rows = {row["min_lesion_fraction"]: row for row in rule["validation_tradeoff"]}
    assert list(rows) == list(LESION_RULE_CANDIDATES)
    assert rows[0.002]["normal_no_lesion_rate"] == pytest.approx(1 / 3) and rows[0.002]["lesion_detection_rate"] == 1.0
    assert rows[0.006]["normal_no_lesion_rate"] == 1.0 and rows[0.012]["lesion_detection_rate"] == 0.75


def test_frame_result_applies_its_models_rule() -> None:
    from busassist.core.inference import FrameResult

    result = FrameResult(0.7, np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8), None, 0.005)
    assert result.lesion_detected, "default rule: 0.2 %"
    strict = FrameResult(
        0.7, np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8), None, 0.005, min_lesion_fraction=0.01
    )
    assert not strict.lesion_detected and strict.decision(0.5) == "no_lesion"


def test_threshold_for_effective_weight() -> None:
    assert threshold_for_effective_weight(3.0, 3.0) == 0.5
    thresholds = [threshold_for_effective_weight(w, 3.0) for w in range(1, 11)]
    assert thresholds == sorted(thresholds, reverse=True)
    assert thresholds[0] == pytest.approx(0.75)
    # The logit shift ln W_p: a posterior q becomes W_p q / (W_p q + 1 - q); deciding at W' = 1
    # on p must equal deciding on q at 0.5.
    q = np.linspace(0.01, 0.99, 99)
    p = 3 * q / (3 * q + 1 - q)
    assert np.array_equal(p >= threshold_for_effective_weight(1.0, 3.0) - 1e-12, q >= 0.5 - 1e-12)
    with pytest.raises(ValueError):
        threshold_for_effective_weight(0.0)


def test_fine_tune_from_a_run_with_extra_training_folder(busi: Path, tmp_path: Path) -> None:
    """Slicer's 'Export for training' folder joins the training split only; weights start from a run."""
    import shutil

    from busassist.training.trainer import build_network

    extra = tmp_path / "exported"
    (extra / "benign" / "images").mkdir(parents=True)
    (extra / "benign" / "mask").mkdir(parents=True)
    for n in (1, 2):
        shutil.copyfile(
            busi / "benign" / "images" / f"benign ({n}).png", extra / "benign" / "images" / f"benign ({n}).png"
        )
        shutil.copyfile(
            busi / "benign" / "mask" / f"benign ({n})_mask.png", extra / "benign" / "mask" / f"benign ({n})_mask.png"
        )
    base = train(tiny_config(busi, tmp_path / "base", tmp_path / "cache"))
    config = tiny_config(
        busi, tmp_path / "tuned", tmp_path / "cache", extra_train=[str(extra)], init_from=str(base / "best.pt")
    )
    start = build_network(config).state_dict()
    reference = load_best(base).state_dict()
    assert all(torch.equal(start[k], reference[k]) for k in reference), "fine-tuning starts from the run's weights"
    train(config)
    split = json.loads((tmp_path / "tuned" / "split.json").read_text())
    assert sorted(k for k in split["train"] if k.startswith("extra0:")) == [
        "extra0:benign/images/benign (1).png",
        "extra0:benign/images/benign (2).png",
    ]
    assert not any(k.startswith("extra") for k in split["val"] + split["test"])


def test_flip_average_of_a_mirrored_image_equals_the_plain_result(busi: Path, tmp_path: Path) -> None:
    """Flip averaging is order-free: an image and its mirror give the same averaged result."""
    from busassist.training.busi import discover
    from busassist.training.evaluate import analyse_cases
    from busassist.training.export import export_run

    run = train(tiny_config(busi, tmp_path / "run", tmp_path / "cache"))
    analyzer = Analyzer(export_run(run), verify=False)
    case = discover(busi)[0]
    mirrored_dir = tmp_path / "mirror" / "benign"
    for kind, source in (("images", case.image_path), ("mask", case.mask_paths[0])):
        (mirrored_dir / kind).mkdir(parents=True)
        picture = Image.open(source)
        picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored_dir / kind / Path(source).name)
    (mirrored,) = discover(tmp_path / "mirror", require_all_classes=False)
    plain = analyse_cases(analyzer, [case], flip_average=True)
    flipped = analyse_cases(analyzer, [mirrored], flip_average=True)
    assert flipped["probabilities"][0] == pytest.approx(plain["probabilities"][0], abs=1e-5)
    image = np.asarray(Image.open(case.image_path).convert("L"))
    expected = (analyzer.analyze(image).logit + analyzer.analyze(np.ascontiguousarray(image[:, ::-1])).logit) / 2
    assert plain["logits"][0] == pytest.approx(expected, abs=1e-6), "the mean of the image's and its mirror's logits"
    single = analyse_cases(analyzer, [case])
    direct = analyzer.analyze(np.asarray(Image.open(case.image_path).convert("L")))
    assert single["probabilities"][0] == pytest.approx(direct.probability, abs=1e-6), "no flip: the plain result"


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"init_from": "runs/base/best.pt", "extra_train": ["corrections/a"]},
        {"dice": "image", "deep_supervision": 0.5},
        {"dice": "image", "false_lesion": 0.05},
        {"keep": "ema", "ema_decay": 0.98},
        {"teachers": 3, "distill": 0.25, "teacher_data": "out-of-fold"},
    ],
)
def test_fit_command_on_the_card_rebuilds_the_same_config(
    busi: Path, tmp_path: Path, extra: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card's command line, with the environment's data locations, gives back the run's configuration."""
    import os
    import shlex
    from dataclasses import asdict

    from busassist.training.cli import build_parser, config_from_args
    from busassist.training.evaluate import fit_command

    pretrained = tmp_path / "graph.pb"
    pretrained.write_bytes(b"")
    config = replace(
        tiny_config(busi, tmp_path / "run", tmp_path / "cache", pretrained=str(pretrained)),
        w_p=2.5,
        w_clf=1.0,
        schedule="plateau",
        learning_rate=1e-4,
        limit=None,
        device="auto",
        cache_dir=".cache",
        **extra,
    )
    command = fit_command(asdict(config))
    assert str(busi) not in command and str(pretrained) not in command, "a machine's path on the card"
    monkeypatch.setenv("BUSASSIST_DATA", str(busi))
    monkeypatch.setenv("BUSASSIST_PRETRAINED", str(pretrained))
    argv = shlex.split(os.path.expandvars(command))[1:]
    args = build_parser().parse_args(argv)
    rebuilt = config_from_args(args, args.out)
    assert asdict(rebuilt) == asdict(config)


def test_make_reproduce_trains_the_shipped_recipe() -> None:
    """`make reproduce` runs `fit` with defaults: they must be the shipped card's configuration."""
    import dataclasses
    import re

    from busassist.training.cli import build_parser, config_from_args
    from busassist.training.evaluate import portable_config

    repo = Path(__file__).resolve().parents[2]
    recipe = re.search(r"^reproduce:.*\n\t(.*busassist-train fit.*)$", (repo / "Makefile").read_text(), re.M)
    assert recipe, "Makefile has no `reproduce` target calling busassist-train fit"
    arguments = recipe.group(1).split("busassist-train ", 1)[1]
    arguments = arguments.replace("$(DATA)", "../shared/data/busi").replace("$(RUN_DIR)", "runs/reproduce")
    args = build_parser().parse_args(arguments.split())
    config = portable_config(dataclasses.asdict(config_from_args(args, args.out)))  # as a card records it
    shipped = json.loads((repo / "Resources" / "Models" / "model_card.json").read_text())["training"]["config"]
    shipped = {"keep": "best", **shipped}  # cards of before --keep existed kept the best validation epoch
    differing = {
        key: (config.get(key), value)
        for key, value in shipped.items()
        if key != "out_dir" and str(config.get(key)) != str(value)
    }
    assert differing == {}, f"make reproduce would train (this, shipped): {differing}"


def test_validation_scores_report_lesions_found_and_quiet_normal_images() -> None:
    """The "no lesion" rule on the network grid: lesion images found, normal images left quiet."""
    size = 50  # the rule's area is 5 pixels
    masks = np.zeros((4, size, size), np.uint8)
    masks[0, :10, :10] = 255
    masks[1, :10, :10] = 255
    data = PreparedData(np.zeros_like(masks), masks, np.array([0, 1, -1, -1], np.int8), ["a", "b", "c", "d"])
    predicted = np.zeros((4, size, size), np.float32)
    predicted[0, :10, :10] = 0.9  # found
    predicted[1, :1, :4] = 0.9  # 4 pixels: under the rule, so missed
    predicted[2, 20:30, 20:30] = 0.9  # a false lesion
    predicted[3, :1, :2] = 0.9  # 2 stray pixels: still "no lesion"
    scores = validation_scores(data, [0, 1, 2, 3], None, predicted)
    assert scores["lesion_found"] == 0.5
    assert scores["normal_no_lesion"] == 0.5
    assert "normal_no_lesion" not in validation_scores(data, [0, 1], None, predicted[:2])
    predicted[1, :1, :5] = 0.9  # exactly the rule's area: found, as the product decides (>=)
    assert validation_scores(data, [0, 1, 2, 3], None, predicted)["lesion_found"] == 1.0


@pytest.mark.parametrize(
    "test_dice_drop, status",
    [(0.0087, 3), (0.0049, 0), (0.005, 0), (float("nan"), 3)],
    ids=["fails", "passes", "at", "nan"],
)
def test_quantize_check_stops_make_int8_on_a_model_that_fails_the_rule(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    test_dice_drop: float,
    status: int,
) -> None:
    """`tools quantize --check` (what `make int8` runs) exits 3 and names the failing drops when the int8 model
    breaks the rule, so no card is written for it. The verdict is the real rule (``passes_int8_rule``) on the
    drops; only the measuring (quantising and scoring the splits) is replaced, by the drops of
    reports/int8-98770c53 with the test Dice drop varied."""
    from busassist.training import quantize
    from busassist.training.cli import main

    def figures(*args, **kwargs) -> dict:
        drops = {"validation": (0.0007, -0.0072), "test": (0.0047, test_dice_drop)}
        result = {part: {"auc_drop": auc, "dice_drop": dice} for part, (auc, dice) in drops.items()}
        return {**result, "max_drop": quantize.MAX_DROP, "ship_int8": quantize.passes_int8_rule(result)}

    monkeypatch.setattr(quantize, "quantize_run", lambda *args, **kwargs: tmp_path / "emtnet.int8.onnx")
    monkeypatch.setattr(quantize, "compare_int8", figures)
    assert main(["tools", "quantize", str(tmp_path), "--data", str(tmp_path), "--check"]) == status
    captured = capsys.readouterr()
    if status:
        assert captured.err.strip() == (
            f"busassist-train: {tmp_path / 'emtnet.int8.onnx'}: fails the int8 rule (AUC and Dice drop <= 0.005 on"
            f" validation and test): test DICE {test_dice_drop:+.4f}"
        )
    else:
        assert captured.err == "" and "fails" not in captured.out
    assert main(["tools", "quantize", str(tmp_path), "--data", str(tmp_path)]) == 0  # without --check: figures only


def test_quantize_full_range_depthwise_and_percentile_are_passed_on_and_refused_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``--full-range-depthwise`` reaches ``quantize_run``; without ``--reduce-range`` it is a one-line refusal
    before any file is read."""
    from busassist.training import quantize
    from busassist.training.cli import main

    settings: dict = {}
    real = quantize.quantize_run

    def recording(*args, **kwargs) -> Path:
        settings.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(quantize, "quantize_run", recording)
    options = ["--reduce-range", "--full-range-depthwise", "--percentile", "99.99"]
    main(["tools", "quantize", str(tmp_path), "--data", str(tmp_path), *options])
    assert settings["full_range_depthwise"] is True and settings["reduce_range"] is True
    assert settings["percentile"] == 99.99
    monkeypatch.setattr(quantize, "quantize_run", real)
    capsys.readouterr()
    status = main(["tools", "quantize", str(tmp_path / "absent"), "--data", str(tmp_path), "--full-range-depthwise"])
    assert status != 0
    error = capsys.readouterr().err.strip()
    assert error.endswith("--full-range-depthwise keeps 8 bits where --reduce-range gives 7: it needs --reduce-range")
    assert "\n" not in error and "Traceback" not in error


def test_depthwise_weights_finds_one_filter_per_channel_convolutions_only() -> None:
    """Only a convolution with one group per channel and one input channel per group counts as depthwise (the
    kernels that add in 32 bits); a channel multiplier, an ordinary convolution and a weight that is not in the
    file (a Constant's output) do not."""
    import onnx
    from onnx import TensorProto, helper

    from busassist.training.quantize import depthwise_weights

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape, [0.1] * int(np.prod(shape)))

    nodes = [
        helper.make_node("Conv", ["x", "dw"], ["a"], group=8),  # depthwise: 8 groups, 8 filters of 1 channel
        helper.make_node("Conv", ["x", "multiplier"], ["b"], group=8),  # 16 filters: a channel multiplier of 2
        helper.make_node("Conv", ["x", "dense"], ["c"]),  # ordinary
        helper.make_node("Constant", [], ["made"], value=weight("made_value", (8, 1, 3, 3))),
        helper.make_node("Conv", ["x", "made"], ["d"], group=8),  # depthwise, but its weight is not an initializer
    ]
    initializers = [weight("dw", (8, 1, 3, 3)), weight("multiplier", (16, 1, 3, 3)), weight("dense", (4, 8, 1, 1))]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in "abcd"]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    assert depthwise_weights(graph) == ["dw"]
