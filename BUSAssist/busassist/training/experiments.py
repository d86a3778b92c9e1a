"""What every study training shares: one resumable training scored on its test part, progress, records.

``study run`` (``training/study.py``) runs the paper's experiments and every other study as spec
files over these pieces. A training whose ``metrics.json`` exists is finished and skipped on a rerun;
an interrupted one resumes from its ``last.pt``. The experiments' own runners of before the specs
(cv, sweep-wp, grid, ablation) are gone; ``rescore_cv`` and ``experiments_report`` still read the
folders they left, so the committed reports stay readable.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from busassist.training.operating_check import PREDICTIONS_FILE, write_test_predictions
from busassist.training.tables import seconds_per_epoch, write_csv
from busassist.training.trainer import (
    TrainConfig,
    load_best,
    load_data,
    predict,
    resolve_device,
    train,
    validation_scores,
)

#: Presets: "full" is the paper's set-up; "cpu-quick" shrinks the input and the epochs so a sweep
#: of dozens of trainings fits on a 2-core CPU (results are then indicative, and say so).
#: "full" is the training config's own defaults (one source), named so that a spec can ask for it.
PRESETS: dict[str, dict] = {
    "full": {name: TrainConfig.__dataclass_fields__[name].default for name in ("image_size", "epochs", "patience")},
    "cpu-quick": {"image_size": 128, "epochs": 8, "patience": 8},
}


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def record_command(out: Path, config: TrainConfig, extra: dict | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _, _, fingerprint, _ = load_data(config)
    record = {
        "argv": sys.argv,
        "code_version": code_version(),
        "data_sha256": fingerprint,
        "base_config": asdict(config),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        **(extra or {}),
    }
    (out / "command.json").write_text(json.dumps(record, indent=1) + "\n")


def test_metrics(config: TrainConfig, run: Path, loaded: tuple | None = None) -> dict[str, float]:
    """Metrics of a finished run's best weights on its own test part (network grid, threshold 0.5).

    ``loaded`` is ``load_data(config)`` when the caller already has it (hashing every image twice
    is the slow part of a re-score).
    """
    data, split, _, cases = loaded or load_data(config)
    device = resolve_device(config.device)
    network = load_best(run, str(device)).to(device)
    probabilities, masks = predict(network, data, split.test, device)
    metrics: dict[str, float] = {"n_test": len(split.test), **validation_scores(data, split.test, probabilities, masks)}
    if probabilities is not None:
        labels = data.labels[split.test]
        labelled = labels >= 0
        keys = [cases[i].key for i, keep in zip(split.test, labelled) if keep]
        write_test_predictions(run / PREDICTIONS_FILE, keys, labels[labelled], probabilities[labelled])
    metrics["device"] = json.loads((run / "config.json").read_text())["device"]
    metrics["seconds_per_epoch"] = seconds_per_epoch(run)
    return metrics


class Progress:
    """Experiment-level progress: trainings finished out of all, and an estimate of the time left.

    Each training shows its own per-epoch bar; this adds the line a researcher needs to plan
    around a sweep of dozens of trainings. The estimate is the mean duration of the trainings
    this process has run, times the number left (finished trainings found on disk cost nothing).
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.finished = 0
        self.durations: list[float] = []

    def estimate_left(self) -> float | None:
        if not self.durations:
            return None
        return float(np.mean(self.durations)) * (self.total - self.finished)

    def record(self, name: str, seconds: float | None, resumed: bool = False) -> str:
        """Count one finished training and report.

        ``seconds`` None: found finished on disk. ``resumed``: continued from ``last.pt``, so its
        duration is only part of a training and is left out of the estimate.
        """
        self.finished += 1
        if seconds is not None and not resumed:
            self.durations.append(seconds)
        left = self.estimate_left()
        if seconds is None:
            how = "already finished"
        else:
            how = f"{'resumed and finished' if resumed else 'trained'} in {seconds / 60:.1f} min"
        eta = "" if left is None else f"; about {left / 60:.0f} min left"
        line = f"[{self.finished}/{self.total}] {name}: {how}{eta}"
        tqdm.write(line)
        return line


def train_and_score(config: TrainConfig, progress: Progress | None = None) -> dict[str, float]:
    """Train (or resume) one configuration and score it; skipped when already finished."""
    run = Path(config.out_dir)
    done = run / "metrics.json"
    progress = progress or Progress(1)
    if done.exists():
        progress.record(str(run), None)
        return json.loads(done.read_text())
    resumed = (run / "last.pt").exists()
    started = time.perf_counter()
    train(config)
    metrics = test_metrics(config, run)
    done.write_text(json.dumps(metrics, indent=1) + "\n")
    progress.record(str(run), time.perf_counter() - started, resumed)
    return metrics


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean and standard deviation over folds of every numeric metric."""
    # A rate undefined in one fold (e.g. no normal image in its test part) is NaN there, not a KeyError.
    keys = list(dict.fromkeys(k for row in rows for k in row if isinstance(row[k], (int, float))))
    summary: dict[str, float] = {}
    for key in keys:
        values = np.array([row.get(key, np.nan) for row in rows], dtype=float)
        with warnings.catch_warnings():  # a metric undefined in every fold stays NaN, on purpose
            warnings.simplefilter("ignore", RuntimeWarning)
            summary[f"{key}_mean"] = float(np.nanmean(values))
            summary[f"{key}_sd"] = float(np.nanstd(values))
    return summary


def _write_folds(out: Path, rows: list[dict]) -> dict[str, float]:
    """A cv run's per-fold table (folds.csv) and its summary over folds (cv.json)."""
    write_csv(out / "folds.csv", rows)
    summary = summarise(rows)
    (out / "cv.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _read_json(path: Path) -> dict:
    """A run's JSON record; a malformed one is a one-line ValueError naming the file."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from error


def rescore_cv(out: Path) -> dict[str, float]:
    """Score a finished `cv` run's folds again with today's metrics, without training anything.

    Metrics added after a cross-validation ran (e.g. the "no lesion" rates) are otherwise missing
    from its folds.csv, and `cv-compare` leaves them out. Each fold's best weights are scored on
    its own test part as `cv` does; its timing and device are kept, and command.json records when
    and with which code version the scores were recomputed. Nothing is written unless every fold
    scores, on the very data and test part it was trained with (data hash and split.json checked).
    """
    out = Path(out)
    command_path = out / "command.json"
    if not command_path.exists():
        raise FileNotFoundError(f"{command_path}: not a cv output folder (no command.json)")
    command = _read_json(command_path)
    if command.get("experiment") != "cv" or "base_config" not in command:
        raise ValueError(f"{command_path}: not the record of a cross-validation run")
    try:
        config = TrainConfig(**command["base_config"])
    except TypeError as error:
        raise ValueError(f"{command_path}: settings this version cannot read ({error})") from error
    folders = sorted(
        (folder for folder in out.iterdir() if re.fullmatch(r"fold-\d+", folder.name)),
        key=lambda folder: int(folder.name.split("-")[1]),
    )
    unfinished = [folder.name for folder in folders if not (folder / "metrics.json").exists()]
    if not folders or unfinished:
        raise ValueError(
            f"{out}: only a finished cv run can be re-scored (unfinished: {', '.join(unfinished) or 'all'})"
        )
    recorded = [_read_json(folder / "config.json").get("config", {}) for folder in folders]
    k = len(folders)
    if [(r.get("fold"), r.get("folds")) for r in recorded] != [(fold, k) for fold in range(k)]:
        raise ValueError(f"{out}: fold folders are not folds 0..{k - 1} of one {k}-fold run; refusing to renumber them")
    rows = []
    for fold, folder in enumerate(folders):
        fold_config = replace(config, out_dir=str(folder), folds=k, fold=fold)
        loaded = load_data(fold_config)
        _, split, fingerprint, cases = loaded
        if fingerprint != command.get("data_sha256"):
            raise ValueError(f"{command_path}: the data under {config.data_root} differ from those the run trained on")
        trained_test = _read_json(folder / "split.json").get("test")
        if [cases[i].key for i in split.test] != trained_test:
            raise ValueError(
                f"{folder / 'split.json'}: today's fold {fold} test part differs from the one trained with"
            )
        old = _read_json(folder / "metrics.json")
        metrics = test_metrics(fold_config, folder, loaded)
        metrics["seconds_per_epoch"] = old.get("seconds_per_epoch", metrics["seconds_per_epoch"])
        rows.append({"fold": fold, **metrics})
    for folder, row in zip(folders, rows):  # only now, when every fold has scored
        metrics = {key: value for key, value in row.items() if key != "fold"}
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    summary = _write_folds(out, rows)
    command.setdefault("rescored", []).append(
        {"code_version": code_version(), "at": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv}
    )
    command_path.write_text(json.dumps(command, indent=1) + "\n")
    return summary


def plot_grid(rows: list[dict], values: tuple[float, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("acc", "sen", "spe", "dice") if k in rows[0]]
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6))
    for axis, key in zip(np.atleast_1d(axes), keys):
        table = np.full((len(values), len(values)), np.nan)
        for row in rows:
            table[values.index(row["w_clf"]), values.index(row["w_p"])] = row[key]
        image = axis.imshow(table, origin="lower", cmap="viridis")
        axis.set_xticks(range(len(values)), [f"{v:g}" for v in values])
        axis.set_yticks(range(len(values)), [f"{v:g}" for v in values])
        axis.set_xlabel("W_p")
        axis.set_ylabel("W_clf")
        axis.set_title(key.upper())
        for (i, j), value in np.ndenumerate(table):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", color="w", fontsize=7)
        figure.colorbar(image, ax=axis, shrink=0.8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
