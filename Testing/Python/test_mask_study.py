"""The mask post-processing study: its variants, its validation-only choice, and its command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from training_fixtures import tiny_config

from busassist.constants import MASK_THRESHOLD
from busassist.training.cli import main
from busassist.training.mask_study import (
    COMPONENT_FRACTIONS,
    THRESHOLDS,
    Variant,
    mask_study,
    postprocess,
    several_lesions,
)
from busassist.training.trainer import train


def _two_blobs() -> np.ndarray:
    probability = np.zeros((40, 40), dtype=np.float32)
    probability[2:12, 2:12] = 0.9  # 100 px
    probability[30:33, 30:33] = 0.9  # 9 px, far away
    probability[20, 20] = 0.4  # one pixel below the usual threshold
    return probability


def test_unchanged_variant_is_the_plain_threshold() -> None:
    probability = _two_blobs()
    np.testing.assert_array_equal(postprocess(probability, Variant(MASK_THRESHOLD, 0.0)), probability >= 0.5)
    assert np.count_nonzero(postprocess(probability, Variant(0.35, 0.0))) == 110


def test_several_lesions_counts_ground_truths_with_comparable_components() -> None:
    one = np.zeros((20, 20), dtype=bool)
    one[2:10, 2:10] = True
    two = one.copy()
    two[15:18, 15:18] = True  # 9 px >= 10 % of 64 px
    speck = one.copy()
    speck[18, 18] = True  # 1 px: not a second lesion
    assert several_lesions([(0, None, one), (1, None, two), (0, None, speck)]) == 1


def test_small_components_are_dropped_relative_to_the_largest() -> None:
    probability = _two_blobs()
    assert np.count_nonzero(postprocess(probability, Variant(0.5, 0.05))) == 109, "9 px >= 5 % of 100 px: kept"
    kept = postprocess(probability, Variant(0.5, 0.1))
    assert np.count_nonzero(kept) == 100 and kept[5, 5] and not kept[31, 31]
    twins = np.zeros((20, 20), dtype=np.float32)
    twins[1:5, 1:5] = twins[10:14, 10:14] = 1.0
    assert np.count_nonzero(postprocess(twins, Variant(0.5, 1.0))) == 32, "equal components both stay"


@pytest.fixture(scope="module")
def exported_run(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    from busassist.training.evaluate import calibrate_run, evaluate_run
    from busassist.training.export import export_run

    busi = shared_dir / "data" / "busi"
    tmp = tmp_path_factory.mktemp("mask-study")
    run = train(tiny_config(busi, tmp / "run", tmp / "cache", epochs=2))
    model = export_run(run)
    calibrate_run(run, model, busi)
    card = evaluate_run(run, model, busi)
    return busi, run, card


def test_study_scores_every_variant_on_validation_and_only_two_on_test(exported_run) -> None:
    busi, run, card = exported_run
    result = mask_study(run, busi)
    with (run / "mask_study.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == result["variants_tried"] == len(THRESHOLDS) * len(COMPONENT_FRACTIONS)
    assert set(rows[0]) == {"threshold", "min_component_fraction", "dice", "normal_no_lesion"}, "no test column"
    unchanged = result["unchanged"]
    assert unchanged["validation"]["dice"] == pytest.approx(card["validation"]["dice"]["value"], abs=1e-9)
    assert unchanged["test"]["dice"] == pytest.approx(card["test"]["dice"]["value"], abs=1e-9)
    best = max(float(row["dice"]) for row in rows)
    assert result["validation_pick"]["validation"]["dice"] == pytest.approx(best)
    assert result["validation_gain"] == pytest.approx(best - unchanged["validation"]["dice"])
    assert result["clears_bar"] == (result["validation_gain"] > result["min_gain"])
    assert json.loads((run / "mask_study.json").read_text()) == json.loads(json.dumps(result))


def test_command_on_a_folder_that_is_not_a_run_is_one_line(
    shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["tools", "mask-study", str(tmp_path / "missing")]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(tmp_path / "missing") in error and "not found" in error
    unexported = tmp_path / "trained-only"
    unexported.mkdir()
    (unexported / "split.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    assert main(["tools", "mask-study", str(unexported), "--data", str(shared_dir / "data" / "busi")]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "emtnet.onnx" in error
