"""NS-WBCE (paper Eq. 2-4), Dice (Eq. 5) and the multitask loss (Eq. 6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from busassist.constants import DICE_VARIANTS, MIN_LESION_FRACTION, W_CLF, W_P
from busassist.training.losses import (
    DICE_LOSSES,
    border_band_loss,
    deep_supervision_loss,
    dice_loss,
    false_lesion_loss,
    multitask_loss,
    naive_wbce,
    ns_wbce,
    per_image_dice_loss,
)


def _random_batch(seed: int, n: int = 64, dtype: torch.dtype = torch.float64):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=generator, dtype=dtype) * 4.0
    targets = torch.randint(0, 2, (n,), generator=generator).to(dtype)
    return logits, targets


@pytest.mark.parametrize("w_p", [0.5, 1.0, 2.0, 3.0, 7.5, 10.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ns_wbce_matches_naive_eq1_where_finite(w_p: float, seed: int) -> None:
    logits, targets = _random_batch(seed)
    expected = naive_wbce(logits, targets, w_p)
    assert torch.isfinite(expected)
    torch.testing.assert_close(ns_wbce(logits, targets, w_p), expected, rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("w_p", [1.0, 3.0, 10.0])
def test_ns_wbce_matches_naive_per_element_float32(w_p: float) -> None:
    logits, targets = _random_batch(7, n=32, dtype=torch.float32)
    for z, y in zip(logits, targets):
        got = ns_wbce(z.reshape(1), y.reshape(1), w_p)
        expected = naive_wbce(z.reshape(1).double(), y.reshape(1).double(), w_p)
        assert math.isclose(float(got), float(expected), rel_tol=1e-5, abs_tol=1e-6), (float(z), float(y))


def test_ns_wbce_default_weight_is_paper_baseline() -> None:
    logits, targets = _random_batch(3)
    assert W_P == 3.0
    torch.testing.assert_close(ns_wbce(logits, targets), naive_wbce(logits, targets, 3.0), rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ns_wbce_with_unit_weight_is_plain_bce(seed: int) -> None:
    logits, targets = _random_batch(seed, dtype=torch.float32)
    expected = F.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(ns_wbce(logits, targets, 1.0), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("w_p", [1.0, 3.0, 10.0])
def test_ns_wbce_finite_value_and_gradient_at_extreme_logits(w_p: float) -> None:
    # Both predictions confidently wrong: z = +1e4 for a negative, z = -1e4 for a positive.
    logits = torch.tensor([1e4, -1e4], dtype=torch.float32, requires_grad=True)
    targets = torch.tensor([0.0, 1.0])
    loss = ns_wbce(logits, targets, w_p)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    # Exact values: loss = (z_neg + W_p * |z_pos|) / 2 and
    # d/dz = (sigmoid(z) for y = 0, -W_p sigmoid(-z) for y = 1) / 2.
    assert float(loss.detach()) == pytest.approx((1e4 + w_p * 1e4) / 2, rel=1e-6)
    torch.testing.assert_close(logits.grad, torch.tensor([0.5, -w_p / 2]), rtol=1e-6, atol=1e-6)

    # The naive Eq. 1 is not finite there, so the check above is meaningful.
    naive = naive_wbce(logits.detach(), targets, w_p)
    assert not torch.isfinite(naive)


def test_ns_wbce_confident_correct_predictions_give_zero_loss() -> None:
    logits = torch.tensor([-1e4, 1e4], requires_grad=True)
    targets = torch.tensor([0.0, 1.0])
    loss = ns_wbce(logits, targets, 5.0)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(logits.grad).all()


def test_positive_term_is_weighted_linearly_by_w_p() -> None:
    false_negative = torch.tensor([-2.0], dtype=torch.float64)
    positive = torch.tensor([1.0], dtype=torch.float64)
    base = float(ns_wbce(false_negative, positive, 1.0))
    assert base == pytest.approx(math.log1p(math.exp(2.0)), rel=1e-12)
    for w_p in (0.5, 2.0, 3.0, 6.0, 10.0):
        assert float(ns_wbce(false_negative, positive, w_p)) == pytest.approx(w_p * base, rel=1e-12)

    # The negative term is not weighted: a false positive costs the same for every W_p.
    false_positive = torch.tensor([2.0], dtype=torch.float64)
    negative = torch.tensor([0.0], dtype=torch.float64)
    costs = {float(ns_wbce(false_positive, negative, w_p)) for w_p in (1.0, 3.0, 10.0)}
    assert max(costs) == pytest.approx(min(costs), rel=1e-12)
    assert min(costs) == pytest.approx(math.log1p(math.exp(2.0)), rel=1e-12)


def _random_masks(seed: int, shape=(2, 1, 32, 32)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) > 0.6).float()


def test_dice_loss_perfect_mask_is_zero() -> None:
    masks = _random_masks(0)
    assert masks.sum() > 0
    logits = torch.where(masks > 0, torch.tensor(1e4), torch.tensor(-1e4))
    loss = dice_loss(logits, masks)
    assert abs(float(loss)) < 1e-4


def test_dice_loss_disjoint_prediction_is_one() -> None:
    masks = _random_masks(1)
    logits = torch.where(masks > 0, torch.tensor(-1e4), torch.tensor(1e4))  # exactly the complement
    loss = dice_loss(logits, masks)
    assert float(loss) == pytest.approx(1.0, abs=1e-3)
    assert float(loss) < 1.0


def test_dice_loss_half_overlap_value() -> None:
    # Prediction covers the target plus an equal area of background: Dice = 2T / (2T + T) = 2/3.
    target = torch.zeros(1, 1, 20, 20)
    target[..., :10, :10] = 1.0
    predicted = torch.zeros_like(target)
    predicted[..., :10, :20] = 1.0
    logits = torch.where(predicted > 0, torch.tensor(1e4), torch.tensor(-1e4))
    expected = 1.0 - (2 * 100 + 1) / (200 + 100 + 1)
    assert float(dice_loss(logits, target)) == pytest.approx(expected, rel=1e-6)


def _multitask_inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(4, 1, generator=generator)
    labels = torch.tensor([0, 1, -1, 1])
    mask_logits = torch.randn(4, 1, 16, 16, generator=generator)
    masks = (torch.rand(4, 1, 16, 16, generator=generator) > 0.5).float()
    masks[2] = 0.0  # the normal image has an empty mask
    return class_logits, labels, mask_logits, masks


def test_multitask_loss_is_weighted_sum_without_normal_images() -> None:
    class_logits, labels, mask_logits, masks = _multitask_inputs()
    total, parts = multitask_loss(class_logits, labels, mask_logits, masks)
    keep = labels >= 0
    clf = ns_wbce(class_logits.reshape(-1)[keep], labels[keep].float(), W_P)
    dice = dice_loss(mask_logits, masks)
    torch.testing.assert_close(total, W_CLF * clf + dice)
    assert parts["clf"] == pytest.approx(float(clf), rel=1e-6)
    assert parts["dice"] == pytest.approx(float(dice), rel=1e-6)

    # Had the normal image been counted (as label 0), the loss would differ: the check is meaningful.
    with_normal = ns_wbce(class_logits.reshape(-1), labels.clamp(min=0).float(), W_P)
    assert not torch.isclose(W_CLF * with_normal + dice, total)


def test_multitask_loss_ignores_class_logit_of_normal_images() -> None:
    class_logits, labels, mask_logits, masks = _multitask_inputs(1)
    class_logits.requires_grad_(True)
    total, _ = multitask_loss(class_logits, labels, mask_logits, masks)
    total.backward()
    assert float(class_logits.grad[2, 0]) == 0.0
    assert (class_logits.grad[[0, 1, 3], 0] != 0).all()

    moved = class_logits.detach().clone()
    moved[2, 0] = 50.0
    total_moved, _ = multitask_loss(moved, labels, mask_logits, masks)
    torch.testing.assert_close(total_moved, total.detach())


def test_multitask_loss_passes_weights_through() -> None:
    class_logits, labels, mask_logits, masks = _multitask_inputs(2)
    total, _ = multitask_loss(class_logits, labels, mask_logits, masks, w_p=7.0, w_clf=0.25)
    keep = labels >= 0
    expected = 0.25 * ns_wbce(class_logits.reshape(-1)[keep], labels[keep].float(), 7.0) + dice_loss(mask_logits, masks)
    torch.testing.assert_close(total, expected)


def test_multitask_loss_all_normal_batch_is_dice_only() -> None:
    class_logits, _, mask_logits, masks = _multitask_inputs(3)
    labels = torch.full((4,), -1)
    total, parts = multitask_loss(class_logits, labels, mask_logits, masks)
    torch.testing.assert_close(total, dice_loss(mask_logits, masks))
    assert set(parts) == {"dice"}


def test_multitask_loss_without_class_head_is_dice_only() -> None:
    _, labels, mask_logits, masks = _multitask_inputs(4)
    total, parts = multitask_loss(None, labels, mask_logits, masks)
    torch.testing.assert_close(total, dice_loss(mask_logits, masks))
    assert set(parts) == {"dice"}


def test_multitask_loss_without_mask_head_is_classification_only() -> None:
    class_logits, labels, _, masks = _multitask_inputs(5)
    total, parts = multitask_loss(class_logits, labels, None, masks)
    keep = labels >= 0
    torch.testing.assert_close(total, W_CLF * ns_wbce(class_logits.reshape(-1)[keep], labels[keep].float()))
    assert set(parts) == {"clf"}


def _confident(predicted: torch.Tensor) -> torch.Tensor:
    return torch.where(predicted > 0, torch.tensor(1e4), torch.tensor(-1e4))


def test_per_image_dice_weights_a_missed_small_lesion_like_a_large_one() -> None:
    """Batch Dice barely notices a missed small lesion beside a found large one; per image it counts half."""
    masks = torch.zeros(2, 1, 40, 40)
    masks[0, :, :30, :30] = 1.0  # large lesion, found exactly
    masks[1, :, :3, :3] = 1.0  # small lesion, missed entirely
    predicted = masks.clone()
    predicted[1] = 0.0
    logits = _confident(predicted)
    assert float(dice_loss(logits, masks)) < 0.02
    expected = 1.0 - (1.0 + 1.0 / (9 + 1)) / 2  # image 0: Dice 1; image 1: smoothed (0 + 1) / (9 + 1)
    assert float(per_image_dice_loss(logits, masks)) == pytest.approx(expected, rel=1e-5)


def test_per_image_dice_leaves_images_without_a_lesion_to_pixel_bce() -> None:
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, :, 4:10, 4:10] = 1.0
    predicted = masks.clone()
    predicted[1, :, :8, :8] = 1.0  # stray pixels on the normal image
    with_stray = per_image_dice_loss(_confident(predicted), masks)
    assert float(with_stray) == pytest.approx(0.0, abs=1e-5)
    all_normal = per_image_dice_loss(torch.randn(3, 1, 16, 16, requires_grad=True), torch.zeros(3, 1, 16, 16))
    assert float(all_normal.detach()) == 0.0
    all_normal.backward()  # still part of the graph: an all-normal batch must not break training


def test_false_lesion_loss_scores_normal_images_against_the_no_lesion_area() -> None:
    """log(1 + P / A) per normal image, A the "no lesion" area; lesion images are not its business."""
    size = 50  # 2,500 pixels: the rule's area A is 5 pixels
    allowed = MIN_LESION_FRACTION * size * size
    masks = torch.zeros(3, 1, size, size)
    masks[2, :, :10, :10] = 1.0  # a lesion image, whatever is predicted on it
    predicted = torch.zeros(3, 1, size, size)
    predicted[1].view(-1)[:100] = 1.0  # a 100-pixel false lesion
    predicted[2] = 1.0
    loss = false_lesion_loss(_confident(predicted), masks)
    assert float(loss) == pytest.approx((0.0 + math.log1p(100 / allowed)) / 2, rel=1e-4)
    lesion_masks = torch.zeros(2, 1, 8, 8)
    lesion_masks[:, :, :2, :2] = 1.0
    lesions_only = false_lesion_loss(torch.randn(2, 1, 8, 8, requires_grad=True), lesion_masks)
    assert float(lesions_only.detach()) == 0.0
    lesions_only.backward()  # still part of the graph: a batch without normal images must not break training


def test_false_lesion_loss_keeps_pushing_a_large_false_lesion_down() -> None:
    """The Dice-like P / (P + A) saturates on a large false lesion; log(1 + P / A) keeps a gradient."""
    size = 50
    allowed = MIN_LESION_FRACTION * size * size
    logits = torch.full((1, 1, size, size), -4.0)
    logits[0, 0, :20, :20] = 4.0  # 400 pixels, 80 times the rule's area
    logits.requires_grad_()
    false_lesion_loss(logits, torch.zeros(1, 1, size, size)).backward()
    area = torch.sigmoid(logits.detach()).sum()
    bounded = logits.detach().clone().requires_grad_()
    predicted_area = torch.sigmoid(bounded).sum()
    (predicted_area / (predicted_area + allowed)).backward()
    inside = (slice(None), slice(None), slice(0, 20), slice(0, 20))
    assert float(logits.grad[inside].mean()) > 10 * float(bounded.grad[inside].mean()) > 0
    assert float(area) > 50 * allowed


def test_multitask_loss_adds_the_weighted_false_lesion_term() -> None:
    class_logits, labels, mask_logits, masks = _multitask_inputs(7)
    plain, _ = multitask_loss(class_logits, labels, mask_logits, masks, mask_bce=1.0, dice="image")
    total, parts = multitask_loss(
        class_logits, labels, mask_logits, masks, mask_bce=1.0, dice="image", false_lesion=0.5
    )
    torch.testing.assert_close(total, plain + 0.5 * false_lesion_loss(mask_logits, masks))
    assert parts["false_lesion"] > 0


def test_border_band_loss_is_the_width_of_the_uncertain_band() -> None:
    """1 where every pixel is a coin toss, about 0 where every pixel is sure, whichever side."""
    assert float(border_band_loss(torch.zeros(2, 1, 8, 8))) == pytest.approx(1.0)
    sure = torch.full((2, 1, 8, 8), 12.0)
    sure[0] = -12.0
    assert float(border_band_loss(sure)) < 1e-4
    half_sure = torch.zeros(1, 1, 8, 8)
    half_sure[..., :4] = 12.0
    assert float(border_band_loss(half_sure)) == pytest.approx(0.5, abs=1e-4)
    logits = torch.full((1, 1, 4, 4), 0.5, requires_grad=True)
    border_band_loss(logits).backward()
    assert float(logits.grad.max()) < 0, "a positive logit is pushed further positive"


def test_multitask_loss_adds_the_weighted_border_term() -> None:
    class_logits, labels, mask_logits, masks = _multitask_inputs(11)
    plain, plain_parts = multitask_loss(class_logits, labels, mask_logits, masks, mask_bce=1.0)
    total, parts = multitask_loss(class_logits, labels, mask_logits, masks, mask_bce=1.0, border=2.0)
    torch.testing.assert_close(total, plain + 2.0 * border_band_loss(mask_logits))
    assert "border" not in plain_parts and parts["border"] > 0


def test_every_offered_dice_variant_has_a_loss() -> None:
    assert set(DICE_VARIANTS) == set(DICE_LOSSES)


def test_multitask_loss_selects_the_dice_variant() -> None:
    class_logits, labels, mask_logits, masks = _multitask_inputs(6)
    _, batch_parts = multitask_loss(class_logits, labels, mask_logits, masks)
    _, image_parts = multitask_loss(class_logits, labels, mask_logits, masks, dice="image")
    assert batch_parts["dice"] == pytest.approx(float(dice_loss(mask_logits, masks)), rel=1e-6)
    assert image_parts["dice"] == pytest.approx(float(per_image_dice_loss(mask_logits, masks)), rel=1e-6)
    assert image_parts["dice"] != pytest.approx(batch_parts["dice"], rel=1e-3)


def test_deep_supervision_judges_each_coarse_logit_at_full_resolution() -> None:
    masks = torch.zeros(1, 1, 16, 16)
    masks[..., :8, :] = 1.0  # top half: exactly representable on a 2 x 2 grid
    exact = torch.tensor([[[[1e4, 1e4], [-1e4, -1e4]]]])
    wrong = -exact
    loss_exact, _ = deep_supervision_loss([exact], masks, mask_bce=1.0)
    loss_wrong, parts = deep_supervision_loss([wrong], masks, mask_bce=1.0)
    assert float(loss_exact) < 0.05
    assert float(loss_wrong) > 1.0
    mean, _ = deep_supervision_loss([exact, wrong], masks, mask_bce=1.0)
    assert float(mean) == pytest.approx((float(loss_exact) + float(loss_wrong)) / 2, rel=1e-5)
    assert parts["deep_supervision"] == pytest.approx(float(loss_wrong), rel=1e-6)
