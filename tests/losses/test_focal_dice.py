"""FocalDiceLoss against a hand-computed example of the HLFD authors' ``calc_loss``
(0.5 focal, gamma 2, mean over pixels + 0.5 soft Dice, foreground only, batch-pooled, smooth 1)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medistill.losses import FocalDiceLoss
from medistill.losses.focal_dice import focal_loss, soft_dice_loss

LN2 = math.log(2.0)


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    # 2 images, 2 classes, 1x2 pixels each
    # image 0: pixel 0 logits (0, 0) -> p = (.5, .5), true class 1
    #          pixel 1 logits (0, ln 3) -> p = (.25, .75), true class 0
    # image 1: both pixels logits (0, 0), true class 0
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]],
                           [[[0.0, 0.0]], [[0.0, 0.0]]]])
    mask = torch.tensor([[[1, 0]], [[0, 0]]])
    return logits, mask


def test_hand_computed_focal_dice():
    logits, mask = _example()
    # focal per pixel -(1 - p_t)^2 ln p_t: .25 ln2, (.75^2) 2 ln2 = 1.125 ln2, .25 ln2, .25 ln2
    focal = (0.25 + 1.125 + 0.25 + 0.25) / 4 * LN2
    assert focal_loss(logits, mask).item() == pytest.approx(focal, rel=1e-6)
    # Dice on the foreground, pooled over both images: p_fg = (.5, .75, .5, .5), y = (1, 0, 0, 0)
    # intersection .5, sum p 2.25, sum y 1 -> 1 - (2 * .5 + 1) / (2.25 + 1 + 1) = 1 - 8/17
    dice = 1 - 8 / 17
    assert soft_dice_loss(logits, mask).item() == pytest.approx(dice, rel=1e-6)
    expected = 0.5 * focal + 0.5 * dice
    assert FocalDiceLoss()(logits, mask).item() == pytest.approx(expected, rel=1e-6)
    assert FocalDiceLoss()(logits, mask[:, None]).item() == pytest.approx(expected, rel=1e-6)


def test_equals_the_authors_formula_on_random_binary_input():
    """Their ``calc_loss`` written out: one-hot (N, 2, H, W) target, foreground channel as index."""
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 5, 4)
    mask = torch.randint(0, 2, (3, 5, 4))
    onehot = F.one_hot(mask, 2).permute(0, 3, 1, 2).float()
    flat = logits.permute(0, 2, 3, 1).reshape(-1, 2)
    idx = onehot[:, 1:].reshape(-1, 1).long()
    logpt = F.log_softmax(flat, -1).gather(1, idx).view(-1)
    focal = (-(1 - logpt.exp()) ** 2 * logpt).mean()
    pred = torch.softmax(logits, 1)[:, 1:].reshape(-1)
    tgt = onehot[:, 1:].reshape(-1)
    dice = 1 - (2 * (pred * tgt).sum() + 1) / (pred.sum() + tgt.sum() + 1)
    expected = 0.5 * focal + 0.5 * dice
    assert FocalDiceLoss()(logits, mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_differs_from_monai_focal_mean_which_averages_over_classes():
    """MONAI's FocalLoss (mean) divides by N*K*H*W: half the per-pixel focal loss for K = 2."""
    from monai.losses import FocalLoss

    torch.manual_seed(1)
    logits = torch.randn(2, 2, 4, 4)
    mask = torch.randint(0, 2, (2, 4, 4))
    monai = FocalLoss(gamma=2.0, to_onehot_y=True, use_softmax=True)(logits, mask[:, None])
    assert focal_loss(logits, mask).item() == pytest.approx(2 * monai.item(), rel=1e-5)


def test_deliberate_difference_modulating_factor_is_differentiated():
    """The authors detach p_t in (1 - p_t)^gamma: the same value, another gradient. Here the
    focal loss is differentiated as defined (Lin et al.)."""
    torch.manual_seed(2)
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    mask = torch.randint(0, 2, (1, 3, 3))
    ours = focal_loss(logits, mask)
    (g_ours,) = torch.autograd.grad(ours, logits)
    logpt = F.log_softmax(logits, 1).gather(1, mask[:, None]).squeeze(1)
    detached = (-(1 - logpt.detach().exp()) ** 2 * logpt).mean()
    (g_detached,) = torch.autograd.grad(detached, logits)
    assert ours.item() == pytest.approx(detached.item(), rel=1e-6)
    assert (g_ours - g_detached).abs().max() > 1e-3


def test_three_classes_dice_is_the_mean_over_foreground_classes():
    """Deliberate choice for K > 2 (the authors' code is binary-only): the batch-pooled Dice per
    foreground class, averaged, rather than one Dice over all foreground channels pooled."""
    torch.manual_seed(3)
    logits = torch.randn(2, 3, 4, 4)
    mask = torch.randint(0, 3, (2, 4, 4))
    p = torch.softmax(logits, 1)
    y = F.one_hot(mask, 3).permute(0, 3, 1, 2).float()
    per_class = [1 - (2 * (p[:, c] * y[:, c]).sum() + 1) / (p[:, c].sum() + y[:, c].sum() + 1)
                 for c in (1, 2)]
    assert soft_dice_loss(logits, mask).item() == pytest.approx(
        float(sum(per_class) / 2), rel=1e-6)
    pooled = 1 - (2 * (p[:, 1:] * y[:, 1:]).sum() + 1) / (p[:, 1:].sum() + y[:, 1:].sum() + 1)
    assert abs(soft_dice_loss(logits, mask).item() - pooled.item()) > 1e-4


def test_size_mismatch_and_single_class_are_rejected():
    with pytest.raises(ValueError, match="differ in size"):
        FocalDiceLoss()(torch.randn(1, 2, 4, 4), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="K >= 2"):
        FocalDiceLoss()(torch.randn(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
