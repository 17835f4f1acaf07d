"""The HLFD segmentation loss: ``0.5 * focal (gamma 2) + 0.5 * soft Dice``, as the authors
compute it (their ``calc_loss``; see :class:`FocalDiceLoss`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """``mean over the N*H*W pixels of -(1 - p_t)^gamma * log p_t`` (Lin et al., 2017), with
    ``p_t`` the softmax probability of the pixel's true class.

    One term per PIXEL (the authors' ``FocalLoss`` with alpha (1, 1), i.e. no class weights),
    not one per (pixel, class) element: MONAI's ``FocalLoss`` with mean reduction averages over
    the K class channels as well, which halves the loss for 2 classes. Deliberate difference:
    the authors detach ``p_t`` in the modulating factor (``Variable(logpt.data.exp())``), which
    keeps the value but drops that factor's gradient; here the focal loss is differentiated as
    defined, so the gradients differ (same value).

    Shapes: logits (N, K, H, W); target (N, H, W) long class indices.
    """
    log_p = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    return (-(1 - log_p.exp()).pow(gamma) * log_p).mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth)`` per FOREGROUND class, the
    sums pooled over the whole batch and all pixels, then the mean over the foreground classes.

    ``p`` = softmax probability of the class, ``y`` = its one-hot mask. For 2 classes this is
    exactly the authors' ``dice_loss`` (foreground channel only, batch pooled, smooth 1; their
    code is binary-only). For K > 2 their flattening would pool all foreground classes into
    one Dice, letting the largest class (e.g. kidney) swamp a small one (tumour); the mean of
    per-class Dice losses is used instead.

    Shapes: logits (N, K, H, W) with K >= 2; target (N, H, W) long class indices.
    """
    k = logits.shape[1]
    p = torch.softmax(logits, dim=1)[:, 1:]
    y = F.one_hot(target, k).permute(0, 3, 1, 2)[:, 1:].to(p.dtype)
    dims = (0, 2, 3)
    inter = (p * y).sum(dims)
    dice = (2 * inter + smooth) / (p.sum(dims) + y.sum(dims) + smooth)
    return (1 - dice).mean()


class FocalDiceLoss(nn.Module):
    """``focal_weight * focal + dice_weight * soft Dice`` on (N, K, H, W) logits (K >= 2).

    :func:`focal_loss` (per-pixel mean, gamma 2) and :func:`soft_dice_loss` (foreground classes,
    batch-pooled, smooth 1), both on the softmax over the K classes: the HLFD authors'
    ``calc_loss`` with ``ce_weight = 0.5`` (0.5 / 0.5 is the paper's "focal dice loss"). The
    target is an (N, H, W) or (N, 1, H, W) index mask (long).
    """

    def __init__(self, focal_weight: float = 0.5, dice_weight: float = 0.5,
                 gamma: float = 2.0, smooth: float = 1.0) -> None:
        super().__init__()
        self.weights = (float(focal_weight), float(dice_weight))
        self.gamma = float(gamma)
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == logits.ndim:
            target = target.squeeze(1)
        if target.shape[1:] != logits.shape[2:] or target.shape[0] != logits.shape[0]:
            raise ValueError(
                f"logits {tuple(logits.shape)} and mask {tuple(target.shape)} differ in size"
            )
        if logits.shape[1] < 2:
            raise ValueError(f"FocalDiceLoss needs K >= 2 class logits, got {logits.shape[1]}")
        target = target.long()
        fw, dw = self.weights
        return (fw * focal_loss(logits, target, self.gamma)
                + dw * soft_dice_loss(logits, target, self.smooth))
