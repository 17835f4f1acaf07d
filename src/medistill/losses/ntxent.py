"""NT-Xent: normalized temperature-scaled cross entropy (SimCLR, Chen et al., 2020, eq. 1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medistill.losses.checks import check_embedding_pair


class NTXentLoss(nn.Module):
    """``1/(2N) * sum_k l(k)`` over the 2N views, ``l(i, j) = -log softmax_{k != i}(sim / T)_j``.

    The N samples of ``z_a`` and the N of ``z_b`` form 2N views ``u_1 .. u_2N``
    (``u_k = z_a[k]``, ``u_{N+k} = z_b[k]``). Each is L2-normalised and, for every anchor ``i``,

        l(i, j) = -log( exp(cos(u_i, u_j) / T) / sum_{k != i} exp(cos(u_i, u_k) / T) )   (eq. 1)

    where ``j`` is the other view of the same sample (the positive) and the sum runs over the
    positive and the 2N - 2 other views (negatives); the self-similarity ``k = i`` is excluded.
    The loss averages ``l`` over all 2N anchors, i.e. over both ``l(i, j)`` and ``l(j, i)``.

    Args:
        temperature: the temperature T (> 0).

    Shapes: ``z_a`` and ``z_b`` are (N, D) with N >= 2 (with one sample there is no negative);
    returns a scalar. Both inputs receive gradients. An all-zero embedding has cosine 0 with
    every view.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if not (temperature > 0 and math.isfinite(temperature)):  # also rejects NaN
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        check_embedding_pair(z_a, z_b, "NTXentLoss")
        n = z_a.shape[0]
        views = F.normalize(torch.cat([z_a, z_b]), dim=1)
        logits = views @ views.T / self.temperature
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        index = torch.arange(n, device=logits.device)
        positives = torch.cat([index + n, index])
        return F.cross_entropy(logits, positives)
