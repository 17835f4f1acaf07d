"""A residual U-Net that predicts per-pixel embeddings: the graph-relation teacher and students.

Liu et al. (2024, arXiv:2401.06370) distil a ResUNet teacher into the same network with its
five filter widths shrunk to ``[4, 8, 16, 32, 64]``. Each of the five levels is a residual
block (two 3x3 conv-BN-ReLU, a 1x1 projection on the shortcut when the width changes);
levels are joined by 2x2 max-pooling; the decoder upsamples (bilinear), concatenates the skip
and applies a residual block. A 1x1 head predicts ``embedding_dim`` channels, L2-normalised
per pixel (16 in the paper), plus one foreground logit (used to separate nuclei from the
background after post-processing). Any input size works (odd sizes are handled by resizing
to the skip's size).

``forward(x)`` returns one tensor ``(N, embedding_dim + 1, H, W)`` (exportable as is);
:meth:`embed` splits it into ``(embedding, foreground_logit)``. ``features(x)`` returns the
named taps ``enc1..enc5`` / ``dec4..dec1`` plus ``"embedding"`` and ``"foreground"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medistill.models.registry import MODELS


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class EmbeddingResUNet(nn.Module):
    """Residual U-Net with ``len(widths)`` levels and an L2-normalised embedding head."""

    task = "instance"

    def __init__(self, num_classes: int = 2, in_channels: int = 3,
                 widths: Sequence[int] = (32, 64, 128, 256, 512),
                 embedding_dim: int = 16) -> None:
        super().__init__()
        w = [int(v) for v in widths]
        if len(w) < 2 or min(w) < 1:
            raise ValueError(f"need at least 2 positive widths, got {list(widths)}")
        self.widths = w
        self.embedding_dim = int(embedding_dim)
        self.num_classes = num_classes
        self.encoder = nn.ModuleList(
            [ResBlock(cin, cout) for cin, cout in zip([in_channels] + w[:-1], w, strict=True)])
        self.decoder = nn.ModuleList(
            [ResBlock(w[i + 1] + w[i], w[i]) for i in reversed(range(len(w) - 1))])
        self.head = nn.Conv2d(w[0], self.embedding_dim + 1, 1)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        skips = []
        h = x
        for i, block in enumerate(self.encoder):
            if i:
                h = F.max_pool2d(h, 2, ceil_mode=True)
            h = block(h)
            out[f"enc{i + 1}"] = h
            skips.append(h)
        for j, block in enumerate(self.decoder):
            s = skips[-2 - j]
            h = F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, s], dim=1))
            out[f"dec{len(skips) - 1 - j}"] = h
        raw = self.head(h)
        out["embedding"] = F.normalize(raw[:, : self.embedding_dim], dim=1)
        out["foreground"] = raw[:, self.embedding_dim :]
        return out

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embedding (N, E, H, W) unit length per pixel, foreground logit (N, 1, H, W))``."""
        f = self.features(x)
        return f["embedding"], f["foreground"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb, fg = self.embed(x)
        return torch.cat([emb, fg], dim=1)


@MODELS.register("resunet_embedding")
def resunet_embedding(num_classes: int = 2, in_channels: int = 3,
                      widths: Sequence[int] = (32, 64, 128, 256, 512),
                      embedding_dim: int = 16) -> EmbeddingResUNet:
    """Embedding ResUNet (graph-relation teacher; students: ``widths=[4, 8, 16, 32, 64]``)."""
    return EmbeddingResUNet(num_classes, in_channels, widths, embedding_dim)


resunet_embedding.task = "instance"  # type: ignore[attr-defined]
