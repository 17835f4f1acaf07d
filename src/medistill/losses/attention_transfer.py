"""Attention transfer (Zagoruyko & Komodakis, 2017), the feature-level term of HLFD (UFD, IFD)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention_map(x: torch.Tensor, p: float = 4.0) -> torch.Tensor:
    """Spatial attention of a (N, C, H, W) map: channel mean of ``|x|^p``, flattened to (N, H*W)
    and L2-normalised per sample."""
    if x.ndim != 4:
        raise ValueError(f"attention_map expects (N, C, H, W) features, got shape {tuple(x.shape)}")
    a = x.abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(a, p=2, dim=1)


class AttentionTransfer(nn.Module):
    """``mean over batch and positions of (a_s - a_t)^2``, with ``a`` = :func:`attention_map`.

    The teacher feature map is resized (bilinear) to the student's spatial size first; the
    channel counts may differ (the attention map averages over channels). The teacher is
    treated as a constant (detached).

    Args:
        p: the exponent of ``|x|^p`` (4 in the HLFD authors' code).
    """

    def __init__(self, p: float = 4.0) -> None:
        super().__init__()
        if not p > 0:
            raise ValueError(f"p must be > 0, got {p}")
        self.p = float(p)

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        if student_feat.ndim != 4 or teacher_feat.ndim != 4:
            raise ValueError(
                f"AttentionTransfer expects (N, C, H, W) maps, got {tuple(student_feat.shape)} "
                f"and {tuple(teacher_feat.shape)}"
            )
        if student_feat.shape[0] != teacher_feat.shape[0]:
            raise ValueError(
                f"batch sizes differ: student {student_feat.shape[0]}, teacher "
                f"{teacher_feat.shape[0]}"
            )
        t = teacher_feat.detach()
        if t.shape[-2:] != student_feat.shape[-2:]:
            t = F.interpolate(t, size=student_feat.shape[-2:], mode="bilinear",
                              align_corners=False)
        return (attention_map(student_feat, self.p) - attention_map(t, self.p)).pow(2).mean()
