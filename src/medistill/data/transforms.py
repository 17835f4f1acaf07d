"""Resolution degradation and paired augmentation.

Degradation follows DiPalma et al. (2021), section 4.1: every low-resolution version is made
directly from the ORIGINAL image with a Lanczos filter, never by composing downsamplings.

Augmentation follows section 3.2 (flips, 90-degree rotations, brightness / contrast /
saturation / hue jitter). It is applied with the SAME random parameters to every view of a
sample (teacher and student see the same augmented image at two resolutions). Because flips,
rotations and the colour operations used here are (up to clipping) linear per pixel, applying
them after the Lanczos resize equals resizing the augmented original, which lets the degraded
views be computed once and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from medistill.errors import RecipeError


def degraded_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """Size of an image downsampled by ``factor`` (at least 1 px per side)."""
    return max(1, round(height / factor)), max(1, round(width / factor))


def lanczos_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, C) ``uint8`` image to ``size`` = (H, W) with a Lanczos filter."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.LANCZOS))


@dataclass(frozen=True)
class ResolutionView:
    """One resolution of an image.

    Args:
        factor: downsampling factor relative to the original image (1 = original).
        mpp: alternatively, a target resolution in microns per pixel; needs ``source_mpp``.
        source_mpp: the original images' microns per pixel.
        upsample: resize the degraded image back up to the original size (bilinear), as used
            when a model needs a fixed input size.
    """

    factor: float = 1.0
    mpp: float | None = None
    source_mpp: float | None = None
    upsample: bool = False

    def __post_init__(self) -> None:
        if self.mpp is not None:
            if not self.source_mpp:
                raise RecipeError("view.mpp needs data.source_mpp (microns per pixel of the data)")
            object.__setattr__(self, "factor", self.mpp / self.source_mpp)
        if not self.factor >= 1.0:
            raise RecipeError(f"view.factor must be >= 1 (downsampling only), got {self.factor}")

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        return (height, width) if self.upsample else degraded_size(height, width, self.factor)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        small = lanczos_resize(image, degraded_size(h, w, self.factor))
        if self.upsample and small.shape[:2] != (h, w):
            return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))
        return small


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 -> (C, H, W) float32 in [0, 1]."""
    if not image.flags.writeable:
        image = image.copy()
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


@dataclass(frozen=True)
class Augment:
    """Random flips, 90-degree rotations and colour jitter, shared by all views of a sample.

    Jitter strengths follow torchvision's ColorJitter convention: brightness/contrast/saturation
    factors are drawn from [1 - s, 1 + s]; hue from [-h, h] turns of the colour wheel (a rotation
    of the chroma plane in YIQ space, a linear map).
    """

    flip: bool = True
    rotate90: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02

    def sample_params(self, rng: np.random.Generator) -> dict[str, float]:
        def jitter(s: float) -> float:
            return float(rng.uniform(1 - s, 1 + s)) if s > 0 else 1.0

        return {
            "hflip": bool(self.flip and rng.random() < 0.5),
            "vflip": bool(self.flip and rng.random() < 0.5),
            "rot": int(rng.integers(0, 4)) if self.rotate90 else 0,
            "brightness": jitter(self.brightness),
            "contrast": jitter(self.contrast),
            "saturation": jitter(self.saturation),
            "hue": float(rng.uniform(-self.hue, self.hue)) if self.hue > 0 else 0.0,
        }

    @staticmethod
    def apply(x: torch.Tensor, p: dict[str, float]) -> torch.Tensor:
        """Apply sampled parameters to a (C, H, W) float image in [0, 1]."""
        if p["hflip"]:
            x = x.flip(-1)
        if p["vflip"]:
            x = x.flip(-2)
        if p["rot"]:
            x = torch.rot90(x, int(p["rot"]), dims=(-2, -1))
        if x.shape[0] != 3:
            return x.contiguous()
        return color_jitter(x, p["brightness"], p["contrast"], p["saturation"], p["hue"])


def color_jitter(
    x: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float
) -> torch.Tensor:
    """Brightness, contrast, saturation factors and a hue rotation (turns) of a (3, H, W) image
    in [0, 1], clamped to [0, 1]. Factors of 1 and hue 0 leave the image unchanged."""
    x = x * brightness
    gray = (_RGB_TO_YIQ[0].view(3, 1, 1) * x).sum(0, keepdim=True)
    x = (x - gray.mean()) * contrast + gray.mean()
    gray = (_RGB_TO_YIQ[0].view(3, 1, 1) * x).sum(0, keepdim=True)
    x = (x - gray) * saturation + gray
    if hue:
        a = 2 * math.pi * hue
        c, s = math.cos(a), math.sin(a)
        rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
        m = _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ
        x = torch.einsum("ij,jhw->ihw", m, x)
    return x.clamp_(0.0, 1.0).contiguous()


# -- batched augmentation: one call per batch, per-sample parameters ------------------------

#: the keys of one sample's parameters (:meth:`Augment.sample_params`)
PARAM_KEYS = ("hflip", "vflip", "rot", "brightness", "contrast", "saturation", "hue")


def stack_params(params: list[dict[str, float]]) -> dict[str, torch.Tensor]:
    """Per-sample parameter dicts -> one (B,) tensor per key (flips bool, ``rot`` int64,
    colour float32): the form :func:`augment_batch` takes."""
    out = {k: torch.tensor([p[k] for p in params], dtype=torch.bool) for k in ("hflip", "vflip")}
    out["rot"] = torch.tensor([int(p["rot"]) for p in params], dtype=torch.int64)
    for k in PARAM_KEYS[3:]:
        out[k] = torch.tensor([p[k] for p in params], dtype=torch.float32)
    return out


_PERMUTATIONS: dict[tuple[int, int], torch.Tensor] = {}


def _dihedral_permutations(height: int, width: int) -> torch.Tensor:
    """(16, H*W) source pixel of every output pixel for each (hflip, vflip, rot) code
    ``hflip + 2 vflip + 4 rot`` (row -1 where an odd rotation of a non-square image changes
    its shape)."""
    key = (height, width)
    if key not in _PERMUTATIONS:
        grid = torch.arange(height * width).view(height, width)
        rows = []
        for code in range(16):
            y = grid.flip(-1) if code & 1 else grid
            y = y.flip(-2) if code & 2 else y
            y = torch.rot90(y, code >> 2, dims=(-2, -1))
            rows.append(y.flatten() if y.shape == grid.shape else torch.full_like(grid, -1
                                                                                  ).flatten())
        _PERMUTATIONS[key] = torch.stack(rows)
    return _PERMUTATIONS[key]


def dihedral_batch(x: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor,
                   rot: torch.Tensor) -> torch.Tensor:
    """Per-sample flips and 90-degree rotations of a (B, C, H, W) batch, in the order of
    :meth:`Augment.apply` (horizontal flip, vertical flip, then ``rot`` x 90 degrees): one
    gather with each sample's pixel permutation, so each sample equals its per-sample result
    exactly, and no per-sample operation."""
    code = hflip.long() + 2 * vflip.long() + 4 * (rot.long() % 4)
    if not bool(code.any()):
        return x
    b, c, h, w = x.shape
    perm = _dihedral_permutations(h, w)[code]
    if bool((perm[:, 0] < 0).any()):
        raise ValueError(f"90-degree rotations of a batch need square images, got {(h, w)}")
    return x.reshape(b, c, h * w).gather(2, perm.unsqueeze(1).expand(b, c, h * w)
                                         ).view(b, c, h, w)


def color_jitter_batch(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                       saturation: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """:func:`color_jitter` for a (B, 3, H, W) batch with (B,) factors, as ONE affine map per
    sample before the clamp: with luma weights ``l`` and ``m = b * mean(l . x)``, the steps
    ``b x``, ``c (.) + (1 - c) m``, saturation ``S = s I + (1 - s) 1 l^T`` and the hue rotation
    ``H`` (identity where hue is 0) compose to ``(c b H S) x + (1 - c) m H S 1``. Equal to the
    per-sample results up to float rounding (~1e-6)."""
    n = x.shape[0]
    luma = _RGB_TO_YIQ[0].to(x.dtype)
    flat = x.reshape(n, 3, -1)
    b, c, s = (v.to(x.dtype) for v in (brightness, contrast, saturation))
    m = b * (flat.mean(2) @ luma)  # (B,): the mean gray after the brightness factor
    eye = torch.eye(3, dtype=x.dtype)
    sat = s.view(-1, 1, 1) * eye + (1 - s).view(-1, 1, 1) * luma.view(1, 1, 3)  # rows: 1 l^T
    a = 2 * math.pi * hue.double()
    cos, sin = torch.cos(a).to(x.dtype), torch.sin(a).to(x.dtype)
    rot = eye.repeat(n, 1, 1)
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    turn = torch.where((hue != 0).view(-1, 1, 1),
                       _YIQ_TO_RGB.to(x.dtype) @ rot @ _RGB_TO_YIQ.to(x.dtype), eye)
    hs = turn @ sat
    matrix = (c * b).view(-1, 1, 1) * hs
    offset = ((1 - c) * m).view(-1, 1) * hs.sum(2)
    out = torch.baddbmm(offset.unsqueeze(2), matrix, flat)
    return out.view_as(x).clamp_(0.0, 1.0)


def augment_batch(images: torch.Tensor, params: dict[str, torch.Tensor] | None,
                  mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 images -> augmented (``params`` as :func:`stack_params` gives, None:
    none) and normalised float32, the batched form of what
    :class:`~medistill.data.PairedViewDataset` does per sample (``to_tensor``,
    :meth:`Augment.apply`, ``(x - mean) / std``). The flips/rotations permute the uint8
    pixels (a quarter of the bytes; exact, so the same values as permuting the floats) and the
    normalisation is in place: the same results as the out-of-place form, bit for bit."""
    if params is not None:
        images = dihedral_batch(images, params["hflip"], params["vflip"], params["rot"])
    x = images.float().div_(255.0)
    if params is not None and x.shape[1] == 3:
        x = color_jitter_batch(x, params["brightness"], params["contrast"],
                               params["saturation"], params["hue"])
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
