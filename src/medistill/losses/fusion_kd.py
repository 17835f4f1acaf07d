"""Fusion knowledge distillation (He, Li, Zemp, 2024, section 3.2): EVERY side output and the
fused map of the student learn from the teacher's FUSED soft map (not block to block).

Per map, the distance to the teacher's fused probability map ``t`` (a constant, detached) is
``dice_weight * soft Dice loss + bce_weight * soft-target BCE``; the loss is the mean over the
student's maps. The target stays a probability (no thresholding or integer cast).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6


def soft_dice_loss(pred: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - (2 sum(p t) + s) / (sum p + sum t + s)`` per image, averaged; soft targets."""
    p, t = pred.flatten(1), target.flatten(1)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1 - dice).mean()


class FusionKDLoss(nn.Module):
    """Mean over the student maps of soft Dice + soft BCE to the teacher's fused map."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        if dice_weight < 0 or bce_weight < 0 or dice_weight + bce_weight == 0:
            raise ValueError("fusion KD needs non-negative weights, not both 0")
        self.dice_weight, self.bce_weight = float(dice_weight), float(bce_weight)

    def forward(self, student_maps: Sequence[torch.Tensor], teacher_fused: torch.Tensor
                ) -> torch.Tensor:
        t = teacher_fused.detach()
        terms = []
        for s in student_maps:
            if s.shape != t.shape:
                raise ValueError(f"fusion KD: student map {tuple(s.shape)} and teacher map "
                                 f"{tuple(t.shape)} differ in shape")
            loss = s.new_zeros(())
            if self.dice_weight:
                loss = loss + self.dice_weight * soft_dice_loss(s, t)
            if self.bce_weight:
                loss = loss + self.bce_weight * F.binary_cross_entropy(s.clamp(EPS, 1 - EPS), t)
            terms.append(loss)
        return torch.stack(terms).mean()
