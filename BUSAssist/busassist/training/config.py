"""Every training setting in one typed place, and the checks the trainer makes on them before any data is read.

``TrainConfig`` is the one source of defaults: ``cli.training_options`` generates the command-line options
from its fields and study specs set them by name (docs/training.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from busassist.constants import IMAGE_SIZE, W_CLF, W_P
from busassist.training.distill import ALL_TRAINING, OUT_OF_FOLD, TEACHER_DATA
from busassist.training.losses import DICE_LOSSES
from busassist.training.model import DEFAULT_ENCODER_ACTIVATION, ENCODER_ACTIVATIONS, Task
from busassist.training.reproducible import TRAINING_THREADS

#: ``--qat``: train in float, or with the int8 export's rounding simulated from the first epoch.
QAT_MODES = ("off", "int8")

#: Which weights a run keeps (``--keep``).
KEEP_RULES = ("best", "final", "ema")


def setting(default=None, *, section: str, help: str, factory=None, **cli) -> Any:  # noqa: A002
    """A training setting: its default, the section it belongs to and its command-line help, in one place.

    ``cli.training_options`` generates the command-line options from these fields, so a default lives
    here only. ``cli`` may give ``flag`` (default ``--name-with-dashes``), ``choices``, ``type`` (for
    optional values) and ``preset=True`` (a value the preset fills when the command line does not).
    """
    metadata = {"section": section, "help": help, **cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


#: Sections of the training settings, in the order ``--help`` shows them.
SECTIONS = ("model", "loss", "optimiser", "schedule", "data", "run")


@dataclass
class TrainConfig:
    """Every training setting, grouped in sections (model, loss, optimiser, schedule, data, run).

    The shipped recipe is the defaults: Dice + pixel BCE for the mask, cosine learning-rate decay over
    all epochs, the best validation epoch kept. ``mask_bce=0, schedule="plateau"`` is the paper's loss.
    """

    data_root: str
    out_dir: str
    task: str = setting(
        Task.MULTITASK.value, section="model", help="network (paper Table 1)", choices=[t.value for t in Task]
    )
    pretrained: str | None = None  # path of the MobileNetV1 frozen graph, None = from scratch (--pretrained)
    image_size: int = setting(IMAGE_SIZE, section="model", help="network input side in pixels", preset=True)
    encoder_activation: str = setting(
        DEFAULT_ENCODER_ACTIVATION,
        section="model",
        help="the encoder's activation: relu, or relu6 (bounded, as in the TF-slim MobileNetV1 the ImageNet weights "
        "come from; reports/int8-relu6)",
        choices=list(ENCODER_ACTIVATIONS),
    )
    qat: str = setting(
        "off",
        section="model",
        help="int8: simulate the int8 export from the first epoch (7-bit weights per channel, uint8 activations and "
        "input, straight-through gradients; about 2x the epoch time; it did not make int8 agree better: "
        "reports/int8-qat-training)",
        choices=list(QAT_MODES),
    )
    init_from: str | None = setting(
        None,
        section="model",
        help="fine-tune: start from a run's best.pt instead of ImageNet weights",
        type=str,
        metavar="CHECKPOINT",
    )
    w_p: float = setting(W_P, section="loss", help="positive weight W_p of the numerically-stable weighted BCE")
    w_clf: float = setting(W_CLF, section="loss", help="weight W_clf of the classification loss")
    mask_bce: float = setting(1.0, section="loss", help="pixel-BCE weight added to the Dice loss (0 = paper)")
    dice: str = setting(
        "batch",
        section="loss",
        help="mask Dice loss over the whole batch (paper Eq. 5) or averaged per lesion image",
        choices=list(DICE_LOSSES),
    )
    deep_supervision: float = setting(
        0.0, section="loss", help="weight of coarse mask losses at every decoder level (training only; 0 = none)"
    )
    false_lesion: float = setting(
        0.0,
        section="loss",
        help="weight of log(1 + P/A) on normal images: predicted area P against the 'no lesion' area A (0 = none)",
    )
    border: float = setting(
        0.0,
        section="loss",
        help="weight of the border-band term mean(4p(1-p)) that steepens the mask border (it did not help int8: "
        "reports/int8-border-training), ramped in linearly over the first half of the epochs (0 = none)",
    )
    teachers: int = setting(
        0,
        section="loss",
        help="train N teachers of this recipe (seeds derived from --seed, inside --out) and soften the "
        "classification target toward their mean probability (ensemble distillation; 0 = none)",
    )
    distill: float = setting(
        0.5, section="loss", help="weight of the teachers' mean probability in the classification target (0..1)"
    )
    teacher_data: str = setting(
        ALL_TRAINING,
        section="loss",
        help="all: every teacher trains on the whole training split (and scores images it has seen); "
        "out-of-fold: teacher k of N leaves part k out and gives the targets of that part only",
        choices=list(TEACHER_DATA),
    )
    batch_size: int = setting(16, section="optimiser", help="images per step")
    learning_rate: float = setting(3e-4, section="optimiser", help="Adam learning rate", flag="--lr")
    weight_decay: float = setting(1e-4, section="optimiser", help="Adam weight decay")
    epochs: int = setting(50, section="schedule", help="epochs", preset=True)
    patience: int = setting(
        50, section="schedule", help="epochs without a better validation score before stopping", preset=True
    )
    schedule: str = setting(
        "cosine", section="schedule", help="cosine decay to 0, or halving when stalled", choices=["cosine", "plateau"]
    )
    # Which weights the run keeps (best.pt): "best" = the epoch with the best validation score (a few
    # dozen validation images make that choice noisy: a lucky epoch), "final" = the last epoch of the
    # schedule, "ema" = an exponential moving average of the weights over the last steps (ema_decay).
    keep: str = setting(
        "best",
        section="schedule",
        help="weights the run keeps: best validation epoch, the final epoch, or a moving average (ema)",
        choices=["best", "final", "ema"],
    )
    ema_decay: float = setting(
        0.995, section="schedule", help="per-step decay of --keep ema (0.995: about the last 200 steps)"
    )
    seed: int = setting(42, section="schedule", help="training seed (and the K-fold partition's)")
    folds: int = 0  # K of a K-fold cross-validation; 0 = the fixed 70/15/15 split (set by studies)
    fold: int = 0  # which fold this run trains when folds > 0
    partition_seed: int | None = None  # draws the K-fold partition instead of seed (a K-fold student's teachers)
    leave_out: int = 0  # an out-of-fold teacher: part leave_out (1-based) of leave_out_of is not trained on
    leave_out_of: int = 0
    limit: int | None = setting(None, section="data", help="use only N cases (smoke tests)", type=int)
    extra_train: list[str] = setting(
        section="data",
        help="BUSI-layout folder (e.g. Slicer 'Export for training') added to the training split",
        factory=list,
        metavar="FOLDER",
        action="append",
    )
    device: str = setting("auto", section="run", help="auto, cpu or cuda")
    threads: int = setting(
        TRAINING_THREADS,
        section="run",
        help="CPU threads; part of the recipe, since they decide how sums are split (bit-identical weights "
        "on another CPU need the same number)",
    )
    augment: bool = True
    cache_dir: str = setting(".cache", section="run", help="preprocessed-image cache folder")
    extra: dict = field(default_factory=dict)


def check_config(config: TrainConfig) -> None:
    """Refuse, before any data is loaded, settings the trainer would only trip over later."""
    if config.encoder_activation not in ENCODER_ACTIVATIONS:
        raise ValueError(
            f"--encoder-activation {config.encoder_activation!r}: choose one of {', '.join(ENCODER_ACTIVATIONS)}"
        )
    if config.qat not in QAT_MODES:
        raise ValueError(f"--qat {config.qat!r}: choose one of {', '.join(QAT_MODES)}")
    if config.qat != "off" and Task(config.task) is not Task.MULTITASK:
        raise ValueError(f"--qat {config.qat} simulates the shipped network's int8 export: it needs --task multitask")
    if config.keep not in KEEP_RULES:
        raise ValueError(f"--keep {config.keep!r}: choose one of {', '.join(KEEP_RULES)}")
    if not 0 < config.ema_decay < 1:
        raise ValueError(f"--ema-decay must be between 0 and 1, not {config.ema_decay:g}")
    if config.dice not in DICE_LOSSES:
        raise ValueError(f"unknown Dice loss {config.dice!r} (choose from {', '.join(DICE_LOSSES)})")
    if not config.deep_supervision >= 0:  # also refuses NaN
        raise ValueError(f"--deep-supervision must be >= 0, not {config.deep_supervision:g}")
    if config.deep_supervision > 0 and Task(config.task) is Task.CLASSIFICATION:
        raise ValueError("--deep-supervision needs a mask head; single-clf has none")
    if not config.false_lesion >= 0:  # also refuses NaN
        raise ValueError(f"--false-lesion must be >= 0, not {config.false_lesion:g}")
    if config.false_lesion > 0 and Task(config.task) is Task.CLASSIFICATION:
        raise ValueError("--false-lesion needs a mask head; single-clf has none")
    if not config.border >= 0:  # also refuses NaN
        raise ValueError(f"--border must be >= 0, not {config.border:g}")
    if config.border > 0 and Task(config.task) is Task.CLASSIFICATION:
        raise ValueError("--border needs a mask head; single-clf has none")
    if config.teachers < 0:
        raise ValueError(f"--teachers must be >= 0, not {config.teachers}")
    if not 0 <= config.distill <= 1:  # also refuses NaN
        raise ValueError(f"--distill must be between 0 and 1, not {config.distill:g}")
    if config.teachers > 0 and Task(config.task) is Task.SEGMENTATION:
        raise ValueError("--teachers distils the classifier; single-sgm has none")
    if config.teacher_data not in TEACHER_DATA:
        raise ValueError(f"--teacher-data {config.teacher_data!r}: choose one of {', '.join(TEACHER_DATA)}")
    if config.teacher_data == OUT_OF_FOLD and config.teachers == 1:
        raise ValueError("--teacher-data out-of-fold needs at least 2 teachers (each leaves out 1/N)")
    if (config.leave_out or config.leave_out_of) and not (1 <= config.leave_out <= config.leave_out_of >= 2):
        raise ValueError(f"leave-out part {config.leave_out} of {config.leave_out_of}: needs 1 <= part <= N, N >= 2")
