"""Resized feature-map MSE ("pixel-wise" loss, DiPalma et al., 2021, eq. 3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

RESIZERS = ("maxpool", "bicubic", "bilinear", "avgpool")


def resize_map(x: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """Resize an (N, C, H, W) map to ``size`` with one of :data:`RESIZERS`."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if method == "maxpool":
        return F.adaptive_max_pool2d(x, size)
    if method == "avgpool":
        return F.adaptive_avg_pool2d(x, size)
    if method in ("bicubic", "bilinear"):
        return F.interpolate(x, size=size, mode=method, align_corners=False)
    raise ValueError(f"unknown resize method {method!r}; choose from {RESIZERS}")


class ResizedFeatureMSE(nn.Module):
    """``1/K * sum_k mean((g_k(F_t) - F_s)^2)`` (eq. 3).

    The teacher map ``F_t`` is resized to the student map's spatial size by each method ``g_k``
    in ``resize`` (adaptive max-pooling, bicubic interpolation by default: the paper's
    "KD+MP+INT"), the mean squared error over all elements is taken for each, and the K results
    are averaged. Channel counts must match: when they differ, project the student map first
    (the distiller owns a learnable 1x1 convolution for that, FitNets-style).

    Note: the authors' code computes only the max-pool term in this mode; both are computed here.
    """

    def __init__(self, resize: Sequence[str] = ("maxpool", "bicubic")) -> None:
        super().__init__()
        if isinstance(resize, str):
            resize = (resize,)
        if not resize:
            raise ValueError("resize needs at least one method")
        for method in resize:
            if method not in RESIZERS:
                raise ValueError(f"unknown resize method {method!r}; choose from {RESIZERS}")
        self.resize = tuple(resize)

    def targets(self, teacher_map: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
        """``g_k(F_t)`` at the student map's ``size``, one per method in ``resize``: what
        :meth:`forward` compares the student map with. A teacher replay may store these instead
        of ``F_t`` (smaller when the student's map is, and no resize per step)."""
        teacher_map = teacher_map.detach()
        return [resize_map(teacher_map, tuple(size), m) for m in self.resize]

    def forward(self, student_map: torch.Tensor,
                teacher_map: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``teacher_map``: ``F_t``, or its resized targets (:meth:`targets`) at the student
        map's size."""
        if isinstance(teacher_map, torch.Tensor):
            if student_map.shape[:2] != teacher_map.shape[:2]:
                raise ValueError(
                    f"student map {tuple(student_map.shape)} and teacher map "
                    f"{tuple(teacher_map.shape)} differ in batch or channels; project the "
                    "student map to the teacher's channels first"
                )
            targets = self.targets(teacher_map, tuple(student_map.shape[-2:]))
        else:
            targets = [t.detach() for t in teacher_map]
            if len(targets) != len(self.resize) or any(
                    t.shape != student_map.shape for t in targets):
                raise ValueError(
                    f"{len(targets)} teacher targets of shapes "
                    f"{[tuple(t.shape) for t in targets]} for student map "
                    f"{tuple(student_map.shape)} and resize {list(self.resize)}: one per "
                    "method, of the student map's shape")
        terms = [F.mse_loss(student_map, t) for t in targets]
        return torch.stack(terms).mean()
