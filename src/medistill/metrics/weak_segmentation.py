"""Metrics of weakly supervised (tumour / no tumour) segmentation: pixel F1, IoU and Dice per
image with bootstrap CIs, and the image-level AUC of the maximum pixel score.

Per image, from the tumour probability map (optionally smoothed with a Gaussian of
``sigma`` pixels first, sigma 3 in the IKD-MIL authors' evaluation) thresholded at 0.5:

- ``pixel_f1`` = 2 TP / (2 TP + FP + FN) with the positive class = tumour. This is the Dice of
  the tumour class (the same number per image, reported under both names);
- ``iou`` = TP / (TP + FP + FN);
- images with an EMPTY truth (negative images): F1 = IoU = 1 if the prediction is empty too,
  else 0 (:func:`~medistill.metrics.segmentation.case_metrics`' convention). Because that makes
  negatives all-or-nothing, ``pixel_f1_pos`` / ``iou_pos`` (positive images only) and
  ``pixel_f1_neg`` (negative images only) are reported as well;
- ``image_auc``: ROC AUC of the image label from the maximum (smoothed) pixel probability
  (ties count one half); NaN unless both labels occur.

Means over images with percentile-bootstrap 95% CIs (:func:`bootstrap_mean`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medistill.errors import DataError
from medistill.metrics.segmentation import bootstrap_mean, case_metrics

WEAK_METRICS = ("pixel_f1", "pixel_f1_pos", "pixel_f1_neg", "iou", "iou_pos", "dice",
                "image_auc")


def smooth_probability(prob: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smoothed (H, W) probability map (``sigma`` in pixels; 0 = unchanged)."""
    if not sigma:
        return prob
    from scipy.ndimage import gaussian_filter  # lazy: only when smoothing

    return gaussian_filter(prob.astype(np.float32), sigma=float(sigma), mode="nearest")


def binary_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """ROC AUC (Mann-Whitney U / (n_pos n_neg), ties one half); NaN with one class only."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata  # lazy

    ranks = rankdata(s)  # average ranks over ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def weak_case_metrics(prob: np.ndarray, truth: np.ndarray, threshold: float = 0.5,
                      sigma: float = 0.0) -> dict[str, float]:
    """``pixel_f1``, ``iou`` and ``max_score`` of one image (see the module doc)."""
    if prob.shape != truth.shape:
        raise DataError(f"probability map {prob.shape} and truth {truth.shape} differ in shape")
    p = smooth_probability(prob, sigma)
    m = case_metrics(p > threshold, truth > 0, hd95=False)
    return {"pixel_f1": m["dice"], "iou": m["iou"], "max_score": float(p.max(initial=0.0))}


def weak_segmentation_report(
    cases: Sequence[dict[str, float]],
    labels: Sequence[int],
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Means with bootstrap CIs over images: every metric of :data:`WEAK_METRICS`.

    ``cases``: one :func:`weak_case_metrics` dict per image; ``labels``: its image label
    (1 = tumour). ``image_auc`` is a single number (its CI is the bootstrap over images too).
    """
    if not cases:
        raise DataError("no images to evaluate")
    y = np.asarray(labels).astype(bool)
    f1 = np.array([c["pixel_f1"] for c in cases], dtype=np.float64)
    iou = np.array([c["iou"] for c in cases], dtype=np.float64)
    score = np.array([c["max_score"] for c in cases], dtype=np.float64)
    nan = np.full_like(f1, np.nan)
    out = {
        "pixel_f1": bootstrap_mean(f1, n_resamples, seed),
        "pixel_f1_pos": bootstrap_mean(np.where(y, f1, nan), n_resamples, seed),
        "pixel_f1_neg": bootstrap_mean(np.where(~y, f1, nan), n_resamples, seed),
        "iou": bootstrap_mean(iou, n_resamples, seed),
        "iou_pos": bootstrap_mean(np.where(y, iou, nan), n_resamples, seed),
    }
    out["dice"] = dict(out["pixel_f1"])
    out["image_auc"] = _auc_ci(score, y, n_resamples, seed)
    return out


def _auc_ci(score: np.ndarray, y: np.ndarray, n_resamples: int, seed: int) -> dict[str, float]:
    value = binary_auc(score, y)
    out = {"value": value, "low": value, "high": value, "n": int(len(y)),
           "n_undefined": 0}
    if n_resamples > 0 and np.isfinite(value):
        idx = np.random.default_rng(seed).integers(0, len(y), size=(int(n_resamples), len(y)))
        aucs = np.array([binary_auc(score[i], y[i]) for i in idx])
        if np.isfinite(aucs).any():
            low, high = np.nanpercentile(aucs, [2.5, 97.5])
            out.update(low=float(low), high=float(high))
    return out
