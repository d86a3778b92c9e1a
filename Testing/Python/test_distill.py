"""Ensemble distillation (training/distill.py): teachers of the same recipe soften the class target."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from training_fixtures import tiny_config

from busassist.training.distill import OUT_OF_FOLD, TEACHER_SEED_STRIDE, soft_targets, teacher_configs
from busassist.training.trainer import check_config, load_data, teacher_scoring, train


def test_soft_targets_blend_labels_with_the_teachers_and_leave_normal_images_out() -> None:
    labels = np.array([1, 0, -1, 1, 0], dtype=np.int8)
    targets = soft_targets(labels, [0, 1, 2], np.array([0.6, 0.2, 0.9], dtype=np.float32), 0.25)
    assert targets.dtype == np.float32
    np.testing.assert_allclose(targets, [0.75 + 0.15, 0.05, -1.0, 1.0, 0.0], rtol=0, atol=1e-7)


def test_teachers_are_the_students_recipe_with_their_own_seeds(tmp_path: Path) -> None:
    student = tiny_config(tmp_path, tmp_path / "student", tmp_path / "cache", seed=3, teachers=2, distill=0.4)
    first, second = teacher_configs(student)
    assert [first.seed, second.seed] == [3 * TEACHER_SEED_STRIDE + 1, 3 * TEACHER_SEED_STRIDE + 2]
    assert first.out_dir == str(tmp_path / "student" / "teachers" / "teacher-1")
    assert first.teachers == 0  # teachers do not distil in turn
    assert replace(first, out_dir=student.out_dir, seed=3, teachers=2) == student


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"teachers": -1}, "--teachers"),
        ({"teachers": 2, "distill": 1.5}, "--distill"),
        ({"teachers": 2, "distill": float("nan")}, "--distill"),
        ({"teachers": 2, "task": "single-sgm"}, "single-sgm"),
        ({"teachers": 1, "teacher_data": OUT_OF_FOLD}, "at least 2 teachers"),
        ({"teachers": 2, "teacher_data": "half"}, "--teacher-data"),
        ({"leave_out": 1, "leave_out_of": 1}, "N >= 2"),
        ({"leave_out": 0, "leave_out_of": 3}, "needs 1 <= part"),
    ],
)
def test_impossible_distillation_settings_are_refused_before_training(
    tmp_path: Path, overrides: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_config(tiny_config(tmp_path, tmp_path / "run", tmp_path / "cache", **overrides))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "best.pt", map_location="cpu", weights_only=False)["model"]


def test_a_distilled_student_trains_its_teachers_and_moves_only_with_their_weight(
    shared_dir: Path, tmp_path: Path
) -> None:
    """Weight 0 must give the undistilled training bit for bit (the teachers consume no randomness of
    the student's), weight 0.5 another one; the teachers and their checksums are recorded."""
    busi, cache = shared_dir / "data" / "busi", tmp_path / "cache"
    plain = train(tiny_config(busi, tmp_path / "plain", cache, image_size=32, limit=24))
    zero = train(tiny_config(busi, tmp_path / "zero", cache, image_size=32, limit=24, teachers=2, distill=0.0))
    half = train(tiny_config(busi, tmp_path / "half", cache, image_size=32, limit=24, teachers=2, distill=0.5))

    for name, tensor in _weights(plain).items():
        assert torch.equal(tensor, _weights(zero)[name]), name
    assert any(not torch.equal(tensor, _weights(half)[name]) for name, tensor in _weights(plain).items())

    recorded = json.loads((half / "config.json").read_text())["teachers"]
    assert [Path(teacher["run"]).name for teacher in recorded] == ["teacher-1", "teacher-2"]
    assert all(len(teacher["sha256"]) == 64 for teacher in recorded)
    teacher_seeds = [json.loads((Path(t["run"]) / "config.json").read_text())["config"]["seed"] for t in recorded]
    assert teacher_seeds == [42 * TEACHER_SEED_STRIDE + 1, 42 * TEACHER_SEED_STRIDE + 2]
    # The two students' teachers are the same trainings (same recipe, same seeds): same weights.
    assert [t["sha256"] for t in recorded] == [
        t["sha256"] for t in json.loads((zero / "config.json").read_text())["teachers"]
    ]


@pytest.mark.parametrize("folds", [0, 4])
def test_teachers_train_inside_the_students_training_split(shared_dir: Path, tmp_path: Path, folds: int) -> None:
    """No teacher sees the student's validation or test images (a K-fold teacher's partition once
    followed its own seed); out of fold, teacher k leaves out exactly the part whose targets it gives."""
    busi = shared_dir / "data" / "busi"
    student = tiny_config(busi, tmp_path / "s", tmp_path / "cache", teachers=3, teacher_data=OUT_OF_FOLD, folds=folds)
    _, split, _, cases = load_data(student)
    scoring = teacher_scoring(student, cases, split)
    assert sorted(i for part in scoring for i in part) == sorted(split.train)  # disjoint, covering
    assert all(part for part in scoring)
    for teacher, scored in zip(teacher_configs(student), scoring):
        _, teacher_split, _, _ = load_data(teacher)
        assert (teacher_split.val, teacher_split.test) == (split.val, split.test)
        assert sorted(teacher_split.train + scored) == sorted(split.train)
    whole = replace(student, teacher_data="all")
    assert teacher_scoring(whole, cases, split) == [split.train] * 3
    assert all(load_data(teacher)[1] == split for teacher in teacher_configs(whole))


def test_an_out_of_fold_student_trains_on_its_teachers_held_out_scores(shared_dir: Path, tmp_path: Path) -> None:
    busi, cache = shared_dir / "data" / "busi", tmp_path / "cache"
    settings = dict(image_size=32, limit=24, teachers=2, distill=0.5)
    whole = train(tiny_config(busi, tmp_path / "whole", cache, **settings))
    held_out = train(tiny_config(busi, tmp_path / "oof", cache, teacher_data=OUT_OF_FOLD, **settings))
    teachers = [Path(t["run"]) for t in json.loads((held_out / "config.json").read_text())["teachers"]]
    trained = [set(json.loads((run / "split.json").read_text())["train"]) for run in teachers]
    student_train = set(json.loads((held_out / "split.json").read_text())["train"])
    assert trained[0] | trained[1] == student_train and trained[0] & trained[1] == set()  # two halves
    assert any(not torch.equal(tensor, _weights(whole)[name]) for name, tensor in _weights(held_out).items())


def test_a_run_folder_is_not_resumed_on_other_images(shared_dir: Path, tmp_path: Path) -> None:
    """Whole-split teachers resumed as out-of-fold ones would score images they trained on: refused in one
    line; ``resume=False`` (``fit --restart``) retrains the whole chain instead."""
    busi, cache = shared_dir / "data" / "busi", tmp_path / "cache"
    whole = tiny_config(busi, tmp_path / "s", cache, image_size=32, limit=24, teachers=2, epochs=1)
    train(whole)
    held_out = replace(whole, teacher_data=OUT_OF_FOLD)
    with pytest.raises(ValueError, match=r"teacher-1: was trained on other images \(leave_out, leave_out_of"):
        train(held_out)
    with pytest.raises(ValueError, match="limit differ"):
        train(replace(whole, limit=30))
    train(replace(whole, epochs=2))  # the same images: resumed
    train(held_out, resume=False)
    trained = json.loads((tmp_path / "s" / "teachers" / "teacher-1" / "split.json").read_text())["train"]
    assert len(trained) < len(json.loads((tmp_path / "s" / "split.json").read_text())["train"])
