"""The MIL losses of the weakly supervised segmenter (He, Li, Zemp, 2024, section 3.1): a
positive image (tumour) must contain positive pixels and a negative image none.

:class:`MILDiceLoss` (the default objective, from the authors' code; the paper gives none): the
image label is expanded to a full mask, all ones on a tumour image and all zeros on a normal
one, and every side map and the fused map is trained with a Dice loss against it. Per image
``i`` and map ``p`` (probabilities, ``N`` pixels), with ``q = p`` on a positive image and
``q = 1 - p`` on a negative one (their Dice of the inverted map against the inverted mask), and
the all-ones target ``t``::

    D_i(p) = 1 - (2 sum(q t) + s) / (sum q + sum t + s + eps),   s = 1, eps = 1e-7

i.e. ``1 - (2 sum q + 1) / (sum q + N + 1)``: PER IMAGE (each image's own sums, not pooled
over the batch), unweighted, SUMMED over the images of the batch and over the maps (three
side maps + the fused map in their code). It asks for the whole map (the whole image) to be
tumour on a positive image: a DIFFUSE map, where a pooled loss is satisfied by a few confident
pixels (a FOCAL map). ``reduction="mean"`` (ours, an option) divides by images x maps instead,
which only rescales the loss (with Adam it changes nothing but the balance with the L2 weight
decay).

:class:`MILPoolingLoss` (options): soft pooling of the pixel scores to one image score, then
binary cross-entropy against the image label; a soft maximum over the pixels expresses the MIL
constraint. Poolings (``pooling``):

- ``"lse"``: log-sum-exp of the pixel LOGITS, ``(1/r) log mean exp(r z)``, a smooth
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
REDUCTIONS = ("sum", "mean")
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


class MILDiceLoss(nn.Module):
    """The authors' MIL objective: per-image Dice of every map against the image label
    expanded to a full mask (see the module doc).

    Args:
        smooth: ``s`` of the Dice (1 in the authors' code).
        reduction: ``"sum"`` over images and maps (the authors') or ``"mean"``.
        pos_weight: weight of positive images (class balance), 1 = none (the authors').
    """

    def __init__(self, smooth: float = 1.0, reduction: str = "sum",
                 pos_weight: float = 1.0, eps: float = 1e-7) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown MIL Dice reduction {reduction!r}; choose one of "
                             + ", ".join(REDUCTIONS))
        if not (smooth >= 0 and pos_weight > 0 and eps >= 0):
            raise ValueError(f"MIL Dice needs smooth >= 0, pos_weight > 0, got smooth={smooth}, "
                             f"pos_weight={pos_weight}")
        self.smooth, self.reduction = float(smooth), reduction
        self.pos_weight, self.eps = float(pos_weight), float(eps)

    def per_image(self, prob: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N,) Dice losses of one (N, 1, H, W) map against the expanded image labels."""
        y = labels.float().reshape(-1, 1)
        mask = y.expand(-1, prob[0].numel())  # the image label as a full mask
        pos = y > 0.5
        q = torch.where(pos, prob.flatten(1), 1 - prob.flatten(1))
        t = torch.where(pos, mask, 1 - mask)  # all ones either way
        dice = (2 * (q * t).sum(1) + self.smooth) / (q.sum(1) + t.sum(1) + self.smooth
                                                     + self.eps)
        return 1 - dice

    def forward(self, maps: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        y = labels.float().reshape(-1)
        weight = torch.where(y > 0.5, self.pos_weight, 1.0)
        per_map = torch.stack([(weight * self.per_image(m, y)).sum() for m in maps])
        if self.reduction == "mean":
            return per_map.sum() / (len(maps) * len(y))
        return per_map.sum()
