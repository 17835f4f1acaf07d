"""UNet++ (Zhou et al., 2018) on MONAI's ``BasicUNetPlusPlus``: the HLFD teacher.

Taps: encoder ``x0_0`` (full size) ... ``x4_0`` (1/16); decoder outputs along the nested
path's last column, deep to shallow: ``x3_1`` (1/8), ``x2_2`` (1/4), ``x1_3`` (1/2), ``x0_4``
(full size, the map the final 1x1 convolution reads). No deep supervision: the logits are
``final_conv_0_4(x0_4)`` as in MONAI's default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medistill.models.registry import MODELS
from medistill.models.segmenter import Segmenter


class UNetPlusPlus(Segmenter):
    encoder_taps = ("x0_0", "x1_0", "x2_0", "x3_0", "x4_0")
    decoder_taps = ("x3_1", "x2_2", "x1_3", "x0_4")

    def __init__(self, num_classes: int, in_channels: int = 3,
                 features: Sequence[int] = (32, 32, 64, 128, 256, 32),
                 norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        from monai.networks.nets import BasicUNetPlusPlus  # lazy: MONAI's import is slow

        fea = tuple(int(f) for f in features)
        norm_arg: str | tuple = ("batch", {"affine": True}) if norm == "batch" else (
            "instance", {"affine": True})
        self.net = BasicUNetPlusPlus(spatial_dims=2, in_channels=in_channels,
                                     out_channels=num_classes, features=fea, norm=norm_arg,
                                     dropout=dropout)
        self.num_classes = num_classes
        self.tap_channels = {"x0_0": fea[0], "x1_0": fea[1], "x2_0": fea[2], "x3_0": fea[3],
                             "x4_0": fea[4], "x3_1": fea[3], "x2_2": fea[2], "x1_3": fea[1],
                             "x0_4": fea[5]}

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = self.net  # MONAI's forward, with the intermediate maps kept
        x0_0 = n.conv_0_0(x)
        x1_0 = n.conv_1_0(x0_0)
        x0_1 = n.upcat_0_1(x1_0, x0_0)
        x2_0 = n.conv_2_0(x1_0)
        x1_1 = n.upcat_1_1(x2_0, x1_0)
        x0_2 = n.upcat_0_2(x1_1, torch.cat([x0_0, x0_1], dim=1))
        x3_0 = n.conv_3_0(x2_0)
        x2_1 = n.upcat_2_1(x3_0, x2_0)
        x1_2 = n.upcat_1_2(x2_1, torch.cat([x1_0, x1_1], dim=1))
        x0_3 = n.upcat_0_3(x1_2, torch.cat([x0_0, x0_1, x0_2], dim=1))
        x4_0 = n.conv_4_0(x3_0)
        x3_1 = n.upcat_3_1(x4_0, x3_0)
        x2_2 = n.upcat_2_2(x3_1, torch.cat([x2_0, x2_1], dim=1))
        x1_3 = n.upcat_1_3(x2_2, torch.cat([x1_0, x1_1, x1_2], dim=1))
        x0_4 = n.upcat_0_4(x1_3, torch.cat([x0_0, x0_1, x0_2, x0_3], dim=1))
        return {"x0_0": x0_0, "x1_0": x1_0, "x2_0": x2_0, "x3_0": x3_0, "x4_0": x4_0,
                "x3_1": x3_1, "x2_2": x2_2, "x1_3": x1_3, "x0_4": x0_4,
                "logits": n.final_conv_0_4(x0_4)}


@MODELS.register("unetpp")
def unetpp(num_classes: int, in_channels: int = 3,
           features: Sequence[int] = (32, 32, 64, 128, 256, 32), norm: str = "batch",
           dropout: float = 0.0) -> UNetPlusPlus:
    """UNet++ with MONAI's default widths (32, 32, 64, 128, 256, 32); configurable."""
    return UNetPlusPlus(num_classes, in_channels, features, norm, dropout)

unetpp.task = "segmentation"  # type: ignore[attr-defined]
