"""Attention transfer (Zagoruyko & Komodakis, 2017), the feature-level term of HLFD (UFD, IFD)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Reduction = Literal["sum", "mean"]
Resize = Literal["teacher", "student"]


def attention_map(x: torch.Tensor, p: float = 4.0) -> torch.Tensor:
    """Spatial attention of a (N, C, H, W) map: channel mean of ``|x|^p``, flattened to (N, H*W)
    and L2-normalised per sample.

    The HLFD authors' ``at`` takes ``x.pow(p)`` without the absolute value; for their (and our
    default) even p = 4 the two are identical, ``|x|`` only keeps odd p meaningful.
    """
    if x.ndim != 4:
        raise ValueError(f"attention_map expects (N, C, H, W) features, got shape {tuple(x.shape)}")
    a = x.abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(a, p=2, dim=1)


class AttentionTransfer(nn.Module):
    """Squared distance between the attention maps ``a`` (:func:`attention_map`) of a student
    and a teacher feature map.

    ``reduction="sum"`` (default): ``mean over the batch of sum over positions (a_s - a_t)^2``,
    the HLFD authors' ``importance_maps_distillation`` (``torch.sum(..., dim=1).mean()``), for
    which they tuned beta = 0.9. Because ``a`` is L2-normalised, this per-sample sum lies in
    [0, 2] whatever the map size. ``reduction="mean"``: the mean over batch AND positions, as in
    Zagoruyko & Komodakis's code (used there with beta = 1e3); it is H*W times smaller, so with
    HLFD's beta = 0.9 it switches the feature terms off in practice (kept for comparison only).

    ``resize`` names the map that is resized (bilinear) to the other's spatial size before the
    attention maps are taken: ``"teacher"`` (compare at the student's size; the authors' UFD)
    or ``"student"`` (compare at the teacher's size; the authors' IFD and AT terms). The
    channel counts may differ (the attention map averages over channels). The teacher is
    treated as a constant (detached).

    Args:
        p: the exponent of ``|x|^p`` (4 in the HLFD authors' code).
        reduction: ``"sum"`` or ``"mean"`` over positions, see above.
        resize: ``"teacher"`` or ``"student"``, see above.
    """

    def __init__(self, p: float = 4.0, reduction: Reduction = "sum",
                 resize: Resize = "teacher") -> None:
        super().__init__()
        if not p > 0:
            raise ValueError(f"p must be > 0, got {p}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if resize not in ("teacher", "student"):
            raise ValueError(f"resize must be 'teacher' or 'student', got {resize!r}")
        self.p = float(p)
        self.reduction = reduction
        self.resize = resize

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
        s, t = student_feat, teacher_feat.detach()
        if t.shape[-2:] != s.shape[-2:]:
            if self.resize == "teacher":
                t = F.interpolate(t, size=s.shape[-2:], mode="bilinear", align_corners=False)
            else:
                s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
        sq = (attention_map(s, self.p) - attention_map(t, self.p)).pow(2)  # (N, positions)
        return sq.sum(dim=1).mean() if self.reduction == "sum" else sq.mean()
