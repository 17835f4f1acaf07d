"""The weighted cross-entropy regulariser of iterative fusion KD (He, Li, Zemp, 2024,
section 3.2): pixel-wise cross-entropy to the teacher's SOFT probability map, down-weighted
where teacher and student disagree.

``L = mean over pixels of w * BCE(s, t)`` with ``w = (1 - |t - s|) ** gamma`` (detached; 1
where they agree, 0 where one says 1 and the other 0). The target ``t`` is the teacher's
probability, NOT cast to an integer: the authors' code casts the probability map to an integer
tensor, which floors every pixel below 1 to background and turns the term into "predict
nothing" (see ``tests/losses/test_mil_losses.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6


class AgreementWeightedBCE(nn.Module):
    def __init__(self, gamma: float = 1.0) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"agreement weight exponent must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def weights(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return (1 - (teacher - student).abs()).clamp_min(0).pow(self.gamma).detach()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape:
            raise ValueError(f"weighted CE: student {tuple(student.shape)} and teacher "
                             f"{tuple(teacher.shape)} differ in shape")
        if not teacher.is_floating_point():
            raise TypeError("weighted CE: the teacher target must be a float probability map")
        t = teacher.detach()
        w = self.weights(student, t)
        return F.binary_cross_entropy(student.clamp(EPS, 1 - EPS), t, weight=w)
