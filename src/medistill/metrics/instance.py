"""Instance segmentation metrics per image (two id maps in, numbers out) and bootstrap CIs.

From a predicted and a true instance map (``(H, W)`` ints, 0 = background, same shape):

- ``aji``: aggregated Jaccard index (Kumar et al., 2017): every true instance is paired with
  the predicted instance of highest IoU; ``sum |G ∩ P| / (sum |G ∪ P| + sum |unused P|)``;
- ``dq``, ``sq``, ``pq``: panoptic quality at IoU > 0.5 (Kirillov et al., 2019): pairs with
  IoU > 0.5 are matches (unique by construction); DQ = TP / (TP + FP/2 + FN/2), SQ = mean
  IoU of the matches, PQ = DQ x SQ. An image with instances but no match has SQ = 0 (as in
  HoVer-Net's ``get_fast_pq``, ``sum(IoU) / (TP + 1e-6)``), so it counts in the dataset mean
  of SQ instead of being left out. Our own small NumPy code (one overlap table serves AJI, PQ
  and VOI), cross-checked against MONAI's ``PanopticQualityMetric`` in the tests (same PQ, SQ,
  DQ = MONAI's RQ); one deliberate difference: an image with no true and no predicted
  instance scores 1 here (nothing missed, nothing invented), 0 in MONAI's smoothed ratio;
- ``f1``: object-level detection F1 with the same IoU > 0.5 matching, which is DQ by
  definition (reported under both names, as nuclei papers do);
- ``voi_split``, ``voi_merge``: variation of information in bits (skimage's
  ``variation_of_information`` with the truth as ``image0``): split = H(pred | truth)
  (over-segmentation), merge = H(truth | pred) (under-segmentation), over the true
  foreground only (``ignore_labels=(0,)``, the graph-relation authors' convention: predicted
  background inside a true instance still counts; false foreground on true background does
  not); NaN when the truth has no foreground;
- ``voi_split_bg``, ``voi_merge_bg``: the same with the background included as one region
  of each map (so false foreground on true background counts too);
- ``arand``: adapted Rand error (skimage's ``adapted_rand_error``, true background ignored).

Empty images: truth and prediction both empty give aji = dq = sq = pq = f1 = 1; one of them
empty gives 0 (sq 0 too: no match). NaN values are left out of the means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medistill.errors import DataError
from medistill.metrics.segmentation import bootstrap_mean

INSTANCE_METRICS: tuple[str, ...] = ("aji", "pq", "dq", "sq", "f1", "voi_split", "voi_merge",
                                     "arand", "voi_split_bg", "voi_merge_bg")
#: higher is better for these; lower for the VOI terms and ARAND
HIGHER_IS_BETTER = frozenset({"aji", "pq", "dq", "sq", "f1"})


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(labels, return_inverse=True)``, by a lookup table for small ids (fast)."""
    flat = labels.ravel()
    top = int(flat.max(initial=0))
    if flat.min(initial=0) < 0 or top > 4 * flat.size:
        ids, inv = np.unique(flat, return_inverse=True)
        return ids, inv.ravel()
    present = np.bincount(flat, minlength=top + 1) > 0
    ids = np.flatnonzero(present)
    lut = np.cumsum(present) - 1
    return ids, lut[flat]


def _overlaps(pred: np.ndarray, truth: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ids, areas and the intersection table of the foreground instances.

    Returns ``(true_ids, pred_ids, true_area, pred_area, inter)`` with ``inter[i, j]`` the
    pixel count of true instance ``i`` AND predicted instance ``j``.
    """
    t_ids, t_inv = _compact(truth)
    p_ids, p_inv = _compact(pred)
    table = np.bincount(t_inv.ravel() * len(p_ids) + p_inv.ravel(),
                        minlength=len(t_ids) * len(p_ids)).reshape(len(t_ids), len(p_ids))
    t_area, p_area = table.sum(1), table.sum(0)
    tk, pk = t_ids != 0, p_ids != 0
    return t_ids[tk], p_ids[pk], t_area[tk], p_area[pk], table[np.ix_(tk, pk)]


def aji(pred: ArrayLike, truth: ArrayLike, overlaps: tuple | None = None) -> float:
    """Aggregated Jaccard index of one image (see the module doc)."""
    _, _, t_area, p_area, inter = overlaps or _overlaps(np.asarray(pred), np.asarray(truth))
    if len(t_area) == 0:
        return 1.0 if len(p_area) == 0 else 0.0
    if len(p_area) == 0:
        return 0.0
    union = t_area[:, None] + p_area[None, :] - inter
    iou = inter / np.maximum(union, 1)
    best = iou.argmax(1)
    rows = np.arange(len(t_area))
    hit = inter[rows, best] > 0
    c = float(inter[rows, best][hit].sum())
    u = float(union[rows, best][hit].sum() + t_area[~hit].sum())
    used = np.zeros(len(p_area), dtype=bool)
    used[best[hit]] = True
    u += float(p_area[~used].sum())
    return c / u if u else 1.0


def panoptic_quality(pred: ArrayLike, truth: ArrayLike, iou_threshold: float = 0.5,
                     overlaps: tuple | None = None) -> dict[str, float]:
    """``{"dq", "sq", "pq", "tp", "fp", "fn"}`` of one image (matches: IoU > threshold)."""
    _, _, t_area, p_area, inter = overlaps or _overlaps(np.asarray(pred), np.asarray(truth))
    union = t_area[:, None] + p_area[None, :] - inter
    iou = inter / np.maximum(union, 1)
    matched = iou > iou_threshold  # at most one per row and column when threshold >= 0.5
    tp = int(matched.sum())
    fp, fn = len(p_area) - tp, len(t_area) - tp
    if tp + fp + fn == 0:
        return {"dq": 1.0, "sq": 1.0, "pq": 1.0, "tp": 0, "fp": 0, "fn": 0}
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(iou[matched].mean()) if tp else 0.0  # HoVer-Net: no match -> 0
    return {"dq": dq, "sq": sq, "pq": dq * sq if tp else 0.0, "tp": tp, "fp": fp, "fn": fn}


def instance_case_metrics(pred: ArrayLike, truth: ArrayLike) -> dict[str, float]:
    """Every metric of :data:`INSTANCE_METRICS` for one image."""
    from skimage.metrics import adapted_rand_error, variation_of_information

    p, t = np.asarray(pred).astype(np.int64), np.asarray(truth).astype(np.int64)
    if p.shape != t.shape:
        raise DataError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    overlaps = _overlaps(p, t)
    pq = panoptic_quality(p, t, overlaps=overlaps)
    split_bg, merge_bg = variation_of_information(t, p)
    if t.any():
        split, merge = variation_of_information(t, p, ignore_labels=(0,))
        arand = adapted_rand_error(t, p)[0]
    else:
        split = merge = arand = float("nan")
    return {"aji": aji(p, t, overlaps), "pq": pq["pq"], "dq": pq["dq"], "sq": pq["sq"],
            "f1": pq["dq"], "voi_split": float(split), "voi_merge": float(merge),
            "arand": float(arand), "voi_split_bg": float(split_bg),
            "voi_merge_bg": float(merge_bg)}


def instance_report(cases: Sequence[Mapping[str, float]], n_resamples: int = 10_000,
                    seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Means over images with percentile-bootstrap CIs (:func:`bootstrap_mean`):
    ``{"metrics": {name: {"value", "low", "high", "n", "n_undefined"}}, "n", "n_resamples",
    "ci_seed"}``."""
    if not cases:
        raise DataError("no images to evaluate")
    names = [m for m in INSTANCE_METRICS if m in cases[0]]
    return {"metrics": {m: bootstrap_mean([c[m] for c in cases], n_resamples, seed, confidence)
                        for m in names},
            "n": len(cases), "n_resamples": int(n_resamples), "ci_seed": int(seed)}
