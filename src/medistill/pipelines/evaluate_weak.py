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

from typing import Any

import torch

from medistill.data.weak import WeakSegDataset
from medistill.metrics.weak_scoring import (  # noqa: F401  (the old import paths keep working)
    VAL_SCORES,
    SigmaAt,
    predict_probabilities,
    sigma_axes,
    weak_cases,
    weak_scores,
)
from medistill.metrics.weak_segmentation import weak_segmentation_report


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
