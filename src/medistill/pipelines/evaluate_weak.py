"""Evaluating a weakly supervised (binary tumour) segmenter on a :class:`WeakSegDataset`.

The model sees each image resized to the dataset's ``image_size`` (as in training); its tumour
probability map is resized back (bilinear) to the ORIGINAL mask size, optionally smoothed with
a Gaussian, thresholded (0.5) and scored per image against the original mask
(:mod:`medistill.metrics.weak_segmentation`). Validation and test use the same function.

``sigma_at`` says in which pixels ``sigma`` counts:

- ``"input"`` (default, the authors' evaluation): pixels of the MODEL INPUT. The authors smooth
  the map at the network's input size (256 x 256) with sigma 3 and score it against the mask
  resized to that size; we score at the original size, so the Gaussian gets, per axis,
  ``sigma * original size / image_size`` original pixels: the same blur of the same content;
- ``"original"``: ``sigma`` pixels of the original image on both axes (our rule before
  issue #12; model files without a ``sigma_at`` entry were made with it).
"""

from __future__ import annotations

from typing import Any, Literal

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


def evaluate_weak(model: torch.nn.Module, dataset: WeakSegDataset, threshold: float = 0.5,
                  sigma: float = 0.0, n_resamples: int = 10_000, ci_seed: int = 0,
                  sigma_at: SigmaAt = "input", device: str = "cpu") -> dict[str, Any]:
    """Test metrics with bootstrap CIs over images, plus per-image values (the model runs on
    ``device``; ``auto``: a GPU if there is one)."""
    from medistill.engine.trainer import resolve_device

    dev = resolve_device(device)
    cases = weak_cases(model.to(dev), dataset, threshold, sigma, dev, sigma_at=sigma_at)
    model.cpu()
    report = weak_segmentation_report(cases, dataset.labels, n_resamples, ci_seed)
    return {"metrics": report, "n": len(cases),
            "n_positive": int(sum(dataset.labels)),
            "cases": [{"name": item.name, "label": lab, **c}
                      for item, lab, c in zip(dataset.items, dataset.labels, cases, strict=True)]}
