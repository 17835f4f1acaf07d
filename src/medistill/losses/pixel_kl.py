"""Pixel-wise soft-target KL, the pixel-level term of HLFD (UPD / IPD)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelKL(nn.Module):
    """``T^2 * mean over pixels of KL(softmax(t / T) || softmax(s / T))`` over the CLASS dim.

    Shapes: student and teacher logits are (N, K, H, W) (K classes); the KL is taken per pixel
    over dimension 1 (the classes) and averaged over the N*H*W pixels. The teacher logits are
    treated as constants (detached).

    The HLFD authors' code takes the softmax over dimension 1 as well, then reshapes with
    ``view(-1, 2)`` and uses ``kl_div(..., reduction="batchmean")``. The reshape does not
    regroup the softmax (already taken); it only changes the divisor to the number of rows,
    N*K*H*W / 2. For K = 2 that is N*H*W, so their value equals this one exactly; for K != 2 it
    is ``2 / K`` times this per-pixel mean (and only defined when N*K*H*W is even). The
    per-pixel mean is used for every K.

    Args:
        temperature: the softening temperature T (> 0), 4 in HLFD.
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        if student_logits.shape != teacher_logits.shape or student_logits.ndim < 3:
            raise ValueError(
                f"PixelKL expects same-shape (N, K, H, W) logits, got "
                f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
            )
        t = self.temperature
        log_s = F.log_softmax(student_logits / t, dim=1)
        log_t = F.log_softmax(teacher_logits.detach() / t, dim=1)
        kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)  # (N, H, W): per pixel, over classes
        return kl.mean() * t * t
