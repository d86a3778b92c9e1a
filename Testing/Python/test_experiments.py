"""Experiment pieces on tiny configurations: K-fold splits, resumability, tables, plots, and the tools that
read the folders of the experiment verbs of before the study specs (written here by ``legacy_layout``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import legacy_layout as legacy
import numpy as np
import pytest
from training_fixtures import tiny_config

from busassist.training import experiments
from busassist.training.busi import discover, near_duplicate_groups
from busassist.training.trainer import TrainConfig, kfold_split


@pytest.fixture(scope="module")
def busi(shared_dir: Path) -> Path:
    return shared_dir / "data" / "busi"


def tiny(busi: Path, out: Path) -> TrainConfig:
    return tiny_config(busi, out, out / "cache")


def test_kfold_holds_out_every_image_once_and_keeps_groups_whole(busi: Path) -> None:
    cases = discover(busi)
    groups = near_duplicate_groups(busi / "near_duplicates.json")
    folds = [kfold_split(cases, groups, 4, fold, 42) for fold in range(4)]
    held_out = sorted(i for split in folds for i in split.test + split.val)
    assert held_out == list(range(len(cases))), "each image is held out in exactly one fold"
    tested = [i for split in folds for i in split.test]
    assert len(tested) == len(set(tested))
    index = {case.key: i for i, case in enumerate(cases)}
    for split in folds:
        assert not (set(split.train) & set(split.val)) and not (set(split.train) & set(split.test))
        assert len(split.train) == pytest.approx(0.75 * len(cases), rel=0.03)
        assert len(split.test) == pytest.approx(0.125 * len(cases), rel=0.1)
        side = {i: name for name in ("train", "val", "test") for i in getattr(split, name)}
        for group in groups:
            assert len({side[index[key]] for key in group}) == 1
    with pytest.raises(ValueError):
        kfold_split(cases, groups, 4, 4, 42)


def test_sweep_wp_writes_table_plot_and_resumes(busi: Path, tmp_path: Path) -> None:
    config = tiny(busi, tmp_path)
    rows = legacy.sweep_wp(config, tmp_path / "sweep", values=(1.0, 3.0), folds=2, reference_wp=3.0)
    assert [row["w_p"] for row in rows] == [1.0, 3.0]
    assert {"acc_mean", "sen_mean", "spe_mean", "auc_mean", "seconds_per_epoch_mean"} <= set(rows[0])
    assert rows[0]["seconds_per_epoch_mean"] > 0
    assert (tmp_path / "sweep" / "sweep_wp.png").stat().st_size > 1000
    assert (tmp_path / "sweep" / "sweep_vs_threshold.png").stat().st_size > 1000
    check = json.loads((tmp_path / "sweep" / "operating_check.json").read_text())
    pairs = {pair["w_p"]: pair for pair in check["pairs"]}
    # At W' = W_ref the threshold is 0.5 and the "thresholded" model *is* the trained one, fold by fold.
    assert pairs[3.0]["threshold"] == 0.5
    for key in ("acc", "sen", "spe"):
        assert pairs[3.0][f"{key}_difference_pp"] in (0.0, None)
    assert pairs[1.0]["threshold"] == 0.75
    assert check["summary"]["compared_values"] == 1, "the reference W_p is left out of the summary"
    # Trainings finished before test_predictions.csv existed: predicted again from best.pt.
    from busassist.training.operating_check import fold_test_predictions

    saved = tmp_path / "sweep" / "wp-1" / "fold-0" / "test_predictions.csv"
    labels, probabilities = fold_test_predictions(saved.parent)
    saved.unlink()
    again_labels, again = fold_test_predictions(saved.parent)
    np.testing.assert_array_equal(again_labels, labels)
    np.testing.assert_allclose(again, probabilities, atol=1e-5)
    with (tmp_path / "sweep" / "sweep_wp.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2
    fold_metrics = tmp_path / "sweep" / "wp-3" / "fold-1" / "metrics.json"
    before = json.loads(fold_metrics.read_text())
    stamp = fold_metrics.stat().st_mtime_ns
    legacy.sweep_wp(config, tmp_path / "sweep", values=(1.0, 3.0), folds=2)
    assert fold_metrics.stat().st_mtime_ns == stamp, "a finished fold must not be retrained"
    assert json.loads(fold_metrics.read_text()) == before


def test_paired_comparison_is_fold_by_fold(tmp_path: Path) -> None:
    """Differences are paired per fold; their mean and standard error are over folds."""
    from busassist.training.operating_check import paired_comparison, summarise_comparison, write_test_predictions

    rng = np.random.default_rng(0)
    trained_sen = {1.0: [0.5, 0.7], 3.0: [0.8, 0.6]}
    reference_sen = []
    for fold in range(2):
        labels = rng.integers(0, 2, 200)
        probabilities = np.clip(0.3 * labels + rng.uniform(0, 0.7, 200), 0, 1)
        run = tmp_path / "wp-3" / f"fold-{fold}"
        run.mkdir(parents=True)
        write_test_predictions(run / "test_predictions.csv", [str(i) for i in range(200)], labels, probabilities)
        reference_sen.append(float(np.mean(probabilities[labels == 1] >= 0.75)))
        for weight, sens in trained_sen.items():
            folder = tmp_path / f"wp-{weight:g}" / f"fold-{fold}"
            folder.mkdir(parents=True, exist_ok=True)
            metrics = {"acc": 0.8, "sen": sens[fold], "spe": 0.9}
            (folder / "metrics.json").write_text(json.dumps(metrics))
    rows = paired_comparison(tmp_path, [1.0, 3.0], 3.0, folds=2)
    assert [row["threshold"] for row in rows] == [0.75, 0.5]
    differences = 100 * (np.array(trained_sen[1.0]) - np.array(reference_sen))
    assert rows[0]["sen_difference_pp"] == pytest.approx(differences.mean())
    assert rows[0]["sen_difference_se_pp"] == pytest.approx(np.std(differences, ddof=1) / np.sqrt(2))
    assert rows[0]["sen_thresholded"] == pytest.approx(np.mean(reference_sen))
    summary = summarise_comparison(rows, 3.0)
    assert summary["compared_values"] == 1
    assert summary["sen_mean_abs_difference_pp"] == pytest.approx(abs(differences.mean()))


def test_progress_counts_trainings_and_estimates_from_those_run_here(capsys: pytest.CaptureFixture) -> None:
    progress = experiments.Progress(4)
    assert "already finished" in progress.record("runs/a", None)
    assert progress.estimate_left() is None, "nothing trained here yet: no estimate"
    line = progress.record("runs/b", 120.0)
    assert line.startswith("[2/4] runs/b: trained in 2.0 min") and line.endswith("about 4 min left")
    progress.record("runs/c", 240.0)
    assert progress.estimate_left() == pytest.approx(180.0)
    assert "resumed and finished" in progress.record("runs/d", 5.0, resumed=True)
    assert progress.durations == [120.0, 240.0], "a resumed training is only part of one"
    assert "[3/4]" in capsys.readouterr().out


def test_experiments_report_gathers_every_experiment(busi: Path, tmp_path: Path) -> None:
    from busassist.training.cli import main

    config = tiny(busi, tmp_path)
    runs = tmp_path / "runs"
    for name in ("cv", "sweep-wp", "grid"):
        experiments.record_command(runs / name, config, {"experiment": name})
    legacy.cross_validate(config, runs / "cv", folds=2)
    legacy.sweep_wp(config, runs / "sweep-wp", values=(1.0, 3.0), folds=2, reference_wp=3.0)
    legacy.grid(config, runs / "grid", values=(1.0, 2.0))
    out = tmp_path / "report"
    argv = ["tools", "experiments-report", "--out", str(out)]
    argv += [f"--{n}={runs / n}" for n in ("cv", "sweep-wp", "grid")]
    assert main(argv + ["--ablation", str(runs / "missing")]) == 0
    readme = (out / "README.md").read_text()
    for heading in ("Cross-validation", "W_p sweep", "slider's claim", "W_clf × W_p grid", "Trainer speed"):
        assert heading in readme
    assert "Ablation" not in readme, "an experiment that was not run is left out, not faked"
    experiments.record_command(runs / "ablation", config, {"experiment": "ablation"})  # started, not finished
    assert main(argv + ["--ablation", str(runs / "ablation")]) == 0
    assert "Not finished" in (out / "README.md").read_text()
    assert "K = 2" in readme
    assert (out / "sweep-wp" / "sweep_vs_threshold.png").exists() and (out / "grid" / "grid.csv").exists()
    assert not list(out.rglob("*.pt")), "checkpoints never enter the report"
    grid_rows = [line for line in readme.splitlines() if line.startswith("| 1 | 2 |") or line.startswith("| 2 | 1 |")]
    assert len(grid_rows) == 2
    speed = [line for line in readme.splitlines() if line.startswith("| sweep-wp | single-clf | 64 px | cpu |")]
    assert speed and float(speed[0].split("|")[-2]) > 0


def test_cv_rescore_adds_metrics_without_training(busi: Path, tmp_path: Path) -> None:
    """An older cv run gains today's columns; scores, timing and weights stay as they were."""
    from busassist.training.cli import main

    config = tiny(busi, tmp_path / "cv")
    out = tmp_path / "cv"
    experiments.record_command(out, config, {"experiment": "cv"})
    legacy.cross_validate(config, out, folds=2)
    before = [json.loads((out / f"fold-{k}" / "metrics.json").read_text()) for k in range(2)]
    weights = [(out / f"fold-{k}" / "best.pt").stat().st_mtime_ns for k in range(2)]
    for k in range(2):  # as a run scored before the "no lesion" columns existed
        old = {key: v for key, v in before[k].items() if key not in ("lesion_found", "normal_no_lesion")}
        (out / f"fold-{k}" / "metrics.json").write_text(json.dumps({**old, "seconds_per_epoch": 99.0}))
    assert main(["tools", "cv-rescore", str(out)]) == 0
    with (out / "folds.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert "lesion_found" in rows[0] and "normal_no_lesion" in rows[0]
    for k, row in enumerate(rows):
        assert float(row["auc"]) == pytest.approx(before[k]["auc"]) and float(row["dice"]) == pytest.approx(
            before[k]["dice"]
        )
        assert float(row["seconds_per_epoch"]) == 99.0, "the training's own timing is kept"
    assert [(out / f"fold-{k}" / "best.pt").stat().st_mtime_ns for k in range(2)] == weights
    assert json.loads((out / "command.json").read_text())["rescored"][0]["code_version"]


def test_cv_rescore_refuses_what_it_cannot_score_faithfully_in_one_line(busi: Path, tmp_path: Path, capsys) -> None:
    """Unfinished, renumbered, re-split or other-data runs are refused, and nothing is overwritten."""
    import shutil

    from busassist.training.cli import main

    finished = tmp_path / "cv"
    experiments.record_command(finished, tiny(busi, finished), {"experiment": "cv"})
    legacy.cross_validate(tiny(busi, finished), finished, folds=2)

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(finished, target)
        return target

    def edit_json(path: Path, change) -> None:
        record = json.loads(path.read_text())
        change(record)
        path.write_text(json.dumps(record))

    unfinished = copy("unfinished")
    (unfinished / "fold-1" / "metrics.json").unlink()
    renumbered = copy("renumbered")  # fold-0 gone: fold-1 must not be scored as fold 0 of a 1-fold run
    shutil.rmtree(renumbered / "fold-0")
    other_data = copy("other-data")
    edit_json(other_data / "command.json", lambda record: record.update(data_sha256="0" * 64))
    resplit = copy("resplit")
    edit_json(resplit / "fold-1" / "split.json", lambda record: record["test"].reverse())
    not_cv = copy("sweep")
    edit_json(not_cv / "command.json", lambda record: record.update(experiment="sweep-wp"))
    broken = copy("broken")
    (broken / "fold-0" / "metrics.json").write_text("{")
    cases = [
        (unfinished, "unfinished: fold-1"),
        (renumbered, "not folds 0..0"),
        (other_data, "data under"),
        (resplit, "test part differs"),
        (not_cv, "not the record of a cross-validation run"),
        (broken, "metrics.json: not valid JSON"),
        (tmp_path / "nowhere", "not a cv output folder"),
    ]
    for folder, reason in cases:
        before = (folder / "fold-0" / "metrics.json").read_text() if (folder / "fold-0").exists() else None
        assert main(["tools", "cv-rescore", str(folder)]) == 1, folder
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and reason in error, (folder, error)
        if before is not None:
            assert (folder / "fold-0" / "metrics.json").read_text() == before, "a refused run is left untouched"


def test_summary_of_folds_tolerates_a_metric_missing_from_some_folds() -> None:
    summary = experiments.summarise([{"dice": 0.5, "normal_no_lesion": 0.8}, {"dice": 0.7}])
    assert summary["dice_mean"] == pytest.approx(0.6) and summary["normal_no_lesion_mean"] == pytest.approx(0.8)
