"""Model card (JSON + Markdown), publishing a run into Resources/Models, comparing two cards."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from busassist.constants import MODEL_CARD_JSON, MODEL_FILENAME

CARD_MARKDOWN = "MODEL_CARD.md"
HEADLINE = ("acc", "sen", "spe", "auc", "ppv", "npv", "dice", "iou")
PAPER = {"acc": 0.886, "sen": 0.941, "spe": 0.853, "dice": 0.81, "iou": 0.73}


def _number(value: float | None, percent: bool) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value * 100:.1f}" if percent else f"{value:.3f}"


def _fmt(entry: dict, percent: bool) -> str:
    unit = " %" if percent else ""
    low, high = _number(entry["ci_low"], percent), _number(entry["ci_high"], percent)
    return f"{_number(entry['value'], percent)}{unit} [{low}, {high}]"


def _derivation_lines(derived: dict | None) -> list[str]:
    """For a model made from another without training: which one, and how (equalised, quantised)."""
    if not derived:
        return []
    steps = derived.get("steps", {})
    done = []
    if "equalization" in steps:
        done.append(f"cross-layer equalisation ({steps['equalization'].get('pairs', '?')} layer pairs)")
    if "qat" in steps:
        done.append(f"quantisation-aware fine-tuning ({steps['qat'].get('epochs', '?')} epochs)")
    quantization = steps.get("quantization")
    if quantization:
        bits = "7-bit" if quantization.get("reduce_range") else "8-bit"
        if quantization.get("reduce_range") and quantization.get("full_range_depthwise"):
            bits = "7-bit (8-bit in the depthwise convolutions)"
        detail = f"int8 with {bits} {quantization.get('weight_type', 'int8')} weights per channel"
        if quantization.get("float_ops"):
            detail += f", {', '.join(quantization['float_ops'])} kept in float"
        if quantization.get("float_nodes"):
            detail += f", nodes under {', '.join(quantization['float_nodes'])} kept in float"
        if quantization.get("bias_correction"):
            detail += f", biases corrected on {quantization['bias_correction']['images']} training images"
        done.append(detail)
    return [
        "",
        f"Made from `{derived['version']}` without training: {'; '.join(done) or 'no steps recorded'}. "
        "Its operating table, temperature and every figure below are its own (fitted and measured on this file).",
    ]


def render_markdown(card: dict) -> str:
    model, data, training, test = card["model"], card["data"], card["training"], card["test"]
    lines = [
        f"# Model card: {model['version']}",
        "",
        f"{model['architecture']}; {model['parameters'] / 1e6:.2f} M parameters; "
        f"ONNX file {model['size_bytes'] / 1e6:.1f} MB; input {model['input_size']}x{model['input_size']} grey.",
        f"Trained with NS-WBCE W_p = {model['w_p']} and W_clf = {model['w_clf']}.",
        *_derivation_lines(model.get("derived_from")),
        "",
        "## Intended use",
        "Research and second-reader support for breast-ultrasound lesion segmentation and",
        "benign/malignant scoring. Not a diagnostic device; every output needs a radiologist's review.",
        "",
        "## Data",
        f"{data['name']} (SHA-256 {data['sha256'][:16]}…). Split: {data['split']}.",
        f"Images per split: {data['counts']}. Normal images train the mask with an empty target and",
        "carry no classification loss.",
        "",
        "## Test-split results (95 % bootstrap intervals)",
        f"Decision at W' = W_p (threshold {card['decision_threshold']['threshold']:.3f}); counts {test['counts']}.",
        "",
        "| metric | BUSAssist | paper (Table 1) |",
        "|---|---|---|",
    ]
    for name in HEADLINE:
        percent = name not in ("auc", "dice", "iou")
        paper = PAPER.get(name)
        paper_text = "-" if paper is None else (f"{paper * 100:.1f} %" if percent else f"{paper:.2f}")
        lines.append(f"| {name.upper()} | {_fmt(test[name], percent)} | {paper_text} |")
    if "normal_no_lesion_rate" in test:
        lines.append(f"| normal images reported as 'no lesion' | {test['normal_no_lesion_rate'] * 100:.1f} % | - |")
    if test.get("lesion_detection_rate") is not None:
        lines.append(f"| lesion images with a lesion found | {test['lesion_detection_rate'] * 100:.1f} % | - |")
    rule = card.get("lesion_rule")
    if rule:
        lines += [
            "",
            f"'No lesion' means a mask smaller than {rule['min_lesion_fraction'] * 100:.1f} % of the analysed",
            f"region ({rule['choice']}). What larger areas would do on the validation split:",
            "",
            "| 'no lesion' below | normal images 'no lesion' | lesion images found |",
            "|---|---|---|",
        ]
        for row in rule["validation_tradeoff"]:
            normal, found = row["normal_no_lesion_rate"], row["lesion_detection_rate"]
            lines.append(
                f"| {row['min_lesion_fraction'] * 100:.1f} % | {_number(normal, True)} | {_number(found, True)} |"
            )
    lines += [
        "",
        "Dice and IoU are per lesion image on the source pixel grid, measured on the ONNX model through",
        "the same inference code the CLI and Slicer use.",
        "",
        "## Operating table (validation split): what each threshold-slider position means",
        "",
        "Each table's intervals come from its own 1,000 bootstrap resamples, so one figure can carry",
        "intervals a few tenths of a point apart in two tables (the W' = 3 rows, the headline results).",
        "",
        "| W' | threshold | SEN | SPE | PPV | NPV |",
        "|---|---|---|---|---|---|",
    ]
    for row in card["operating_table_validation"]:
        cells = [
            f"{_number(row[k], True)} % [{_number(row[k + '_ci'][0], True)}, {_number(row[k + '_ci'][1], True)}]"
            for k in ("sen", "spe", "ppv", "npv")
        ]
        lines.append(f"| {row['w_effective']:.0f} | {row['threshold']:.3f} | " + " | ".join(cells) + " |")
    if card.get("operating_table_test"):
        lines += _test_operating_lines(card["operating_table_test"], card.get("slider_reach_test"))
    if card.get("test_time_flip"):
        flip = card["test_time_flip"]
        plain, mirrored = flip["validation_plain"], flip["validation_flip_average"]
        verdict = (
            "worth adopting (inference does not average flips yet)"
            if flip["adopted"]
            else "not adopted: it doubles the network time for less than that"
        )
        lines += [
            "",
            "## Test-time flip averaging",
            f"Averaging the image and its left-right mirror, on the validation split: AUC {plain['auc']:.3f} → "
            f"{mirrored['auc']:.3f}, Dice {plain['dice']:.3f} → {mirrored['dice']:.3f} (AUC + Dice "
            f"{flip['gain_auc_plus_dice']:+.3f}; the bar is {flip['min_gain_to_adopt']:+.3f}). {verdict.capitalize()}.",
        ]
    if "calibration" in card:
        calibration = card["calibration"]
        lines += [
            "",
            "## Calibration",
            f"`calibrated_probability` = {calibration['method']}; T = {calibration['temperature']:.3f}.",
            f"Expected calibration error on the test split: raw probability "
            f"{_number(calibration['ece_test_raw_probability'], False)}, calibrated "
            f"{_number(calibration['ece_test_calibrated'], False)} (10 bins). Decisions use the raw probability",
            "and the W_p / (W_p + W') thresholds above.",
        ]
    lines += [
        "",
        "## Training",
        f"Command: `{training['command']}`.",
        f"{training['epochs_run']} epochs (best {training['best_epoch']}), {training['seconds'] / 60:.1f} min on "
        f"{training['device']} ({training['machine']}, {training['threads']} threads, torch {training['torch']}).",
        "",
        "## Comparison with the paper",
        "The paper pooled four datasets (BUSIS, Dataset B, the Thailand set and BUSI) and does not say",
        "that near-identical frames were kept on one side of its split. This model is validated and tested",
        "on BUSI alone, with near-duplicate groups kept whole, and trained on BUSI"
        + (
            f" plus {len(training['config']['extra_train'])} extra folder(s)"
            if training["config"].get("extra_train")
            else ""
        )
        + ", so its test figures are not like-for-like with Table 1. The paper's experiments rerun on BUSI",
        "are in the source repository's `reports/experiments-cpu-quick/`.",
        "",
        "## Limitations",
        "BUSI comes from one hospital and one scanner family (LOGIQ E9); performance on other scanners,",
        "presets and populations is unknown. The test split has under 100 images, hence the wide intervals.",
        "",
    ]
    return "\n".join(lines)


def _test_operating_lines(table: list[dict], reach: dict | None) -> list[str]:
    """The slider's positions on the test split, and how many decisions they can change at all."""
    lines = [
        "",
        "## Operating table (test split): what the slider positions gave on unseen images",
        "",
        "| W' | threshold | SEN | SPE |",
        "|---|---|---|---|",
    ]
    for row in table:
        cells = [
            f"{_number(row[k], True)} % [{_number(row[k + '_ci'][0], True)}, {_number(row[k + '_ci'][1], True)}]"
            for k in ("sen", "spe")
        ]
        lines.append(f"| {row['w_effective']:.0f} | {row['threshold']:.3f} | " + " | ".join(cells) + " |")
    if reach:
        lines += [
            "",
            f"Only {reach['images']} of {reach['of']} labelled test images "
            f"({reach['images'] / max(reach['of'], 1) * 100:.0f} %) "
            f"have a probability between {reach['low']:.3f} and {reach['high']:.3f}: those are the only decisions the "
            "slider can change. The others are decided the same at every position, so a cancer scored under "
            f"{reach['low']:.2f} is missed whatever the slider says.",
        ]
    return lines


def strict_json(value: object) -> object:
    """Replace NaN/inf (undefined metrics, e.g. PPV with no positive call) by null for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_card(folder: Path, card: dict) -> None:
    card = strict_json(card)
    (Path(folder) / MODEL_CARD_JSON).write_text(json.dumps(card, indent=1, allow_nan=False) + "\n")
    (Path(folder) / CARD_MARKDOWN).write_text(render_markdown(card))


def publish(run: Path, models_dir: Path) -> Path:
    """Copy a run's ONNX model and card into ``models_dir`` and seal it (SHA-256 and probe reference).

    Only a sealed model goes out, with the card of that very file: a model changed after ``calibrate``
    sealed it, or re-calibrated after ``evaluate`` wrote the card, would otherwise ship under a fresh
    checksum beside figures of another model. Raises ``ModelError`` / ``ValueError`` naming the file.
    """
    from busassist.core.model_store import verify_model
    from busassist.training.export import seal_model

    digest = verify_model(run / MODEL_FILENAME)  # refuses an unsealed model or one changed after sealing
    card_path = run / MODEL_CARD_JSON
    if not card_path.is_file():
        raise ValueError(f"{card_path}: no model card; run `busassist-train evaluate {run}` first")
    try:
        described = json.loads(card_path.read_text()).get("model", {}).get("sha256")
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{card_path}: not a model card ({error})") from error
    if described != digest:
        raise ValueError(
            f"{card_path}: describes model {str(described)[:12]}…, not {MODEL_FILENAME} {digest[:12]}…; "
            f"run `busassist-train evaluate {run}` again"
        )
    models_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / MODEL_FILENAME, models_dir / MODEL_FILENAME)
    seal_model(models_dir / MODEL_FILENAME)
    for name in (MODEL_CARD_JSON, CARD_MARKDOWN):
        shutil.copyfile(run / name, models_dir / name)
    return models_dir


def compare_cards(new_path: Path, shipped_path: Path) -> str:
    """A table of test metrics: the new run, the shipped model, and their difference."""
    new = json.loads(Path(new_path).read_text())["test"]
    if not Path(shipped_path).exists():
        return f"no shipped card at {shipped_path}; nothing to compare"
    shipped = json.loads(Path(shipped_path).read_text())["test"]
    lines = [f"{'metric':<18}{'this run':>10}{'shipped':>10}{'change':>10}"]
    for name in HEADLINE:
        a, b = new[name]["value"], shipped[name]["value"]
        if a is None or b is None:  # undefined on that split (stored as null)
            lines.append(f"{name:<18}{_number(a, False):>10}{_number(b, False):>10}{'n/a':>10}")
        else:
            lines.append(f"{name:<18}{a:>10.3f}{b:>10.3f}{a - b:>+10.3f}")
    # What the "no lesion" rule does: a better Dice bought with blobs on normal images shows here.
    for name, label in (("normal_no_lesion_rate", "normal no lesion"), ("lesion_detection_rate", "lesion found")):
        a, b = new.get(name), shipped.get(name)
        if a is not None and b is not None:
            lines.append(f"{label:<18}{a:>10.3f}{b:>10.3f}{a - b:>+10.3f}")
    return "\n".join(lines)
