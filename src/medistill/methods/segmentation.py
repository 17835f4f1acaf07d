"""Supervised segmentation (the teacher and the no-KD student) and the shared validation.

Batches are ``{"image": (N, 3, H, W), "mask": (N, H, W) long, "index": (N,)}`` from
:class:`~medistill.data.segmentation.SegmentationDataset`. Validation scores are the mean
per-case Dice over the foreground classes (``dice``, the metric a recipe selects on) and the
mean IoU, computed by the same routine as the final evaluation (at the original mask size;
:func:`medistill.tasks.segmentation.validation_scores`); binary masks are thresholded at 0.4
(see :func:`~medistill.metrics.segmentation.logits_to_labels`).
"""

from __future__ import annotations

import numpy as np
import torch

from medistill.losses import FocalDiceLoss
from medistill.methods.base import Method, register_method
from medistill.metrics.segmentation import logits_to_labels
from medistill.models.segmenter import Segmenter


class SegmentationMethod(Method):
    """Base for segmentation methods: ``predict`` and ``validation_metrics`` on ``student``."""

    threshold: float = 0.4

    def deployable(self) -> Segmenter:
        raise NotImplementedError

    def predict(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.deployable()(batch["image"]), batch["mask"]

    @torch.no_grad()
    def sample_overlays(self, batch: dict) -> tuple[np.ndarray, str] | None:
        """The images with the ground truth and the prediction (at the method's
        ``threshold``) outlined (:func:`medistill.engine.samples.mask_samples`)."""
        from medistill.engine.samples import mask_samples

        logits, masks = self.predict(batch)
        pred = logits_to_labels(logits, self.threshold).cpu().numpy()
        return mask_samples(batch["image"], pred, masks.cpu().numpy())

    @torch.no_grad()
    def validation_metrics(self, loader, device: torch.device,
                           num_classes: int | None = None) -> dict[str, float]:
        """The final evaluation's Dice / IoU on the validation set (the segmentation task's
        one routine: at the ORIGINAL mask size, items of a case stacked), not on the resized
        masks of the batches."""
        from medistill.tasks.segmentation import validation_scores

        return validation_scores(self.deployable(), loader.dataset, self.threshold, device)


@register_method("seg_supervised")
class SegSupervised(SegmentationMethod):
    """``0.5 * focal + 0.5 * soft Dice`` on the labels (the teacher; the student without KD)."""

    def __init__(self, model: Segmenter, focal_weight: float = 0.5, dice_weight: float = 0.5,
                 gamma: float = 2.0, threshold: float = 0.4) -> None:
        super().__init__()
        self.model = model
        self.seg_loss = FocalDiceLoss(focal_weight, dice_weight, gamma)
        self.threshold = threshold

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        from medistill.engine.distributed import global_batch
        logits, mask = global_batch(self.model(batch["image"]), batch["mask"])  # DDP: all ranks
        return {"loss": self.seg_loss(logits, mask)}

    def deployable(self) -> Segmenter:
        return self.model
