"""Weakly supervised (MIL) segmentation: trained from image labels, scored on masks
(MIL fusion). Its card says ``task: segmentation`` (it is deployed as a segmenter) and
``weak: true``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medistill.tasks.base import Task, register_task
from medistill.tasks.segmentation import SegmentationCard


class WeakSegmentationCard(SegmentationCard):
    weak: Literal[True] = True
    sigma: float = Field(0.0, ge=0, description="Gaussian smoothing of the probability map")
    sigma_at: Literal["input", "original"] = "original"  # as old files are read


WEAK_SEGMENTATION = register_task(Task(
    "weak_segmentation", WeakSegmentationCard,
    columns=("pixel_f1", "pixel_f1_pos", "iou", "dice", "image_auc"),
    export_keys=("threshold", "sigma", "sigma_at", "weak")))
