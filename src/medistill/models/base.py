"""The classifier interface every registered model follows.

A classifier returns ``(features, logits)``: the final convolutional feature map (N, C, h, w)
and the class logits (N, K), as the resolution-distillation paper's models do. ``taps(x)``
returns every named intermediate output (``stem``, ``layer1`` ... ``layer4``, ``features``,
``logits``) for methods that distil other layers.
"""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """Backbone + global average pooling + linear head, with named feature taps."""

    #: channels of the final convolutional feature map
    feature_channels: int
    #: names of the taps returned by :meth:`taps`, in forward order
    tap_names: tuple[str, ...]

    head: nn.Linear

    def taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.taps(x)
        return out["features"], out["logits"]

    def backbone_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head]

    def reset_head(self) -> None:
        self.head.reset_parameters()
