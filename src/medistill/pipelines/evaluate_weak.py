"""Evaluating a weakly supervised (binary tumour) segmenter on a :class:`WeakSegDataset`.

The model sees each image resized to the dataset's ``image_size`` (as in training); its tumour
probability map is resized back (bilinear) to the ORIGINAL mask size, optionally smoothed with
a Gaussian (``sigma`` pixels of the original image), thresholded (0.5) and scored per image
(:mod:`medistill.metrics.weak_segmentation`). Validation and test use the same function.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medistill.data.weak import WeakSegDataset
from medistill.metrics.weak_segmentation import weak_case_metrics, weak_segmentation_report


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, dataset: WeakSegDataset,
                          batch_size: int = 8, device: torch.device | str = "cpu"
                          ) -> list[np.ndarray]:
    """The (H, W) float32 tumour probability of every item at its ORIGINAL size."""
    was = model.training
    model.eval()
    probs: list[np.ndarray] = []
    step = batch_size if dataset.image_size else 1
    for start in range(0, len(dataset), step):
        idx = range(start, min(start + step, len(dataset)))
        x = torch.stack([dataset[i]["image"] for i in idx]).to(device)
        logits = model(x).float().cpu()
        for j, i in enumerate(idx):
            h, w = dataset.pair(i)[1].shape
            lg = F.interpolate(logits[j : j + 1, :1], size=(h, w), mode="bilinear",
                               align_corners=False)
            probs.append(torch.sigmoid(lg)[0, 0].numpy())
    model.train(was)
    return probs


def weak_cases(model: torch.nn.Module, dataset: WeakSegDataset, threshold: float = 0.5,
               sigma: float = 0.0, device: torch.device | str = "cpu") -> list[dict[str, float]]:
    probs = predict_probabilities(model, dataset, device=device)
    return [weak_case_metrics(p, dataset.pair(i)[1], threshold, sigma)
            for i, p in enumerate(probs)]


def weak_scores(model: torch.nn.Module, dataset: WeakSegDataset, threshold: float = 0.5,
                sigma: float = 0.0, device: torch.device | str = "cpu") -> dict[str, float]:
    """Plain means (no CIs) for validation: ``pixel_f1`` (also ``dice``), ``pixel_f1_pos``,
    ``iou`` and ``image_auc``."""
    rep = weak_segmentation_report(weak_cases(model, dataset, threshold, sigma, device),
                                   dataset.labels, n_resamples=0)
    scores = {k: rep[k]["value"] for k in ("pixel_f1", "pixel_f1_pos", "iou", "image_auc")}
    scores["dice"] = scores["pixel_f1"]
    return {k: float(v) for k, v in scores.items()}


def evaluate_weak(model: torch.nn.Module, dataset: WeakSegDataset, threshold: float = 0.5,
                  sigma: float = 0.0, n_resamples: int = 10_000, ci_seed: int = 0
                  ) -> dict[str, Any]:
    """Test metrics with bootstrap CIs over images, plus per-image values."""
    cases = weak_cases(model.cpu(), dataset, threshold, sigma)
    report = weak_segmentation_report(cases, dataset.labels, n_resamples, ci_seed)
    return {"metrics": report, "n": len(cases),
            "n_positive": int(sum(dataset.labels)),
            "cases": [{"name": item.name, "label": lab, **c}
                      for item, lab, c in zip(dataset.items, dataset.labels, cases, strict=True)]}
