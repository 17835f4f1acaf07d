"""The HLFD segmentation loss: ``0.5 * focal (gamma 2) + 0.5 * soft Dice`` (MONAI losses)."""

from __future__ import annotations

import torch
from torch import nn


class FocalDiceLoss(nn.Module):
    """``focal_weight * focal + dice_weight * soft Dice`` on (N, K, H, W) logits.

    The target is an (N, H, W) or (N, 1, H, W) index mask (long). Both terms use the softmax
    over the K classes (K = 2 for binary tasks) and include the background class; the soft
    Dice is MONAI's ``DiceLoss`` (mean over classes and batch), the focal term MONAI's
    ``FocalLoss`` with ``use_softmax=True``.
    """

    def __init__(self, focal_weight: float = 0.5, dice_weight: float = 0.5,
                 gamma: float = 2.0) -> None:
        super().__init__()
        from monai.losses import DiceLoss, FocalLoss  # lazy: MONAI's import is slow

        self.focal = FocalLoss(gamma=gamma, to_onehot_y=True, use_softmax=True)
        self.dice = DiceLoss(softmax=True, to_onehot_y=True)
        self.weights = (float(focal_weight), float(dice_weight))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == logits.ndim - 1:
            target = target.unsqueeze(1)
        if target.shape[2:] != logits.shape[2:] or target.shape[0] != logits.shape[0]:
            raise ValueError(
                f"logits {tuple(logits.shape)} and mask {tuple(target.shape)} differ in size"
            )
        fw, dw = self.weights
        return fw * self.focal(logits, target) + dw * self.dice(logits, target)
