"""Replicate agreement: ``compare --check``'s paired test between the seeds of one recipe (tiny trainings)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from training_fixtures import tiny_config

from busassist.training.agreement import THRESHOLD_RULES, replicate_agreement
from busassist.training.cli import main
from busassist.training.study import load_spec, run_study


@pytest.fixture(scope="module")
def seed_study(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One EMT-Net variant x two seeds, 64 px, one epoch; plus a byte-identical copy of seed 1."""
    folder = tmp_path_factory.mktemp("agreement")
    spec = folder / "seeds.toml"
    spec.write_text('name = "seeds"\nseeds = [1, 2]\n[vary]\nkeep = ["final"]\n')
    out = folder / "out"
    run_study(load_spec(spec), tiny_config(shared_dir / "data" / "busi", out, folder / "cache", epochs=1), out)
    shutil.copytree(out / "keep-final" / "seed-1", out / "keep-final" / "seed-1-copy")
    return out


def test_every_pair_and_every_seed_against_the_shipped_model(seed_study: Path, shared_dir: Path) -> None:
    models = Path(__file__).resolve().parents[2] / "Resources" / "Models"
    rows = replicate_agreement(seed_study, shared_dir / "data" / "busi", models)
    pairs = [(row["kind"], row["new"], row["reference"]) for row in rows]
    assert pairs == [
        ("replicates", "seed-1-copy", "seed-1"),
        ("replicates", "seed-2", "seed-1"),
        ("replicates", "seed-2", "seed-1-copy"),
        ("against shipped", "seed-1", "shipped"),
        ("against shipped", "seed-1-copy", "shipped"),
        ("against shipped", "seed-2", "shipped"),
    ]
    identical = rows[0]
    assert identical["passes"] and identical["outside"] == []
    assert all(entry["difference"] == 0 for entry in identical["differences"].values())
    # a one-epoch 64 px network is far from the shipped model: the check must see it, as new - shipped
    for row in rows[3:]:
        assert not row["passes"] and {"auc", "dice"} & set(row["outside"]), row["outside"]
        assert row["differences"]["dice"]["difference"] < 0 and row["differences"]["dice"]["reference"] > 0.5
    # the second comparison of seed 2 (against the copy) is the first one's, image for image
    assert rows[1]["differences"] == rows[2]["differences"]
    written = json.loads((seed_study / "agreement.json").read_text())
    assert [row["passes"] for row in written["comparisons"]] == [row["passes"] for row in rows]
    markdown = (seed_study / "agreement.md").read_text()
    assert "| against shipped | keep-final | 0 of 3 |" in markdown
    assert "| replicates | keep-final | " in markdown

    # the decision threshold each rule fits on validation, and what it gives on test
    thresholds = written["thresholds"]
    assert len(thresholds) == 3 * len(THRESHOLD_RULES)
    for row in thresholds:
        if row["rule"] == THRESHOLD_RULES[0]:
            assert row["threshold"] == 0.5  # W' = W_p: W_p / (W_p + W_p)
        if row["rule"] == THRESHOLD_RULES[1]:
            assert row["validation_sen"] >= 0.9
        assert 0 < row["threshold"] <= 1
    copies = [row for row in thresholds if row["replicate"] in ("seed-1", "seed-1-copy")]
    assert [row["test_sen"] for row in copies[:3]] == [row["test_sen"] for row in copies[3:]]
    assert "## The decision threshold fitted on validation" in markdown


def test_folds_of_a_cross_validation_are_refused_in_one_line(
    seed_study: Path, shared_dir: Path, tmp_path: Path, capsys
) -> None:
    study = tmp_path / "folds"
    shutil.copytree(seed_study, study)
    other = study / "keep-final" / "seed-2" / "split.json"
    split = json.loads(other.read_text())
    split["test"] = split["test"][1:]
    other.write_text(json.dumps(split))
    code = main(["study", "agreement", str(study), "--data", str(shared_dir / "data" / "busi"), "--no-shipped"])
    assert code == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "different test images" in error and str(study) in error


def test_a_shipped_model_of_other_data_is_refused(seed_study: Path, shared_dir: Path, tmp_path: Path, capsys) -> None:
    models = Path(__file__).resolve().parents[2] / "Resources" / "Models"
    other = tmp_path / "models"
    shutil.copytree(models, other)
    card = json.loads((other / "model_card.json").read_text())
    card["data"]["sha256"] = "0" * 64
    (other / "model_card.json").write_text(json.dumps(card))
    code = main(
        ["study", "agreement", str(seed_study), "--data", str(shared_dir / "data" / "busi"), "--models-dir", str(other)]
    )
    assert code == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "other data" in error and "model_card.json" in error


def test_a_failed_check_is_put_beside_the_recipes_own_seed_to_seed_differences(tmp_path: Path) -> None:
    from busassist.training.agreement import RECIPE_AGREEMENT, seed_to_seed_context

    def row(kind: str, sen: float) -> dict:
        return {"kind": kind, "differences": {"sen": {"difference": sen}}}

    study = tmp_path / "agreement.json"
    rows = [row("replicates", -0.10), row("replicates", 0.05), row("against shipped", -0.40)]
    study.write_text(json.dumps({"comparisons": rows}))
    within = seed_to_seed_context(["sen"], {"sen": {"difference": -0.08}}, study)
    beyond = seed_to_seed_context(["sen"], {"sen": {"difference": 0.2}}, study)
    assert len(within) == 1 and "up to 0.100 (2 seed pairs): within" in within[0]  # the shipped rows do not count
    assert "beyond" in beyond[0]
    assert seed_to_seed_context(["sen"], {"sen": {"difference": 0.2}}, tmp_path / "missing.json") == []
    study.write_text("{not json")
    assert seed_to_seed_context(["sen"], {"sen": {"difference": 0.2}}, study) == []
    # the committed study the command line reads is there and has seed pairs
    assert seed_to_seed_context(["sen"], {"sen": {"difference": 0.0}})[0].endswith(
        "within the recipe's own training noise"
    )
    assert RECIPE_AGREEMENT.is_file()
