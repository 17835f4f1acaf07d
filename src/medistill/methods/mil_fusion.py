"""Weakly supervised segmentation with iterative fusion knowledge distillation on MIL
pseudo-labels (He, Li, Zemp, 2024, "Enhancing Weakly-Supervised Histopathology Image
Segmentation with Knowledge Distillation on MIL-Based Pseudo-Labels", arXiv:2407.10274).

The copy of the paper we work from (``shared/papers/ikd_mil_weakly_supervised_segmentation.md``)
carries the method's sections but not its equation numbers, so the terms are cited by section:

- :class:`MILTraining` (section 3.1, the MIL teacher): a :class:`MILSegmenter` trained from
  image labels only. Default (the authors' code): ``L_MIL = sum over {side maps, fused map}
  and images of the per-image Dice loss against the image label expanded to a full mask``
  (all ones on a tumour image, all zeros on a normal one;
  :class:`~medistill.losses.MILDiceLoss`). Options: ``mean over the maps of BCE(pool(map),
  y)`` with LSE / generalised-mean / top-k pooling (:class:`~medistill.losses.MILPoolingLoss`;
  our default before issue #12). The two prefer opposite maps: the Dice a diffuse one (the
  whole tumour image), the pooled BCE a focal one (a few confident pixels suffice), so the
  teachers' pseudo-labels differ in kind;
- :class:`FusionKD` (section 3.2, one distillation round): a student of the same architecture
  and a FROZEN teacher; ``L = L_fusion + lambda_wce * L_wce (+ mu * L_MIL)`` with the fusion-KD
  term ``L_fusion`` = mean over every student side map and its fused map of (soft Dice + soft
  BCE) to the teacher's FUSED soft map (:class:`~medistill.losses.FusionKDLoss`), and the
  weighted cross-entropy regulariser ``L_wce`` = BCE of the student's fused map to the teacher's
  fused PROBABILITY, weighted per pixel by ``(1 - |t - s|)^gamma``
  (:class:`~medistill.losses.AgreementWeightedBCE`; the authors' code casts the target to an
  integer, which floors it to background: not repeated here). ``mu`` (default 0) optionally
  keeps the image-label MIL loss on the student. The teacher is frozen for the whole round and
  its fused map is computed on every augmented batch (nothing is precomputed), so
  ``fusion.teacher_replay`` can store it for K augmentations per image at the start of the
  round and the batches carry it (``teacher_outputs``; :meth:`FusionKD.teacher_forward`);
- dynamic role reversal (section 3.2): :func:`decide_swap` compares teacher and student on
  the VALIDATION split (the authors' code uses the test split); the rounds are run by
  :class:`~medistill.pipelines.role_reversal.IterativeFusion`.

Validation (the scores the trainer selects on and role reversal compares) follows the test
protocol: tumour probability maps resized to the original mask size, Gaussian smoothing
(sigma in model-input pixels by default, as the authors), threshold 0.5, and the authors'
per-image F1 ``pixel_f1`` (the F1 of the image's own class: tumour on a tumour image,
background on a normal one), or ``pixel_f1_pos``, ``pixel_f1_positive`` (tumour class on every
image, all-or-nothing on negatives), ``iou``, ``dice``, ``image_auc`` (see
:mod:`medistill.metrics.weak_segmentation`).
"""

from __future__ import annotations

import torch

from medistill.errors import RecipeError
from medistill.losses import AgreementWeightedBCE, FusionKDLoss, MILDiceLoss, MILPoolingLoss
from medistill.methods.base import freeze, register_method, weighted_loss
from medistill.methods.segmentation import SegmentationMethod
from medistill.metrics.weak_scoring import weak_scores
from medistill.models.mil_segmenter import MILSegmenter

MILLoss = MILDiceLoss | MILPoolingLoss


def decide_swap(teacher_score: float, student_score: float, min_delta: float = 0.0) -> bool:
    """Role reversal: swap when the student's VALIDATION score beats the teacher's by more
    than ``min_delta``."""
    return bool(student_score > teacher_score + min_delta)


class WeakSegMethod(SegmentationMethod):
    """Validation of weakly supervised segmenters (see the module doc)."""

    threshold: float = 0.5
    sigma: float = 0.0
    sigma_at: str = "input"

    def _check(self, model: object, role: str) -> MILSegmenter:
        if not isinstance(model, MILSegmenter):
            raise RecipeError(f"{role}: weakly supervised methods need the 'mil_segmenter' "
                              f"model, got {type(model).__name__}")
        return model

    @torch.no_grad()
    def validation_metrics(self, loader, device: torch.device,
                           num_classes: int | None = None) -> dict[str, float]:
        return weak_scores(self.deployable(), loader.dataset, self.threshold, self.sigma,
                           device=device, sigma_at=self.sigma_at)


@register_method("mil_training")
class MILTraining(WeakSegMethod):
    """The MIL teacher (section 3.1): image labels only."""

    def __init__(self, model: MILSegmenter, mil: MILLoss | None = None,
                 threshold: float = 0.5, sigma: float = 0.0, sigma_at: str = "input") -> None:
        super().__init__()
        self.model = self._check(model, "model")
        self.mil = mil or MILDiceLoss()
        self.threshold, self.sigma, self.sigma_at = threshold, sigma, sigma_at

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        sides, fused = self.model.maps(batch["image"])
        from medistill.engine.distributed import global_batch
        sides, fused, label = global_batch(sides, fused, batch["label"])  # DDP: all ranks
        return {"loss": self.mil([*sides, fused], label)}

    def deployable(self) -> MILSegmenter:
        return self.model


@register_method("fusion_kd")
class FusionKD(WeakSegMethod):
    """One round of fusion KD from a frozen teacher (section 3.2)."""

    frozen_prefixes = ("teacher",)

    def __init__(self, teacher: MILSegmenter, student: MILSegmenter,
                 kd: FusionKDLoss | None = None, wce: AgreementWeightedBCE | None = None,
                 wce_weight: float = 1.0, mil: MILLoss | None = None,
                 mil_weight: float = 0.0, threshold: float = 0.5, sigma: float = 0.0,
                 sigma_at: str = "input") -> None:
        super().__init__()
        self.teacher = freeze(self._check(teacher, "teacher"))
        self.student = self._check(student, "student")
        self.kd = kd or FusionKDLoss()
        self.wce = wce or AgreementWeightedBCE()
        self.mil = mil or MILDiceLoss()
        self.wce_weight, self.mil_weight = float(wce_weight), float(mil_weight)
        self.threshold, self.sigma, self.sigma_at = threshold, sigma, sigma_at

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen teacher's fused soft map (what a teacher replay stores)."""
        return {"fused": self.teacher.maps(x)[1]}

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One step; the teacher's fused map is the batch's ``teacher_outputs`` when it
        carries them (``fusion.teacher_replay``), else computed."""
        x = batch["image"]
        stored = batch.get("teacher_outputs")
        target = (stored if stored is not None else self.teacher_forward(x))["fused"]
        sides, fused = self.student.maps(x)
        from medistill.engine.distributed import global_batch
        sides, fused, target, label = global_batch(sides, fused, target, batch["label"])
        out = {"fusion_kd": self.kd([*sides, fused], target), "wce": self.wce(fused, target)}
        terms = {"fusion_kd": out["fusion_kd"], "wce": self.wce_weight * out["wce"]}
        if self.mil_weight:
            out["mil"] = self.mil([*sides, fused], label)
            terms["mil"] = self.mil_weight * out["mil"]
        return weighted_loss(out, terms)

    def deployable(self) -> MILSegmenter:
        return self.student
