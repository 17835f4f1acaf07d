"""Segmentation metrics per case (binary masks in, numbers out) and bootstrap CIs over cases.

Per case and class, from a predicted and a true binary mask (2-D or 3-D, same shape), with
``P`` / ``T`` the predicted / true foreground:

- ``dice`` (DSC, = pixel F1) = 2|P∩T| / (|P| + |T|);
- ``iou`` (Jaccard) = |P∩T| / |P∪T|, and ``voe`` (volumetric overlap error) = 1 - iou;
- ``rvd`` (relative volume difference, signed) = |P| / |T| - 1 (> 0: over-segmentation);
- ``hd95``: 95th-percentile symmetric Hausdorff distance between the mask surfaces, in pixels
  (or in ``spacing`` units), computed with MONAI's ``compute_hausdorff_distance``.

Empty masks (documented behaviour, used everywhere in medistill):

- truth and prediction both empty: dice = iou = 1, voe = 0, rvd = 0, hd95 = 0 (a correct
  "nothing here");
- truth empty, prediction not: dice = iou = 0, voe = 1, rvd = NaN (undefined: division by
  an empty truth), hd95 = NaN (no true surface);
- truth not empty, prediction empty: dice = iou = 0, voe = 1, rvd = -1, hd95 = NaN.

NaN values are *undefined* and left out of means (and counted in ``n_undefined``).

Probabilities to masks: :func:`logits_to_labels` thresholds the foreground probability of a
2-class softmax (or a 1-channel sigmoid) at 0.4, as the HLFD authors' code does, and takes the
argmax for more classes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from medistill.errors import DataError
from medistill.metrics.bootstrap import percentile_interval, resampled_means

SEG_METRICS: tuple[str, ...] = ("dice", "iou", "voe", "rvd", "hd95")
BINARY_THRESHOLD = 0.4


def logits_to_labels(logits: torch.Tensor, threshold: float = BINARY_THRESHOLD) -> torch.Tensor:
    """(N, K, H, W) logits -> (N, H, W) class indices.

    K = 1: sigmoid > threshold; K = 2: softmax foreground probability > threshold; K > 2:
    argmax over the classes.
    """
    if logits.ndim < 3:
        raise ValueError(f"expected (N, K, ...) logits, got shape {tuple(logits.shape)}")
    k = logits.shape[1]
    if k == 1:
        return (torch.sigmoid(logits[:, 0]) > threshold).long()
    if k == 2:
        return (torch.softmax(logits.float(), dim=1)[:, 1] > threshold).long()
    return logits.argmax(1)


def _hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None) -> float:
    from monai.metrics import compute_hausdorff_distance  # lazy: MONAI's import is slow

    p = torch.from_numpy(pred[None, None].astype(np.float32))
    t = torch.from_numpy(truth[None, None].astype(np.float32))
    with warnings.catch_warnings():  # MONAI's own deprecation notice about an internal argument
        warnings.simplefilter("ignore", FutureWarning)
        d = compute_hausdorff_distance(p, t, include_background=True, percentile=95,
                                       spacing=list(spacing) if spacing is not None else None)
    return float(d.reshape(-1)[0])


def case_metrics(pred: ArrayLike, truth: ArrayLike, spacing: Sequence[float] | None = None,
                 hd95: bool = True) -> dict[str, float]:
    """dice, iou, voe, rvd (and hd95) of one binary case; see the module doc for empty masks."""
    p = np.asarray(pred).astype(bool)
    t = np.asarray(truth).astype(bool)
    if p.shape != t.shape:
        raise DataError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    np_, nt = int(p.sum()), int(t.sum())
    inter = int(np.logical_and(p, t).sum())
    union = np_ + nt - inter
    if nt == 0 and np_ == 0:
        out = {"dice": 1.0, "iou": 1.0, "voe": 0.0, "rvd": 0.0, "hd95": 0.0}
        return out if hd95 else {k: v for k, v in out.items() if k != "hd95"}
    dice = 2.0 * inter / (np_ + nt)
    iou = inter / union
    out = {"dice": dice, "iou": iou, "voe": 1.0 - iou,
           "rvd": np_ / nt - 1.0 if nt else float("nan")}
    if hd95:
        out["hd95"] = _hd95(p, t, spacing) if (np_ and nt) else float("nan")
    return out


def multiclass_case_metrics(pred: ArrayLike, truth: ArrayLike, num_classes: int,
                            spacing: Sequence[float] | None = None,
                            hd95: bool = True) -> dict[int, dict[str, float]]:
    """:func:`case_metrics` of every foreground class (1 .. K-1) of index masks."""
    p, t = np.asarray(pred), np.asarray(truth)
    return {c: case_metrics(p == c, t == c, spacing, hd95) for c in range(1, num_classes)}


def bootstrap_mean(values: ArrayLike, n_resamples: int = 10_000, seed: int = 0,
                   confidence: float = 0.95) -> dict[str, float]:
    """Mean of the defined (non-NaN) values with a percentile-bootstrap CI over the cases.

    Resample ``b`` draws ``n`` case indices with replacement (row ``b`` of
    ``default_rng(seed).integers(0, n, (n_resamples, n))``, as in
    :func:`~medistill.metrics.classification_report`) and takes the NaN-mean; the interval is
    the ``(1 -/+ confidence) / 2`` percentile pair. Returns ``{"value", "low", "high", "n",
    "n_undefined"}``; the value is NaN when no case is defined.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    defined = ~np.isnan(v)
    n, nd = v.size, int(defined.sum())
    out = {"value": float("nan"), "low": float("nan"), "high": float("nan"), "n": int(n),
           "n_undefined": int(n - nd)}
    if nd == 0:
        return out
    value = float(v[defined].mean())
    out.update(value=value, low=value, high=value)
    if n_resamples > 0:
        means = resampled_means(v, n_resamples, seed)
        low, high = percentile_interval(means[~np.isnan(means)], confidence)
        out.update(low=low, high=high)
    return out


def segmentation_report(
    cases: Sequence[Mapping[int, Mapping[str, float]]],
    class_names: Sequence[str],
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Means with bootstrap CIs over cases, overall and per foreground class.

    ``cases``: one ``{class index: {metric: value}}`` per case (as from
    :func:`multiclass_case_metrics`). The overall value of a metric per case is the mean over
    its foreground classes with a defined value; then averaged over cases with a CI.

    Returns ``{"metrics": {metric: {"value", "low", "high", "n", "n_undefined"}},
    "per_class": {class name: {metric: {...}}}, "n": n_cases, "n_resamples", "seed"}``.
    """
    if not cases:
        raise DataError("no cases to evaluate")
    classes = sorted(cases[0])
    metric_names = [m for m in SEG_METRICS if m in cases[0][classes[0]]]
    table = np.array([[[c[k][m] for m in metric_names] for k in classes] for c in cases],
                     dtype=np.float64)  # (cases, classes, metrics)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice"
        overall = np.nanmean(table, axis=1)  # (cases, metrics); all-NaN rows stay NaN
    report = {"metrics": {m: bootstrap_mean(overall[:, j], n_resamples, seed, confidence)
                          for j, m in enumerate(metric_names)},
              "per_class": {}, "n": len(cases), "n_resamples": int(n_resamples),
              "seed": int(seed)}
    if len(classes) > 1:
        for i, k in enumerate(classes):
            name = class_names[k] if k < len(class_names) else str(k)
            report["per_class"][name] = {
                m: bootstrap_mean(table[:, i, j], n_resamples, seed, confidence)
                for j, m in enumerate(metric_names)}
    return report

