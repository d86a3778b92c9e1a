"""Do two trainings of one recipe agree within the paired intervals that ``compare --check`` applies?

``make reproduce`` passes when a rebuilt model lies inside the shipped card's paired 95 % intervals
(``paired_compare.beyond_noise``). Those intervals resample the *test images* only: they hold the
noise of a 93-image test split, not the noise of training. Whether the check can be met on another
machine therefore depends on how far two trainings of the same recipe land apart anyway. This module
answers that from a seed study: every pair of replicates of a variant is compared exactly as
``compare --check`` compares a rebuild with the shipped model (same images, same engine, each
model at its own decision threshold, refused on other data), and so is every replicate with the shipped model. A recipe
whose own seeds fail each other's intervals cannot promise a rebuild inside them on another CPU,
whatever the CPU.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from busassist.constants import MODEL_CARD_JSON, MODEL_FILENAME, threshold_for_effective_weight
from busassist.training.metrics import classification_metrics
from busassist.training.paired_compare import PAIRED_METRICS, beyond_noise, paired_differences
from busassist.training.reference import REFERENCE_RUNTIME

AGREEMENT_JSON = "agreement.json"
AGREEMENT_MARKDOWN = "agreement.md"
#: The committed seed study that puts ``compare --check``'s verdict in context (a source checkout only).
RECIPE_AGREEMENT = Path(__file__).resolve().parents[3] / "reports" / "keep-rule-full" / AGREEMENT_JSON
#: Decision thresholds a calibration step could fit on the validation split, against the fixed one.
THRESHOLD_RULES = ("W' = W_p (fixed)", "validation SEN >= 0.90", "validation Youden J")


def replicate_folders(out: Path) -> dict[str, list[Path]]:
    """Variant name -> its finished replicate folders (those holding the kept weights, ``best.pt``)."""
    variants: dict[str, list[Path]] = {}
    for variant in sorted(path for path in Path(out).iterdir() if path.is_dir()):
        finished = sorted(path for path in variant.iterdir() if (path / "best.pt").exists())
        if finished:
            variants[variant.name] = finished
    return variants


def replicate_model(run: Path) -> Path:
    """The replicate's ONNX model, exported from its kept weights when missing or older than them."""
    from busassist.training.export import export_run

    model = run / MODEL_FILENAME
    if not model.exists() or model.stat().st_mtime < (run / "best.pt").stat().st_mtime:
        export_run(run)
    return model


def _scored(model: Path, parts: dict[str, list]) -> dict[str, tuple[dict, float]]:
    """Per part (test, validation): one model's per-image results and its own decision threshold (W' = W_p).

    One session per model, for every part it scores.
    """
    from busassist.core.inference import Analyzer
    from busassist.training.evaluate import analyse_cases

    analyzer = Analyzer(model, verify=False, backend=REFERENCE_RUNTIME)
    threshold = threshold_for_effective_weight(analyzer.metadata.w_p, analyzer.metadata.w_p)
    return {name: (analyse_cases(analyzer, cases), threshold) for name, cases in parts.items()}


def fitted_threshold(rule: str, labels: np.ndarray, probabilities: np.ndarray, fixed: float) -> float:
    """The decision threshold ``rule`` picks on one model's validation predictions (labelled images)."""
    if rule == THRESHOLD_RULES[0]:
        return fixed
    positives = np.sort(probabilities[labels == 1])[::-1]
    if positives.size == 0 or positives.size == labels.size:
        raise ValueError("the validation split needs benign and malignant images to fit a threshold")
    if rule == THRESHOLD_RULES[1]:  # the highest threshold that still flags 90 % of malignant images
        return float(positives[int(np.ceil(0.90 * positives.size)) - 1])
    candidates = np.unique(probabilities)
    youden = [sum(classification_metrics(labels, probabilities, t)[k] for k in ("sen", "spe")) for t in candidates]
    return float(candidates[int(np.argmax(youden))])


def threshold_rules(scored_validation: dict, scored_test: dict) -> list[dict]:
    """Per replicate and rule: the threshold fitted on validation and the test SEN/SPE it gives.

    Answers whether the operating point, rather than the weights, is what moves between trainings:
    a rule fitted on validation that stabilised test sensitivity would be a recipe fix.
    """
    rows = []
    for run, (validation, fixed) in scored_validation.items():
        test = scored_test[run][0]
        labelled_validation, labelled_test = validation["labels"] >= 0, test["labels"] >= 0
        for rule in THRESHOLD_RULES:
            threshold = fitted_threshold(
                rule,
                validation["labels"][labelled_validation],
                validation["probabilities"][labelled_validation],
                fixed,
            )
            figures = classification_metrics(
                test["labels"][labelled_test], test["probabilities"][labelled_test], threshold
            )
            validation_figures = classification_metrics(
                validation["labels"][labelled_validation], validation["probabilities"][labelled_validation], threshold
            )
            rows.append(
                {
                    "variant": run.parent.name,
                    "replicate": run.name,
                    "rule": rule,
                    "threshold": threshold,
                    "validation_sen": validation_figures["sen"],
                    "test_sen": figures["sen"],
                    "test_spe": figures["spe"],
                    "test_acc": figures["acc"],
                }
            )
    return rows


def _split(run: Path) -> dict:
    """A replicate's split.json, or one line naming the file and what is wrong with it."""
    path = run / "split.json"
    try:
        split = json.loads(path.read_text())
        return {"test": list(split["test"]), "val": list(split["val"])}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a readable split ({error.__class__.__name__}: {error})") from error


def _data_hash(run: Path) -> str | None:
    """The data SHA-256 a replicate's training recorded (None when its config.json does not say)."""
    try:
        return json.loads((run / "config.json").read_text()).get("data_sha256")
    except (OSError, ValueError) as error:
        raise ValueError(f"{run / 'config.json'}: not a readable training record ({error})") from error


def _row(kind: str, variant: str, new: str, reference: str, report: dict) -> dict:
    outside = beyond_noise(report)
    return {
        "kind": kind,
        "variant": variant,
        "new": new,
        "reference": reference,
        "passes": not outside,
        "outside": outside,
        "differences": {name: report[name] for name in PAIRED_METRICS},
    }


def replicate_agreement(out: Path, data_root: Path, models_dir: Path | None = None) -> list[dict]:
    """Every replicate pair of every variant (and, with ``models_dir``, every replicate against the
    shipped model there) through ``compare --check``'s paired test; rows also go to ``agreement.json``.

    All replicates must share one test split (a seed study on the fixed split); folds of a
    cross-validation test on different images and are refused.
    """
    from busassist.training.busi import data_fingerprint, discover

    out = Path(out)
    variants = replicate_folders(out)
    if not variants:
        raise ValueError(f"{out}: no finished replicates (variant/replicate/best.pt)")
    runs = [run for folders in variants.values() for run in folders]
    splits = {run: _split(run) for run in runs}
    for part in ("test", "val"):
        if len({json.dumps(split[part]) for split in splits.values()}) != 1:
            raise ValueError(f"{out}: the replicates use different {part} images (folds?); pairing needs one split")
    split = splits[runs[0]]
    data_hashes = {_data_hash(run) for run in runs}
    if len(data_hashes) != 1:
        raise ValueError(f"{out}: the replicates were trained on different data; no paired comparison")
    discovered = discover(Path(data_root))
    cases = {case.key: case for case in discovered}
    missing = [key for key in split["test"] + split["val"] if key not in cases]
    if missing:
        raise ValueError(f"{data_root}: {len(missing)} images of the study are missing (e.g. {missing[0]})")
    parts = {part: [cases[key] for key in split[part]] for part in ("test", "val")}
    both = {run: _scored(replicate_model(run), parts) for run in runs}
    scored = {run: results["test"] for run, results in both.items()}
    scored_validation = {run: results["val"] for run, results in both.items()}
    shipped = None
    if models_dir is not None:
        card = Path(models_dir) / MODEL_CARD_JSON
        try:
            shipped_hash = json.loads(card.read_text())["data"]["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{card}: no readable model card ({error.__class__.__name__})") from error
        if shipped_hash != data_fingerprint(discovered):  # as compare --check: other data pair nothing
            raise ValueError(f"{card}: the shipped model was trained on other data than {data_root}")
        shipped = _scored(Path(models_dir) / MODEL_FILENAME, {"test": parts["test"]})["test"]

    def compared(kind: str, variant: str, new: tuple, reference: tuple, names: tuple[str, str]) -> dict:
        (a, threshold_a), (b, threshold_b) = new, reference
        return _row(kind, variant, *names, paired_differences(a, b, threshold_a, threshold_b))

    rows = []
    for variant, folders in variants.items():
        for first, second in itertools.combinations(folders, 2):
            rows.append(compared("replicates", variant, scored[second], scored[first], (second.name, first.name)))
        if shipped is not None:
            for run in folders:
                rows.append(compared("against shipped", variant, scored[run], shipped, (run.name, "shipped")))
    thresholds = threshold_rules(scored_validation, scored)
    (out / AGREEMENT_JSON).write_text(json.dumps({"comparisons": rows, "thresholds": thresholds}, indent=1) + "\n")
    (out / AGREEMENT_MARKDOWN).write_text(format_agreement(rows) + format_thresholds(thresholds))
    return rows


def format_agreement(rows: list[dict]) -> str:
    """Markdown: one line per comparison (which metrics fall outside the paired 95 % interval)."""
    lines = [
        "# Replicate agreement",
        "",
        "Each line is `compare --check`'s test: the paired 95 % interval of new − reference over resampled",
        "test images, on every metric. *passes*: every interval includes 0.",
        "",
        "| comparison | variant | new | reference | verdict | outside the interval (difference) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        outside = ", ".join(f"{name} {row['differences'][name]['difference']:+.3f}" for name in row["outside"])
        verdict = "passes" if row["passes"] else "fails"
        lines.append(
            f"| {row['kind']} | {row['variant']} | {row['new']} | {row['reference']} | {verdict} | {outside or '-'} |"
        )
    lines += ["", "| comparison | variant | passing |", "|---|---|---|"]
    for (kind, variant), group in itertools.groupby(rows, key=lambda row: (row["kind"], row["variant"])):
        group = list(group)
        lines.append(f"| {kind} | {variant} | {sum(row['passes'] for row in group)} of {len(group)} |")
    return "\n".join(lines) + "\n"


def _spread(values: list[float]) -> str:
    array = np.array(values, dtype=float)
    sd = f" ± {array.std(ddof=1):.3f}" if array.size > 1 else ""
    return f"{array.mean():.3f}{sd} ({array.min():.3f}–{array.max():.3f})"


def format_thresholds(rows: list[dict]) -> str:
    """Markdown: per variant and rule, test SEN/SPE over the replicates (mean ± SD (min–max))."""
    lines = [
        "",
        "## The decision threshold fitted on validation",
        "",
        "Each replicate's threshold is chosen on its own validation predictions by the rule, then applied",
        "to the test split.",
        "",
        "| variant | rule | threshold | validation SEN | test SEN | test SPE |",
        "|---|---|---|---|---|---|",
    ]
    for variant in dict.fromkeys(row["variant"] for row in rows):
        for rule in THRESHOLD_RULES:
            mine = [row for row in rows if row["variant"] == variant and row["rule"] == rule]
            cells = [
                _spread([row[key] for row in mine]) for key in ("threshold", "validation_sen", "test_sen", "test_spe")
            ]
            lines.append(f"| {variant} | {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seed_to_seed_context(differing: list[str], report: dict, agreement: Path = RECIPE_AGREEMENT) -> list[str]:
    """For each metric outside the paired interval: how far apart two seeds of the recipe landed.

    ``compare --check`` keeps its verdict (the paired interval); these lines say whether a rebuild's
    difference is one the recipe also shows between two of its own trainings on one CPU, or larger
    than any seen there (then the machine, the data or the code is the likelier cause). Empty when
    the study is not at hand (an installed package) or unreadable.
    """
    try:
        rows = [row for row in json.loads(Path(agreement).read_text())["comparisons"] if row["kind"] == "replicates"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    lines = []
    for name in differing:
        seen = [abs(row["differences"][name]["difference"]) for row in rows if name in row.get("differences", {})]
        here = report[name]["difference"]
        if not seen or not np.isfinite(here):
            continue
        widest = max(seen)
        verdict = "within" if abs(here) <= widest else "beyond"
        lines.append(
            f"  {name}: {here:+.3f} here; between two seeds of the recipe on one CPU up to {widest:.3f} "
            f"({len(seen)} seed pairs): {verdict} the recipe's own training noise"
        )
    return lines
