"""FocalDiceLoss against the formulas on a hand-sized example."""

from __future__ import annotations

import pytest
import torch

from medistill.losses import FocalDiceLoss


def test_half_focal_plus_half_soft_dice():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 3, 3)
    mask = torch.randint(0, 2, (2, 3, 3))
    p = torch.softmax(logits, 1)
    onehot = torch.nn.functional.one_hot(mask, 2).permute(0, 3, 1, 2).float()
    # MONAI's focal: -(1 - p)^2 log p at the true class, mean over N*K*H*W elements
    focal = (-(1 - p) ** 2 * p.log() * onehot).mean()
    # soft Dice per (sample, class), smooth 1e-5, mean
    inter = (p * onehot).sum((2, 3))
    dice = 1 - (2 * inter + 1e-5) / (p.sum((2, 3)) + onehot.sum((2, 3)) + 1e-5)
    expected = 0.5 * focal + 0.5 * dice.mean()
    assert FocalDiceLoss()(logits, mask).item() == pytest.approx(expected.item(), rel=1e-5)
    assert FocalDiceLoss()(logits, mask[:, None]).item() == pytest.approx(expected.item(),
                                                                           rel=1e-5)


def test_size_mismatch_is_rejected():
    with pytest.raises(ValueError, match="differ in size"):
        FocalDiceLoss()(torch.randn(1, 2, 4, 4), torch.zeros(1, 3, 3, dtype=torch.long))
