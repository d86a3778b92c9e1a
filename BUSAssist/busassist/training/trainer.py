"""One training run of EMT-Net (or a single-task variant) on BUSI, resumable and repeatable.

The run folder holds ``config.json``, ``last.pt`` (everything needed to resume: weights,
optimiser, scheduler, epoch, history and RNG state), ``best.pt`` (weights of the epoch with
the best validation score), ``history.csv`` and ``split.json``. Rerunning with ``resume=True``
continues where the previous process stopped.
"""

from __future__ import annotations

import csv
import json
import platform
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from busassist.constants import (
    MASK_THRESHOLD,
    MIN_LESION_FRACTION,
    NORMALISATION_MEAN,
    NORMALISATION_STD,
)
from busassist.core.model_store import sha256_of
from busassist.training.augment import AugmentConfig, augment_batch
from busassist.training.averaging import fit_batch_norm, moving_average
from busassist.training.busi import (
    PreparedData,
    data_fingerprint,
    discover,
    near_duplicate_groups,
    prepare_cached,
    split_seed,
    stratified_group_split,
)
from busassist.training.config import TrainConfig, check_config
from busassist.training.distill import (
    ALL_TRAINING,
    soft_targets,
    teacher_probabilities,
    train_teachers,
)
from busassist.training.losses import deep_supervision_loss, multitask_loss
from busassist.training.metrics import auc, classification_metrics, dice_iou
from busassist.training.model import (
    EMTNet,
    Task,
    encoder_activation_of,
    network_from_checkpoint,
    strip_training_heads,
)
from busassist.training.pretrained import load_imagenet_encoder, read_constants
from busassist.training.qat import observe, plain_state_dict, simulate_int8
from busassist.training.randomness import global_rng_state, restore_global_rng, seed_everything
from busassist.training.reproducible import (
    UnpinnedArithmeticWarning,
    arithmetic_record,
    is_pinned,
)


@dataclass
class Split:
    train: list[int]
    val: list[int]
    test: list[int]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_data(config: TrainConfig) -> tuple[PreparedData, Split, str, list]:
    """Preprocessed arrays, the leak-free split and the data fingerprint."""
    root = Path(config.data_root)
    cases = discover(root)
    if config.limit:
        step = max(1, len(cases) // config.limit)
        cases = cases[::step][: config.limit]
    groups = near_duplicate_groups(root / "near_duplicates.json")
    seed = split_seed(asdict(config))
    if config.folds:
        split = kfold_split(cases, groups, config.folds, config.fold, seed)
    else:
        split = Split(*stratified_group_split(cases, groups, seed=seed))
    for number, folder in enumerate(config.extra_train):
        # Corrections (e.g. exported from Slicer) only ever train: validation and test stay BUSI's
        # own, so the figures remain comparable with the shipped model's card.
        extra = discover(Path(folder), key_prefix=f"extra{number}:", require_all_classes=False)
        split.train = split.train + list(range(len(cases), len(cases) + len(extra)))
        cases = cases + extra
    if config.leave_out:
        left_out = set(training_parts(cases, groups, split.train, config.leave_out_of, seed)[config.leave_out - 1])
        split.train = [index for index in split.train if index not in left_out]
    data = prepare_cached(cases, Path(config.cache_dir), config.image_size)
    return data, split, data_fingerprint(cases), cases


def training_parts(cases: list, groups: list[list[str]], train: list[int], parts: int, seed: int) -> list[list[int]]:
    """The training split cut into ``parts`` stratified parts, near-duplicate groups whole (out-of-fold teachers).

    Drawn with the split's own seed, so a student and each of its teachers cut the same parts.
    """
    cut = stratified_group_split([cases[i] for i in train], groups, fractions=(1.0 / parts,) * parts, seed=seed)
    if not all(cut):
        raise ValueError(f"the training split ({len(train)} images) is too small to cut into {parts} parts")
    return [sorted(train[j] for j in part) for part in cut]


def teacher_scoring(config: TrainConfig, cases: list, split: Split) -> list[list[int]]:
    """The training images each teacher scores: all of them, or out-of-fold the part it did not train on."""
    if config.teacher_data == ALL_TRAINING:
        return [list(split.train)] * config.teachers
    groups = near_duplicate_groups(Path(config.data_root) / "near_duplicates.json")
    return training_parts(cases, groups, split.train, config.teachers, split_seed(asdict(config)))


def kfold_split(cases: list, groups: list[list[str]], folds: int, fold: int, seed: int) -> Split:
    """Fold ``fold`` of a K-fold cross-validation (paper section 3.2: 75 / 12.5 / 12.5 for K = 4).

    The data are cut into 2K stratified, group-preserving parts; fold i tests on part 2i,
    validates on part 2i + 1 and trains on the rest. Each image is held out (validation or
    test) in exactly one fold, and the K test parts are disjoint.
    """
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} outside 0..{folds - 1}")
    parts = stratified_group_split(cases, groups, fractions=(1.0 / (2 * folds),) * (2 * folds), seed=seed)
    test, val = parts[2 * fold], parts[2 * fold + 1]
    train = sorted(i for k, part in enumerate(parts) if k not in (2 * fold, 2 * fold + 1) for i in part)
    return Split(train, val, test)


def write_split(out: Path, data: PreparedData, split: Split) -> None:
    """``out/split.json``: the image keys of each part, what every later step (calibrate, quantize) reads."""
    (Path(out) / "split.json").write_text(
        json.dumps({name: [data.keys[i] for i in getattr(split, name)] for name in ("train", "val", "test")}, indent=1)
    )


def write_recipe_split(out: Path, data_root: Path, seed: int = 42, limit: int | None = None) -> tuple:
    """The shipped recipe's split of ``data_root`` (stratified, near-duplicate groups whole) as ``out/split.json``.

    ``tools quantize`` calibrates on its training part and judges on validation and test, so a model
    prepared for int8 outside a training run still never sees those two. Returns (data, split, data hash).
    """
    config = TrainConfig(data_root=str(data_root), out_dir=str(out), pretrained=None, seed=seed, limit=limit)
    data, split, fingerprint, _ = load_data(config)
    Path(out).mkdir(parents=True, exist_ok=True)
    write_split(out, data, split)
    return data, split, fingerprint


class TrainingBatches:
    """The training batches of one epoch in ``order``: network inputs, 0/1 masks and labels, on the CPU
    (iterable, with a length for progress bars).

    Shared by the trainer and ``tools qat`` so both see the same data. A trailing batch of one image is
    dropped: batch norm cannot train on a single sample. ``augment`` (or None) draws from ``generator``.
    """

    def __init__(
        self,
        data: PreparedData,
        order: np.ndarray,
        batch_size: int,
        generator,
        augment,
        class_targets: np.ndarray | None = None,
    ) -> None:
        self.data, self.order, self.batch_size, self.generator, self.augment = (
            data,
            order,
            batch_size,
            generator,
            augment,
        )
        self.class_targets = class_targets  # soft targets (distillation) in place of the labels; -1 = normal
        usable = len(order) - (1 if len(order) % batch_size == 1 else 0)
        self.starts = range(0, usable, batch_size)

    def __len__(self) -> int:
        return len(self.starts)

    def __iter__(self):
        for start in self.starts:
            chunk = self.order[start : start + self.batch_size]
            images = torch.from_numpy(self.data.images[chunk]).float().unsqueeze(1)
            masks = torch.from_numpy(self.data.masks[chunk]).float().unsqueeze(1) / 255.0
            if self.class_targets is None:
                labels = torch.from_numpy(self.data.labels[chunk].astype(np.int64))
            else:
                labels = torch.from_numpy(self.class_targets[chunk].astype(np.float32))
            if self.augment is not None:
                images, masks = augment_batch(images, masks, self.generator, self.augment)
            yield to_network_input(images), (masks >= 0.5).float(), labels


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """0..255 grey batch -> normalised network input (same constants as inference)."""
    return (images - NORMALISATION_MEAN) / NORMALISATION_STD


def refuse_other_activation(checkpoint: dict, config: TrainConfig, source: Path | str, hint: str = "") -> None:
    """ReLU6 has no parameters, so a checkpoint's weights load into either encoder activation: compare the
    recorded one with ``config``'s and refuse, never train the other network."""
    trained_with = encoder_activation_of(checkpoint)
    if trained_with != config.encoder_activation:
        raise ValueError(
            f"{source}: was trained with --encoder-activation {trained_with}, not {config.encoder_activation}{hint}"
        )


def qat_of(checkpoint: dict) -> str:
    """The ``--qat`` a ``last.pt`` was trained with: its latent weights sit under parametrisations only then."""
    return "int8" if any(".parametrizations.weight." in key for key in checkpoint["model"]) else "off"


def build_network(config: TrainConfig) -> EMTNet:
    network = EMTNet(
        Task(config.task), deep_supervision=config.deep_supervision > 0, encoder_activation=config.encoder_activation
    )
    if config.init_from:
        checkpoint = torch.load(config.init_from, map_location="cpu", weights_only=False)
        refuse_other_activation(checkpoint, config, config.init_from)
        # Only the deep-supervision heads may be missing (they start fresh) or left over (dropped).
        missing, unexpected = network.load_state_dict(strip_training_heads(checkpoint["model"]), strict=False)
        missing = [key for key in missing if not key.startswith("segmenter.aux.")]
        if unexpected or missing:
            raise ValueError(
                f"{config.init_from}: weights do not fit a {config.task} network "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    elif config.pretrained:
        load_imagenet_encoder(network.encoder, read_constants(Path(config.pretrained)))
    return network


def network_batches(data: PreparedData, indices: list[int], device: torch.device, batch_size: int):
    """The cached images of ``indices`` as unaugmented network input, ``batch_size`` at a time, in order."""
    for start in range(0, len(indices), batch_size):
        images = torch.from_numpy(data.images[indices[start : start + batch_size]]).float().unsqueeze(1).to(device)
        yield to_network_input(images).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict(
    network: EMTNet, data: PreparedData, indices: list[int], device: torch.device, batch_size: int = 32
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Malignancy probabilities and network-grid mask probabilities (None for a missing head)."""
    network.eval()
    probabilities, masks = [], []
    for images in network_batches(data, indices, device, batch_size):
        out = network(images)
        if out.class_logit is not None:
            probabilities.append(torch.sigmoid(out.class_logit.float()).reshape(-1).cpu().numpy())
        if out.mask_logit is not None:
            masks.append(torch.sigmoid(out.mask_logit.float())[:, 0].cpu().numpy())
    return (np.concatenate(probabilities) if probabilities else None, np.concatenate(masks) if masks else None)


def validation_scores(
    data: PreparedData, indices: list[int], probabilities: np.ndarray | None, mask_probabilities: np.ndarray | None
) -> dict[str, float]:
    """Metrics on the network grid: AUC/ACC/SEN/SPE at 0.5, lesion Dice and IoU (validation or test part)."""
    labels = data.labels[indices]
    labelled = labels >= 0
    scores: dict[str, float] = {}
    if probabilities is not None and labelled.any():
        scores.update(classification_metrics(labels[labelled], probabilities[labelled], 0.5))
        scores["auc"] = auc(labels[labelled], probabilities[labelled])
    lesion = [i for i, index in enumerate(indices) if data.masks[index].max() > 127]
    if mask_probabilities is not None and lesion:
        pairs = [dice_iou(mask_probabilities[i] >= MASK_THRESHOLD, data.masks[indices[i]] >= 128) for i in lesion]
        scores["dice"] = float(np.mean([pair[0] for pair in pairs]))
        scores["iou"] = float(np.mean([pair[1] for pair in pairs]))
    if mask_probabilities is not None:
        # The product's "no lesion" rule on the network grid: how often a lesion is found at all,
        # and how often a normal image is left quiet. Dice alone hides both.
        fractions = (mask_probabilities >= MASK_THRESHOLD).reshape(len(indices), -1).mean(axis=1)
        found = fractions >= MIN_LESION_FRACTION
        if lesion:
            scores["lesion_found"] = float(found[lesion].mean())
        normal = ~labelled
        if normal.any():
            scores["normal_no_lesion"] = float((~found[normal]).mean())
    return scores


def selection_score(task: Task, scores: dict[str, float]) -> float:
    """What early stopping maximises: AUC + Dice for EMT-Net, the one that exists otherwise."""
    values = [scores[k] for k in ("auc", "dice") if k in scores and np.isfinite(scores[k])]
    return float(sum(values)) if values else float("-inf")


#: The best-validation epoch's weights, also kept by a ``--keep final`` run.
BEST_VALIDATION_CHECKPOINT = "best_validation.pt"
# history.csv columns of an averaged (keep = "ema") run that describe the trained network, not the average
TRAINED_PREFIX = "trained_val_"


#: Settings that decide which images a run trains on: a run folder is resumed only with the same ones.
SPLIT_SETTINGS = ("folds", "fold", "partition_seed", "leave_out", "leave_out_of", "limit", "extra_train")


def border_weight(config: TrainConfig, epoch: int) -> float:
    """The border-band weight of 0-based ``epoch``: ramped linearly to ``config.border`` by half-way.

    At initialisation every pixel is uncertain (p near 0.5) and the term, at full weight, would
    outweigh Dice and pixel BCE and push the mask to be sure before it is right; ramping it in lets
    the border be learnt first and steepened after.
    """
    ramp_epochs = max(1, config.epochs // 2)
    return config.border * min(1.0, (epoch + 1) / ramp_epochs)


def check_same_split(out: Path, config: TrainConfig) -> None:
    """Refuse to resume ``out`` under settings that select other training images than it was trained on.

    Resuming silently would mix two data sets in one model, and for a teacher it could mean scoring
    images it trained on (a whole-split teacher resumed as an out-of-fold one).
    """
    recorded = out / "config.json"
    if not (out / "last.pt").exists() or not recorded.exists():
        return
    saved = json.loads(recorded.read_text()).get("config", {})
    defaults = {name: spec.default for name, spec in TrainConfig.__dataclass_fields__.items()}
    defaults["extra_train"] = []
    wanted = asdict(config)
    changed = [name for name in SPLIT_SETTINGS if saved.get(name, defaults[name]) != wanted[name]]
    if split_seed({**defaults, **saved}) != split_seed(wanted):
        changed.append("seed (it draws the folds)")
    if changed:
        raise ValueError(
            f"{out}: was trained on other images ({', '.join(changed)} differ); pass --restart or choose another --out"
        )


def train(config: TrainConfig, resume: bool = True) -> Path:
    """Train, keeping ``best.pt`` and a resumable ``last.pt`` in ``config.out_dir``."""
    check_config(config)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        check_same_split(out, config)
    teacher_runs = train_teachers(config, resume) if config.teachers > 0 else []  # each seeds itself: before ours
    device = resolve_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    data, split, fingerprint, cases = load_data(config)
    write_split(out, data, split)
    class_targets = None
    if teacher_runs:
        scoring = teacher_scoring(config, cases, split)
        teacher_mean = teacher_probabilities(teacher_runs, data, split.train, scoring, device)
        class_targets = soft_targets(data.labels, split.train, teacher_mean, config.distill)
    task = Task(config.task)
    network = build_network(config).to(device).to(memory_format=torch.channels_last)
    average = moving_average(network, config.ema_decay) if config.keep == "ema" else None
    if config.qat != "off":
        # Before the optimiser takes the parameters: the rounding moves each weight under a parametrisation.
        # The average gets its own simulation (a copy made after this one would round with our quantisers).
        simulate_int8(network)
        if average is not None:  # its ranges are measured afresh at each batch-norm refit (below)
            simulate_int8(average.module)
    # Fused Adam: one kernel of plain IEEE arithmetic, where the unfused form calls MKL's vector maths,
    # whose results depend on the CPU's vendor (training/reproducible.py).
    optimiser = torch.optim.Adam(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
    )
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    elif config.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="max", factor=0.5, patience=4)
    else:
        raise ValueError(f"unknown schedule {config.schedule!r}")
    generator = torch.Generator().manual_seed(config.seed)
    state = {"epoch": 0, "best_score": float("-inf"), "best_epoch": -1, "history": [], "seconds": 0.0}
    if config.keep in ("final", "ema"):  # what the best-epoch rule would keep, tracked from the first epoch
        state.update(validation_best_score=float("-inf"), validation_best_epoch=-1)
    last = out / "last.pt"
    if resume and last.exists():
        checkpoint = torch.load(last, map_location=device, weights_only=False)
        refuse_other_activation(checkpoint, config, last, "; pass --restart or choose another --out")
        trained_with = qat_of(checkpoint)
        if trained_with != config.qat:  # said by name, not as load_state_dict's list of keys
            raise ValueError(
                f"{last}: was trained with --qat {trained_with}, not {config.qat}; "
                "pass --restart or choose another --out"
            )
        try:
            network.load_state_dict(checkpoint["model"])
        except RuntimeError as error:
            raise ValueError(
                f"{last}: was trained with other settings (--task or --deep-supervision); "
                "pass --restart or choose another --out"
            ) from error
        optimiser.load_state_dict(checkpoint["optimiser"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        generator.set_state(checkpoint["generator"])
        state = checkpoint["state"]
        # Dropout draws from the global generators: without their state a resumed run trains other weights
        # than an uninterrupted one (checkpoints written before 2026-12-07 lack it and resume reseeded).
        if "rng" in checkpoint:
            restore_global_rng(checkpoint["rng"], device)
        if average is not None and "average" in checkpoint:
            average.load_state_dict(checkpoint["average"])
    meta = {
        "config": asdict(config),
        "data_sha256": fingerprint,
        "device": str(device),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "arithmetic": arithmetic_record(),
        "teachers": [{"run": str(run), "sha256": sha256_of(run / "best.pt")} for run in teacher_runs],
    }
    if device.type == "cpu" and not is_pinned(meta["arithmetic"]):
        # A warning, not a printed line: a caller's own one-line errors stay one line.
        warnings.warn(
            f"CPU arithmetic not pinned ({meta['arithmetic']['cpu_capability']}, subnormals flushed: "
            f"{meta['arithmetic']['subnormals_flushed']}): these weights are reproducible "
            "on this CPU type only (busassist-train pins them for any x86-64 CPU)",
            UnpinnedArithmeticWarning,
            stacklevel=2,
        )
    (out / "config.json").write_text(json.dumps(meta, indent=1))
    augment = AugmentConfig()
    train_idx = np.array(split.train)
    use_amp = device.type == "cuda"
    patient = config.keep != "best"  # only the best-epoch rule stops early
    while state["epoch"] < config.epochs and (patient or state["epoch"] - state["best_epoch"] <= config.patience):
        epoch = state["epoch"]
        started = time.perf_counter()
        network.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
        losses, loss_parts = [], []
        border = border_weight(config, epoch)
        batches = TrainingBatches(
            data, order, config.batch_size, generator, augment if config.augment else None, class_targets
        )
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, unit="batch")
        for images, masks, labels in bar:
            images = images.to(device).contiguous(memory_format=torch.channels_last)
            masks, labels = masks.to(device), labels.to(device)
            with torch.autocast(device.type, enabled=use_amp):
                out_ = network(images)
            loss, parts = multitask_loss(
                None if out_.class_logit is None else out_.class_logit.float(),
                labels,
                None if out_.mask_logit is None else out_.mask_logit.float(),
                masks,
                config.w_p,
                config.w_clf,
                config.mask_bce,
                config.dice,
                config.false_lesion,
                border,
            )
            if out_.aux_mask_logits:
                extra, extra_parts = deep_supervision_loss(out_.aux_mask_logits, masks, config.mask_bce, config.dice)
                loss = loss + config.deep_supervision * extra
                parts.update(extra_parts)
            loss_parts.append(parts)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if average is not None:
                average.update_parameters(network)
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses):.3f}")
        if average is not None:
            observe(average.module, True, afresh=True)
            fit_batch_norm(average.module, data, split.train, device)
        observe(network, False)  # no validation image moves a quantiser's range (a no-op without --qat)
        if average is not None:
            observe(average.module, False)
        kept = network if average is None else average.module  # the weights this run would ship
        probabilities, mask_probabilities = predict(kept, data, split.val, device)
        scores = validation_scores(data, split.val, probabilities, mask_probabilities)
        score = selection_score(task, scores)
        trained_scores, trained_score = scores, score  # the trained network's own, which the best-epoch rule sees
        if average is not None:  # evaluation only (no random numbers): the trajectory is unchanged
            trained_scores = validation_scores(data, split.val, *predict(network, data, split.val, device))
            trained_score = selection_score(task, trained_scores)
        observe(network, True)
        if config.schedule == "plateau":
            scheduler.step(score)
        else:
            scheduler.step()
        seconds = time.perf_counter() - started
        state["seconds"] += seconds
        row = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            # Each loss term's epoch mean: train_loss alone cannot be compared across recipes.
            **{
                f"train_{k}": float(np.mean([p[k] for p in loss_parts if k in p]))
                for k in sorted(set().union(*loss_parts))
            },
            "val_score": score,
            "seconds": seconds,
            "lr": optimiser.param_groups[0]["lr"],
            **{f"val_{k}": v for k, v in scores.items()},
            # an averaged run also records the trained network it averages, under TRAINED_PREFIX
            **(
                {f"{TRAINED_PREFIX}score": trained_score}
                | {f"{TRAINED_PREFIX}{k}": v for k, v in trained_scores.items()}
                if average is not None
                else {}
            ),
        }
        state["history"].append(row)
        state["epoch"] = epoch + 1
        # "best" keeps the best validation epoch; "final" and "ema" keep the latest weights (never a lucky
        # epoch) and so never stop early
        weights = {
            "model": shipped_state(kept),
            "task": task.value,
            "encoder_activation": config.encoder_activation,
            "qat": config.qat,
            "epoch": epoch + 1,
            "scores": scores,
        }
        if score > state["best_score"] or config.keep != "best":
            state["best_score"], state["best_epoch"] = score, epoch + 1
            torch.save(weights, out / "best.pt")
        # A "final" or "ema" run also keeps what the best-epoch rule would have kept (the trained network at
        # its best validation epoch): the rules walk the same trajectory (same seed, no early stop), so one
        # training answers both (study.derive_best_validation).
        # (a run resumed from a checkpoint that predates this tracking has no such key: it never writes a
        # best-validation file that would cover only the epochs after the resume)
        if "validation_best_score" in state and trained_score > state["validation_best_score"]:
            state["validation_best_score"], state["validation_best_epoch"] = trained_score, epoch + 1
            trained = weights if average is None else {**weights, "model": shipped_state(network)}
            trained["scores"] = trained_scores
            torch.save(trained, out / BEST_VALIDATION_CHECKPOINT)
        torch.save(
            {
                "model": network.state_dict(),
                "encoder_activation": config.encoder_activation,
                "optimiser": optimiser.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "rng": global_rng_state(device),
                "state": state,
                **({"average": average.state_dict()} if average is not None else {}),
            },
            out / "last.tmp",
        )
        (out / "last.tmp").replace(last)
        _write_history(out / "history.csv", state["history"])
        summary = " ".join(f"{k}={v:.3f}" for k, v in scores.items())
        tqdm.write(f"epoch {epoch + 1}: loss {row['train_loss']:.4f} {summary} ({seconds:.0f} s)")
    return out


def shipped_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What ``best.pt`` keeps of ``network``: an ordinary EMTNet's state (with ``--qat``, the rounded weights)."""
    return plain_state_dict(network) if hasattr(network, "activation_quantizers") else network.state_dict()


def _write_history(path: Path, history: list[dict]) -> None:
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def load_best(out_dir: Path, device: str = "cpu") -> EMTNet:
    """The best-validation network of a run, in eval mode."""
    checkpoint = torch.load(Path(out_dir) / "best.pt", map_location=device, weights_only=False)
    network = network_from_checkpoint(checkpoint)
    network.load_state_dict(strip_training_heads(checkpoint["model"]))
    return network.eval()
