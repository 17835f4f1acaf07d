"""Semantic segmentation: a class per pixel (HLFD)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from medistill.data.segmentation import SegItem, SegmentationDataset
from medistill.metrics.segmentation import (
    logits_to_labels,
    multiclass_case_metrics,
    segmentation_report,
)
from medistill.tasks.base import IDENTITY_VIEW, MetricColumn, ModelCard, Task, register_task


class SegmentationCard(ModelCard):
    task: Literal["segmentation"] = "segmentation"
    view: dict[str, Any] = Field(default_factory=lambda: dict(IDENTITY_VIEW), description=(
        "how an original image becomes the input (medistill.data.views.view_from_spec)"))
    threshold: float = Field(0.4, description="binary foreground probability threshold")
    data: dict[str, Any] = Field({}, description="the data settings without the root")


SEGMENTATION = register_task(Task(
    "segmentation", SegmentationCard,
    columns=(MetricColumn("dice", "DSC"), MetricColumn("rvd", "RVD", 24),
             MetricColumn("voe", "VOE", 6, ci=False), MetricColumn("hd95", "HD95", 7, ci=False,
                                                                   digits=2)),
    export_keys=("threshold",)))


# ---- the ONE inference routine and metric path (validation and the final evaluation) ----


@torch.no_grad()
def predict_masks(model: torch.nn.Module, dataset: SegmentationDataset, threshold: float = 0.4,
                  batch_size: int = 8, device: torch.device | str = "cpu") -> list[np.ndarray]:
    """The predicted (H, W) uint8 class mask of every item, at its ORIGINAL size: the model
    sees the image resized to the dataset's ``image_size`` (as in training); its logits are
    resized back (bilinear) before thresholding. The model must be on ``device``."""
    model = model.eval()
    preds: list[np.ndarray] = []
    step = batch_size if dataset.image_size else 1
    for start in range(0, len(dataset), step):
        idx = range(start, min(start + step, len(dataset)))
        x = torch.stack([dataset[i]["image"] for i in idx])
        logits = model(x.to(device)).float().cpu()
        for j, i in enumerate(idx):
            h, w = dataset.pair(i)[1].shape
            lg = F.interpolate(logits[j : j + 1], size=(h, w), mode="bilinear",
                               align_corners=False)
            preds.append(logits_to_labels(lg, threshold)[0].numpy().astype(np.uint8))
    return preds


def case_arrays(items: Sequence[SegItem], masks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Masks grouped by case id: one 2-D mask, or the item masks stacked to 3-D."""
    groups: dict[str, list[np.ndarray]] = {}
    for item, m in zip(items, masks, strict=True):
        groups.setdefault(item.case_id, []).append(m)
    return {k: v[0] if len(v) == 1 else np.stack(v, axis=-1) for k, v in groups.items()}


def case_metrics(model: torch.nn.Module, dataset: SegmentationDataset, threshold: float,
                 hd95: bool = False, device: torch.device | str = "cpu"
                 ) -> dict[str, dict[int, dict[str, float]]]:
    """``{case id: {class: {metric: value}}}`` against the original-size masks (items of one
    case stacked to 3-D)."""
    preds = predict_masks(model, dataset, threshold, device=device)
    truths = [dataset.pair(i)[1] for i in range(len(dataset))]
    pred_cases, true_cases = case_arrays(dataset.items, preds), case_arrays(dataset.items, truths)
    return {c: multiclass_case_metrics(pred_cases[c], true_cases[c], dataset.num_classes,
                                       hd95=hd95) for c in true_cases}


def validation_scores(model: torch.nn.Module, dataset: SegmentationDataset, threshold: float,
                      device: torch.device | str = "cpu") -> dict[str, float]:
    """The scores epochs are selected on: the final evaluation's ``dice`` / ``iou`` values
    (:func:`case_metrics`, :func:`~medistill.metrics.segmentation.segmentation_report`)."""
    per_case = case_metrics(model, dataset, threshold, device=device)
    report = segmentation_report(list(per_case.values()), [], n_resamples=0)
    return {m: report["metrics"][m]["value"] for m in ("dice", "iou")}
