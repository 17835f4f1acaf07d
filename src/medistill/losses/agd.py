"""Affinity graph distillation (AGD; Liu et al., 2024, arXiv:2401.06370; its "AGD" subsection).

- Intra-image (:class:`AffinityGraphKD`): the squared difference of the student's and
  the teacher's affinity maps (:func:`~medistill.losses.affinity.affinity`), summed over the
  affinity channels and averaged over the valid positions of each (:func:`masked_mse`, the
  authors' reduction: their loss is ``sum((A_S - A_T)^2) / (N H W)`` over all channels). The
  border, where a neighbour falls outside the image, is masked; the authors' ``torch.roll``
  wraps around instead.
- Inter-image (:func:`inter_image_agd`): as in the authors' code, both embedding maps (already
  L2-normalised per pixel) are average-pooled with a ``pool x pool`` kernel and stride
  ``pool`` (7, ceil mode: the last, partial window averages the pixels it covers) WITHOUT
  re-normalising, so a 256 px crop gives 37 x 37 = 1369 nodes; every pooled pixel is compared
  with every pooled pixel of each sampled memory-bank teacher map, and the squared difference
  of the student's and the teacher's cross-image affinity matrices is averaged per (batch
  image, bank image) pair. The authors then SUM over the pairs and scale by
  ``batch_size / contrast_size`` (``contrast_size`` = the number of bank maps sampled per step,
  12): ``L = (B / K) sum_{j, i} mean_{p, q} ((s_jp . b_iq - t_jp . b_iq)^2)``.
  (Before: a fixed 7 x 7 grid of 49 re-normalised nodes per map and a plain mean over pairs.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medistill.losses.affinity import DEFAULT_OFFSETS, affinity, masked_mse


class AffinityGraphKD(nn.Module):
    """Intra-image AGD: :func:`masked_mse` between student and teacher affinities at
    ``offsets`` (sum over the affinity channels, mean over the valid positions)."""

    def __init__(self, offsets: Sequence[int] = DEFAULT_OFFSETS) -> None:
        super().__init__()
        self.offsets = tuple(int(d) for d in offsets)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        s, valid = affinity(student, self.offsets)
        t, _ = affinity(teacher, self.offsets)
        return masked_mse(s, t, valid)


def pooled_nodes(embeddings: torch.Tensor, pool: int = 7) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, ceil(H / pool) * ceil(W / pool), C)``: average pooling with
    kernel and stride ``pool`` in ceil mode, not re-normalised (the authors' inter-image
    nodes)."""
    p = F.avg_pool2d(embeddings, pool, pool, ceil_mode=True)
    return p.flatten(2).transpose(1, 2)


def inter_image_agd(student: torch.Tensor, teacher: torch.Tensor,
                    bank: Sequence[torch.Tensor], pool: int = 7,
                    contrast_size: int | None = None) -> torch.Tensor:
    """Inter-image AGD of ``(B, C, H, W)`` student / teacher maps against the pooled nodes
    ``(Q_i, C)`` of the sampled memory-bank teacher maps (:func:`pooled_nodes` of each map):
    ``(B / K) sum_{j, i} mean_{p, q} ((s_jp . b_iq - t_jp . b_iq)^2)`` with
    ``K = contrast_size`` (default: the number of bank maps given); 0 for an empty bank.

    Computed through the ``C x C`` second-moment matrix of each bank map,
    ``mean_{p, q} ((d_p . b_q)^2) = mean_p d_p^T (B^T B / Q) d_p`` with ``d = s - t``, which is
    the same number without the ``(P, Q)`` similarity matrices (1369 x 1369 per pair at 256 px).
    """
    if len(bank) == 0:
        return student.new_zeros(())
    d = pooled_nodes(student, pool) - pooled_nodes(teacher, pool)  # (B, P, C)
    gram = torch.stack([b.T @ b / b.shape[0] for b in bank])  # (M, C, C)
    per_pair = torch.einsum("bpc,mcd,bpd->bm", d, gram.to(d.dtype), d) / d.shape[1]
    k = len(bank) if contrast_size is None else int(contrast_size)
    return per_pair.sum() * d.shape[0] / k
