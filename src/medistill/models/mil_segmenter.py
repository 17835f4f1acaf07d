"""The MIL segmenter of weakly supervised segmentation (He, Li, Zemp, 2024, arXiv:2407.10274,
section 3.1): a classifier backbone with side outputs at several depths (a feature pyramid).

Each side tap (default ``layer1``, ``layer2``, ``layer3`` of a registered ResNet) goes through
its own 1x1 convolution to one tumour logit per position, is upsampled (bilinear) to the input
size and passed through a sigmoid; the side probability maps are fused by a weighted average
(fixed ``0.3 / 0.3 / 0.4`` as in the authors' code, or learnable: a softmax over one weight
per side). The model is binary: ``forward`` returns ONE channel, the logit of the fused
probability, at the input size, so the usual segmentation evaluation (sigmoid > threshold) and
export apply. :meth:`MILSegmenter.maps` returns the side and fused probability maps that the
MIL loss and fusion KD need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medistill.errors import RecipeError
from medistill.models.registry import MODELS
from medistill.models.segmenter import Segmenter

EPS = 1e-6
DEFAULT_WEIGHTS = (0.3, 0.3, 0.4)


def prob_to_logit(p: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 - p))`` with ``p`` clamped to ``[1e-6, 1 - 1e-6]``."""
    p = p.clamp(EPS, 1 - EPS)
    return torch.log(p) - torch.log1p(-p)


class MILSegmenter(Segmenter):
    """Backbone taps -> 1x1 heads -> upsample -> sigmoid -> weighted average.

    Args:
        num_classes: 1 or 2 (background / tumour); the output is always one channel.
        backbone: a registered classifier with ``taps(x)`` (e.g. ``small_resnet``, ``resnet18``).
        side_taps: three or more backbone taps, shallow to deep.
        fusion: ``"fixed"`` (``fusion_weights``, normalised to sum 1) or ``"learnable"``
            (softmax over per-side weights initialised from ``fusion_weights``).
        fusion_weights: one weight per side tap (default 0.3 / 0.3 / 0.4 for three taps;
            equal weights otherwise).
        backbone_kwargs: passed to the backbone factory (e.g. ``{norm: group}``).
    """

    decoder_taps: tuple[str, ...] = ()

    def __init__(self, num_classes: int = 2, backbone: str = "small_resnet",
                 side_taps: Sequence[str] = ("layer1", "layer2", "layer3"),
                 fusion: str = "fixed", fusion_weights: Sequence[float] | None = None,
                 backbone_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if num_classes not in (1, 2):
            raise RecipeError(f"the MIL segmenter is binary (1 or 2 classes), got {num_classes}")
        if len(side_taps) < 3:
            raise RecipeError(f"model side_taps: need 3 or more taps, got {list(side_taps)}")
        if fusion not in ("fixed", "learnable"):
            raise RecipeError(f"model fusion must be 'fixed' or 'learnable', got {fusion!r}")
        net = MODELS.create(backbone, num_classes=1, **(backbone_kwargs or {}))
        names = getattr(net, "tap_names", ())
        bad = [t for t in side_taps if t not in names]
        if not hasattr(net, "taps") or bad:
            raise RecipeError(f"model backbone {backbone!r} has no taps {bad or list(side_taps)}"
                              f" (it has {list(names)})")
        self.backbone = net
        self.encoder_taps = tuple(side_taps)
        with torch.no_grad():
            was = net.training
            probe = net.eval().taps(torch.zeros(1, 3, 64, 64))
            net.train(was)
        self.tap_channels = {t: int(probe[t].shape[1]) for t in side_taps}
        self.heads = nn.ModuleDict({t: nn.Conv2d(c, 1, 1) for t, c in self.tap_channels.items()})
        if fusion_weights is None:
            fusion_weights = DEFAULT_WEIGHTS if len(side_taps) == 3 else [1.0] * len(side_taps)
        w = torch.tensor([float(v) for v in fusion_weights])
        if w.numel() != len(side_taps) or (w <= 0).any():
            raise RecipeError(f"model fusion_weights: need {len(side_taps)} positive weights, "
                              f"got {list(fusion_weights)}")
        w = w / w.sum()
        self.fusion = fusion
        if fusion == "learnable":
            self.fusion_logits = nn.Parameter(w.log())
        else:
            self.register_buffer("fixed_weights", w)
        self.num_classes = 1

    def fusion_weights(self) -> torch.Tensor:
        """The current (normalised) fusion weights, one per side tap."""
        if self.fusion == "learnable":
            return torch.softmax(self.fusion_logits, 0)
        return self.fixed_weights

    def side_logits(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """(backbone taps, side logits (N, 1, H, W) at the input size, shallow to deep)."""
        taps = self.backbone.taps(x)
        size = x.shape[-2:]
        sides = [F.interpolate(self.heads[t](taps[t]), size=size, mode="bilinear",
                               align_corners=False) for t in self.encoder_taps]
        return taps, sides

    def maps(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(side probability maps, fused probability map), each (N, 1, H, W) in [0, 1]."""
        _, sides = self.side_logits(x)
        probs = [torch.sigmoid(s) for s in sides]
        w = self.fusion_weights()
        fused = sum(wi * p for wi, p in zip(w, probs, strict=True))
        return probs, fused

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        taps, sides = self.side_logits(x)
        out = {t: taps[t] for t in self.encoder_taps}
        w = self.fusion_weights()
        fused = sum(wi * torch.sigmoid(s) for wi, s in zip(w, sides, strict=True))
        out["logits"] = prob_to_logit(fused)
        return out


@MODELS.register("mil_segmenter")
def mil_segmenter(num_classes: int = 2, backbone: str = "small_resnet",
                  side_taps: Sequence[str] = ("layer1", "layer2", "layer3"),
                  fusion: str = "fixed", fusion_weights: Sequence[float] | None = None,
                  backbone_kwargs: dict[str, Any] | None = None) -> MILSegmenter:
    """MIL segmenter on any registered classifier backbone with taps (binary, 1 channel)."""
    return MILSegmenter(num_classes, backbone, side_taps, fusion, fusion_weights,
                        backbone_kwargs)


mil_segmenter.task = "segmentation"  # type: ignore[attr-defined]
mil_segmenter.binary_only = True  # type: ignore[attr-defined]  (one output channel)
