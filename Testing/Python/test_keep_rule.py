"""The checkpoint rule (``TrainConfig.keep``): which weights a training keeps, on tiny configurations."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from training_fixtures import tiny_config

from busassist.training.trainer import check_config, train


def kept(run: Path) -> dict:
    return torch.load(run / "best.pt", map_location="cpu", weights_only=False)


def test_final_and_ema_keep_the_last_epoch_and_never_stop_early(shared_dir: Path, tmp_path: Path) -> None:
    busi = shared_dir / "data" / "busi"
    for rule in ("final", "ema"):
        config = tiny_config(busi, tmp_path / rule, tmp_path / "cache", epochs=3, patience=0, keep=rule)
        train(config)
        assert kept(tmp_path / rule)["epoch"] == 3, f"{rule}: a rule that keeps the latest weights stopped early"
        history = (tmp_path / rule / "history.csv").read_text().splitlines()
        assert len(history) == 1 + 3


def test_every_rule_walks_the_same_trajectory(shared_dir: Path, tmp_path: Path) -> None:
    """Which weights a run keeps must not change how it trains (the keep-rule study pairs rules on one
    trajectory): the averaged model's batch-norm pass draws dropout numbers, so it runs in a forked RNG."""
    busi = shared_dir / "data" / "busi"
    last = {}
    for rule in ("final", "ema"):
        train(tiny_config(busi, tmp_path / rule, tmp_path / "cache", epochs=3, keep=rule))
        last[rule] = torch.load(tmp_path / rule / "last.pt", map_location="cpu", weights_only=False)["model"]
    for name, tensor in last["final"].items():
        assert torch.equal(tensor, last["ema"][name]), name


def test_ema_keeps_an_average_not_the_last_weights(shared_dir: Path, tmp_path: Path) -> None:
    busi = shared_dir / "data" / "busi"
    config = tiny_config(busi, tmp_path / "ema", tmp_path / "cache", epochs=2, keep="ema", ema_decay=0.5)
    train(config)
    average = kept(tmp_path / "ema")["model"]
    last = torch.load(tmp_path / "ema" / "last.pt", map_location="cpu", weights_only=False)
    weights = [name for name in last["model"] if name.endswith(".weight")]
    differs = [name for name in weights if not torch.equal(average[name], last["model"][name])]
    assert differs, "the kept weights are the last step's, not an average"
    assert "average" in last, "the average must survive an interruption"
    # resuming a finished run changes nothing; resuming restores the average rather than restarting it
    again = replace(config, epochs=3)
    train(again)
    resumed = kept(tmp_path / "ema")
    assert resumed["epoch"] == 3
    assert json.loads((tmp_path / "ema" / "config.json").read_text())["config"]["keep"] == "ema"


def test_the_kept_average_carries_the_batch_norm_statistics_of_its_own_weights(
    shared_dir: Path, tmp_path: Path
) -> None:
    """Averaged statistics belong to no network (on the full preset they killed the mask head): the kept
    average's must be what its own weights give on the training images, recomputed, not averaged."""
    from busassist.training.averaging import fit_batch_norm
    from busassist.training.trainer import load_best, load_data

    busi = shared_dir / "data" / "busi"
    config = tiny_config(busi, tmp_path / "ema", tmp_path / "cache", epochs=2, keep="ema", ema_decay=0.5)
    train(config)
    network = load_best(tmp_path / "ema")
    stored = {name: buffer.clone() for name, buffer in network.named_buffers() if "running" in name}
    data, split, _, _ = load_data(config)
    fit_batch_norm(network, data, split.train, torch.device("cpu"))
    for name, buffer in network.named_buffers():
        if name in stored:
            torch.testing.assert_close(buffer, stored[name], rtol=1e-3, atol=1e-4, msg=name)  # summation order only
    last = torch.load(tmp_path / "ema" / "last.pt", map_location="cpu", weights_only=False)["model"]
    assert any(not torch.equal(stored[name], last[name]) for name in stored), "the last step's statistics, not its own"


@pytest.mark.parametrize(("field", "value", "reason"), [("keep", "lucky", "--keep"), ("ema_decay", 1.0, "--ema-decay")])
def test_bad_rules_are_refused_before_any_data_is_read(tmp_path: Path, field: str, value: object, reason: str) -> None:
    config = tiny_config(tmp_path / "no-data", tmp_path, tmp_path / "cache", **{field: value})
    with pytest.raises(ValueError, match=reason):
        check_config(config)


@pytest.mark.parametrize("twin_rule", ["final", "ema"])
def test_a_keep_rule_study_trains_each_seed_once_and_reads_the_best_epoch_from_it(
    shared_dir: Path, tmp_path: Path, twin_rule: str
) -> None:
    """best vs final (or ema) walk one trajectory: the study's best variant must equal a real keep=best
    training, weights, kept epoch, validation history and test figures alike."""
    import csv

    from busassist.training.study import load_spec, run_study

    busi = shared_dir / "data" / "busi"
    spec = tmp_path / "keep.toml"
    spec.write_text(
        f'name = "keep"\nseeds = [5]\nreference = {{ keep = "best" }}\n[vary]\nkeep = ["best", "{twin_rule}"]\n'
    )
    base = tiny_config(busi, tmp_path / "out", tmp_path / "cache", epochs=3, patience=3, ema_decay=0.5)
    rows = run_study(load_spec(spec), base, tmp_path / "out")
    derived, twin = tmp_path / "out" / "keep-best" / "seed-5", tmp_path / "out" / f"keep-{twin_rule}" / "seed-5"
    assert not (derived / "last.pt").exists(), "the best-epoch variant was trained a second time"
    assert (twin / "last.pt").exists() and kept(twin)["epoch"] == 3
    assert json.loads((derived / "config.json").read_text())["config"]["keep"] == "best"
    assert [row["variant"] for row in rows] == ["keep-best", f"keep-{twin_rule}"]

    real = tmp_path / "real-best"
    train(replace(base, out_dir=str(real), seed=5, keep="best"))
    assert kept(derived)["epoch"] == kept(real)["epoch"]
    for name, tensor in kept(real)["model"].items():
        assert torch.equal(kept(derived)["model"][name], tensor), f"{name}: the two rules did not share a trajectory"

    def validation(run: Path) -> list[dict]:
        with (run / "history.csv").open(newline="") as handle:
            return [{k: v for k, v in row.items() if k.startswith("val_")} for row in csv.DictReader(handle)]

    assert validation(derived) == validation(real), "the derived history is not the trained network's"
    assert json.loads((derived / "metrics.json").read_text())["acc"] == rows[0]["acc"]


def test_a_best_rule_that_may_stop_early_is_trained_on_its_own(shared_dir: Path, tmp_path: Path) -> None:
    from busassist.training.study import load_spec, trajectory_twin

    spec = tmp_path / "keep.toml"
    spec.write_text('name = "keep"\nseeds = [5]\n[vary]\nkeep = ["best", "final"]\n')
    loaded = load_spec(spec)
    base = tiny_config(shared_dir / "data" / "busi", tmp_path, tmp_path / "cache", epochs=3, patience=1)
    assert trajectory_twin(loaded, base, {"keep": "best"}) is None
    assert trajectory_twin(loaded, replace(base, patience=3), {"keep": "best"}) == "keep-final"
    assert trajectory_twin(loaded, replace(base, patience=3), {"keep": "final"}) is None


def test_an_averaged_twin_is_used_only_on_the_cosine_schedule(shared_dir: Path, tmp_path: Path) -> None:
    """The plateau schedule steps on the kept weights' score (the average's in an ema run), so best and
    ema would walk different trajectories there: the best variant must then train on its own."""
    from busassist.training.study import load_spec, trajectory_twin

    spec = tmp_path / "keep.toml"
    spec.write_text('name = "keep"\nseeds = [5]\n[vary]\nkeep = ["best", "ema"]\n')
    loaded = load_spec(spec)
    base = tiny_config(shared_dir / "data" / "busi", tmp_path, tmp_path / "cache", epochs=3, patience=3)
    assert trajectory_twin(loaded, replace(base, schedule="cosine"), {"keep": "best"}) == "keep-ema"
    assert trajectory_twin(loaded, replace(base, schedule="plateau"), {"keep": "best"}) is None


@pytest.mark.parametrize("rule", ["best", "ema"])
def test_an_interrupted_training_resumes_to_the_weights_of_an_uninterrupted_one(
    shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule: str
) -> None:
    """`make reproduce` promises the shipped weights; a run stopped and resumed (a power cut, a session's
    end) must land on them too. Dropout draws from the global generator, which a resume used to reseed,
    so the resumed epochs trained other weights (the first seed of reports/ema-agreement did)."""
    from busassist.training import trainer

    busi = shared_dir / "data" / "busi"
    whole = train(tiny_config(busi, tmp_path / "whole", tmp_path / "cache", epochs=3, keep=rule, patience=3))
    write_history = trainer._write_history

    def stop_after_the_second_epoch(path: Path, rows: list) -> None:
        write_history(path, rows)
        if len(rows) == 2:
            raise KeyboardInterrupt  # after last.pt of epoch 2 is on disk, as a kill would leave it

    config = tiny_config(busi, tmp_path / "cut", tmp_path / "cache", epochs=3, keep=rule, patience=3)
    monkeypatch.setattr(trainer, "_write_history", stop_after_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(trainer, "_write_history", write_history)
    resumed = train(config)
    for name in ("best.pt", "last.pt"):
        expected = torch.load(whole / name, map_location="cpu", weights_only=False)["model"]
        got = torch.load(resumed / name, map_location="cpu", weights_only=False)["model"]
        assert all(torch.equal(expected[key], got[key]) for key in expected), (rule, name)
