"""Classification metrics from hard labels, with seeded percentile-bootstrap confidence intervals.

Everything is computed from confusion matrices (rows = true class, columns = predicted class).
:func:`metrics_from_confusion` is vectorised over a stack of matrices, which is what makes the
bootstrap in :func:`classification_report` fast: all resampled confusion matrices of a chunk are
built with one ``np.bincount`` call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medistill.errors import DataError
from medistill.metrics.bootstrap import percentile_interval, resample_chunks

METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "ovr_accuracy",
)



def _as_labels(y: ArrayLike, name: str) -> np.ndarray:
    """Return ``y`` as a 1-D int64 array, or raise :class:`DataError`."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64, copy=False)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"{name} must hold integer class labels, got non-integer values")
        return arr.astype(np.int64)
    raise DataError(f"{name} must hold integer class labels, got dtype {arr.dtype}")


def check_bootstrap_options(n_resamples: int, confidence: float) -> None:
    """One-line :class:`DataError` for a bad resample count or confidence level."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)):
        raise DataError(f"n_resamples must be an int, got {type(n_resamples).__name__}")
    if n_resamples < 0:
        raise DataError(f"n_resamples must be >= 0, got {n_resamples}")
    if not 0.0 < float(confidence) < 1.0:
        raise DataError(f"confidence must be in (0, 1), got {confidence}")


def _check_inputs(
    y_true: ArrayLike, y_pred: ArrayLike, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of label vectors against ``num_classes``; return them as int64."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise DataError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise DataError(f"num_classes must be >= 2, got {num_classes}")
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape[0] != p.shape[0]:
        raise DataError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if t.shape[0] == 0:
        raise DataError("y_true and y_pred are empty: no samples to evaluate")
    for name, arr in (("y_true", t), ("y_pred", p)):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise DataError(
                f"{name} holds label {bad}, outside [0, {num_classes}) for "
                f"num_classes={num_classes}"
            )
    return t, p


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """Confusion matrix of shape ``(num_classes, num_classes)``, int64, rows true, cols predicted.

    Raises :class:`~medistill.errors.DataError` if the inputs differ in length, are empty, are
    not integer labels, or hold a label outside ``[0, num_classes)``.
    """
    t, p = _check_inputs(y_true, y_pred, num_classes)
    c = int(num_classes)
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c).astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise ``num / den`` with NaN where ``den == 0`` (no warnings)."""
    out = np.full(np.broadcast(num, den).shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _macro(per_class: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN (undefined) classes; 0 if none is defined."""
    defined = ~np.isnan(per_class)
    count = defined.sum(axis=-1)
    total = np.where(defined, per_class, 0.0).sum(axis=-1)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def metrics_from_confusion(cm: ArrayLike) -> dict[str, Any]:
    """Metrics of one ``(C, C)`` confusion matrix, or of a stack ``(B, C, C)`` vectorised.

    With ``tp_c`` the diagonal, ``fp_c = colsum_c - tp_c``, ``fn_c = rowsum_c - tp_c`` and ``N``
    the total count:

    - ``accuracy`` = trace / N.
    - ``macro_precision``, ``macro_recall``, ``macro_f1``: macro means of the per-class
      ``tp/(tp+fp)``, ``tp/(tp+fn)`` and ``2tp/(2tp+fp+fn)`` over the classes *in play*: those
      present in the truth or in the predictions (scikit-learn's default label set). A 0/0 of
      a class in play counts as 0 (scikit-learn's ``zero_division=0``, as the authors' code):
      a class that is never predicted has precision 0, one predicted but never present has
      recall 0, so a model that ignores classes is not rewarded for it. A class absent from
      both is left out of the mean. If no class is in play the result is 0.
    - ``ovr_accuracy``: one-vs-rest macro accuracy, mean over all classes of
      ``(tp_c + tn_c) / N`` with ``tn_c = N - tp_c - fp_c - fn_c``.

    An empty matrix (N = 0) gives 0 for every metric. Returns Python floats for a single matrix
    and float64 arrays of shape ``(B,)`` for a stack.
    """
    arr = np.asarray(cm)
    if arr.ndim not in (2, 3) or arr.shape[-1] != arr.shape[-2] or arr.shape[-1] < 2:
        raise DataError(
            f"confusion matrix must have shape (C, C) or (B, C, C) with C >= 2, got {arr.shape}"
        )
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"confusion matrix must be numeric, got dtype {arr.dtype}")
    if np.any(arr < 0):
        raise DataError("confusion matrix holds negative counts")
    single = arr.ndim == 2
    m = arr[None].astype(np.float64) if single else arr.astype(np.float64)

    tp = np.diagonal(m, axis1=-2, axis2=-1)  # (B, C)
    pred_tot = m.sum(axis=-2)  # column sums: times each class was predicted
    true_tot = m.sum(axis=-1)  # row sums: times each class was present
    fp = pred_tot - tp
    fn = true_tot - tp
    n = m.sum(axis=(-2, -1))  # (B,)
    nc = n[:, None]
    tn = nc - tp - fp - fn

    # classes in play: 0/0 -> 0; classes absent from truth and predictions: NaN (left out)
    out_of_play = np.where(true_tot + pred_tot > 0, 0.0, np.nan)
    precision = np.nan_to_num(_safe_div(tp, pred_tot)) + out_of_play
    recall = np.nan_to_num(_safe_div(tp, true_tot)) + out_of_play
    f1 = np.nan_to_num(_safe_div(2.0 * tp, 2.0 * tp + fp + fn)) + out_of_play
    zeros = np.zeros_like(n)
    accuracy = np.divide(tp.sum(axis=-1), n, out=zeros.copy(), where=n > 0)
    ovr = np.divide(tp + tn, nc, out=np.zeros_like(tp), where=nc > 0).mean(axis=-1)
    ovr = np.where(n > 0, ovr, 0.0)

    out = {
        "accuracy": accuracy,
        "macro_precision": _macro(precision),
        "macro_recall": _macro(recall),
        "macro_f1": _macro(f1),
        "ovr_accuracy": ovr,
    }
    if single:
        return {k: float(v[0]) for k, v in out.items()}
    return out


def bootstrap_confusion_matrices(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    idx: np.ndarray,
) -> np.ndarray:
    """Confusion matrices ``(B, C, C)`` of the resamples given by index rows ``idx`` ``(B, n)``.

    Inputs are assumed validated (int64 labels in range); used by :func:`classification_report`.
    """
    c = int(num_classes)
    b = idx.shape[0]
    codes = (y_true * c + y_pred)[idx]  # (B, n) cell index of each resampled sample
    codes += (np.arange(b, dtype=np.int64) * (c * c))[:, None]
    return np.bincount(codes.ravel(), minlength=b * c * c).reshape(b, c, c)


def classification_report(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    num_classes: int,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Point metrics plus percentile-bootstrap confidence intervals over the test samples.

    Each resample draws ``n`` sample indices with replacement; resample ``b`` uses the ``b``-th
    row of ``np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))`` (drawn in
    chunks, which yields the same stream). The interval is the ``(1 -/+ confidence) / 2``
    percentile pair (numpy's default linear interpolation) of each metric over the resamples.
    ``n_resamples=0`` disables the bootstrap (``low == high == value``).

    Returns ``{"metrics": {name: {"value", "low", "high"}}, "confusion_matrix": [[int]],
    "n": int, "n_resamples": int, "seed": int}``.
    """
    t, p = _check_inputs(y_true, y_pred, num_classes)
    check_bootstrap_options(n_resamples, confidence)

    c = int(num_classes)
    n = t.shape[0]
    cm = np.bincount(t * c + p, minlength=c * c).reshape(c, c).astype(np.int64)
    point = metrics_from_confusion(cm)

    metrics: dict[str, dict[str, float]] = {
        k: {"value": v, "low": v, "high": v} for k, v in point.items()
    }
    if n_resamples > 0:
        samples: dict[str, list[np.ndarray]] = {k: [] for k in METRIC_NAMES}
        for idx in resample_chunks(n, n_resamples, seed):
            stack = bootstrap_confusion_matrices(t, p, c, idx)
            for k, v in metrics_from_confusion(stack).items():
                samples[k].append(v)
        for k in METRIC_NAMES:
            low, high = percentile_interval(np.concatenate(samples[k]), confidence)
            metrics[k]["low"] = low
            metrics[k]["high"] = high

    return {
        "metrics": metrics,
        "confusion_matrix": cm.tolist(),
        "n": int(n),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
    }
