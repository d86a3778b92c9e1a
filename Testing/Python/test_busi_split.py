"""BUSI discovery, mask merging and the leak-free stratified split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from busassist.constants import SPLIT_FRACTIONS, SPLIT_SEED
from busassist.training.busi import (
    CLASSES,
    NO_LABEL,
    BusiCase,
    discover,
    load_image,
    load_mask,
    near_duplicate_groups,
    split_units,
    stratified_group_split,
)


@pytest.fixture(scope="module")
def busi_root(shared_dir: Path) -> Path:
    root = shared_dir / "data" / "busi"
    if not root.is_dir():
        pytest.skip(f"BUSI data folder {root} is absent")
    return root


@pytest.fixture(scope="module")
def cases(busi_root: Path) -> list[BusiCase]:
    return discover(busi_root)


@pytest.fixture(scope="module")
def groups(busi_root: Path) -> list[list[str]]:
    path = busi_root / "near_duplicates.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return near_duplicate_groups(path)


@pytest.fixture(scope="module")
def split(cases: list[BusiCase], groups: list[list[str]]) -> list[list[int]]:
    return stratified_group_split(cases, groups)


# ---------------------------------------------------------------------------------------------
# Discovery and masks


def test_discover_finds_all_cases(cases: list[BusiCase]) -> None:
    assert len(cases) == 622
    counts = Counter(case.category for case in cases)
    assert counts == {"benign": 342, "malignant": 172, "normal": 108}
    assert len({case.key for case in cases}) == 622
    assert all(case.image_path.is_file() for case in cases)
    assert all(case.mask_paths and all(p.is_file() for p in case.mask_paths) for case in cases)


def test_labels(cases: list[BusiCase]) -> None:
    expected = {"benign": 0, "malignant": 1, "normal": NO_LABEL}
    assert all(case.label == expected[case.category] for case in cases)
    assert NO_LABEL == -1


def test_case_keys_follow_near_duplicate_naming(cases: list[BusiCase], groups: list[list[str]]) -> None:
    keys = {case.key for case in cases}
    grouped = {key for group in groups for key in group}
    assert grouped, "no near-duplicate groups read"
    # Every key of near_duplicates.json names a discovered case, otherwise grouping would be a no-op.
    assert grouped <= keys


def test_masks_are_matched_to_their_own_image(cases: list[BusiCase]) -> None:
    for case in cases:
        stem = case.image_path.stem
        for mask in case.mask_paths:
            assert mask.name == f"{stem}_mask.png" or (
                mask.name.startswith(f"{stem}_mask_") and mask.name[len(stem) + 6 : -4].isdigit()
            ), (case.key, mask.name)
            assert mask.parent.name == "mask" and mask.parent.parent.name == case.category


def test_multi_mask_cases_are_merged_as_union(cases: list[BusiCase]) -> None:
    multi = [case for case in cases if len(case.mask_paths) > 1]
    assert multi, "BUSI has images with several mask files (_mask_1.png, ...)"
    assert all(any(p.name.endswith("_mask.png") for p in case.mask_paths) for case in multi)
    for case in multi[:4]:
        image = load_image(case)
        merged = load_mask(case, image.shape[:2])
        assert merged.dtype == bool and merged.shape == image.shape[:2]
        parts = []
        for path in case.mask_paths:
            with Image.open(path) as mask_image:
                parts.append(np.asarray(mask_image.convert("L")) > 0)
        np.testing.assert_array_equal(merged, np.logical_or.reduce(parts))
        for part in parts:
            assert part.any()
            assert merged.sum() > part.sum(), f"{case.key}: merged mask not larger than {part.sum()} px part"


def test_normal_cases_have_empty_masks(cases: list[BusiCase]) -> None:
    normal = [case for case in cases if case.category == "normal"][:5]
    for case in normal:
        image = load_image(case)
        assert not load_mask(case, image.shape[:2]).any()


def test_load_mask_rejects_mismatched_shape(cases: list[BusiCase]) -> None:
    case = next(case for case in cases if case.category == "benign")
    image = load_image(case)
    with pytest.raises(ValueError):
        load_mask(case, (image.shape[0] + 1, image.shape[1]))


# ---------------------------------------------------------------------------------------------
# The split


def test_split_parts_are_disjoint_and_cover_everything(cases: list[BusiCase], split: list[list[int]]) -> None:
    assert len(split) == 3
    sets = [set(part) for part in split]
    assert all(len(s) == len(part) for s, part in zip(sets, split))  # no index twice within a part
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sets[0] | sets[1] | sets[2] == set(range(len(cases)))


def test_split_sizes_match_fractions(cases: list[BusiCase], split: list[list[int]]) -> None:
    assert SPLIT_FRACTIONS == (0.70, 0.15, 0.15)
    for part, fraction in zip(split, SPLIT_FRACTIONS):
        assert len(part) / len(cases) == pytest.approx(fraction, rel=0.03)


def test_split_is_stratified_by_class(cases: list[BusiCase], split: list[list[int]]) -> None:
    overall = Counter(case.category for case in cases)
    for part in split:
        counts = Counter(cases[i].category for i in part)
        for category in CLASSES:
            whole = overall[category] / len(cases)
            share = counts[category] / len(part)
            assert abs(share - whole) <= 0.04, (category, share, whole)


def test_split_is_deterministic_and_seeded(cases: list[BusiCase], groups: list[list[str]]) -> None:
    assert SPLIT_SEED == 42
    first = stratified_group_split(cases, groups, seed=42)
    again = stratified_group_split(cases, groups, seed=42)
    default = stratified_group_split(cases, groups)
    assert first == again == default
    other = stratified_group_split(cases, groups, seed=7)
    assert other != first
    assert set(other[2]) != set(first[2])


def test_no_near_duplicate_group_straddles_parts(
    cases: list[BusiCase], groups: list[list[str]], split: list[list[int]]
) -> None:
    part_of = {cases[i].key: p for p, part in enumerate(split) for i in part}
    multi_part = [group for group in groups if len({part_of[key] for key in group}) > 1]
    assert not multi_part
    # ... and this is not vacuous: some groups are large, and some mix classes.
    assert max(len(group) for group in groups) > 2
    assert any(len({key.split("/")[0] for key in group}) > 1 for group in groups)


def test_ignoring_groups_would_leak(cases: list[BusiCase], groups: list[list[str]]) -> None:
    # Without the groups a plain stratified split scatters near-duplicates over the parts:
    # this shows the straddle test above can fail.
    naive = stratified_group_split(cases, [])
    part_of = {cases[i].key: p for p, part in enumerate(naive) for i in part}
    assert any(len({part_of[key] for key in group}) > 1 for group in groups)


# ---------------------------------------------------------------------------------------------
# Synthetic split units


def _fake_cases(names: list[str]) -> list[BusiCase]:
    cases = []
    for name in names:
        category = name.split()[0]
        key = f"{category}/images/{name}.png"
        cases.append(BusiCase(key, Path(key), (Path(f"{category}/mask/{name}_mask.png"),), category))
    return cases


def test_split_units_merges_overlapping_groups_transitively() -> None:
    names = [f"benign ({i})" for i in range(1, 8)] + ["malignant (1)", "normal (1)"]
    cases = _fake_cases(names)
    key = {name: f"{name.split()[0]}/images/{name}.png" for name in names}
    groups = [
        [key["benign (1)"], key["benign (2)"]],
        [key["benign (3)"], key["benign (4)"]],
        [key["benign (2)"], key["benign (3)"]],  # bridges the first two groups
        [key["benign (5)"], key["malignant (1)"], "benign/images/benign (999).png"],  # unknown key ignored
        [key["benign (6)"]],
    ]
    units = split_units(cases, groups)
    as_names = sorted(sorted(names[i] for i in unit) for unit in units)
    assert as_names == sorted(
        [
            ["benign (1)", "benign (2)", "benign (3)", "benign (4)"],
            ["benign (5)", "malignant (1)"],
            ["benign (6)"],
            ["benign (7)"],
            ["normal (1)"],
        ]
    )
    assert sorted(i for unit in units for i in unit) == list(range(len(cases)))


def test_split_units_chain_of_pairs_becomes_one_unit() -> None:
    names = [f"malignant ({i})" for i in range(1, 11)]
    cases = _fake_cases(names)
    keys = [case.key for case in cases]
    groups = [[keys[i + 1], keys[i]] for i in range(9)][::-1]  # reversed order of a chain
    assert split_units(cases, groups) == [list(range(10))]


def test_split_units_shared_non_first_member_joins_both_groups() -> None:
    # "benign (2)" is the second member of two groups: both groups must end up in one unit.
    cases = _fake_cases(["benign (1)", "benign (2)", "benign (3)", "benign (4)", "normal (1)"])
    keys = [case.key for case in cases]
    groups = [[keys[0], keys[1]], [keys[2], keys[1]], [keys[3], keys[2]]]
    assert split_units(cases, groups) == [[0, 1, 2, 3], [4]]


def test_synthetic_split_keeps_units_whole() -> None:
    names = [f"benign ({i})" for i in range(1, 41)] + [f"malignant ({i})" for i in range(1, 21)]
    cases = _fake_cases(names)
    keys = [case.key for case in cases]
    groups = [keys[0:5], keys[10:13], keys[40:44], [keys[20], keys[45]]]
    for seed in range(5):
        parts = stratified_group_split(cases, groups, seed=seed)
        part_of = {i: p for p, part in enumerate(parts) for i in part}
        assert sorted(part_of) == list(range(len(cases)))
        for group in groups:
            assert len({part_of[keys.index(k)] for k in group}) == 1


# ---------------------------------------------------------------------------------------------
# Discovery on synthetic folders


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_discover_on_synthetic_tree(tmp_path: Path) -> None:
    grey = np.zeros((8, 10), dtype=np.uint8)
    for category in CLASSES:
        _write_png(tmp_path / category / "images" / f"{category} (1).png", grey)
        _write_png(tmp_path / category / "mask" / f"{category} (1)_mask.png", grey)
    # Image 1 vs 10/11: the glob must not hand the masks of "benign (11)" to "benign (1)".
    _write_png(tmp_path / "benign" / "images" / "benign (11).png", grey)
    _write_png(tmp_path / "benign" / "mask" / "benign (11)_mask.png", grey)
    _write_png(tmp_path / "benign" / "mask" / "benign (1)_mask_1.png", grey)
    _write_png(tmp_path / "benign" / "mask" / "benign (1)_mask_extra.png", grey)  # not a mask name
    (tmp_path / "benign" / "images" / "notes.txt").write_text("ignored")
    cases = discover(tmp_path)
    by_key = {case.key: case for case in cases}
    assert sorted(by_key) == [
        "benign/images/benign (1).png",
        "benign/images/benign (11).png",
        "malignant/images/malignant (1).png",
        "normal/images/normal (1).png",
    ]
    assert [p.name for p in by_key["benign/images/benign (1).png"].mask_paths] == [
        "benign (1)_mask.png",
        "benign (1)_mask_1.png",
    ]
    assert [p.name for p in by_key["benign/images/benign (11).png"].mask_paths] == ["benign (11)_mask.png"]


def test_discover_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        discover(tmp_path)  # no class folders
    grey = np.zeros((4, 4), dtype=np.uint8)
    for category in CLASSES:
        (tmp_path / category / "images").mkdir(parents=True)
    _write_png(tmp_path / "benign" / "images" / "benign (1).png", grey)
    with pytest.raises(FileNotFoundError):
        discover(tmp_path)  # image without a mask


def test_near_duplicate_groups_missing_file(tmp_path: Path) -> None:
    assert near_duplicate_groups(None) == []
    assert near_duplicate_groups(tmp_path / "absent.json") == []
