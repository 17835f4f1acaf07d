"""A U-Net with a ResNet-18 encoder: the light HLFD student.

Encoder: a ResNet-18 layout (BasicBlock, 2 blocks per stage, 7x7 stride-2 stem, max-pool) on
MONAI's ResNet, widths (64, 128, 256, 512) or smaller. Decoder: at each stage the deeper map is
upsampled (bilinear) to the skip's size, concatenated with it and passed through two 3x3
conv-BN-ReLU layers; a last stage upsamples to the input size. Any input size works.

Taps: encoder ``enc0`` (stem, 1/2), ``enc1`` (1/4), ``enc2`` (1/8), ``enc3`` (1/16), ``enc4``
(1/32); decoder outputs deep to shallow ``dec1`` (1/16) ... ``dec4`` (1/2), ``dec5`` (1/1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medistill.models.registry import MODELS
from medistill.models.segmenter import Segmenter


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResNetUNet(Segmenter):
    encoder_taps = ("enc0", "enc1", "enc2", "enc3", "enc4")
    decoder_taps = ("dec1", "dec2", "dec3", "dec4", "dec5")

    def __init__(self, num_classes: int, in_channels: int = 3,
                 widths: Sequence[int] = (64, 128, 256, 512),
                 decoder_widths: Sequence[int] = (256, 128, 64, 32, 16),
                 layers: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        from monai.networks.nets import ResNet  # lazy: MONAI's import is slow

        w = [int(v) for v in widths]
        d = [int(v) for v in decoder_widths]
        if len(w) != 4 or len(d) != 5:
            raise ValueError(f"need 4 encoder and 5 decoder widths, got {w} and {d}")
        net = ResNet(block="basic", layers=list(layers), block_inplanes=w, spatial_dims=2,
                     n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=2,
                     num_classes=1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act)
        self.pool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (net.layer1, net.layer2,
                                                              net.layer3, net.layer4)
        # stem width is the first block width in MONAI's ResNet
        skips = [w[2], w[1], w[0], w[0]]  # enc3, enc2, enc1, enc0
        blocks, cin = [], w[3]
        for skip, cout in zip(skips, d[:4], strict=True):
            blocks.append(_conv_block(cin + skip, cout))
            cin = cout
        blocks.append(_conv_block(cin, d[4]))
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(d[4], num_classes, 1)
        self.num_classes = num_classes
        enc = dict(zip(self.encoder_taps, [w[0], w[0], w[1], w[2], w[3]], strict=True))
        self.tap_channels = {**enc, **dict(zip(self.decoder_taps, d, strict=True))}

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        out["enc0"] = self.stem(x)
        out["enc1"] = self.layer1(self.pool(out["enc0"]))
        out["enc2"] = self.layer2(out["enc1"])
        out["enc3"] = self.layer3(out["enc2"])
        out["enc4"] = self.layer4(out["enc3"])
        h = out["enc4"]
        for i, skip in enumerate(("enc3", "enc2", "enc1", "enc0")):
            s = out[skip]
            h = F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False)
            h = self.decoder[i](torch.cat([h, s], dim=1))
            out[f"dec{i + 1}"] = h
        h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out["dec5"] = self.decoder[4](h)
        out["logits"] = self.head(out["dec5"])
        return out


@MODELS.register("resnet18_unet")
def resnet18_unet(num_classes: int, in_channels: int = 3,
                  widths: Sequence[int] = (64, 128, 256, 512),
                  decoder_widths: Sequence[int] = (256, 128, 64, 32, 16)) -> ResNetUNet:
    """ResNet-18-encoder U-Net (the HLFD student), widths configurable."""
    return ResNetUNet(num_classes, in_channels, widths, decoder_widths)


@MODELS.register("resnet18_unet_small")
def resnet18_unet_small(num_classes: int, in_channels: int = 3) -> ResNetUNet:
    """The same layout at a quarter of the widths: encoder 16/32/64/128, decoder 64/32/16/8/8."""
    return ResNetUNet(num_classes, in_channels, (16, 32, 64, 128), (64, 32, 16, 8, 8))

resnet18_unet.task = "segmentation"  # type: ignore[attr-defined]
resnet18_unet_small.task = "segmentation"  # type: ignore[attr-defined]
