"""Affinity graph distillation (AGD; Liu et al., 2024, arXiv:2401.06370; its "AGD" subsection).

- Intra-image (:class:`AffinityGraphKD`): the squared difference of the student's and
  the teacher's affinity maps (:func:`~medistill.losses.affinity.affinity`), averaged over the
  valid positions only (the border, where a neighbour falls outside the image, is masked; the
  authors' ``torch.roll`` wraps around instead).
- Inter-image (:func:`inter_image_agd`): both embedding maps are average-pooled to
  ``pool x pool`` (7 x 7), re-normalised, and every pooled pixel is compared with every pooled
  pixel of the stored teacher maps of the memory bank; the squared difference of the student's
  and the teacher's cross-image affinity matrices is averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medistill.losses.affinity import DEFAULT_OFFSETS, affinity, masked_mse


class AffinityGraphKD(nn.Module):
    """Intra-image AGD: masked MSE between student and teacher affinities at ``offsets``."""

    def __init__(self, offsets: Sequence[int] = DEFAULT_OFFSETS) -> None:
        super().__init__()
        self.offsets = tuple(int(d) for d in offsets)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        s, valid = affinity(student, self.offsets)
        t, _ = affinity(teacher, self.offsets)
        return masked_mse(s, t, valid)


def pooled_nodes(embeddings: torch.Tensor, pool: int = 7) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, pool * pool, C)`` average-pooled, L2-normalised vectors."""
    p = F.adaptive_avg_pool2d(embeddings, pool)
    return F.normalize(p.flatten(2).transpose(1, 2), dim=-1)


def inter_image_agd(student: torch.Tensor, teacher: torch.Tensor,
                    bank: torch.Tensor | Sequence[torch.Tensor], pool: int = 7) -> torch.Tensor:
    """Inter-image AGD of ``(N, C, H, W)`` student/teacher maps against stored teacher maps
    (``(M, C, h, w)`` or a list of ``(C, h, w)`` of any sizes):
    ``mean((S B^T - T B^T)^2)`` over the pooled pixels (0 when the bank is empty)."""
    maps = [bank] if isinstance(bank, torch.Tensor) else [m[None] for m in bank]
    if not maps or maps[0].numel() == 0:
        return student.new_zeros(())
    b = torch.cat([pooled_nodes(m, pool).reshape(-1, m.shape[1]) for m in maps])  # (M pool^2, C)
    s = pooled_nodes(student, pool) @ b.T
    t = pooled_nodes(teacher, pool) @ b.T
    return ((s - t) ** 2).mean()
