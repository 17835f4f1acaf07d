"""Weakly supervised (MIL) segmentation: trained from image labels, scored on masks
(MIL fusion). Its card says ``task: segmentation`` (it is deployed as a segmenter) and
``weak: true``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medistill.tasks.base import MetricColumn, Task, register_task
from medistill.tasks.segmentation import SegmentationCard


class WeakSegmentationCard(SegmentationCard):
    weak: Literal[True] = True
    sigma: float = Field(0.0, ge=0, description="Gaussian smoothing of the probability map")
    sigma_at: Literal["input", "original"] = "original"  # as old files are read


WEAK_SEGMENTATION = register_task(Task(
    "weak_segmentation", WeakSegmentationCard,
    columns=(MetricColumn("pixel_f1", "pixel F1"), MetricColumn("pixel_f1_pos", "F1 positives"),
             MetricColumn("pixel_f1_positive", "tumour F1, all", 14, ci=False),
             MetricColumn("image_auc", "image AUC", 9, ci=False)),
    export_keys=("threshold", "sigma", "sigma_at", "weak")))
