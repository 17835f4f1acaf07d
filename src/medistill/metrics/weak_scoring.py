"""Scoring a weakly supervised (binary tumour) segmenter on a :class:`WeakSegDataset`: its
probability map at the ORIGINAL mask size, the Gaussian sigma per axis, per-image scores and
the plain validation means (what a method's validation and the test evaluation share; the test
metrics with CIs are :func:`medistill.pipelines.evaluate_weak.evaluate_weak`, whose module doc
explains ``sigma_at``).

Here, below the methods and pipelines, so that :mod:`medistill.methods.mil_fusion` can
validate with it and :mod:`medistill.deploy.masks` can threshold with it.
"""

from __future__ import annotations

from typing import Literal

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


SigmaAt = Literal["input", "original"]
# the validation scores (plain means) that epoch selection and role reversal can read
VAL_SCORES = ("pixel_f1", "pixel_f1_pos", "pixel_f1_positive", "iou", "dice", "image_auc")


def sigma_axes(sigma: float, shape: tuple[int, ...], image_size: int | None,
               sigma_at: SigmaAt = "input") -> tuple[float, float]:
    """The (rows, columns) Gaussian sigma in original pixels of a map of ``shape`` (see the
    module doc)."""
    if sigma_at not in ("input", "original"):
        raise ValueError(f"sigma_at must be 'input' or 'original', got {sigma_at!r}")
    if sigma_at == "original" or not image_size:
        return float(sigma), float(sigma)
    return sigma * shape[0] / image_size, sigma * shape[1] / image_size


def weak_cases(model: torch.nn.Module, dataset: WeakSegDataset, threshold: float = 0.5,
               sigma: float = 0.0, device: torch.device | str = "cpu",
               sigma_at: SigmaAt = "input") -> list[dict[str, float]]:
    probs = predict_probabilities(model, dataset, device=device)
    return [weak_case_metrics(p, dataset.pair(i)[1], threshold,
                              sigma_axes(sigma, p.shape, dataset.image_size, sigma_at))
            for i, p in enumerate(probs)]


def weak_scores(model: torch.nn.Module, dataset: WeakSegDataset, threshold: float = 0.5,
                sigma: float = 0.0, device: torch.device | str = "cpu",
                sigma_at: SigmaAt = "input") -> dict[str, float]:
    """Plain means (no CIs) for validation: the :data:`VAL_SCORES`."""
    rep = weak_segmentation_report(weak_cases(model, dataset, threshold, sigma, device,
                                              sigma_at), dataset.labels, n_resamples=0)
    return {k: float(rep[k]["value"]) for k in VAL_SCORES}
