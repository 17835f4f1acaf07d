"""ResNets (He et al., 2016) on MONAI's implementation, with a choice of normalisation.

``small_resnet`` is the resolution-distillation paper's model: BasicBlock, one block per stage,
widths (32, 64, 128, 256), GroupNorm with 32 groups (so batch-size-1 gradient accumulation
trains correctly). ``resnet18/34/50`` are the standard ImageNet layouts (stem stride 2 +
max-pool) with ``norm="batch"`` (default) or ``norm="group"``.

Resolution-aware stem: the ImageNet stem (7x7 conv stride 2 + max-pool) and three stride-2
stages shrink the input 32-fold, so a 28 px student ends in a 1x1 map and the pixel loss of
DiPalma et al. (eq. 3) degenerates to matching one vector (the teacher map's global max and its
centre value). ``stem_stride`` / ``stem_pool`` set the stem by hand; ``input_size`` picks them
with :func:`stem_for_input` so that the final map keeps at least 4x4 positions where it can.
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
        stem_stride: int = 2,
        stem_pool: bool = True,
    ) -> None:
        super().__init__()
        if stem_stride not in (1, 2):
            raise RecipeError(f"model stem_stride must be 1 or 2, got {stem_stride!r}")
        from monai.networks.nets import ResNet  # lazy: MONAI's import is slow

        net = ResNet(
            block=block,
            layers=list(layers),
            block_inplanes=list(widths),
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=stem_stride,
            no_max_pool=not stem_pool,
            num_classes=num_classes,
            norm=_norm(norm, groups),
        )
        if norm == "group":
            _batchnorm_to_groupnorm(net, groups)
        stem = [net.conv1, net.bn1, net.act] + ([net.maxpool] if stem_pool else [])
        self.stem = nn.Sequential(*stem)
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


#: stems from the most to the least downsampling: (stem stride, max-pool, total reduction)
_STEMS = ((2, True, 32), (2, False, 16), (1, False, 8))
#: the smallest final feature map :func:`stem_for_input` aims for
MIN_FINAL_MAP = 4


def final_map_size(input_size: int, stem_stride: int = 2, stem_pool: bool = True) -> int:
    """Side of the final feature map for a square input (every stride-2 step rounds up)."""
    size = -(-input_size // stem_stride)
    for _ in range(4 if stem_pool else 3):  # max-pool, then layer2..4
        size = -(-size // 2)
    return size


def stem_for_input(input_size: int) -> tuple[int, bool]:
    """``(stem_stride, stem_pool)`` with the most downsampling (cheapest) that still leaves a
    final map of at least :data:`MIN_FINAL_MAP` px; the lightest stem (stride 1, no max-pool)
    when none does. 224 px -> (2, True) (7x7 map, the standard stem); 112 -> (2, True) (4x4);
    56 -> (2, False) (4x4); 28 -> (1, False) (4x4); 14 -> (1, False) (2x2)."""
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise RecipeError(f"model input_size must be a positive int, got {input_size!r}")
    for stride, pool, _ in _STEMS:
        if final_map_size(input_size, stride, pool) >= MIN_FINAL_MAP:
            return stride, pool
    return 1, False


@MODELS.register("small_resnet")
def small_resnet(num_classes: int, in_channels: int = 3, norm: str = "group", groups: int = 32,
                 widths: tuple[int, ...] = (32, 64, 128, 256), stem_stride: int = 2,
                 stem_pool: bool = True, input_size: int | None = None) -> ResNetClassifier:
    """The paper's ResNet: BasicBlock (1, 1, 1, 1), widths 32/64/128/256, GroupNorm(32).

    ``input_size`` (the side of the images the model will see) chooses ``stem_stride`` and
    ``stem_pool`` with :func:`stem_for_input` (and overrides them): a resolution-aware student
    whose final map stays spatial, so eq. 3 compares maps rather than single vectors. The
    weights' shapes do not depend on the stem, only the map sizes and the compute do.
    """
    if input_size is not None:
        stem_stride, stem_pool = stem_for_input(input_size)
    return ResNetClassifier("basic", (1, 1, 1, 1), tuple(widths), num_classes, in_channels,
                            norm, groups, stem_stride, stem_pool)


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
