"""Model card (JSON + Markdown), publishing a run into Resources/Models, comparing two cards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from busassist.constants import MODEL_CARD_JSON, MODEL_FILENAME
from busassist.core.model_store import write_checksum

CARD_MARKDOWN = "MODEL_CARD.md"
HEADLINE = ("acc", "sen", "spe", "auc", "ppv", "npv", "dice", "iou")
PAPER = {"acc": 0.886, "sen": 0.941, "spe": 0.853, "dice": 0.81, "iou": 0.73}


def _fmt(entry: dict, percent: bool) -> str:
    scale, unit = (100, " %") if percent else (1, "")
    digits = 1 if percent else 3
    return (
        f"{entry['value'] * scale:.{digits}f}{unit} "
        f"[{entry['ci_low'] * scale:.{digits}f}, {entry['ci_high'] * scale:.{digits}f}]"
    )


def render_markdown(card: dict) -> str:
    model, data, training, test = card["model"], card["data"], card["training"], card["test"]
    lines = [
        f"# Model card: {model['version']}",
        "",
        f"{model['architecture']}; {model['parameters'] / 1e6:.2f} M parameters; "
        f"ONNX file {model['size_bytes'] / 1e6:.1f} MB; input {model['input_size']}x{model['input_size']} grey.",
        f"Trained with NS-WBCE W_p = {model['w_p']} and W_clf = {model['w_clf']}.",
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
    lines += [
        "",
        "Dice and IoU are per lesion image on the source pixel grid, measured on the ONNX model through",
        "the same inference code the CLI and Slicer use.",
        "",
        "## Operating table (validation split): what each threshold-slider position means",
        "",
        "| W' | threshold | SEN | SPE | PPV | NPV |",
        "|---|---|---|---|---|---|",
    ]
    for row in card["operating_table_validation"]:
        cells = [
            f"{row[k] * 100:.1f} % [{row[k + '_ci'][0] * 100:.0f}, {row[k + '_ci'][1] * 100:.0f}]"
            for k in ("sen", "spe", "ppv", "npv")
        ]
        lines.append(f"| {row['w_effective']:.0f} | {row['threshold']:.3f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Training",
        f"Command: `{training['command']}`.",
        f"{training['epochs_run']} epochs (best {training['best_epoch']}), {training['seconds'] / 60:.1f} min on "
        f"{training['device']} ({training['machine']}, {training['threads']} threads, torch {training['torch']}).",
        "",
        "## Limitations",
        "BUSI comes from one hospital and one scanner family (LOGIQ E9); performance on other scanners,",
        "presets and populations is unknown. The test split has under 100 images, hence the wide intervals.",
        "",
    ]
    return "\n".join(lines)


def write_card(folder: Path, card: dict) -> None:
    (Path(folder) / MODEL_CARD_JSON).write_text(json.dumps(card, indent=1) + "\n")
    (Path(folder) / CARD_MARKDOWN).write_text(render_markdown(card))


def publish(run: Path, models_dir: Path) -> Path:
    """Copy a run's ONNX model and card into ``models_dir`` and write the model's SHA-256."""
    models_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / MODEL_FILENAME, models_dir / MODEL_FILENAME)
    write_checksum(models_dir / MODEL_FILENAME)
    for name in (MODEL_CARD_JSON, CARD_MARKDOWN):
        shutil.copyfile(run / name, models_dir / name)
    return models_dir


def compare_cards(new_path: Path, shipped_path: Path) -> str:
    """A table of test metrics: the new run, the shipped model, and their difference."""
    new = json.loads(Path(new_path).read_text())["test"]
    if not Path(shipped_path).exists():
        return f"no shipped card at {shipped_path}; nothing to compare"
    shipped = json.loads(Path(shipped_path).read_text())["test"]
    lines = [f"{'metric':<8}{'this run':>10}{'shipped':>10}{'change':>10}"]
    for name in HEADLINE:
        a, b = new[name]["value"], shipped[name]["value"]
        lines.append(f"{name:<8}{a:>10.3f}{b:>10.3f}{a - b:>+10.3f}")
    return "\n".join(lines)
