"""ResNets (He et al., 2016) on MONAI's implementation, with a choice of normalisation.

``small_resnet`` is the resolution-distillation paper's model: BasicBlock, one block per stage,
widths (32, 64, 128, 256), GroupNorm with 32 groups (so batch-size-1 gradient accumulation
trains correctly). ``resnet18/34/50`` are the standard ImageNet layouts (stem stride 2 +
max-pool) with ``norm="batch"`` (default) or ``norm="group"``.
"""

from __future__ import annotations

import torch
from torch import nn

from medistill.errors import RecipeError
from medistill.models.base import Classifier
from medistill.models.registry import MODELS


def _norm(norm: str, groups: int) -> str | tuple:
    if norm == "batch":
        return "batch"
    if norm == "group":
        return ("group", {"num_groups": groups})
    raise RecipeError(f"model norm must be 'batch' or 'group', got {norm!r}")


def _batchnorm_to_groupnorm(module: nn.Module, groups: int) -> None:
    """Replace every BatchNorm2d left in ``module`` by GroupNorm.

    MONAI's ResNet builds the shortcut ("downsample") norm as BatchNorm whatever ``norm`` says;
    a GroupNorm model must have no batch statistics anywhere (gradient accumulation with
    batch size 1, as the paper trains).
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(min(groups, child.num_features), child.num_features))
        else:
            _batchnorm_to_groupnorm(child, groups)


class ResNetClassifier(Classifier):
    """A MONAI ResNet whose stages are exposed as taps."""

    tap_names = ("stem", "layer1", "layer2", "layer3", "layer4", "features", "logits")

    def __init__(
        self,
        block: str,
        layers: tuple[int, ...],
        widths: tuple[int, ...],
        num_classes: int,
        in_channels: int = 3,
        norm: str = "batch",
        groups: int = 32,
    ) -> None:
        super().__init__()
        from monai.networks.nets import ResNet  # lazy: MONAI's import is slow

        net = ResNet(
            block=block,
            layers=list(layers),
            block_inplanes=list(widths),
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            num_classes=num_classes,
            norm=_norm(norm, groups),
        )
        if norm == "group":
            _batchnorm_to_groupnorm(net, groups)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.head = net.fc
        self.feature_channels = net.fc.in_features
        self.num_classes = num_classes

    def taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"stem": self.stem(x)}
        h = out["stem"]
        for name in ("layer1", "layer2", "layer3", "layer4"):
            h = getattr(self, name)(h)
            out[name] = h
        out["features"] = h
        out["logits"] = self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))
        return out


@MODELS.register("small_resnet")
def small_resnet(num_classes: int, in_channels: int = 3, norm: str = "group", groups: int = 32,
                 widths: tuple[int, ...] = (32, 64, 128, 256)) -> ResNetClassifier:
    """The paper's ResNet: BasicBlock (1, 1, 1, 1), widths 32/64/128/256, GroupNorm(32)."""
    return ResNetClassifier("basic", (1, 1, 1, 1), tuple(widths), num_classes, in_channels,
                            norm, groups)


#: standard ImageNet layouts: name -> (block, blocks per stage)
STANDARD = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


def _standard(block: str, layers: tuple[int, ...]):
    def factory(num_classes: int, in_channels: int = 3, norm: str = "batch",
                groups: int = 32) -> ResNetClassifier:
        return ResNetClassifier(block, layers, (64, 128, 256, 512), num_classes, in_channels,
                                norm, groups)

    return factory


for _name, (_block, _layers) in STANDARD.items():
    MODELS.register(_name)(_standard(_block, _layers))
