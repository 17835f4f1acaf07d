"""Self-supervised augmentations of "More From Less" (Farndale et al., 2023, Table S1).

| augmentation                | probability |
|-----------------------------|-------------|
| flip (left/right, up/down)  | 1.0         |
| crop (scale 75 % to 100 %)  | 1.0         |
| Gaussian background noise   | 0.3         |
| rotation                    | 0.4         |
| solarize                    | 0.3         |
| colour jitter               | 1.0         |

The table gives the operations and their probabilities, not their strengths; the strengths here
are our choices and configurable. "Flip, p = 1" means a random flip is drawn every time (each
axis flipped with probability 1/2). Rotations are by 90, 180 or 270 degrees (no border to fill).
The crop keeps a random fraction of the area in [0.75, 1] with an aspect ratio in [3/4, 4/3]
and is resized back to the input size (bilinear), as in RandomResizedCrop.

The protocol of :class:`~medistill.data.transforms.Augment`: ``sample_params(rng)`` draws the
random parameters, ``apply(x, params)`` applies them to a (C, H, W) float image in [0, 1]. With
``PairedViewDataset(..., independent_views=True)`` every view of a sample gets its own draw, as
VICReg and SimCLR need (two views of one image that differ by augmentation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medistill.data.transforms import color_jitter
from medistill.errors import RecipeError


@dataclass(frozen=True)
class SSLAugment:
    """Table S1 augmentations with configurable probabilities and strengths."""

    flip: bool = True
    crop_scale: tuple[float, float] = (0.75, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    p_crop: float = 1.0
    p_noise: float = 0.3
    noise_std: float = 0.05
    p_rotate: float = 0.4
    p_solarize: float = 0.3
    solarize_threshold: float = 0.5
    p_jitter: float = 1.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05

    def __post_init__(self) -> None:
        for name in ("p_crop", "p_noise", "p_rotate", "p_solarize", "p_jitter"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise RecipeError(f"ssl_augment.{name} must be in [0, 1], got {value}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise RecipeError(f"ssl_augment.crop_scale must satisfy 0 < low <= high <= 1, "
                              f"got {self.crop_scale}")

    def sample_params(self, rng: np.random.Generator) -> dict[str, Any]:
        def jitter(s: float) -> float:
            return float(rng.uniform(1 - s, 1 + s)) if s > 0 else 1.0

        crop = None
        if rng.random() < self.p_crop:
            area = rng.uniform(*self.crop_scale)
            lo, hi = (math.log(r) for r in self.crop_ratio)
            ratio = math.exp(rng.uniform(lo, hi))
            # fractions of the height and width kept, then the top-left corner (as fractions)
            fh, fw = min(1.0, math.sqrt(area / ratio)), min(1.0, math.sqrt(area * ratio))
            crop = (fh, fw, float(rng.uniform(0, 1 - fh)), float(rng.uniform(0, 1 - fw)))
        jittered = rng.random() < self.p_jitter
        return {
            "crop": crop,
            "hflip": bool(self.flip and rng.random() < 0.5),
            "vflip": bool(self.flip and rng.random() < 0.5),
            "rot": int(rng.integers(1, 4)) if rng.random() < self.p_rotate else 0,
            "jitter": (jitter(self.brightness), jitter(self.contrast), jitter(self.saturation),
                       float(rng.uniform(-self.hue, self.hue)) if self.hue > 0 else 0.0)
            if jittered else None,
            "solarize": bool(rng.random() < self.p_solarize),
            "noise_seed": int(rng.integers(2**31)) if rng.random() < self.p_noise else None,
        }

    def apply(self, x: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        """Apply sampled parameters to a (C, H, W) float image in [0, 1]."""
        h, w = x.shape[-2:]
        if p["crop"] is not None:
            fh, fw, top, left = p["crop"]
            ch, cw = max(1, round(fh * h)), max(1, round(fw * w))
            y0, x0 = min(h - ch, round(top * h)), min(w - cw, round(left * w))
            x = x[:, y0 : y0 + ch, x0 : x0 + cw]
            if (ch, cw) != (h, w):
                x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        if p["hflip"]:
            x = x.flip(-1)
        if p["vflip"]:
            x = x.flip(-2)
        if p["rot"]:
            x = torch.rot90(x, p["rot"], dims=(-2, -1))
        if p["jitter"] is not None and x.shape[0] == 3:
            x = color_jitter(x, *p["jitter"])
        if p["solarize"]:
            x = torch.where(x >= self.solarize_threshold, 1.0 - x, x)
        if p["noise_seed"] is not None:
            g = torch.Generator().manual_seed(p["noise_seed"])
            x = x + self.noise_std * torch.randn(x.shape, generator=g)
        return x.clamp(0.0, 1.0).contiguous()
