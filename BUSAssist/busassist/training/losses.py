"""Losses of the paper: NS-WBCE (Eq. 2-4), Dice (Eq. 5) and the multitask sum (Eq. 6).

NS-WBCE is computed from the logit z directly: (1 - y) z + K log(1 + e^-z) with
K = 1 + y (W_p - 1), and log(1 + e^-z) evaluated as softplus(-z), which stays finite for any z
(the naive form in Eq. 1 overflows once sigmoid(z) rounds to 0 or 1).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from busassist.constants import MIN_LESION_FRACTION, W_CLF, W_P


def ns_wbce(logits: torch.Tensor, targets: torch.Tensor, w_p: float = W_P) -> torch.Tensor:
    """Numerically-stable weighted binary cross-entropy, mean over the batch (Eq. 2-4)."""
    targets = targets.to(logits.dtype)
    k = 1.0 + targets * (w_p - 1.0)
    return ((1.0 - targets) * logits + k * F.softplus(-logits)).mean()


def naive_wbce(logits: torch.Tensor, targets: torch.Tensor, w_p: float = W_P) -> torch.Tensor:
    """Eq. 1 as written, from probabilities; only for tests (it overflows for large |z|)."""
    h = torch.sigmoid(logits)
    return -(w_p * targets * torch.log(h) + (1 - targets) * torch.log(1 - h)).mean()


def dice_loss(mask_logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss over the whole batch (Eq. 5).

    Sums run over every pixel of the batch rather than per image, so an image with an empty
    ground truth (a ``normal`` case) is penalised for false-positive pixels without making the
    loss undefined; ``smooth`` keeps an all-empty batch at 0 loss for an all-empty prediction.
    """
    probabilities = torch.sigmoid(mask_logits)
    targets = targets.to(probabilities.dtype)
    intersection = (probabilities * targets).sum()
    return 1.0 - (2.0 * intersection + smooth) / (probabilities.sum() + targets.sum() + smooth)


def per_image_dice_loss(mask_logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per image, averaged over the images that contain a lesion.

    The reported metric is the mean Dice per lesion image, but the batch-level Dice of Eq. 5 is
    dominated by the large lesions of the batch: missing a small lesion entirely costs it little,
    and missed small lesions are most of the shipped model's Dice failures. Averaging per image
    weights every lesion equally, as the metric does. Images without a lesion (``normal``) are
    left to the pixel BCE term, because a per-image Dice on an empty mask punishes a few stray
    pixels as hard as missing a whole lesion. An all-normal batch gives 0.
    """
    probabilities = torch.sigmoid(mask_logits).flatten(1)
    targets = targets.to(probabilities.dtype).flatten(1)
    has_lesion = targets.sum(dim=1) > 0
    if not bool(has_lesion.any()):
        return probabilities.sum() * 0.0  # keeps the graph (and the dtype) for backward
    probabilities, targets = probabilities[has_lesion], targets[has_lesion]
    intersection = (probabilities * targets).sum(dim=1)
    dice = (2.0 * intersection + smooth) / (probabilities.sum(dim=1) + targets.sum(dim=1) + smooth)
    return 1.0 - dice.mean()


def per_image_dice_with_normal_loss(
    mask_logits: torch.Tensor,
    targets: torch.Tensor,
    smooth: float = 1.0,
    min_lesion_fraction: float = MIN_LESION_FRACTION,
    log_normal: bool = False,
) -> torch.Tensor:
    """Per-image soft Dice on lesion images plus a soft "no lesion" loss on normal images.

    ``per_image_dice_loss`` leaves normal images to pixel BCE, and two trainings with it painted
    false lesions on about half of the normal images. Here every image counts once. A normal image
    is scored with the product's own "no lesion" rule: the network's predicted area P (sum of pixel
    probabilities) against A = ``min_lesion_fraction`` of the image, as P / (P + A). That is 0 for an
    empty prediction, 0.5 at the area where the product starts reporting a lesion, and tends to 1
    for a large false lesion, so the loss is on the same 0-1 scale as a missed lesion. A few stray
    pixels, well under A, cost little: the point of the rule.

    P / (P + A) saturates: its gradient A / (P + A)^2 all but vanishes once a false lesion is many
    times A, and cross-validated it left *more* normal images with a false lesion than no normal
    term at all. ``log_normal`` uses -log(1 - P / (P + A)) = log(1 + P / A) instead, whose gradient
    1 / (P + A) still pushes a large false lesion down (the log-Dice idea).
    """
    probabilities = torch.sigmoid(mask_logits).flatten(1)
    targets = targets.to(probabilities.dtype).flatten(1)
    has_lesion = targets.sum(dim=1) > 0
    predicted_area = probabilities.sum(dim=1)
    intersection = (probabilities * targets).sum(dim=1)
    dice = (2.0 * intersection + smooth) / (predicted_area + targets.sum(dim=1) + smooth)
    allowed_area = min_lesion_fraction * probabilities.shape[1]
    if log_normal:
        false_lesion = torch.log1p(predicted_area / allowed_area)
    else:
        false_lesion = predicted_area / (predicted_area + allowed_area)
    return torch.where(has_lesion, 1.0 - dice, false_lesion).mean()


#: Dice variants of the mask loss: Eq. 5 over the whole batch, per lesion image, or per image with
#: normal images scored by the "no lesion" rule.
DICE_LOSSES = {
    "batch": dice_loss,
    "image": per_image_dice_loss,
    "image-normal": per_image_dice_with_normal_loss,
    "image-normal-log": partial(per_image_dice_with_normal_loss, log_normal=True),
}


def multitask_loss(
    class_logits: torch.Tensor | None,
    labels: torch.Tensor,
    mask_logits: torch.Tensor | None,
    masks: torch.Tensor,
    w_p: float = W_P,
    w_clf: float = W_CLF,
    mask_bce: float = 0.0,
    dice: str = "batch",
) -> tuple[torch.Tensor, dict[str, float]]:
    """W_clf * NS-WBCE + Dice (Eq. 6); images with label -1 (normal) skip the classification term.

    Either head may be absent (Single-SGM / Single-CLF), then its term is left out. ``mask_bce``
    adds a per-pixel BCE term to the Dice loss (0 = the paper's loss exactly): Dice alone gives
    weak gradients on small lesions and on empty (normal) masks, which pixel BCE supplies.
    ``dice`` picks the Dice variant (``DICE_LOSSES``; "batch" = Eq. 5).
    """
    total = torch.zeros((), device=labels.device)
    parts: dict[str, float] = {}
    if class_logits is not None:
        has_label = labels >= 0
        if bool(has_label.any()):
            clf = ns_wbce(class_logits.reshape(-1)[has_label], labels[has_label].float(), w_p)
            total = total + w_clf * clf
            parts["clf"] = float(clf.detach())
    if mask_logits is not None:
        sgm = DICE_LOSSES[dice](mask_logits, masks)
        total = total + sgm
        parts["dice"] = float(sgm.detach())
        if mask_bce > 0:
            pixel = F.binary_cross_entropy_with_logits(mask_logits, masks.to(mask_logits.dtype))
            total = total + mask_bce * pixel
            parts["mask_bce"] = float(pixel.detach())
    return total, parts


def deep_supervision_loss(
    aux_logits: list[torch.Tensor], masks: torch.Tensor, mask_bce: float = 0.0, dice: str = "batch"
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean mask loss (the same Dice variant + pixel BCE as the main mask) over coarse logits.

    Each coarse logit is upsampled bilinearly to the mask's size, so every level is judged against
    the same full-resolution ground truth (Zhang et al., hybrid deep supervision).
    """
    total = torch.zeros((), device=masks.device)
    for logits in aux_logits:
        logits = F.interpolate(logits.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
        total = total + DICE_LOSSES[dice](logits, masks)
        if mask_bce > 0:
            total = total + mask_bce * F.binary_cross_entropy_with_logits(logits, masks.to(logits.dtype))
    total = total / max(len(aux_logits), 1)
    return total, {"deep_supervision": float(total.detach())}
