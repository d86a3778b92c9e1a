"""Studies as specs: a small TOML file of training-config overrides x replicates, run and reported alike.

Cross-validation, the W_p sweep, the W_clf x W_p grid, the ablation and a seed-spread check are the
same thing: a set of *variants* (overrides of the training config, the cartesian product of ``vary``),
each trained on a set of *replicates* (the K folds of a cross-validation, or training seeds on the
fixed 70/15/15 split). ``run_study`` trains every variant x replicate (resumable: a finished training
is skipped, an interrupted one resumes from its ``last.pt``), ``study_report`` tabulates them and
compares every variant with the reference one, paired by replicate (``cv_compare.compare_cv``).

A spec (see ``busassist/training/studies/*.toml``)::

    name = "sweep-wp"
    description = "Single-CLF cross-validated at each W_p (paper Fig. 2)"
    preset = "cpu-quick"            # image size and epochs, unless the command line says otherwise
    folds = 4                       # replicates: K folds ...
    # seeds = [1, 2, 3]             # ... or training seeds on the fixed split (one of the two)
    reference = { w_p = 3.0 }       # the variant every other one is compared with (default: the first)

    [base]                          # overrides every variant shares
    task = "single-clf"

    [vary]                          # each combination is one variant
    w_p = [1.0, 2.0, 3.0, 5.0]

Output folder: ``study.json`` (the spec, command line, code version and data hash), one folder per
variant holding ``command.json`` and ``folds.csv`` in the layout ``cv_compare`` reads (so any two
variants of any two studies on the same replicates compare with ``compare``), ``study.csv`` (every
training's test metrics) and ``summary.csv`` (per variant: mean, SD, min and max over replicates).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from busassist.training.tables import read_rows, write_csv
from busassist.training.trainer import TrainConfig

#: Metrics summarised per variant (columns of folds.csv; a single-task variant lacks some).
SUMMARISED = ("acc", "sen", "spe", "auc", "dice", "iou", "lesion_found", "normal_no_lesion")
#: Settings a spec may not override: where things are, and what the replicates decide.
NOT_OVERRIDABLE = (
    "data_root", "out_dir", "cache_dir", "folds", "fold", "extra", "partition_seed", "leave_out", "leave_out_of",
)  # fmt: skip
#: Built-in specs shipped with the package (the paper's four experiments and the seed-spread check).
SPEC_DIR = Path(__file__).with_name("studies")


class SpecError(ValueError):
    """A spec that cannot be run, reported in one line naming the file."""


@dataclass
class StudySpec:
    name: str
    description: str = ""
    preset: str = "full"
    folds: int = 0
    seeds: list[int] = field(default_factory=list)
    base: dict = field(default_factory=dict)
    vary: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    source: str = ""  # the spec file's text, recorded with the results

    @property
    def replicates(self) -> list[tuple[str, dict]]:
        """(folder name, config overrides) of each replicate."""
        if self.folds:
            return [(f"fold-{k}", {"folds": self.folds, "fold": k}) for k in range(self.folds)]
        return [(f"seed-{seed}", {"seed": seed}) for seed in self.seeds]

    def variant_overrides(self, name: str) -> dict:
        """The overrides of the variant called ``name``."""
        return dict(self.variants())[name]

    def variants(self) -> list[tuple[str, dict]]:
        """(folder name, overrides) of every variant, in spec order; the reference variant first."""
        keys = list(self.vary)
        combos = [dict(zip(keys, values)) for values in itertools.product(*(self.vary[k] for k in keys))] or [{}]
        named = [(variant_name(combo), {**self.base, **combo}) for combo in combos]
        if self.reference:
            named.sort(key=lambda item: not all(item[1].get(k) == v for k, v in self.reference.items()))
        return named


def variant_name(overrides: dict) -> str:
    """Folder name of a variant: ``w_clf-1.5_w_p-3`` (``default`` when nothing varies)."""
    if not overrides:
        return "default"
    return "_".join(
        f"{key}-{value:g}" if isinstance(value, float) else f"{key}-{value}" for key, value in overrides.items()
    )


def builtin_specs() -> list[str]:
    """Names of the studies shipped in ``studies/``: read from the folder, so help text never goes stale."""
    return sorted(path.stem for path in SPEC_DIR.glob("*.toml"))


def resolve_spec(name_or_path: str | Path) -> Path:
    """A spec file: a path, or the name of a built-in spec (``cv``, ``sweep-wp``, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = SPEC_DIR / f"{name_or_path}.toml"
    if builtin.is_file():
        return builtin
    known = ", ".join(builtin_specs())
    raise SpecError(f"{name_or_path}: no such spec file, and not a built-in study ({known})")


def load_spec(path: Path) -> StudySpec:
    """Read and check a spec; every problem is a ``SpecError`` naming the file and the key."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]

    path = Path(path)
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML ({error})") from None
    known = {f.name for f in fields(StudySpec)} - {"source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if "name" not in raw:
        raise SpecError(f"{path}: the spec has no name")
    spec = StudySpec(**raw, source=text)
    settings = {f.name for f in fields(TrainConfig)} - set(NOT_OVERRIDABLE)
    for section in ("base", "vary", "reference"):
        bad = sorted(set(getattr(spec, section)) - settings)
        if bad:
            raise SpecError(f"{path}: [{section}] {', '.join(bad)}: not training settings a study may set")
    for key, values in spec.vary.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{path}: [vary] {key} must be a non-empty list")
    if bool(spec.folds) == bool(spec.seeds):
        raise SpecError(f"{path}: give either folds = K (cross-validation) or seeds = [...] (fixed split)")
    if spec.folds == 1 or spec.folds < 0:
        raise SpecError(f"{path}: folds must be at least 2")
    if spec.reference and not any(
        all(overrides.get(k) == v for k, v in spec.reference.items()) for _, overrides in spec.variants()
    ):
        raise SpecError(f"{path}: the reference {spec.reference} is none of the variants")
    return spec


def _config(base: TrainConfig, out: Path, overrides: dict) -> TrainConfig:
    return replace(base, **overrides, out_dir=str(out))


def run_study(spec: StudySpec, base: TrainConfig, out: Path) -> list[dict]:
    """Train every variant x replicate into ``out`` (resuming), and write the tables; returns study rows."""
    from busassist.training.experiments import Progress, code_version, train_and_score
    from busassist.training.trainer import load_data

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _, _, fingerprint, _ = load_data(base)
    record = {
        "study": spec.name,
        "spec": spec.source,
        "argv": sys.argv,
        "code_version": code_version(),
        "data_sha256": fingerprint,
        "base_config": asdict(base),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    previous = out / "study.json"
    if previous.exists():
        recorded = json.loads(previous.read_text())
        if recorded.get("data_sha256") != fingerprint:
            raise SpecError(f"{previous}: this folder holds a study of other data; choose another --out")
        record["started"] = recorded.get("started", record["started"])
        record["resumed"] = [*recorded.get("resumed", []), time.strftime("%Y-%m-%d %H:%M:%S")]
    previous.write_text(json.dumps(record, indent=1) + "\n")

    variants, replicates = spec.variants(), spec.replicates
    progress = Progress(len(variants) * len(replicates))
    study_rows: list[dict] = []
    for name, overrides in variants:
        folder = out / name
        variant_config = _config(base, folder, overrides)
        rows = []
        twin = trajectory_twin(spec, base, overrides)
        for index, (replicate, extra) in enumerate(replicates):
            config = _config(base, folder / replicate, {**overrides, **extra})
            if twin is None:
                metrics = train_and_score(config, progress)
            else:  # the best-epoch rule of a "final" twin's training: no second training of the same trajectory
                twin_config = _config(base, out / twin / replicate, {**spec.variant_overrides(twin), **extra})
                train_and_score(twin_config, progress)
                metrics = derive_best_validation(out / twin / replicate, config)
            rows.append({"fold": index, "replicate": replicate, **metrics})
            study_rows.append({"variant": name, **overrides, "replicate": replicate, **metrics})
        # the layout of a `cv` run, so that cv_compare (and `compare`) can pair any two variants
        command = {**record, "experiment": "study", "variant": name, "base_config": asdict(variant_config)}
        if spec.seeds:
            command["base_config"]["seed"] = spec.seeds  # replicates over seeds: the same list pairs them
        (folder / "command.json").write_text(json.dumps(command, indent=1) + "\n")
        write_csv(folder / "folds.csv", rows)
        write_csv(out / "study.csv", study_rows)
    write_csv(out / "summary.csv", summarise_variants(study_rows))
    return study_rows


def trajectory_twin(spec: StudySpec, base: TrainConfig, overrides: dict) -> str | None:
    """The variant whose trainings this ``keep = "best"`` variant can be read from, or None.

    ``keep = "best"``, ``"final"`` and ``"ema"`` with otherwise equal settings walk the same trajectory
    when the best-epoch rule never stops early (patience >= epochs): the trainer then also keeps the
    trained network's best validation epoch in the "final" or "ema" run (``best_validation.pt``), and
    a keep-rule study costs one training per replicate instead of two. A "final" twin is preferred.
    An "ema" twin only on the cosine schedule: the plateau schedule steps on the score of the weights a
    run keeps, which for "ema" is the average's, so its learning rates (and trajectory) would differ.
    """
    config = replace(base, **overrides)
    if config.keep != "best" or config.patience < config.epochs:
        return None
    variants = spec.variants()
    rules = ("final", "ema") if config.schedule == "cosine" else ("final",)
    for rule in rules:
        wanted = {**overrides, "keep": rule}
        twin = next((name for name, other in variants if other == wanted), None)
        if twin is not None:
            return twin
    return None


def trained_network_row(row: dict, prefix: str) -> dict:
    """A history row as a keep=best run would have written it: an averaged run's ``val_*`` columns
    describe the average, its ``prefix``ed ones the trained network, which is what the best rule sees."""
    if not any(key.startswith(prefix) for key in row):
        return dict(row)
    own = {key: value for key, value in row.items() if not key.startswith(("val_", prefix))}
    return {**own, **{"val_" + key[len(prefix) :]: value for key, value in row.items() if key.startswith(prefix)}}


def derive_best_validation(twin_run: Path, config: TrainConfig) -> dict:
    """Score the best-validation checkpoint of a finished ``keep = "final"`` or ``"ema"`` run as a
    ``keep = "best"`` run.

    The derived folder holds what a best-rule training would have written: the twin's split, history
    and configuration (with ``keep`` set to ``best``) and its best-validation weights as ``best.pt``.
    """
    import shutil

    import torch

    from busassist.training.experiments import test_metrics, train_and_score
    from busassist.training.trainer import BEST_VALIDATION_CHECKPOINT, TRAINED_PREFIX

    run = Path(config.out_dir)
    done = run / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    if (run / "last.pt").exists():  # a real keep=best training already started here: finish it, never overwrite
        return train_and_score(config)
    source = Path(twin_run) / BEST_VALIDATION_CHECKPOINT
    if not source.exists():
        raise SpecError(f"{twin_run}: no {BEST_VALIDATION_CHECKPOINT} (trained before the trainer kept it); retrain it")
    history = [trained_network_row(row, TRAINED_PREFIX) for row in read_rows(Path(twin_run) / "history.csv")]
    scores = [float(row["val_score"]) for row in history]
    first_best = int(np.argmax(scores)) + 1  # the epoch the best rule keeps: the first of equal best scores
    kept_epoch = torch.load(source, map_location="cpu", weights_only=False)["epoch"]
    if kept_epoch != first_best:
        raise SpecError(f"{source}: holds epoch {kept_epoch}, the best validation epoch is {first_best}; retrain it")
    run.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(twin_run) / "split.json", run / "split.json")
    write_csv(run / "history.csv", history)  # the trained network's validation, as a keep=best run writes it
    meta = json.loads((Path(twin_run) / "config.json").read_text())
    meta["config"] = asdict(config)
    meta["derived_from"] = f"{twin_run} ({BEST_VALIDATION_CHECKPOINT}: the same trajectory, best validation epoch)"
    (run / "config.json").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.copy2(source, run / "best.pt")
    metrics = test_metrics(config, run)
    done.write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


def summarise_variants(rows: list[dict]) -> list[dict]:
    """Per variant: mean, SD (n - 1), min and max over its replicates of every summarised metric."""
    summary = []
    for name in dict.fromkeys(row["variant"] for row in rows):
        mine = [row for row in rows if row["variant"] == name]
        entry: dict = {"variant": name, "replicates": len(mine)}
        for key in SUMMARISED:
            values = np.array([float(row[key]) for row in mine if key in row and row[key] not in ("", None)])
            values = values[np.isfinite(values)]
            if not len(values):
                continue
            entry[f"{key}_mean"] = float(values.mean())
            entry[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            entry[f"{key}_min"] = float(values.min())
            entry[f"{key}_max"] = float(values.max())
        summary.append(entry)
    return summary


def _spread_cell(entry: dict, key: str) -> str:
    """``mean ± SD (min–max)`` of one metric of one variant; ``-`` where the variant lacks it."""
    if f"{key}_mean" not in entry:
        return "-"
    mean, sd, low, high = (entry[f"{key}_{part}"] for part in ("mean", "sd", "min", "max"))
    return f"{mean:.3f} ± {sd:.3f} ({low:.3f}–{high:.3f})"


def study_report(out: Path) -> str:
    """``report.md`` of a study: the spread of every variant and each one against the reference, paired."""
    import csv

    from busassist.training.cv_compare import compare_cv, format_comparison

    out = Path(out)
    record = json.loads((out / "study.json").read_text())
    with (out / "study.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    summary = summarise_variants(rows)
    lines = [
        f"# Study {record['study']}",
        "",
        f"Code {record['code_version']}, data SHA-256 {record['data_sha256'][:12]}…, started {record['started']}.",
        "",
        "| variant | n | " + " | ".join(key for key in SUMMARISED if f"{key}_mean" in summary[0]) + " |",
        "|---|---|" + "---|" * sum(f"{key}_mean" in summary[0] for key in SUMMARISED),
    ]
    for entry in summary:
        cells = [_spread_cell(entry, key) for key in SUMMARISED if f"{key}_mean" in summary[0]]
        lines.append(f"| {entry['variant']} | {entry['replicates']} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: mean ± SD (min–max) over the replicates.", ""]
    reference = summary[0]["variant"]
    for entry in summary[1:]:
        comparison = compare_cv(out / entry["variant"], out / reference)
        lines += [f"## {entry['variant']} against {reference}", "", format_comparison(comparison), ""]
    spec = _parse(record["spec"])
    plot = _plot(out, spec, rows, summary)
    if plot:
        lines += [f"![{plot.stem}]({plot.name})", ""]
    sizes = _network_sizes(spec)
    if sizes:
        lines += ["## Network size (paper Table 1)", "", sizes, ""]
    check = _operating_check(out, spec, rows, summary)
    if check:
        lines += [
            "## Thresholding one model against training at each W_p",
            "",
            check,
            "",
            "![sweep_vs_threshold](sweep_vs_threshold.png)",
            "",
        ]
    lines += ["## Spec", "", "```toml", record["spec"].rstrip(), "```", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


def _network_sizes(spec: dict) -> str | None:
    """Parameters and float32 size of each task a study varies (Table 1's first columns); None otherwise.

    They depend on the task alone (not on the data or training), so the report computes them from the
    network definition rather than from any run.
    """
    tasks = spec.get("vary", {}).get("task")
    if not tasks:
        return None
    from busassist.training.model import EMTNet, Task, count_parameters

    lines = ["| task | parameters | size (float32) |", "|---|---|---|"]
    for task in tasks:
        network = EMTNet(Task(task))
        size_mb = sum(value.numel() * value.element_size() for value in network.state_dict().values()) / 1e6
        lines.append(f"| {task} | {count_parameters(network) / 1e6:.2f} M | {size_mb:.1f} MB |")
    return "\n".join(lines)


def _parse(text: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(text)


def _plot(out: Path, spec: dict, rows: list[dict], summary: list[dict]) -> Path | None:
    """The paper's figures where a study has their shape: metrics against one numeric setting (Fig. 2),
    or heat maps over W_clf x W_p (section 3.4). None for other shapes (the table says it all)."""
    from busassist.training.experiments import plot_grid

    vary = spec.get("vary", {})
    numeric = {key: values for key, values in vary.items() if all(isinstance(v, (int, float)) for v in values)}
    if set(numeric) == {"w_clf", "w_p"} and len(vary) == 2:
        values = tuple(sorted(set(numeric["w_clf"]) | set(numeric["w_p"])))
        per_variant = {}
        for row in rows:  # the mean over replicates of each metric, per (w_clf, w_p)
            per_variant.setdefault(row["variant"], []).append(row)
        grid_rows = []
        for entry in summary:
            first = per_variant[entry["variant"]][0]
            means = {key: entry[f"{key}_mean"] for key in SUMMARISED if f"{key}_mean" in entry}
            grid_rows.append({"w_clf": float(first["w_clf"]), "w_p": float(first["w_p"]), **means})
        path = out / "grid.png"
        plot_grid(grid_rows, values, path)
        return path
    if len(vary) == 1 and len(numeric) == 1:
        (key,) = numeric
        return _plot_against(out / f"{key}.png", key, rows, summary)
    return None


def _plot_against(path: Path, key: str, rows: list[dict], summary: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setting = {row["variant"]: float(row[key]) for row in rows}
    ordered = sorted(summary, key=lambda entry: setting[entry["variant"]])
    x = [setting[entry["variant"]] for entry in ordered]
    figure, axis = plt.subplots(figsize=(6, 4))
    for metric in ("acc", "sen", "spe", "auc", "dice"):
        if all(f"{metric}_mean" in entry for entry in ordered):
            mean = np.array([entry[f"{metric}_mean"] for entry in ordered]) * 100
            sd = np.nan_to_num(np.array([entry[f"{metric}_sd"] for entry in ordered]) * 100)
            axis.errorbar(x, mean, yerr=sd, marker="o", capsize=3, label=metric.upper())
    axis.set_xlabel(key)
    axis.set_ylabel("mean over replicates (%), bars: SD")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _operating_check(out: Path, spec: dict, rows: list[dict], summary: list[dict]) -> str | None:
    """For a cross-validated sweep of W_p alone: the slider's claim (``operating_check``), checked.

    The reference W_p's fold models thresholded at W_p / (W_p + W') against the models trained at W'.
    """
    from busassist.constants import MODEL_CARD_JSON
    from busassist.core.model_store import bundled_models_dir
    from busassist.training.operating_check import check_sweep

    reference = spec.get("reference", {})
    if set(spec.get("vary", {})) != {"w_p"} or not spec.get("folds") or set(reference) != {"w_p"}:
        return None
    weight_of = {row["variant"]: float(row["w_p"]) for row in rows}
    sweep_rows = sorted(
        ({"w_p": weight_of[entry["variant"]], **entry} for entry in summary), key=lambda row: row["w_p"]
    )
    card = bundled_models_dir() / MODEL_CARD_JSON
    result = check_sweep(out, sweep_rows, float(reference["w_p"]), int(spec["folds"]), card, prefix="w_p-")
    summary_line = result.get("summary", {})
    return f"`operating_check.json`, `operating_check.csv`: {json.dumps(summary_line)}"
