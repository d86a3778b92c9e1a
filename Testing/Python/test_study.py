"""Studies as specs (``training/study.py``): spec checks, a tiny study run end to end, resume and report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from training_fixtures import tiny_config

from busassist.training.cli import main
from busassist.training.cv_compare import compare_cv
from busassist.training.study import SPEC_DIR, SpecError, load_spec, resolve_spec, run_study, study_report


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_builtin_specs_load_and_describe_the_papers_experiments() -> None:
    names = sorted(path.stem for path in SPEC_DIR.glob("*.toml"))
    assert names == [
        "ablation",
        "cv",
        "distill",
        "distill-out-of-fold",
        "grid",
        "keep-rule",
        "pinned-seeds",
        "seed-spread",
        "sweep-wp",
    ]
    sweep = load_spec(resolve_spec("sweep-wp"))
    assert sweep.folds == 4 and len(sweep.variants()) == 14
    assert sweep.variants()[0] == ("w_p-3", {"task": "single-clf", "w_p": 3.0})  # the reference first
    grid = load_spec(resolve_spec("grid"))
    assert len(grid.variants()) == 25 and grid.variants()[0][0] == "w_clf-1.5_w_p-3"
    assert [name for name, _ in load_spec(resolve_spec("ablation")).variants()] == [
        "task-emtnet",
        "task-single-clf",
        "task-single-sgm",
    ]
    assert [r for r, _ in load_spec(resolve_spec("seed-spread")).replicates] == ["seed-1", "seed-2", "seed-3"]
    # the full-size "after" pairs with reports/keep-rule-full seed by seed, make reproduce's seed 42 first
    assert [r for r, _ in load_spec(resolve_spec("pinned-seeds")).replicates] == ["seed-42", "seed-1", "seed-2"]
    distill = load_spec(resolve_spec("distill"))
    assert distill.variants() == [("teachers-0", {"teachers": 0}), ("teachers-3", {"teachers": 3})]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('name = "x"\nfolds = 2\nbogus = 1\n', "unknown key(s) bogus"),
        ("folds = 2\n", "has no name"),
        ('name = "x"\n', "either folds"),
        ('name = "x"\nfolds = 2\nseeds = [1]\n', "either folds"),
        ('name = "x"\nfolds = 1\n', "at least 2"),
        ('name = "x"\nfolds = 2\n[base]\nout_dir = "/tmp"\n', "out_dir: not training settings"),
        ('name = "x"\nfolds = 2\n[vary]\nlearning_rat = [1]\n', "learning_rat: not training settings"),
        ('name = "x"\nfolds = 2\n[vary]\nw_p = 3\n', "non-empty list"),
        ('name = "x"\nfolds = 2\nreference = { w_p = 9.0 }\n[vary]\nw_p = [1.0]\n', "is none of the variants"),
        ('name = "x"\nfolds = [\n', "not valid TOML"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_file(tmp_path: Path, text: str, reason: str) -> None:
    spec = write(tmp_path / "bad.toml", text)
    with pytest.raises(SpecError) as error:
        load_spec(spec)
    message = str(error.value)
    assert str(spec) in message and reason in message and "\n" not in message


def test_an_unknown_spec_name_lists_the_builtin_ones() -> None:
    with pytest.raises(
        SpecError, match="cv, distill, distill-out-of-fold, grid, keep-rule, pinned-seeds, seed-spread, sweep-wp"
    ):
        resolve_spec("no-such-study")


def test_study_run_help_names_every_builtin_spec(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["study", "run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "cv, distill, distill-out-of-fold, grid, keep-rule, pinned-seeds, seed-spread, sweep-wp" in help_text


@pytest.fixture(scope="module")
def tiny_study(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two variants (W_p 1 and 3) x two training seeds on the fixed split, 64 px, one epoch."""
    folder = tmp_path_factory.mktemp("study")
    spec = write(
        folder / "tiny.toml",
        'name = "tiny"\nseeds = [1, 2]\nreference = { w_p = 3.0 }\n[base]\ntask = "single-clf"\n'
        "[vary]\nw_p = [1.0, 3.0]\n",
    )
    out = folder / "out"
    base = tiny_config(shared_dir / "data" / "busi", out, folder / "cache")
    run_study(load_spec(spec), base, out)
    return spec, out


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_variant_and_replicate_is_trained_and_tabulated(tiny_study: tuple[Path, Path]) -> None:
    _, out = tiny_study
    study = rows(out / "study.csv")
    assert [(row["variant"], row["replicate"]) for row in study] == [
        ("w_p-3", "seed-1"),
        ("w_p-3", "seed-2"),
        ("w_p-1", "seed-1"),
        ("w_p-1", "seed-2"),
    ]
    for variant, w_p in (("w_p-3", 3.0), ("w_p-1", 1.0)):
        for seed in (1, 2):
            trained = json.loads((out / variant / f"seed-{seed}" / "config.json").read_text())["config"]
            assert (trained["w_p"], trained["seed"], trained["task"]) == (w_p, seed, "single-clf")
    summary = {row["variant"]: row for row in rows(out / "summary.csv")}
    assert summary["w_p-3"]["replicates"] == "2"
    accs = [float(row["acc"]) for row in study if row["variant"] == "w_p-1"]
    assert float(summary["w_p-1"]["acc_min"]) == min(accs) and float(summary["w_p-1"]["acc_max"]) == max(accs)
    record = json.loads((out / "study.json").read_text())
    assert record["study"] == "tiny" and len(record["data_sha256"]) == 64 and "w_p = [1.0, 3.0]" in record["spec"]


def test_variants_compare_paired_by_replicate_with_the_one_comparison(tiny_study: tuple[Path, Path]) -> None:
    _, out = tiny_study
    comparison = compare_cv(out / "w_p-1", out / "w_p-3")
    assert comparison["folds"] == 2 and comparison["changed_settings"] == {"w_p": [3.0, 1.0]}
    assert comparison["acc"]["folds_compared"] == 2
    report = study_report(out)
    assert "## w_p-1 against w_p-3" in report and "| w_p-3 | 2 |" in report
    assert (out / "report.md").read_text() == report
    assert "![w_p](w_p.png)" in report and (out / "w_p.png").stat().st_size > 1000  # the paper's Fig. 2 shape
    assert "Network size" not in report  # only a study that varies the task has Table 1's size columns


def test_a_study_over_tasks_reports_like_the_papers_table_1(shared_dir: Path, tmp_path: Path) -> None:
    """The ablation's shape: EMT-Net against its single-task halves. Its report compares each half with
    EMT-Net on the metrics both have (it used to refuse: "task differs") and carries Table 1's size
    columns from the network definitions: EMT-Net 5.13 M parameters, the paper's 5.1 M."""
    spec = write(
        tmp_path / "tasks.toml",
        'name = "tasks"\nseeds = [1]\nreference = { task = "emtnet" }\n'
        '[vary]\ntask = ["emtnet", "single-clf", "single-sgm"]\n',
    )
    out = tmp_path / "out"
    run_study(load_spec(spec), tiny_config(shared_dir / "data" / "busi", out, tmp_path / "cache"), out)
    report = study_report(out)
    assert "## task-single-clf against task-emtnet" in report and "changed: task emtnet -> single-clf" in report
    single_clf = report.split("## task-single-clf against task-emtnet")[1].split("##")[0]
    assert "| sen |" in single_clf and "| dice |" not in single_clf  # Single-CLF draws no mask
    single_sgm = report.split("## task-single-sgm against task-emtnet")[1].split("##")[0]
    assert "| dice |" in single_sgm and "| sen |" not in single_sgm  # Single-SGM has no classifier
    sizes = report.split("## Network size (paper Table 1)")[1].split("##")[0]
    assert "| emtnet | 5.13 M | 20.6 MB |" in sizes
    assert "| single-clf | 3.80 M |" in sizes and "| single-sgm | 4.53 M |" in sizes


def test_a_rerun_trains_nothing_again(tiny_study: tuple[Path, Path], shared_dir: Path) -> None:
    spec, out = tiny_study
    finished = out / "w_p-1" / "seed-2" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    base = tiny_config(shared_dir / "data" / "busi", out, out.parent / "cache")
    run_study(load_spec(spec), base, out)
    assert finished.stat().st_mtime_ns == stamp
    assert "resumed" in json.loads((out / "study.json").read_text())


def test_the_command_line_runs_and_reports_a_spec(shared_dir: Path, tmp_path: Path, capsys) -> None:
    spec = write(tmp_path / "one.toml", 'name = "one"\nseeds = [7]\n[base]\ntask = "single-clf"\n')
    out = tmp_path / "out"
    tiny = ["--image-size", "64", "--epochs", "1", "--batch-size", "8", "--limit", "40", "--no-pretrained"]
    common = ["--data", str(shared_dir / "data" / "busi"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert main(["study", "run", str(spec), "--out", str(out), *common, *tiny]) == 0
    assert "1 trainings" in capsys.readouterr().out
    assert main(["study", "report", str(out)]) == 0
    assert "# Study one" in capsys.readouterr().out
    assert main(["study", "report", str(tmp_path)]) == 1
    assert "not a study folder" in capsys.readouterr().err
    assert main(["study", "run", str(tmp_path / "none.toml"), "--out", str(out)]) == 1


def test_the_trainer_has_at_most_eight_verbs() -> None:
    from busassist.training.cli import build_parser

    parser = build_parser()
    verbs = next(action for action in parser._actions if action.dest == "command").choices
    assert sorted(verbs) == ["calibrate", "compare", "evaluate", "export", "fit", "publish", "study", "tools"]


def test_a_cross_validated_w_p_sweep_checks_the_slider_claim(shared_dir: Path, tmp_path: Path) -> None:
    """The old `sweep-wp` verb's outputs from a spec: the figure and the thresholded-vs-trained check."""
    spec = write(
        tmp_path / "sweep.toml",
        'name = "sweep"\nfolds = 2\nreference = { w_p = 3.0 }\n[base]\ntask = "single-clf"\n[vary]\nw_p = [1.0, 3.0]\n',
    )
    out = tmp_path / "out"
    run_study(load_spec(spec), tiny_config(shared_dir / "data" / "busi", out, tmp_path / "cache"), out)
    report = study_report(out)
    assert "Thresholding one model against training at each W_p" in report
    check = json.loads((out / "operating_check.json").read_text())
    pairs = {pair["w_p"]: pair for pair in check["pairs"]}
    assert pairs[3.0]["threshold"] == 0.5 and pairs[1.0]["threshold"] == 0.75
    assert (out / "sweep_vs_threshold.png").stat().st_size > 1000 and (out / "w_p.png").stat().st_size > 1000


def test_without_data_location_the_trainer_says_where_to_give_it(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.delenv("BUSASSIST_DATA", raising=False)
    monkeypatch.delenv("BUSASSIST_PRETRAINED", raising=False)
    assert main(["fit", "--out", str(tmp_path / "run"), "--no-pretrained"]) == 1
    assert "give --data DIR or set BUSASSIST_DATA" in capsys.readouterr().err
    assert main(["fit", "--out", str(tmp_path / "run"), "--data", str(tmp_path)]) == 1
    assert "set BUSASSIST_PRETRAINED" in capsys.readouterr().err


def test_the_card_names_no_path_of_the_training_machine() -> None:
    from busassist.training.evaluate import portable_config

    portable = portable_config(
        {"data_root": "/home/x/busi", "cache_dir": "/tmp/c", "pretrained": "/home/x/m.pb", "w_p": 3.0, "extra": {}}
    )
    assert portable == {"pretrained": "m.pb", "w_p": 3.0}


def test_the_production_line_from_the_command_line(shared_dir: Path, tmp_path: Path, capsys) -> None:
    """fit -> export -> calibrate -> evaluate, each its own verb; evaluate refuses a model changed after sealing."""
    from busassist.core.model_store import sha256_of

    busi = ["--data", str(shared_dir / "data" / "busi")]
    tiny = ["--image-size", "64", "--epochs", "1", "--batch-size", "8", "--limit", "40", "--no-pretrained"]
    run = tmp_path / "run"
    assert (
        main(["fit", "--out", str(run), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", *busi, *tiny]) == 0
    )
    assert main(["export", str(run)]) == 0
    exporter_graph = tmp_path / "exporter-graph.onnx"
    assert main(["export", str(run), "--exporter-graph", str(exporter_graph)]) == 0
    import onnx

    kinds = {node.op_type for node in onnx.load(str(exporter_graph)).graph.node}
    assert "ConvTranspose" in kinds and "DepthToSpace" not in kinds, "the exporter's graph, not the fast form"
    assert main(["calibrate", str(run), *busi]) == 0
    sealed = sha256_of(run / "emtnet.onnx")
    from busassist.core.backends import read_probe_reference

    assert read_probe_reference(run / "emtnet.onnx", sealed) is not None, "sealing writes auto's probe reference"
    assert main(["evaluate", str(run), *busi, "--report", str(tmp_path / "report")]) == 0
    assert sha256_of(run / "emtnet.onnx") == sealed and (run / "model_card.json").exists()
    assert (tmp_path / "report" / "report.md").exists()
    capsys.readouterr()
    with open(run / "emtnet.onnx", "ab") as handle:
        handle.write(b"\0")
    assert main(["evaluate", str(run), *busi]) == 1
    assert "does not match" in capsys.readouterr().err


def test_the_command_line_options_are_generated_from_the_training_config(tmp_path: Path) -> None:
    """One source of defaults: a bare `fit` gives TrainConfig's own defaults, the preset its three."""
    from dataclasses import asdict, fields

    from busassist.training.cli import build_parser, config_from_args
    from busassist.training.experiments import PRESETS
    from busassist.training.trainer import TrainConfig

    args = build_parser().parse_args(["fit", "--out", str(tmp_path), "--data", str(tmp_path), "--no-pretrained"])
    config = asdict(config_from_args(args, tmp_path))
    defaults = asdict(TrainConfig(str(tmp_path), str(tmp_path)))
    preset = PRESETS["full"]
    assert config == {**defaults, **preset}
    quick = build_parser().parse_args(["fit", "--out", "x", "--preset", "cpu-quick", "--epochs", "3", "--lr", "1e-3"])
    rebuilt = config_from_args(quick, tmp_path)
    assert (rebuilt.image_size, rebuilt.epochs, rebuilt.learning_rate) == (128, 3, 1e-3)
    study = build_parser().parse_args(["study", "run", "cv", "--out", "x"])
    assert study.preset is None  # the spec's own preset, unless given
    generated = {f.name for f in fields(TrainConfig) if "section" in f.metadata}
    assert {"w_p", "w_clf", "keep", "learning_rate", "task", "extra_train"} <= generated


def test_calibrate_on_pooled_out_of_fold_predictions(shared_dir: Path, tmp_path: Path, capsys) -> None:
    """`calibrate --pooled KFOLD_RUN`: the operating table from every fold's held-out test part."""
    from busassist.core.model_store import read_metadata, verify_model
    from busassist.training.evaluate import pooled_predictions

    busi = shared_dir / "data" / "busi"
    spec = write(tmp_path / "cv.toml", 'name = "cv"\nfolds = 2\n[base]\ntask = "emtnet"\n')
    study = tmp_path / "cv"
    run_study(load_spec(spec), tiny_config(busi, study, tmp_path / "cache"), study)
    labels, probabilities, folds = pooled_predictions(study / "default", 3.0)
    fold_sizes = [len(rows(study / "default" / f"fold-{k}" / "test_predictions.csv")) for k in range(2)]
    assert folds == 2 and labels.size == probabilities.size == sum(fold_sizes) > 0
    with pytest.raises(ValueError, match="W_p 3"):
        pooled_predictions(study / "default", 5.0)

    run = tmp_path / "run"
    common = ["--data", str(busi), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    tiny = ["--image-size", "64", "--epochs", "1", "--batch-size", "8", "--limit", "40", "--no-pretrained"]
    assert main(["fit", "--out", str(run), *common, *tiny]) == 0
    assert main(["export", str(run)]) == 0
    assert main(["calibrate", str(run), "--data", str(busi), "--pooled", str(study / "default")]) == 0
    assert "pooled out-of-fold predictions" in capsys.readouterr().out
    record = json.loads((run / "calibration.json").read_text())
    assert f"{labels.size} labelled images, 2 folds" in record["fitted_on"]
    assert verify_model(run / "emtnet.onnx") == record["model_sha256"]
    assert read_metadata(run / "emtnet.onnx").operating_table == record["operating_table"]
    assert main(["calibrate", str(run), "--data", str(busi), "--pooled", str(tmp_path)]) == 1
    assert "not a finished K-fold run" in capsys.readouterr().err
