"""Paired comparison of two cross-validations or study variants (`busassist-train compare A B`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from busassist.training.cli import main
from busassist.training.cv_compare import COMPARED, compare_cv, format_comparison
from busassist.training.tables import read_rows, write_csv


def _cv_folder(path: Path, fold_dice: list[float], detection: bool = True, **config) -> Path:
    """A `cv` output folder as the real command writes it: command.json and folds.csv."""
    path.mkdir(parents=True)
    base = {"seed": 42, "image_size": 128, "data_root": "busi", "limit": None, "extra_train": []}
    base.update(config)
    command = {"data_sha256": "abc", "base_config": {**base, "out_dir": str(path)}}
    (path / "command.json").write_text(json.dumps(command))
    rows = [
        {"fold": k, "n_test": 78, "acc": 0.8, "sen": 0.8 + 0.01 * k, "spe": 0.9, "auc": 0.9, "dice": d}
        for k, d in enumerate(fold_dice)
    ]
    if detection:  # runs scored before the "no lesion" columns existed lack them
        for k, row in enumerate(rows):
            row.update(lesion_found=0.9, normal_no_lesion=0.8 - 0.1 * k * ("dice" in config))
    write_csv(path / "folds.csv", rows)
    return path


def test_differences_are_paired_fold_by_fold(tmp_path: Path) -> None:
    reference = _cv_folder(tmp_path / "ref", [0.50, 0.60, 0.40, 0.55])
    candidate = _cv_folder(tmp_path / "cand", [0.52, 0.63, 0.41, 0.54], dice="image")
    result = compare_cv(candidate, reference)
    dice = result["dice"]
    assert dice["difference"] == pytest.approx(0.0125)
    # Paired: the SE of (0.02, 0.03, 0.01, -0.01), far below the spread of the folds themselves.
    assert dice["difference_se"] == pytest.approx(0.008539, abs=1e-5)
    assert dice["folds_better"] == 3
    assert result["sen"]["difference"] == 0.0 and result["sen"]["folds_better"] == 0
    # The reference predates the option: it is filled with the default, not shown as "None -> ...".
    assert result["changed_settings"] == {"dice": ["batch", "image"]}
    table = format_comparison(result)
    assert "dice batch -> image" in table and "| dice | 0.512 | 0.525 | +0.012 ± 0.009 | 3/4 |" in table
    assert all(f"| {key} |" in table for key in COMPARED)


def test_data_read_from_another_path_is_still_comparable(tmp_path: Path) -> None:
    reference = _cv_folder(tmp_path / "ref", [0.5, 0.6])
    candidate = _cv_folder(tmp_path / "cand", [0.5, 0.7], data_root="/elsewhere/busi", device="cuda")
    result = compare_cv(candidate, reference)
    assert result["changed_settings"] == {} and result["dice"]["difference"] == pytest.approx(0.05)


def test_undefined_folds_drop_out_of_both_sides(tmp_path: Path) -> None:
    reference = _cv_folder(tmp_path / "ref", [0.5, 0.6, float("nan")])
    candidate = _cv_folder(tmp_path / "cand", [0.6, 0.6, 0.9])
    dice = compare_cv(candidate, reference)["dice"]
    assert dice["folds_compared"] == 2 and dice["candidate"] == pytest.approx(0.6) and dice["reference"] == 0.55


def test_tasks_compare_on_the_metrics_both_have(tmp_path: Path) -> None:
    """The ablation (paper Table 1): Single-CLF against EMT-Net on the same folds, classification only."""
    reference = _cv_folder(tmp_path / "ref", [0.5, 0.6], task="emtnet")
    candidate = _cv_folder(tmp_path / "cand", [0.5, 0.6], task="single-clf")
    rows = [
        {k: v for k, v in row.items() if k not in ("dice", "lesion_found", "normal_no_lesion")}
        for row in read_rows(candidate / "folds.csv")
    ]
    write_csv(candidate / "folds.csv", rows)
    result = compare_cv(candidate, reference)
    assert result["changed_settings"] == {"task": ["emtnet", "single-clf"]}
    assert "sen" in result and result["sen"]["folds_compared"] == 2
    assert "dice" not in result and "lesion_found" not in result  # Single-CLF draws no mask


@pytest.mark.parametrize("change", [{"seed": 7}, {"limit": 40}])
def test_runs_on_different_folds_are_refused(tmp_path: Path, change: dict) -> None:
    reference = _cv_folder(tmp_path / "ref", [0.5, 0.6])
    candidate = _cv_folder(tmp_path / "cand", [0.5, 0.6], **change)
    with pytest.raises(ValueError, match="not comparable"):
        compare_cv(candidate, reference)


def test_different_input_sizes_compare_with_a_dice_caveat(tmp_path: Path) -> None:
    reference = _cv_folder(tmp_path / "ref", [0.5, 0.6])
    candidate = _cv_folder(tmp_path / "cand", [0.6, 0.6], image_size=160)
    result = compare_cv(candidate, reference)
    assert result["changed_settings"] == {"image_size": [128, 160]}
    assert "128 vs 160 px" in result["caveat"] and "Dice" in result["caveat"]
    assert "Caveat: input sizes differ (128 vs 160 px)" in format_comparison(result)
    same_size = compare_cv(_cv_folder(tmp_path / "other", [0.5, 0.6], dice="image"), reference)
    assert "caveat" not in same_size and "Caveat" not in format_comparison(same_size)


def test_command_writes_json_and_reports_mismatch_in_one_line(tmp_path: Path, capsys) -> None:
    reference = _cv_folder(tmp_path / "ref", [0.5, 0.6])
    candidate = _cv_folder(tmp_path / "cand", [0.6, 0.6])
    assert main(["compare", str(candidate), str(reference)]) == 0
    saved = json.loads((candidate / "compare-vs-ref.json").read_text())
    assert saved["dice"]["difference"] == pytest.approx(0.05)
    other = _cv_folder(tmp_path / "other", [0.5, 0.6, 0.7])
    capsys.readouterr()
    assert main(["compare", str(other), str(reference)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "folds differ" in error


def test_detection_rates_are_compared_and_left_out_when_a_run_lacks_them(tmp_path: Path) -> None:
    reference = _cv_folder(tmp_path / "ref", [0.5, 0.6, 0.4, 0.5])
    candidate = _cv_folder(tmp_path / "cand", [0.5, 0.6, 0.4, 0.5], dice="image")
    result = compare_cv(candidate, reference)
    assert result["normal_no_lesion"]["difference"] == pytest.approx(-0.15)  # 0, -0.1, -0.2, -0.3
    assert result["normal_no_lesion"]["folds_better"] == 0 and result["lesion_found"]["difference"] == 0.0
    older = _cv_folder(tmp_path / "older", [0.5, 0.6, 0.4, 0.5], detection=False)
    result = compare_cv(candidate, older)
    assert "normal_no_lesion" not in result and "| normal_no_lesion |" not in format_comparison(result)
    assert result["dice"]["folds_compared"] == 4


def test_a_rate_undefined_in_one_fold_drops_that_fold_only(tmp_path: Path) -> None:
    """A fold without normal images leaves its normal_no_lesion cell empty: that pair drops out."""
    reference = _cv_folder(tmp_path / "ref", [0.5, 0.6, 0.4, 0.5])
    candidate = _cv_folder(tmp_path / "cand", [0.5, 0.6, 0.4, 0.5], dice="image")
    rows = (candidate / "folds.csv").read_text().splitlines()
    header = rows[0].split(",")
    cells = rows[2].split(",")
    cells[header.index("normal_no_lesion")] = ""
    rows[2] = ",".join(cells)
    (candidate / "folds.csv").write_text("\n".join(rows) + "\n")
    result = compare_cv(candidate, reference)
    assert result["normal_no_lesion"]["folds_compared"] == 3 and result["dice"]["folds_compared"] == 4


def test_the_one_fold_paired_engine_pairs_replicates_and_drops_undefined_ones() -> None:
    """``fold_paired_differences``, used by compare A B and by the W_p sweep's slider check."""
    from busassist.training.paired_compare import fold_paired_differences

    candidate = [{"sen": 0.7, "spe": ""}, {"sen": 0.9, "spe": 0.8}, {"sen": float("nan"), "spe": 0.9}]
    reference = [{"sen": 0.6, "spe": 0.5}, {"sen": 0.6, "spe": 0.7}, {"sen": 0.1, "spe": 0.9}]
    result = fold_paired_differences(candidate, reference, ("sen", "spe", "dice"))
    assert set(result) == {"sen", "spe"}  # no Dice on either side: left out
    sen = result["sen"]  # the third replicate is undefined in the candidate: it leaves both sides
    assert sen["folds_compared"] == 2 and sen["reference"] == pytest.approx(0.6) and sen["candidate"] == 0.8
    assert sen["difference"] == pytest.approx(0.2) and sen["difference_se"] == pytest.approx(0.1)
    assert sen["folds_better"] == 2
    spe = result["spe"]  # an empty CSV cell is undefined, not zero
    assert spe["folds_compared"] == 2 and spe["difference"] == pytest.approx(0.05)
