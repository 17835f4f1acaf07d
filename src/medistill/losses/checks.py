"""Input checks shared by the embedding losses."""

from __future__ import annotations

import torch


def check_embedding_pair(z_a: torch.Tensor, z_b: torch.Tensor, loss: str) -> None:
    """Raise ``ValueError`` unless ``z_a`` and ``z_b`` are same-shape (N, D) with N >= 2."""
    if z_a.ndim != 2 or z_b.ndim != 2:
        raise ValueError(
            f"{loss} expects 2-D (batch, dim) embeddings, got shapes {tuple(z_a.shape)} and "
            f"{tuple(z_b.shape)}; flatten or pool feature maps first"
        )
    if z_a.shape != z_b.shape:
        raise ValueError(
            f"{loss} embeddings differ in shape: {tuple(z_a.shape)} vs {tuple(z_b.shape)}"
        )
    if z_a.shape[0] < 2:
        raise ValueError(f"{loss} needs a batch of at least 2 samples, got {z_a.shape[0]}")
