"""Pixel affinities of an embedding map along each axis, with a validity mask, and the
affinity supervision against ground-truth instances (Liu et al., 2024, arXiv:2401.06370).

The affinity of pixel ``p`` at offset ``d`` along axis ``a`` is the dot product of the
(L2-normalised) embeddings at ``p`` and at ``p + d * e_a`` (the paper's affinity graph: cosine
similarity of neighbouring pixels). The authors shift with ``torch.roll``, which wraps around
the border and compares pixels on opposite sides of the image; here positions whose neighbour
falls outside the image are marked invalid and left out of every loss.

Channel order everywhere: for each spatial axis (rows, then columns, ...), every offset in
``offsets`` order; ``affinity(...)[0]`` is ``(N, n_axes * len(offsets), *spatial)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_OFFSETS: tuple[int, ...] = (1, 3, 5, 9, 27)


def _pairs(x: torch.Tensor, axis: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The overlapping slices ``x[..., p]`` and ``x[..., p + d]`` along ``axis`` (d < size)."""
    n = x.shape[axis]
    return x.narrow(axis, 0, n - d), x.narrow(axis, d, n - d)


def affinity(embeddings: torch.Tensor, offsets: Sequence[int] = DEFAULT_OFFSETS
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Affinities of ``(N, C, *spatial)`` embeddings and their validity mask.

    Returns ``(aff, valid)``: ``aff`` is ``(N, A, *spatial)`` with ``A = n_axes * len(offsets)``
    (0 where invalid); ``valid`` is a bool ``(1, A, *spatial)`` mask, True where the neighbour
    ``p + d`` lies inside the image. The embeddings are used as given (normalise them first for
    cosine affinities).
    """
    if embeddings.ndim < 3:
        raise ValueError(f"expected (N, C, *spatial) embeddings, got {tuple(embeddings.shape)}")
    spatial = embeddings.shape[2:]
    n = embeddings.shape[0]
    affs, valids = [], []
    for axis in range(len(spatial)):
        dim = 2 + axis
        for d in offsets:
            if d < 1:
                raise ValueError(f"offsets must be positive, got {d}")
            a = embeddings.new_zeros((n, *spatial))
            v = torch.zeros((1, *spatial), dtype=torch.bool, device=embeddings.device)
            if d < spatial[axis]:
                src, dst = _pairs(embeddings, dim, d)
                a.narrow(dim - 1, 0, spatial[axis] - d).copy_((src * dst).sum(1))
                v.narrow(dim - 1, 0, spatial[axis] - d).fill_(True)
            affs.append(a)
            valids.append(v)
    # copy_ into a fresh tensor keeps the graph (autograd records the in-place copy)
    return torch.stack(affs, 1), torch.stack(valids, 1)


def label_affinity(labels: torch.Tensor, offsets: Sequence[int] = DEFAULT_OFFSETS
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth affinities of ``(N, *spatial)`` instance ids: 1 where ``p`` and ``p + d``
    carry the same id (background 0 counts as one region), else 0; same layout and validity
    mask as :func:`affinity`."""
    spatial = labels.shape[1:]
    n = labels.shape[0]
    affs, valids = [], []
    for axis in range(len(spatial)):
        dim = 1 + axis
        for d in offsets:
            a = torch.zeros((n, *spatial), dtype=torch.float32, device=labels.device)
            v = torch.zeros((1, *spatial), dtype=torch.bool, device=labels.device)
            if d < spatial[axis]:
                src, dst = _pairs(labels, dim, d)
                a.narrow(dim, 0, spatial[axis] - d).copy_((src == dst).float())
                v.narrow(dim, 0, spatial[axis] - d).fill_(True)
            affs.append(a)
            valids.append(v)
    return torch.stack(affs, 1), torch.stack(valids, 1)


def masked_mse(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(a - b)^2`` of ``(N, A, *spatial)`` affinity maps, SUMMED over the ``A`` affinity
    channels and averaged over the valid positions (and the batch) of each channel.

    This is the authors' reduction (their affinity MSE sums the per-offset losses, each a mean
    over the pixels), so their weights (AGD 10) carry over; averaging over the channels as
    well would divide every weight by ``A`` (10 in 2-D). ``valid`` ``(1, A, *spatial)``
    broadcasts over the batch; a channel without valid positions contributes 0.
    """
    mask = valid.expand_as(a).to(a.dtype)
    dims = [0] + list(range(2, a.ndim))
    per_channel = ((a - b) ** 2 * mask).sum(dims) / mask.sum(dims).clamp_min(1.0)
    return per_channel.sum()


class AffinityLoss(nn.Module):
    """Supervision of the embeddings: :func:`masked_mse` (sum over the affinity channels, mean
    over the valid positions) between their affinities and the ground-truth affinities of the
    instance labels (the paper's affinity-label term; the authors' reduction)."""

    def __init__(self, offsets: Sequence[int] = DEFAULT_OFFSETS) -> None:
        super().__init__()
        self.offsets = tuple(int(d) for d in offsets)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        aff, valid = affinity(embeddings, self.offsets)
        target, _ = label_affinity(labels, self.offsets)
        return masked_mse(aff, target, valid)
