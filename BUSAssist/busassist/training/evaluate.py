"""Evaluate an exported model through the real inference path and write its model card.

The figures on the card are measured on the ONNX file that ships, run by ``Analyzer`` on the
original BUSI PNGs, with masks compared on each image's own pixel grid, so they describe what a
user gets, not a training-time approximation. The validation split provides the operating
table behind the threshold slider; the test split is only ever used for the reported figures.
"""

from __future__ import annotations

import csv
import json
import platform
from pathlib import Path

import numpy as np

from busassist.constants import (
    EFFECTIVE_WEIGHT_MAX,
    EFFECTIVE_WEIGHT_MIN,
    MIN_LESION_FRACTION,
    threshold_for_effective_weight,
)
from busassist.core.inference import Analyzer, sigmoid
from busassist.core.model_store import sha256_of
from busassist.training.busi import BusiCase, discover, load_image, load_mask
from busassist.training.calibration import expected_calibration_error, fit_temperature
from busassist.training.export import seal_model, set_metadata
from busassist.training.metrics import auc, classification_report, dice_iou, mean_report
from busassist.training.model_card import strict_json, write_card
from busassist.training.reference import REFERENCE_RUNTIME


def analyse_cases(analyzer: Analyzer, cases: list[BusiCase], flip_average: bool = False) -> dict[str, np.ndarray]:
    """Probabilities, per-image Dice/IoU and lesion detection for BUSI cases.

    ``flip_average`` evaluates test-time augmentation: the class logits and the mask
    probabilities of the image and of its left-right mirror are averaged.
    """
    probabilities, logits, dices, ious, detected, fractions = [], [], [], [], [], []
    for case in cases:
        image = load_image(case)
        truth = load_mask(case, image.shape[:2])
        result = analyzer.analyze(image)
        logit, probability, mask = result.logit, result.probability, result.mask > 0
        if flip_average:
            mirrored = analyzer.analyze(np.ascontiguousarray(image[:, ::-1]))
            logit = (logit + mirrored.logit) / 2
            probability = float(sigmoid(np.float32(logit)))
            mask = (result.probability_map + mirrored.probability_map[:, ::-1]) / 2 >= analyzer.metadata.mask_threshold
        fraction = np.count_nonzero(mask) / mask.size  # BUSI images: the whole image is the analysed region
        dice, iou = dice_iou(mask, truth)
        probabilities.append(probability)
        logits.append(logit)
        dices.append(dice)
        ious.append(iou)
        fractions.append(fraction)
        detected.append(fraction >= analyzer.metadata.min_lesion_fraction)
    return {
        "labels": np.array([c.label for c in cases]),
        "probabilities": np.array(probabilities),
        "logits": np.array(logits),
        "dice": np.array(dices),
        "iou": np.array(ious),
        "detected": np.array(detected),
        "lesion_fraction": np.array(fractions),
    }


#: "No lesion" rules the card reports: smallest mask area, as a fraction of the analysed region.
LESION_RULE_CANDIDATES: tuple[float, ...] = tuple(round(0.002 * k, 3) for k in range(1, 11))


def lesion_rule(labels: np.ndarray, fractions: np.ndarray, chosen: float = MIN_LESION_FRACTION) -> dict:
    """The "no lesion" rule the model ships with, and the validation trade-off of larger ones.

    The rule stays the fixed, smallest area (``MIN_LESION_FRACTION``) on purpose: "no lesion"
    overrides the malignancy decision, so every lesion a larger rule hides is a possible missed
    cancer, while a stray blob on a normal image stays visible to the radiologist. A rule fitted
    to balance the two (Youden's J) would trade lesions for quiet normal images, which a
    sensitivity-first reader does not want. The table lets a team see what a larger rule would
    cost before choosing one; ``min_lesion_fraction`` in the model's metadata carries the choice.
    """
    normal, lesion = fractions[labels < 0], fractions[labels >= 0]
    return {
        "min_lesion_fraction": chosen,
        "choice": "fixed smallest area: 'no lesion' overrides the malignancy decision, so lesions come first",
        "validation_tradeoff": [
            {
                "min_lesion_fraction": x,
                "normal_no_lesion_rate": float(np.mean(normal < x)) if normal.size else None,
                "lesion_detection_rate": float(np.mean(lesion >= x)) if lesion.size else None,
            }
            for x in LESION_RULE_CANDIDATES
        ],
    }


#: Validation AUC + Dice that flip averaging must add to be worth doubling the network time.
FLIP_MIN_GAIN = 0.01


def write_predictions(path: Path, keys: list[str], results: dict[str, np.ndarray]) -> None:
    """Per-image results (for the report's ROC/PR curves and for auditing single cases)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "probability", "dice", "iou", "lesion_detected"])
        for i, key in enumerate(keys):
            writer.writerow(
                [
                    key,
                    int(results["labels"][i]),
                    f"{results['probabilities'][i]:.6f}",
                    f"{results['dice'][i]:.4f}",
                    f"{results['iou'][i]:.4f}",
                    int(results["detected"][i]),
                ]
            )


def operating_table(labels: np.ndarray, probabilities: np.ndarray, w_p: float, resamples: int = 1000) -> list[dict]:
    """For W' = 1..10: the threshold W_p / (W_p + W') and validation SEN/SPE/PPV/NPV with intervals."""
    table = []
    for weight in np.arange(EFFECTIVE_WEIGHT_MIN, EFFECTIVE_WEIGHT_MAX + 0.5, 1.0):
        threshold = threshold_for_effective_weight(float(weight), w_p)
        report = classification_report(labels, probabilities, threshold, resamples)
        row = {"w_effective": float(weight), "threshold": round(threshold, 6)}
        for name in ("sen", "spe", "ppv", "npv"):
            row[name] = report[name]["value"]
            row[f"{name}_ci"] = [report[name]["ci_low"], report[name]["ci_high"]]
        table.append(row)
    return table


def summarise(results: dict[str, np.ndarray], threshold: float) -> dict:
    labelled = results["labels"] >= 0
    lesion = results["labels"] >= 0  # benign and malignant images carry a lesion mask
    normal = results["labels"] < 0
    summary = classification_report(results["labels"][labelled], results["probabilities"][labelled], threshold)
    summary["dice"] = mean_report(results["dice"][lesion])
    summary["iou"] = mean_report(results["iou"][lesion])
    summary["counts"] = {
        "benign": int(np.sum(results["labels"] == 0)),
        "malignant": int(np.sum(results["labels"] == 1)),
        "normal": int(np.sum(normal)),
    }
    if normal.any():
        summary["normal_no_lesion_rate"] = float(np.mean(~results["detected"][normal]))
    summary["lesion_detection_rate"] = float(np.mean(results["detected"][lesion])) if lesion.any() else None
    return summary


def pooled_predictions(cross_validation: Path, w_p: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels and probabilities of every fold's model on its own held-out test part, pooled.

    ``cross_validation`` is a K-fold run (a ``study`` variant folder or a ``cv`` output). The K test parts
    are disjoint and together hold half of the images (the other half is the folds' validation parts),
    each scored by a model that neither trained on it nor chose its epoch with it. Refused, in one
    line, when its folds trained with another W_p: the thresholds W_p / (W_p + W') would then not mean
    the same thing.
    """
    from busassist.training.operating_check import fold_test_predictions, run_config

    folders = sorted(Path(cross_validation).glob("fold-*"), key=lambda folder: int(folder.name.split("-")[1]))
    if not folders or not all((folder / "metrics.json").exists() for folder in folders):
        raise ValueError(f"{cross_validation}: not a finished K-fold run (fold-*/metrics.json)")
    labels, probabilities = [], []
    for folder in folders:
        if run_config(folder).w_p != w_p:
            raise ValueError(f"{folder}: trained with W_p {run_config(folder).w_p:g}, the model with {w_p:g}")
        fold_labels, fold_probabilities = fold_test_predictions(folder)
        labels.append(fold_labels)
        probabilities.append(fold_probabilities)
    return np.concatenate(labels), np.concatenate(probabilities), len(folders)


def calibrate_run(run: Path, onnx_path: Path, data_root: Path, pooled_from: Path | None = None) -> dict:
    """Fit what the model carries, write it into the model and seal it.

    The operating table (W' -> threshold and its figures) and the temperature are fitted on the
    validation split, or, with ``pooled_from`` (a K-fold run of the same recipe), on the pooled
    out-of-fold test predictions (``pooled_predictions``: about four times the validation split's
    labelled images, so the table's intervals are about half as wide). They are written into the model's
    metadata and the checksum file is renewed. This is the only step after export that changes the model file;
    ``evaluate_run`` only reads it. Returns the calibration record (also ``run/calibration.json``).
    """
    run = Path(run)
    split = json.loads((run / "split.json").read_text())
    cases = {case.key: case for case in discover(Path(data_root))}
    analyzer = Analyzer(onnx_path, verify=False, backend=REFERENCE_RUNTIME)
    w_p = analyzer.metadata.w_p
    val = analyse_cases(analyzer, [cases[k] for k in split["val"]])
    labelled = val["labels"] >= 0
    metadata = analyzer.metadata
    labels, probabilities = val["labels"][labelled], val["probabilities"][labelled]
    logits = val["logits"][labelled]
    fitted_on = f"validation split ({int(labelled.sum())} labelled images)"
    if pooled_from is not None:
        labels, probabilities, folds = pooled_predictions(pooled_from, w_p)
        clipped = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
        logits = np.log(clipped / (1 - clipped))
        fitted_on = f"pooled out-of-fold predictions ({labels.size} labelled images, {folds} folds of {pooled_from})"
    metadata.operating_table = strict_json(operating_table(labels, probabilities, w_p))
    metadata.temperature = fit_temperature(logits, labels, float(np.log(w_p)))
    del analyzer  # release the file before rewriting it
    set_metadata(onnx_path, metadata)
    record = {
        "model_sha256": seal_model(onnx_path),
        "temperature": metadata.temperature,
        "operating_table": metadata.operating_table,
        "fitted_on": fitted_on,
    }
    (run / "calibration.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def evaluate_run(run: Path, onnx_path: Path, data_root: Path, derived_from: Path | None = None) -> dict:
    """The model card of ``onnx_path`` on the run's validation and test splits. Reads the model, never writes it.

    The operating table and temperature are the model's own (``calibrate_run`` wrote them); the test
    split only ever reports. ``derived_from``: the card of the float32 model this one was made from
    without training (equalised and quantised): its data and training sections are carried over,
    since ``run`` then holds no training record, and the steps that made this model are listed.
    """
    run = Path(run)
    split = json.loads((run / "split.json").read_text())
    if derived_from is not None:
        return _derived_card(run, onnx_path, data_root, json.loads(Path(derived_from).read_text()), split)
    config = json.loads((run / "config.json").read_text())
    with (run / "history.csv").open(newline="") as handle:
        history = list(csv.DictReader(handle))
    parameters, best_epoch = _best_checkpoint_facts(run)
    training = {
        "command": fit_command(config["config"]),
        "config": portable_config(config["config"]),
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "seconds": _training_seconds(history),
        "device": config["device"],
        "machine": config["machine"],
        "threads": config["threads"],
        "torch": config["torch"],
        "python": platform.python_version(),
    }
    card = _card(run, onnx_path, data_root, split, config["data_sha256"], parameters, training)
    write_card(run, card)
    return card


def _card(
    run: Path, onnx_path: Path, data_root: Path, split: dict, data_sha256: str, parameters: int, training: dict
) -> dict:
    """The card of ``onnx_path``: validation and test figures through the inference path, beside the
    training record the caller gives (its own run's, or the card it was derived from)."""
    cases = {case.key: case for case in discover(Path(data_root))}
    analyzer = Analyzer(onnx_path, verify=False, backend=REFERENCE_RUNTIME)
    metadata = analyzer.metadata
    w_p = metadata.w_p
    val = analyse_cases(analyzer, [cases[k] for k in split["val"]])
    test = analyse_cases(analyzer, [cases[k] for k in split["test"]])
    # The rule the exported model carries (export writes the default); analyse_cases applied it.
    rule = lesion_rule(val["labels"], val["lesion_fraction"], metadata.min_lesion_fraction)
    for name, results in (("val", val), ("test", test)):
        write_predictions(run / f"predictions_{name}.csv", split[name], results)
    table = metadata.operating_table
    test_labelled = test["labels"] >= 0
    # What the slider's promise turned into on unseen images (reported, never used to choose).
    table_test = operating_table(test["labels"][test_labelled], test["probabilities"][test_labelled], w_p)
    flip = flip_average_check(analyzer, [cases[k] for k in split["val"]], val)
    shift = float(np.log(w_p))
    test_logits, test_labels = test["logits"][test_labelled], test["labels"][test_labelled]
    calibration = {
        "temperature": metadata.temperature,
        "method": "sigmoid((z - ln W_p) / T), T fitted by NLL on the validation split",
        "ece_test_raw_probability": expected_calibration_error(1 / (1 + np.exp(-test_logits)), test_labels),
        "ece_test_calibrated": expected_calibration_error(
            1 / (1 + np.exp(-(test_logits - shift) / metadata.temperature)), test_labels
        ),
    }
    del analyzer

    card = {
        "model": {
            "file": Path(onnx_path).name,
            "version": metadata.model_version,
            "sha256": sha256_of(Path(onnx_path)),  # the sealed file these figures are of (publish checks it)
            "architecture": "EMT-Net (MobileNetV1 1.0 encoder, classifier, LinkNet decoder)",
            "parameters": parameters,
            "size_bytes": Path(onnx_path).stat().st_size,
            "w_p": metadata.w_p,
            "w_clf": metadata.w_clf,
            "input_size": metadata.input_size,
        },
        "data": {
            "name": "BUSI (Al-Dhabyani et al. 2020)",  # where it lay is the trainer's business; its hash names it
            "sha256": data_sha256,
            "split": "70/15/15 stratified by class, seed 42, near-duplicate groups kept whole",
            "counts": {name: len(keys) for name, keys in split.items()},
        },
        "training": training,
        "decision_threshold": {"w_effective": w_p, "threshold": threshold_for_effective_weight(w_p, w_p)},
        "test": summarise(test, threshold_for_effective_weight(w_p, w_p)),
        "validation": summarise(val, threshold_for_effective_weight(w_p, w_p)),
        "operating_table_validation": table,
        "operating_table_test": table_test,
        "slider_reach_test": slider_reach(test["probabilities"][test_labelled], table_test),
        "test_time_flip": flip,
        "calibration": calibration,
        "lesion_rule": rule,
    }
    return card


def slider_reach(probabilities: np.ndarray, table: list[dict]) -> dict:
    """How many images have a probability the slider can act on (between its extreme thresholds)."""
    thresholds = [row["threshold"] for row in table]
    low, high = min(thresholds), max(thresholds)
    images = int(np.sum((probabilities >= low) & (probabilities < high)))
    return {"images": images, "of": int(probabilities.size), "low": low, "high": high}


def flip_average_check(analyzer: Analyzer, val_cases: list[BusiCase], plain: dict[str, np.ndarray]) -> dict:
    """Does left-right flip averaging help? Decided on validation AUC + Dice only.

    Flip averaging doubles the network time of every frame, so it is adopted only when it
    gains more than ``FLIP_MIN_GAIN`` in the validation selection score (AUC + Dice).
    """
    flipped = analyse_cases(analyzer, val_cases, flip_average=True)

    def score(results: dict[str, np.ndarray]) -> dict[str, float]:
        labelled = results["labels"] >= 0  # benign and malignant: the images with a lesion mask
        value = auc(results["labels"][labelled], results["probabilities"][labelled])
        return {"auc": value, "dice": float(np.mean(results["dice"][labelled]))}

    before, after = score(plain), score(flipped)
    gain = (after["auc"] + after["dice"]) - (before["auc"] + before["dice"])
    return {
        "validation_plain": before,
        "validation_flip_average": after,
        "gain_auc_plus_dice": gain,
        "min_gain_to_adopt": FLIP_MIN_GAIN,
        "adopted": bool(gain > FLIP_MIN_GAIN),
    }


#: Settings that say where files lay on the training machine: a card leaves them out (the data are named by
#: their hash, the pretrained graph by its file name).
MACHINE_PATHS = ("data_root", "cache_dir", "extra")


def portable_config(config: dict) -> dict:
    """A run's recorded config without the training machine's paths (for the model card)."""
    portable = {key: value for key, value in config.items() if key not in MACHINE_PATHS}
    if portable.get("pretrained"):
        portable["pretrained"] = Path(portable["pretrained"]).name
    return portable


def fit_command(config: dict) -> str:
    """The ``busassist-train fit`` command line that reproduces a run from its recorded config.

    The data and the pretrained graph are the environment's (``$BUSASSIST_DATA``, ``$BUSASSIST_PRETRAINED``),
    not the training machine's paths.
    """
    options = ['--data "$BUSASSIST_DATA"', f"--out {config['out_dir']}", f"--task {config['task']}"]
    options.append('--pretrained "$BUSASSIST_PRETRAINED"' if config.get("pretrained") else "--no-pretrained")
    for key in ("epochs", "patience", "image_size", "batch_size", "w_p", "w_clf", "mask_bce", "schedule", "seed"):
        if key in config:
            options.append(
                f"--{key.replace('_', '-')} {config[key]:g}"
                if isinstance(config[key], float)
                else f"--{key.replace('_', '-')} {config[key]}"
            )
    options.append(f"--lr {config['learning_rate']:g}")
    if config.get("dice", "batch") != "batch":  # runs before the option existed used Eq. 5
        options.append(f"--dice {config['dice']}")
    if config.get("deep_supervision"):
        options.append(f"--deep-supervision {config['deep_supervision']:g}")
    if config.get("false_lesion"):
        options.append(f"--false-lesion {config['false_lesion']:g}")
    if config.get("encoder_activation", "relu") != "relu":  # as the other options: the default left out
        options.append(f"--encoder-activation {config['encoder_activation']}")
    if config.get("qat", "off") != "off":
        options.append(f"--qat {config['qat']}")
    if config.get("border"):
        options.append(f"--border {config['border']:g}")
    if config.get("keep", "best") != "best":
        options.append(f"--keep {config['keep']}")
        if config["keep"] == "ema":
            options.append(f"--ema-decay {config.get('ema_decay', 0.995):g}")
    if config.get("teachers"):  # a distilled student: its teachers are trained by the same command
        options.append(f"--teachers {config['teachers']} --distill {config.get('distill', 0.5):g}")
        if config.get("teacher_data", "all") != "all":
            options.append(f"--teacher-data {config['teacher_data']}")
    if config.get("init_from"):  # a fine-tune: the command of the run it started from comes first
        options.append(f"--init-from {config['init_from']}")
    options += [f"--extra-train {folder}" for folder in config.get("extra_train") or []]
    return "busassist-train fit " + " ".join(options)


def _best_checkpoint_facts(run: Path) -> tuple[int, int]:
    """Parameter count and epoch of the run's best weights (one read of best.pt)."""
    import torch

    from busassist.training.model import count_parameters, network_from_checkpoint

    checkpoint = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
    return count_parameters(network_from_checkpoint(checkpoint)), int(checkpoint["epoch"])


def _training_seconds(history_rows: list[dict[str, str]]) -> float:
    """Training time from history.csv (the per-epoch seconds the trainer also sums in last.pt)."""
    return float(sum(float(row["seconds"]) for row in history_rows))


def _derived_card(run: Path, onnx_path: Path, data_root: Path, parent: dict, split: dict) -> dict:
    """``evaluate_run`` for a model made from a published one without training (see there)."""
    from busassist.core.model_store import read_metadata

    metadata = read_metadata(Path(onnx_path))
    if split["test"] and parent["data"]["counts"].get("test") not in (None, len(split["test"])):
        raise ValueError(f"{run}/split.json: not the split of the card it is derived from")
    card = _card(
        run, onnx_path, data_root, split, parent["data"]["sha256"], parent["model"]["parameters"], parent["training"]
    )
    card["model"]["derived_from"] = {
        "version": parent["model"]["version"],
        "steps": {key: metadata.extra[key] for key in ("equalization", "qat", "quantization") if key in metadata.extra},
    }
    write_card(run, card)
    return card
