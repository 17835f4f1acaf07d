"""HLFD: hierarchical layer-selective feedback distillation for segmentation (Gorade et al.,
2023, arXiv:2311.16700), and the baselines it is compared with, in one configurable method.

The terms are named as in the paper (section 2.1 feature-level LFD, section 2.2 pixel-level
LFD, then the multi-task loss). The paper's equation numbers could not be checked offline
when this was written, so they are not quoted; the details follow the paper's text and, where
it is silent, the authors' code (``train_kd.py``, loss type ``recursive_feedback_ours``, and
``utils/loss_functions.py``; see ``shared/papers/README.md``), without its defects.

Total loss (multi-task loss), with lambda = 0.1 and beta = 0.9::

    L = L_seg + lambda * L_pixel + beta * L_feature
    L_feature = 0.5 * UFD + 0.5 * sum_{l in student middle layers} IFD_l
    L_pixel   = 0.5 * UPD + 0.5 * sum_{l in student intermediate decoder outputs} IPD_l
    L_seg     = 0.5 * focal (gamma 2, mean over pixels)
                + 0.5 * soft Dice (foreground, pooled over the batch, smooth 1)

(the 0.5 halves and the SUMS over layers are the authors'; :data:`TERM_WEIGHTS`). The
segmentation loss is :class:`FocalDiceLoss`.

Feature level (FLFD, section 2.1), attention transfer (:class:`AttentionTransfer`, p = 4),
each term ``mean over the batch of sum over positions (a_s - a_t)^2`` of L2-normalised
attention maps (the authors' reduction; beta = 0.9 is tuned for it: with a mean over positions
the terms would be H*W times smaller and practically off):

- ``ufd`` (UFD): the teacher's middle encoder layers are resized (bilinear) to the
  smallest of them, concatenated along the channels, and distilled into the student's EARLIEST
  encoder layer (compared at the student's size, as the authors do);
- ``ifd`` (IFD): the teacher's last encoder layer is distilled into each intermediate
  (middle) student encoder layer, compared at the teacher's size (the student map is resized,
  as in the authors' ``importance_maps_distillation``); the SUM over those layers.

Pixel level (PLFD, section 2.2), per-pixel KL over the classes at T = 4, times T^2, mean over
the pixels (:class:`PixelKL`; for 2 classes the authors' ``batchmean`` after ``view(-1, 2)``
is the same number):

- ``upd`` (UPD): the teacher's decoder maps, resized to the student's first decoder
  output and concatenated, pass through a 1x1 projection to class logits; the student's first
  decoder output passes through its own 1x1 projection; KL between the two;
- ``ipd`` (IPD): the teacher's final output into each intermediate student prediction: every
  decoder output after the first (UPD's) and before the last (the one the student's head
  reads), through its own 1x1 projection to class logits, upsampled bilinearly to the output
  size; the SUM over those outputs. (The authors' ResNet-18 U-Net has no full-size decoder
  stage; their ``d4, d3, d2`` are our ``dec2, dec3, dec4`` at the same scales.)

Baselines in the same class: ``logit`` (pixel KL between the final outputs, "logit KD") and
``at`` (attention transfer between the paired encoder layers, deepest with deepest, mean over
the pairs, compared at the teacher's size), each with weight 1 inside its level.

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
from medistill.losses.attention_transfer import Reduction
from medistill.methods.base import freeze, register_method, weighted_loss
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
#: weight of each term inside its level sum (L_feature or L_pixel): the authors' HLFD halves
TERM_WEIGHTS: dict[str, float] = {"ufd": 0.5, "ifd": 0.5, "upd": 0.5, "ipd": 0.5,
                                  "at": 1.0, "logit": 1.0}


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


@register_method("segmentation_kd")
class SegmentationKD(SegmentationMethod):
    """A student segmenter distilled from a frozen teacher with the chosen ``terms``.

    Args:
        teacher, student: :class:`Segmenter` models predicting the same classes.
        terms: any of ``ufd, ifd, upd, ipd`` (HLFD), ``logit``, ``at``.
        temperature: KL temperature T (4).
        p: attention-transfer exponent (4).
        pixel_weight, feature_weight: lambda (0.1) and beta (0.9).
        focal_weight, dice_weight, gamma: the segmentation loss (0.5, 0.5, 2).
        at_reduction: ``"sum"`` over positions (the authors', default) or ``"mean"`` (the
            Zagoruyko-Komodakis reduction, H*W times smaller; for comparison only).
    """

    frozen_prefixes = ("teacher",)

    def __init__(self, teacher: Segmenter, student: Segmenter,
                 terms: Sequence[str] = PRESETS["hlfd"], temperature: float = 4.0,
                 p: float = 4.0, pixel_weight: float = 0.1, feature_weight: float = 0.9,
                 focal_weight: float = 0.5, dice_weight: float = 0.5, gamma: float = 2.0,
                 threshold: float = 0.4, at_reduction: Reduction = "sum") -> None:
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
        # UFD compares at the student's size, IFD and AT at the teacher's (the authors' code)
        self.at_student_size = AttentionTransfer(p, at_reduction, resize="teacher")
        self.at_teacher_size = AttentionTransfer(p, at_reduction, resize="student")
        self.kl = PixelKL(temperature)
        self.weights = (float(pixel_weight), float(feature_weight))
        # 1x1 projections: trained parameters of the distiller (never of the loss)
        heads = []
        if "upd" in self.terms:
            heads.append(student.decoder_taps[0])
        if "ipd" in self.terms:
            heads += [t for t in self._ipd_taps() if t not in heads]
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
        return self.at_student_size(s[self.student.early], unified)

    def _ifd(self, s: dict, t: dict) -> torch.Tensor:
        final = t[self.teacher.final]
        return torch.stack([self.at_teacher_size(s[n], final) for n in self.student.middle]).sum()

    def _at(self, s: dict, t: dict) -> torch.Tensor:
        pairs = list(zip(reversed(self.student.encoder_taps), reversed(self.teacher.encoder_taps),
                         strict=False))
        return torch.stack([self.at_teacher_size(s[a], t[b]) for a, b in pairs]).mean()

    def _upd(self, s: dict, t: dict, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.student.decoder_taps[0]
        size = s[first].shape[-2:]
        unified = torch.cat([_resize(t[n], size) for n in self.teacher.decoder_taps], dim=1)
        assert self.teacher_projection is not None
        t_logits = self.teacher_projection(unified)
        probe = self.seg_loss(_resize(t_logits, mask.shape[-2:]), mask)
        return self.kl(self.student_heads[first](s[first]), t_logits.detach()), probe

    def _ipd_taps(self) -> tuple[str, ...]:
        taps = self.student.decoder_taps[1:-1]
        if not taps:
            raise RecipeError("IPD needs a student with at least 3 decoder outputs")
        return taps

    def _ipd(self, s: dict, t: dict) -> torch.Tensor:
        target = t["logits"]
        terms = [self.kl(_resize(self.student_heads[n](s[n]), target.shape[-2:]), target)
                 for n in self._ipd_taps()]
        return torch.stack(terms).sum()

    # -- the frozen teacher -------------------------------------------------------------------
    def teacher_taps(self) -> tuple[str, ...]:
        """The teacher taps the chosen terms read (what a teacher replay stores)."""
        t, taps = self.teacher, []
        for term, names in (("ufd", t.middle), ("ifd", (t.final,)), ("at", t.encoder_taps),
                            ("upd", t.decoder_taps), ("ipd", ("logits",)),
                            ("logit", ("logits",))):
            if term in self.terms:
                taps += [n for n in names if n not in taps]
        return tuple(taps)

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen teacher's :meth:`teacher_taps` on ``x``."""
        features = self.teacher.features(x)
        return {n: features[n] for n in self.teacher_taps()}

    # -- the method ---------------------------------------------------------------------------
    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One step; the teacher's taps are the batch's ``teacher_outputs`` when it carries
        them (a :class:`~medistill.data.seg_replay.SegReplayDataset`), else computed."""
        x, mask = batch["image"], batch["mask"]
        t = batch.get("teacher_outputs")
        if t is None:
            t = self.teacher_forward(x)
        s = self.student.features(x)
        from medistill.engine.distributed import global_batch
        s, t, mask = global_batch(s, t, mask)  # DDP: the loss of the global batch
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
        out["pixel"] = sum((TERM_WEIGHTS[k] * out[k] for k in PIXEL_TERMS if k in out), zero)
        out["feature"] = sum((TERM_WEIGHTS[k] * out[k] for k in FEATURE_TERMS if k in out), zero)
        pixel_w, feature_w = self.weights
        # one weighted term per KD term (lambda * w_k * L_k summed over k = lambda * L_pixel)
        terms = {"seg": out["seg"]}
        terms.update({k: pixel_w * TERM_WEIGHTS[k] * out[k] for k in PIXEL_TERMS if k in out})
        terms.update({k: feature_w * TERM_WEIGHTS[k] * out[k] for k in FEATURE_TERMS if k in out})
        if "upd_probe" in out:
            terms["upd_probe"] = out["upd_probe"]
        return weighted_loss(out, terms)

    def deployable(self) -> Segmenter:
        return self.student
