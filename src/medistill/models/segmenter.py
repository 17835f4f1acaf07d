"""The segmentation-model interface: logits out, plus named feature taps for distillation.

``forward(x)`` returns the class logits (N, K, H, W) at the input size (so a segmenter exports
to ONNX/TorchScript as is). ``features(x)`` returns an ordered dict of every named tap plus
``"logits"``: the encoder taps (``encoder_taps``, shallow to deep) and the decoder outputs
(``decoder_taps``, deep to shallow: ``decoder_taps[0]`` is the first decoder output). The roles
HLFD distils are fixed by position: :attr:`early` = the first encoder tap, :attr:`middle` =
the encoder taps between the first and the last, :attr:`final` = the last encoder tap.
``tap_channels`` gives each tap's channel count.
"""

from __future__ import annotations

import torch
from torch import nn


class Segmenter(nn.Module):
    encoder_taps: tuple[str, ...]
    decoder_taps: tuple[str, ...]
    tap_channels: dict[str, int]
    num_classes: int
    task = "segmentation"

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["logits"]

    @property
    def early(self) -> str:
        return self.encoder_taps[0]

    @property
    def middle(self) -> tuple[str, ...]:
        return self.encoder_taps[1:-1]

    @property
    def final(self) -> str:
        return self.encoder_taps[-1]
