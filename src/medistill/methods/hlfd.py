"""HLFD: hierarchical layer-selective feedback distillation for segmentation (Gorade et al.,
2023, arXiv:2311.16700), and the baselines it is compared with, in one configurable method.

The terms are named as in the paper (section 2.1 feature-level LFD, section 2.2 pixel-level
LFD, then the multi-task loss). The paper's equation numbers could not be checked offline
when this was written, so they are not quoted; the details follow the paper's text and the
authors' code (see ``shared/papers/README.md``), without its two defects.

Total loss (multi-task loss): ``L = L_seg + lambda * L_pixel + beta * L_feature`` with
lambda = 0.1, beta = 0.9 and ``L_seg = 0.5 * focal (gamma 2) + 0.5 * soft Dice``.

Feature level (FLFD, section 2.1), attention transfer (:class:`AttentionTransfer`, p = 4):

- ``ufd`` (UFD): the teacher's middle encoder layers are resized (bilinear) to the
  smallest of them, concatenated along the channels, and distilled into the student's EARLIEST
  encoder layer;
- ``ifd`` (IFD): the teacher's last encoder layer is distilled into each intermediate
  (middle) student encoder layer (mean over those layers).

Pixel level (PLFD, section 2.2), per-pixel KL over the classes at T = 4, times T^2
(:class:`PixelKL`):

- ``upd`` (UPD): the teacher's decoder maps, resized to the student's first decoder
  output and concatenated, pass through a 1x1 projection to class logits; the student's first
  decoder output passes through its own 1x1 projection; KL between the two;
- ``ipd`` (IPD): the teacher's final output into each intermediate student prediction
  (every decoder output but the last through its own 1x1 projection to class logits,
  upsampled bilinearly to the output size; mean over those outputs).

Baselines in the same class: ``logit`` (pixel KL between the final outputs, "logit KD") and
``at`` (attention transfer between the paired encoder layers, deepest with deepest, mean).

Every 1x1 projection is a parameter of THIS module, created once in ``__init__``, trained by
the optimiser and saved in training checkpoints (the authors' code creates them inside the
loss at every call, so they are random and never trained). The teacher-side UPD projection
would collapse if it were trained on the KL alone (both sides could agree on a constant), so it
is trained as a probe on the frozen teacher's features with the segmentation loss against the
labels (reported as ``upd_probe`` and added to the loss; it cannot reach the student), and its
output is a constant target for the student. :meth:`deployable` returns the student only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medistill.errors import RecipeError
from medistill.losses import AttentionTransfer, FocalDiceLoss, PixelKL
from medistill.methods.base import freeze, weighted_loss
from medistill.methods.segmentation import SegmentationMethod
from medistill.models.segmenter import Segmenter

FEATURE_TERMS = ("ufd", "ifd", "at")
PIXEL_TERMS = ("upd", "ipd", "logit")
KD_TERMS = FEATURE_TERMS + PIXEL_TERMS
#: run name -> distillation terms
PRESETS: dict[str, tuple[str, ...]] = {
    "hlfd": ("ufd", "ifd", "upd", "ipd"),
    "logit_kd": ("logit",),
    "at": ("at",),
}


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SegmentationKD(SegmentationMethod):
    """A student segmenter distilled from a frozen teacher with the chosen ``terms``.

    Args:
        teacher, student: :class:`Segmenter` models predicting the same classes.
        terms: any of ``ufd, ifd, upd, ipd`` (HLFD), ``logit``, ``at``.
        temperature: KL temperature T (4).
        p: attention-transfer exponent (4).
        pixel_weight, feature_weight: lambda (0.1) and beta (0.9).
    """

    frozen_prefixes = ("teacher",)

    def __init__(self, teacher: Segmenter, student: Segmenter,
                 terms: Sequence[str] = PRESETS["hlfd"], temperature: float = 4.0,
                 p: float = 4.0, pixel_weight: float = 0.1, feature_weight: float = 0.9,
                 focal_weight: float = 0.5, dice_weight: float = 0.5, gamma: float = 2.0,
                 threshold: float = 0.4) -> None:
        super().__init__()
        bad = [t for t in terms if t not in KD_TERMS]
        if bad or not terms:
            raise RecipeError(f"kd terms: unknown {bad or 'empty list'}; choose from "
                              + ", ".join(KD_TERMS))
        if teacher.num_classes != student.num_classes:
            raise RecipeError(f"teacher predicts {teacher.num_classes} classes but the student "
                              f"{student.num_classes}")
        if not student.middle or not teacher.middle:
            raise RecipeError("HLFD needs models with at least 3 encoder taps")
        self.teacher = freeze(teacher)
        self.student = student
        self.terms = tuple(terms)
        self.threshold = threshold
        k = student.num_classes
        self.seg_loss = FocalDiceLoss(focal_weight, dice_weight, gamma)
        self.at = AttentionTransfer(p)
        self.kl = PixelKL(temperature)
        self.weights = (float(pixel_weight), float(feature_weight))
        # 1x1 projections: trained parameters of the distiller (never of the loss)
        heads = []
        if "upd" in self.terms:
            heads.append(student.decoder_taps[0])
        if "ipd" in self.terms:
            heads += [t for t in student.decoder_taps[:-1] if t not in heads]
        self.student_heads = nn.ModuleDict(
            {t: nn.Conv2d(student.tap_channels[t], k, 1) for t in heads})
        self.teacher_projection: nn.Module | None = None
        if "upd" in self.terms:
            c = sum(teacher.tap_channels[t] for t in teacher.decoder_taps)
            self.teacher_projection = nn.Conv2d(c, k, 1)

    # -- the terms ----------------------------------------------------------------------------
    def _ufd(self, s: dict, t: dict) -> torch.Tensor:
        mids = [t[n] for n in self.teacher.middle]
        size = min((m.shape[-2:] for m in mids), key=lambda hw: hw[0] * hw[1])
        unified = torch.cat([_resize(m, size) for m in mids], dim=1)
        return self.at(s[self.student.early], unified)

    def _ifd(self, s: dict, t: dict) -> torch.Tensor:
        final = t[self.teacher.final]
        return torch.stack([self.at(s[n], final) for n in self.student.middle]).mean()

    def _at(self, s: dict, t: dict) -> torch.Tensor:
        pairs = list(zip(reversed(self.student.encoder_taps), reversed(self.teacher.encoder_taps),
                         strict=False))
        return torch.stack([self.at(s[a], t[b]) for a, b in pairs]).mean()

    def _upd(self, s: dict, t: dict, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.student.decoder_taps[0]
        size = s[first].shape[-2:]
        unified = torch.cat([_resize(t[n], size) for n in self.teacher.decoder_taps], dim=1)
        assert self.teacher_projection is not None
        t_logits = self.teacher_projection(unified)
        probe = self.seg_loss(_resize(t_logits, mask.shape[-2:]), mask)
        return self.kl(self.student_heads[first](s[first]), t_logits.detach()), probe

    def _ipd(self, s: dict, t: dict) -> torch.Tensor:
        target = t["logits"]
        terms = [self.kl(_resize(self.student_heads[n](s[n]), target.shape[-2:]), target)
                 for n in self.student.decoder_taps[:-1]]
        return torch.stack(terms).mean()

    # -- the method ---------------------------------------------------------------------------
    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        x, mask = batch["image"], batch["mask"]
        with torch.no_grad():
            t = self.teacher.features(x)
        s = self.student.features(x)
        out = {"seg": self.seg_loss(s["logits"], mask)}
        zero = out["seg"].new_zeros(())
        if "ufd" in self.terms:
            out["ufd"] = self._ufd(s, t)
        if "ifd" in self.terms:
            out["ifd"] = self._ifd(s, t)
        if "at" in self.terms:
            out["at"] = self._at(s, t)
        if "upd" in self.terms:
            out["upd"], out["upd_probe"] = self._upd(s, t, mask)
        if "ipd" in self.terms:
            out["ipd"] = self._ipd(s, t)
        if "logit" in self.terms:
            out["logit"] = self.kl(s["logits"], t["logits"])
        out["pixel"] = sum((out[k] for k in PIXEL_TERMS if k in out), zero)
        out["feature"] = sum((out[k] for k in FEATURE_TERMS if k in out), zero)
        pixel_w, feature_w = self.weights
        # one weighted term per KD term (lambda * L_upd + lambda * L_ipd = lambda * L_pixel)
        terms = {"seg": out["seg"]}
        terms.update({k: pixel_w * out[k] for k in PIXEL_TERMS if k in out})
        terms.update({k: feature_w * out[k] for k in FEATURE_TERMS if k in out})
        if "upd_probe" in out:
            terms["upd_probe"] = out["upd_probe"]
        return weighted_loss(out, terms)

    def deployable(self) -> Segmenter:
        return self.student
