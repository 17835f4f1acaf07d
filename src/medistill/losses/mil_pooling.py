"""The MIL loss of the weakly supervised segmenter: soft pooling of pixel scores to one image
score, then binary cross-entropy against the image label (He, Li, Zemp, 2024, section 3.1).

A positive image (tumour) must contain positive pixels and a negative image none; a soft
maximum over the pixels expresses both. Poolings (``pooling``):

- ``"lse"`` (default): log-sum-exp of the pixel LOGITS, ``(1/r) log mean exp(r z)``, a smooth
  maximum (``r`` large -> max, ``r`` -> 0 -> mean; default ``r = 4``). It keeps gradient on
  every pixel, unlike the hard max, and is exactly the image logit, so the BCE is stable;
- ``"gmean"``: generalised mean of the pixel PROBABILITIES, ``(mean p^q)^(1/q)`` (q = 4);
- ``"topk"``: mean of the largest ``topk`` fraction of the pixel probabilities (0.1).

The image score of every map (each side output and the fused map) is scored separately and the
BCE averaged over the maps (deep supervision of every side output, as in the authors' code).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("lse", "gmean", "topk")
EPS = 1e-6


def mil_pool(prob: torch.Tensor, pooling: str = "lse", r: float = 4.0, q: float = 4.0,
             topk: float = 0.1) -> torch.Tensor:
    """(N, 1, H, W) pixel probabilities -> (N,) image probabilities."""
    flat = prob.flatten(1).clamp(EPS, 1 - EPS)
    if pooling == "lse":
        z = torch.log(flat) - torch.log1p(-flat)
        pooled = (torch.logsumexp(r * z, dim=1) - math.log(z.shape[1])) / r
        return torch.sigmoid(pooled)
    if pooling == "gmean":
        return flat.pow(q).mean(1).pow(1.0 / q)
    if pooling == "topk":
        k = max(1, round(topk * flat.shape[1]))
        return flat.topk(k, dim=1).values.mean(1)
    raise ValueError(f"unknown MIL pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


class MILPoolingLoss(nn.Module):
    """Mean over the maps of ``BCE(pool(map), image label)``.

    Args:
        pooling: ``lse``, ``gmean`` or ``topk`` (see the module doc).
        r, q, topk: the pooling's sharpness / exponent / fraction.
        pos_weight: weight of positive images in the BCE (class balance), 1 = none.
    """

    def __init__(self, pooling: str = "lse", r: float = 4.0, q: float = 4.0,
                 topk: float = 0.1, pos_weight: float = 1.0) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown MIL pooling {pooling!r}; choose one of "
                             + ", ".join(POOLINGS))
        if not (r > 0 and q > 0 and 0 < topk <= 1 and pos_weight > 0):
            raise ValueError(f"MIL pooling needs r, q, pos_weight > 0 and 0 < topk <= 1, got "
                             f"r={r}, q={q}, topk={topk}, pos_weight={pos_weight}")
        self.pooling, self.r, self.q, self.topk = pooling, float(r), float(q), float(topk)
        self.pos_weight = float(pos_weight)

    def image_scores(self, prob: torch.Tensor) -> torch.Tensor:
        return mil_pool(prob, self.pooling, self.r, self.q, self.topk)

    def forward(self, maps: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        y = labels.float().reshape(-1)
        weight = torch.where(y > 0.5, self.pos_weight, 1.0)
        losses = [F.binary_cross_entropy(self.image_scores(m).clamp(EPS, 1 - EPS), y,
                                         weight=weight) for m in maps]
        return torch.stack(losses).mean()
