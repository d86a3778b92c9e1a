"""Every constant the model, its training and its inference share, in one place.

Training, export, inference and the Slicer module all read these values from here (and the
exported ONNX model carries copies in its metadata), so a preprocessing mismatch between the
trainer and the deployed model cannot creep in.
"""

from __future__ import annotations

#: Side of the square network input in pixels (MobileNetV1 1.0/224, paper section 2.1).
IMAGE_SIZE: int = 224

#: Input scaling the ImageNet MobileNetV1 weights were trained with: (x - 127.5) / 127.5.
NORMALISATION_MEAN: float = 127.5
NORMALISATION_STD: float = 127.5

#: ITU-R BT.601 luma weights used to turn colour ultrasound frames into grey.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

#: Positive-class weight of the numerically-stable weighted BCE (paper Eq. 2-4, baseline W_p = 3).
W_P: float = 3.0
#: Weight of the classification loss in the multitask loss (paper Eq. 6, baseline W_clf = 1.5).
W_CLF: float = 1.5

#: Effective weights W' offered by the decision-threshold slider (paper's W_p range, 1 to 10).
EFFECTIVE_WEIGHT_MIN: float = 1.0
EFFECTIVE_WEIGHT_MAX: float = 10.0

#: Probability above which a mask pixel counts as lesion.
MASK_THRESHOLD: float = 0.5
#: A predicted mask smaller than this fraction of the analysed region is reported as "no lesion".
MIN_LESION_FRACTION: float = 0.002

#: Largest frame (rows x columns) the readers decode; larger declared frames are refused before any
#: allocation (``busassist analyze --max-pixels``). 4096 x 4096 is well above any ultrasound scanner's
#: output (typically 640 x 480 to 1920 x 1080) and keeps one onnxruntime worker under 600 MB on the largest
#: frame (541 MB measured); with the OpenVINO extra loaded by ``auto`` the same frame peaks at about 710 MB.
MAX_PIXELS: int = 4096 * 4096
#: Files that can only be decoded whole (deflated transfer syntax, pydicom 2): the most they may inflate to.
MAX_WHOLE_FILE_BYTES: int = 256 * 1024 * 1024

#: Mask Dice losses the trainer offers (training/losses.py DICE_LOSSES implements each): Eq. 5 over
#: the whole batch, or the mean per lesion image.
DICE_VARIANTS: tuple[str, ...] = ("batch", "image")

#: Class labels of the BUSI folders; `normal` images carry no classification label.
CLASS_LABELS: dict[str, int] = {"benign": 0, "malignant": 1}

#: Split fractions and seed (paper section 3.3).
SPLIT_FRACTIONS: tuple[float, float, float] = (0.70, 0.15, 0.15)
SPLIT_SEED: int = 42

#: File names of the bundled model inside Resources/Models.
MODEL_FILENAME: str = "emtnet.onnx"
MODEL_CARD_JSON: str = "model_card.json"

#: Names of the ONNX graph's input and outputs.
ONNX_INPUT: str = "image"
ONNX_CLASS_OUTPUT: str = "malignancy_logit"
ONNX_MASK_OUTPUT: str = "mask_logit"


def threshold_for_effective_weight(w_effective: float, w_p: float = W_P) -> float:
    """Probability threshold that turns a model trained with ``w_p`` into one weighted ``w_effective``.

    Training with positive weight W_p shifts the optimal logit by ln W_p, i.e. the model's
    probability p estimates W_p * q / (W_p * q + 1 - q) for the true posterior q. Deciding
    "malignant" when the *effective* weight W' makes that worthwhile, W' * q >= 1 - q, is the same
    as p >= W_p / (W_p + W'). At W' = W_p this is the plain 0.5 threshold.
    """
    if w_effective <= 0 or w_p <= 0:
        raise ValueError("weights must be positive")
    return w_p / (w_p + w_effective)
