"""Metrics of weakly supervised (tumour / no tumour) segmentation: pixel F1 and IoU per image
with bootstrap CIs, and the image-level AUC of the maximum pixel score.

Per image, from the tumour probability map smoothed with a Gaussian of ``sigma`` pixels (sigma 3
in the IKD-MIL authors' evaluation, ``scipy.ndimage.gaussian_filter`` with its default
``reflect`` border) and thresholded at 0.5:

- ``pixel_f1`` (the authors' per-image F1, the default reported and selection metric): the F1
  of the image's OWN class. On an image whose truth holds tumour it is the tumour-class F1
  ``2 TP / (2 TP + FP + FN)``; on an image without tumour (a negative, empty truth) it is the
  BACKGROUND-class F1 ``2 TN / (2 TN + FP)`` (their ``f1_score(..., pos_label=0)``), so a small
  false positive costs a little (e.g. 0.994), not everything. The mean over all images is
  their reported F1;
- ``iou``: the IoU of the image's own class in the same way (tumour ``TP / (TP + FP + FN)``,
  background ``TN / (TN + FP)`` on negatives; their ``calculate_iou``);
- ``pixel_f1_positive`` / ``iou_positive`` (ours, a named alternative): the TUMOUR class on
  every image, an empty truth scoring 1 if nothing is predicted and 0 otherwise
  (:func:`~medistill.metrics.segmentation.case_metrics`' convention). It makes negatives
  all-or-nothing, which the paper's F1 does not; it was our metric before issue #12;
- ``max_score``: the maximum smoothed pixel probability (for ``image_auc``).

On positive images both definitions agree. The report adds ``pixel_f1_pos`` / ``iou_pos``
(positive images only), ``pixel_f1_neg`` (negatives only: the background F1, the authors'
"neg f1"), ``neg_clean`` (the share of negatives with nothing predicted = the mean of
``pixel_f1_positive`` over negatives), ``dice`` (= ``pixel_f1_positive``: the tumour Dice per
image) and ``image_auc``: ROC AUC of the image label from ``max_score`` (ties one half; NaN
unless both labels occur).

Known differences to the authors' evaluation: they threshold ``>= 0.5`` (we ``> 0.5``; only a
pixel at exactly 0.5 differs) and decide "own class" by whether the truth mask is empty, as we
do. Where the Gaussian is applied (at the model's input size, as theirs, or at the original
image size) is set by the caller (:mod:`medistill.pipelines.evaluate_weak`).

Means over images with percentile-bootstrap 95% CIs (:func:`bootstrap_mean`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medistill.errors import DataError
from medistill.metrics.bootstrap import resample_chunks
from medistill.metrics.segmentation import bootstrap_mean

WEAK_METRICS = ("pixel_f1", "pixel_f1_pos", "pixel_f1_neg", "pixel_f1_positive", "neg_clean",
                "iou", "iou_pos", "iou_positive", "dice", "image_auc")
# the per-image values of weak_case_metrics that the report averages
CASE_KEYS = ("pixel_f1", "pixel_f1_positive", "iou", "iou_positive", "max_score")


def smooth_probability(prob: np.ndarray, sigma: float | Sequence[float]) -> np.ndarray:
    """Gaussian-smoothed (H, W) probability map: ``sigma`` in pixels, one value or one per axis
    (0 = unchanged); ``scipy.ndimage.gaussian_filter`` with its default ``reflect`` border, as
    in the authors' evaluation."""
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (2,))
    if not sig.any():
        return prob
    from scipy.ndimage import gaussian_filter  # lazy: only when smoothing

    return gaussian_filter(prob.astype(np.float32), sigma=tuple(float(s) for s in sig))


def _f1_iou(tp: int, fp: int, fn: int, empty: float) -> tuple[float, float]:
    """F1 and IoU of one class from its counts; ``empty`` when the class is nowhere."""
    if tp + fp + fn == 0:
        return empty, empty
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)


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
                      sigma: float | Sequence[float] = 0.0) -> dict[str, float]:
    """The per-image values of :data:`CASE_KEYS` (see the module doc)."""
    if prob.shape != truth.shape:
        raise DataError(f"probability map {prob.shape} and truth {truth.shape} differ in shape")
    p = smooth_probability(prob, sigma)
    pred, true = p > threshold, truth > 0
    tp = int(np.count_nonzero(pred & true))
    fp = int(np.count_nonzero(pred & ~true))
    fn = int(np.count_nonzero(~pred & true))
    tn = pred.size - tp - fp - fn
    f1_pos, iou_pos = _f1_iou(tp, fp, fn, empty=1.0)  # tumour class; empty/empty = 1
    # the image's own class: tumour if the truth holds any, else background (TP_bg = TN,
    # FP_bg = FN = 0 on an empty truth, FN_bg = FP)
    f1, iou = (f1_pos, iou_pos) if tp + fn else _f1_iou(tn, fn, fp, empty=1.0)
    return {"pixel_f1": f1, "pixel_f1_positive": f1_pos, "iou": iou, "iou_positive": iou_pos,
            "max_score": float(p.max(initial=0.0))}


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
    v = {k: np.array([c[k] for c in cases], dtype=np.float64) for k in CASE_KEYS}
    nan = np.full(len(cases), np.nan)

    def ci(values: np.ndarray, where: np.ndarray | None = None) -> dict[str, float]:
        return bootstrap_mean(values if where is None else np.where(where, values, nan),
                              n_resamples, seed)

    out = {
        "pixel_f1": ci(v["pixel_f1"]),
        "pixel_f1_pos": ci(v["pixel_f1"], y),
        "pixel_f1_neg": ci(v["pixel_f1"], ~y),
        "pixel_f1_positive": ci(v["pixel_f1_positive"]),
        "neg_clean": ci(v["pixel_f1_positive"], ~y),
        "iou": ci(v["iou"]),
        "iou_pos": ci(v["iou"], y),
        "iou_positive": ci(v["iou_positive"]),
    }
    out["dice"] = dict(out["pixel_f1_positive"])
    out["image_auc"] = _auc_ci(v["max_score"], y, n_resamples, seed)
    return out


def _auc_ci(score: np.ndarray, y: np.ndarray, n_resamples: int, seed: int) -> dict[str, float]:
    value = binary_auc(score, y)
    out = {"value": value, "low": value, "high": value, "n": int(len(y)),
           "n_undefined": 0}
    if n_resamples > 0 and np.isfinite(value):
        aucs = np.array([binary_auc(score[i], y[i])
                         for idx in resample_chunks(len(y), n_resamples, seed) for i in idx])
        if np.isfinite(aucs).any():
            low, high = np.nanpercentile(aucs, [2.5, 97.5])
            out.update(low=float(low), high=float(high))
    return out
