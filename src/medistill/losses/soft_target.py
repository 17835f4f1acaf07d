"""Soft-target distillation loss (Hinton et al., 2015; DiPalma et al., 2021, eq. 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SoftTargetKL(nn.Module):
    """``KL(softmax(t / T) || softmax(s / T)) * T^2``, averaged over the batch (eq. 2).

    Args:
        temperature: the softening temperature T (> 0).

    Shapes: ``student_logits`` and ``teacher_logits`` are (N, K); returns a scalar. The teacher
    logits are treated as constants (detached).
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if not temperature > 0:  # also rejects NaN
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student logits {tuple(student_logits.shape)} and teacher logits "
                f"{tuple(teacher_logits.shape)} differ in shape"
            )
        t = self.temperature
        log_p_student = F.log_softmax(student_logits / t, dim=1)
        log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=1)
        kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
        return kl * t * t
