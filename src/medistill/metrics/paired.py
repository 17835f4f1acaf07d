"""Paired comparison of two models on the same test images.

Two models evaluated on the same images are not independent samples: an image that is hard for
one is usually hard for the other. Comparing their two separate bootstrap intervals (do they
overlap?) throws that pairing away and is far too conservative. :func:`paired_bootstrap`
resamples the *images* once and recomputes both models' metrics on every resample, so the
interval is that of the difference itself (``model - reference``, e.g. KD minus baseline).
:func:`paired_bootstrap_per_image` does the same for any metric that is a mean of per-image
values (segmentation Dice, pixel F1, AJI, ...): it resamples the images once and averages the
per-image differences.

:func:`over_seeds` summarises the per-seed differences of repeated runs (mean, sample sd, how
many seeds are positive and how many have an interval that excludes 0), and :func:`verdict`
turns one interval into the sentence a report may print: "beats" only when the whole interval
is above 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medistill.errors import DataError
from medistill.metrics.bootstrap import percentile_interval, resample_chunks, resampled_means
from medistill.metrics.classification import (
    METRIC_NAMES,
    _check_inputs,
    bootstrap_confusion_matrices,
    check_bootstrap_options,
    metrics_from_confusion,
)

#: the metrics compared by default
PAIRED_METRICS: tuple[str, ...] = ("accuracy", "macro_f1")


def paired_bootstrap(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    y_pred_ref: ArrayLike,
    num_classes: int,
    metrics: Sequence[str] = PAIRED_METRICS,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Percentile-bootstrap CI of ``metric(y_pred) - metric(y_pred_ref)`` over the same images.

    Resample ``b`` draws ``n`` image indices with replacement (row ``b`` of
    ``np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))``, drawn in chunks:
    the same resamples :func:`~medistill.metrics.classification_report` uses with that seed)
    and both models are scored on those same images; the interval is the ``(1 -/+ confidence)
    / 2`` percentile pair of the differences. Vectorised: one ``np.bincount`` per chunk and
    model. ``n_resamples=0`` gives ``low == high == value``.

    Returns ``{"metrics": {name: {"value", "low", "high", "model", "reference",
    "p_not_better"}}, "n", "n_resamples", "seed", "confidence"}``: ``value`` is the observed
    difference, ``model`` / ``reference`` the two observed metrics, ``p_not_better`` the share
    of resamples whose difference is <= 0 (a one-sided bootstrap p-value).
    """
    t, p = _check_inputs(y_true, y_pred, num_classes)
    _, q = _check_inputs(y_true, y_pred_ref, num_classes)
    check_bootstrap_options(n_resamples, confidence)
    names = list(metrics)
    unknown = [m for m in names if m not in METRIC_NAMES]
    if unknown or not names:
        raise DataError(f"unknown metric {unknown[0] if unknown else None!r}; choose from "
                        f"{', '.join(METRIC_NAMES)}")

    c, n = int(num_classes), t.shape[0]
    full = np.arange(n)[None]
    point_a = metrics_from_confusion(bootstrap_confusion_matrices(t, p, c, full))
    point_b = metrics_from_confusion(bootstrap_confusion_matrices(t, q, c, full))
    out: dict[str, dict[str, float]] = {}
    for m in names:
        a, b = float(point_a[m][0]), float(point_b[m][0])
        out[m] = {"value": a - b, "low": a - b, "high": a - b, "model": a, "reference": b,
                  "p_not_better": float(a - b <= 0)}
    if n_resamples > 0:
        diffs: dict[str, list[np.ndarray]] = {m: [] for m in names}
        for idx in resample_chunks(n, n_resamples, seed):
            ma = metrics_from_confusion(bootstrap_confusion_matrices(t, p, c, idx))
            mb = metrics_from_confusion(bootstrap_confusion_matrices(t, q, c, idx))
            for m in names:
                diffs[m].append(ma[m] - mb[m])
        for m in names:
            d = np.concatenate(diffs[m])
            low, high = percentile_interval(d, confidence)
            out[m].update(low=low, high=high, p_not_better=float(np.mean(d <= 0)))
    return {"metrics": out, "n": int(n), "n_resamples": int(n_resamples), "seed": int(seed),
            "confidence": float(confidence)}


def paired_bootstrap_per_image(
    values: ArrayLike,
    ref_values: ArrayLike,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Percentile-bootstrap CI of the mean per-image difference ``values - ref_values``.

    ``values[i]`` and ``ref_values[i]`` are one per-image metric (Dice, F1, AJI, ...) of the
    model and of the reference on the same image ``i``. An image where either is NaN
    (undefined, e.g. RVD of an empty truth) is left out of the pair and counted in
    ``n_undefined``. Resample ``b`` draws ``n`` image indices with replacement (row ``b`` of
    ``np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))``, drawn in chunks: the
    same resamples :func:`~medistill.metrics.bootstrap_mean` uses with that seed, so the paired
    interval is over the same resamples as each model's own CI) and takes the mean of the drawn
    defined differences; the interval is the ``(1 -/+ confidence) / 2`` percentile pair.
    ``n_resamples=0`` gives ``low == high == value``.

    Returns ``{"value", "low", "high", "model", "reference", "p_not_better", "n",
    "n_undefined", "n_resamples", "seed", "confidence"}``: ``value`` is the observed mean
    difference (= ``model - reference``, the two means over the defined pairs),
    ``p_not_better`` the share of resamples whose mean difference is <= 0 (a one-sided
    bootstrap p-value; resamples without a defined pair are left out). The result is accepted
    by :func:`over_seeds` and :func:`verdict`.
    """
    a = np.asarray(values, dtype=np.float64)
    b = np.asarray(ref_values, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise DataError(f"per-image values must be 1-D, got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise DataError(f"model and reference values differ in length ({a.size} vs {b.size})")
    if a.size == 0:
        raise DataError("paired_bootstrap_per_image needs at least one image")
    check_bootstrap_options(n_resamples, confidence)

    n = a.size
    d = a - b
    defined = ~np.isnan(d)
    nan = float("nan")
    out: dict[str, Any] = {"value": nan, "low": nan, "high": nan, "model": nan,
                           "reference": nan, "p_not_better": nan, "n": int(n),
                           "n_undefined": int(n - defined.sum()),
                           "n_resamples": int(n_resamples), "seed": int(seed),
                           "confidence": float(confidence)}
    if not defined.any():
        return out
    value = float(d[defined].mean())
    out.update(value=value, low=value, high=value, model=float(a[defined].mean()),
               reference=float(b[defined].mean()), p_not_better=float(value <= 0))
    if n_resamples > 0:
        m = resampled_means(d, n_resamples, seed)
        m = m[~np.isnan(m)]
        low, high = percentile_interval(m, confidence)
        out.update(low=low, high=high, p_not_better=float(np.mean(m <= 0)))
    return out


def paired_by_name(values: Mapping[str, float], ref_values: Mapping[str, float], what: str,
                   n_resamples: int = 10_000, seed: int = 0,
                   confidence: float = 0.95) -> dict[str, Any]:
    """:func:`paired_bootstrap_per_image` of two runs' per-image values keyed by image name
    (sorted), refusing two runs scored on different images; ``what`` names them in the error."""
    if set(values) != set(ref_values):
        raise DataError(f"{what} were evaluated on different images; a paired comparison needs "
                        "the same ones")
    names = sorted(values)
    return paired_bootstrap_per_image([values[k] for k in names], [ref_values[k] for k in names],
                                      n_resamples, seed, confidence)


def over_seeds(per_seed: Sequence[dict[str, Any]], metric: str = "accuracy") -> dict[str, Any]:
    """Mean and sample sd (n - 1) of one metric's paired difference over seeds.

    ``per_seed``: :func:`paired_bootstrap` results (or their ``metrics`` dicts), or
    :func:`paired_bootstrap_per_image` results (one metric each: ``metric`` only names it).
    Also counts the seeds whose difference is > 0 and those whose interval excludes 0 (above or
    below). ``sd`` is None for a single seed.
    """
    rows = [r if "value" in r else r["metrics"][metric] if "metrics" in r else r[metric]
            for r in per_seed]
    if not rows:
        raise DataError("over_seeds needs at least one paired comparison")
    values = np.array([r["value"] for r in rows], dtype=np.float64)
    return {
        "metric": metric,
        "n_seeds": len(rows),
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)) if len(rows) > 1 else None,
        "n_positive": int((values > 0).sum()),
        "n_ci_above_zero": sum(r["low"] > 0 for r in rows),
        "n_ci_below_zero": sum(r["high"] < 0 for r in rows),
    }


def verdict(diff: dict[str, float], model: str = "KD", reference: str = "the baseline",
            metric: str = "accuracy") -> str:
    """One line that follows from the interval of ``diff`` (one metric of
    :func:`paired_bootstrap`), in percentage points: "beats" / "is worse than" only when the
    interval excludes 0, otherwise "no significant difference"."""
    value, low, high = (100.0 * diff[k] for k in ("value", "low", "high"))
    if not all(math.isfinite(x) for x in (value, low, high)):
        return f"{model} vs {reference}: {metric} difference not available"
    ci = f"{value:+.1f} points [{low:+.1f}, {high:+.1f}] {metric}"
    if low > 0:
        return f"{model} beats {reference}: {ci}"
    if high < 0:
        return f"{model} is worse than {reference}: {ci}"
    return f"no significant difference between {model} and {reference}: {ci} (the CI includes 0)"


def compare_runs(
    runs: Sequence[dict[str, Any]],
    num_classes: int,
    models: Sequence[str] = ("kd", "kd_aux"),
    reference: str = "baseline",
    metrics: Sequence[str] = PAIRED_METRICS,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Paired comparisons of run records (``role``, ``seed``, ``factor``, ``labels``,
    ``predictions``): every ``models`` run against the ``reference`` run of its seed and
    factor, on the same images. Returns ``(per_seed, summaries)``: one entry per (seed, factor,
    model) with the :func:`paired_bootstrap` result, and one per (factor, model) with
    :func:`over_seeds` of each metric. Runs without predictions are skipped."""
    refs = {(r.get("seed"), r.get("factor")): r for r in runs
            if r.get("role") == reference and r.get("predictions") is not None}
    per_seed: list[dict[str, Any]] = []
    for r in runs:
        ref = refs.get((r.get("seed"), r.get("factor")))
        if r.get("role") not in models or ref is None or r.get("predictions") is None:
            continue
        if r["labels"] != ref["labels"]:
            raise DataError(f"{r.get('name')} and {ref.get('name')} were not evaluated on the "
                            "same images: no paired comparison")
        res = paired_bootstrap(r["labels"], r["predictions"], ref["predictions"], num_classes,
                               metrics, n_resamples, seed)
        # the run's seed, not the bootstrap's (``res["seed"]``, kept as ``ci_seed``)
        per_seed.append({"factor": r.get("factor"), "model": r["role"],
                         "reference": reference, "name": r.get("name"), **res,
                         "seed": r.get("seed"), "ci_seed": res["seed"]})
    summaries: list[dict[str, Any]] = []
    for key in dict.fromkeys((c["factor"], c["model"]) for c in per_seed):
        group = [c for c in per_seed if (c["factor"], c["model"]) == key]
        summaries.append({"factor": key[0], "model": key[1], "reference": reference,
                          **{m: over_seeds(group, m) for m in metrics}})
    return per_seed, summaries
