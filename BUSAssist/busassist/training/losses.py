"""Losses of the paper: NS-WBCE (Eq. 2-4), Dice (Eq. 5) and the multitask sum (Eq. 6).

NS-WBCE is computed from the logit z directly: (1 - y) z + K log(1 + e^-z) with
K = 1 + y (W_p - 1), and log(1 + e^-z) evaluated as softplus(-z), which stays finite for any z
(the naive form in Eq. 1 overflows once sigmoid(z) rounds to 0 or 1).
"""

from __future__ import annotations

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


def false_lesion_loss(
    mask_logits: torch.Tensor, targets: torch.Tensor, min_lesion_fraction: float = MIN_LESION_FRACTION
) -> torch.Tensor:
    """Mean over images whose mask is empty of log(1 + P / A); 0 when the batch has none.

    An empty mask is a ``normal`` image, or (rarely) a labelled one whose lesion augmentation's
    shift and zoom moved out of view together with the image; in both cases nothing in view
    should be painted, so the mask, not the label, decides (as it does for per-image Dice).

    P is the predicted area (sum of pixel probabilities) and A the product's "no lesion" area
    (``min_lesion_fraction`` of the image): stray pixels well under A cost little, a false lesion
    of many times A costs a lot. Per-image Dice (``--dice image``) leaves normal images to pixel
    BCE, and two trainings with it painted false lesions on about half of the normal images; this
    term puts them back. The log keeps a gradient, 1 / (P + A), on a large false lesion: the
    bounded P / (P + A), the Dice form, saturated there, and cross-validated it left *more* normal
    images with a false lesion than no normal term at all.
    """
    probabilities = torch.sigmoid(mask_logits).flatten(1)
    normal = targets.flatten(1).sum(dim=1) == 0
    if not bool(normal.any()):
        return probabilities.sum() * 0.0  # keeps the graph (and the dtype) for backward
    predicted_area = probabilities[normal].sum(dim=1)
    return torch.log1p(predicted_area / (min_lesion_fraction * probabilities.shape[1])).mean()


def border_band(mask_logits: torch.Tensor) -> torch.Tensor:
    """4 p (1 - p) per pixel, p the mask probability: 1 where p = 0.5 (on the border), 0 where the mask is sure."""
    probabilities = torch.sigmoid(mask_logits)
    return 4.0 * probabilities * (1.0 - probabilities)


def border_band_loss(mask_logits: torch.Tensor) -> torch.Tensor:
    """Mean over every pixel of ``border_band``: the width of the uncertain band.
    Nothing else in the loss asks for a steep
       border (Dice and pixel BCE are satisfied by a soft one), and a border whose logits cross 0 steeply
       leaves fewer pixels near 0 for rounding to flip. Measured: it steadies the mask under input
       rounding, but a full training with it gave an int8 form that agrees *worse* with its float32
       masks (reports/int8-steep-border, reports/int8-border-training): kept as an option, not a recipe.
    """
    return border_band(mask_logits).mean()


#: Dice variants of the mask loss: Eq. 5 over the whole batch, or per lesion image.
DICE_LOSSES = {"batch": dice_loss, "image": per_image_dice_loss}


def multitask_loss(
    class_logits: torch.Tensor | None,
    labels: torch.Tensor,
    mask_logits: torch.Tensor | None,
    masks: torch.Tensor,
    w_p: float = W_P,
    w_clf: float = W_CLF,
    mask_bce: float = 0.0,
    dice: str = "batch",
    false_lesion: float = 0.0,
    border: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """W_clf * NS-WBCE + Dice (Eq. 6); images with label -1 (normal) skip the classification term.

    Either head may be absent (Single-SGM / Single-CLF), then its term is left out. ``mask_bce``
    adds a per-pixel BCE term to the Dice loss (0 = the paper's loss exactly): Dice alone gives
    weak gradients on small lesions and on empty (normal) masks, which pixel BCE supplies.
    ``dice`` picks the Dice variant (``DICE_LOSSES``; "batch" = Eq. 5). ``false_lesion`` weighs
    ``false_lesion_loss`` on the normal images (0 = none). ``border`` weighs ``border_band_loss``
    (0 = none).
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
        if false_lesion > 0:
            quiet = false_lesion_loss(mask_logits, masks)
            total = total + false_lesion * quiet
            parts["false_lesion"] = float(quiet.detach())
        if border > 0:
            band = border_band_loss(mask_logits)
            total = total + border * band
            parts["border"] = float(band.detach())
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
