"""Report parts of weakly supervised segmentation (``mil_fusion``): the test table, the
aggregate over seeds, the per-round role-reversal table and the overlay figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medistill.output import atomic_write_bytes
from medistill.reports.plots import finite, metric_parts
from medistill.reports.report import fmt_ci, fmt_mean_std
from medistill.reports.segmentation import overlay_figure

ROLE_NAMES = {"mil_teacher": "MIL teacher", "fusion_kd": "fusion KD, no role reversal",
              "ikd": "iterative fusion KD (full)"}
TEST_COLUMNS = [("pixel_f1", "Pixel F1, all images"), ("pixel_f1_pos", "Pixel F1, positives"),
                ("pixel_f1_neg", "F1, negatives"), ("pixel_f1_positive", "Tumour F1, all"),
                ("neg_clean", "Negatives clean"), ("iou", "IoU, all"),
                ("iou_pos", "IoU, positives"), ("image_auc", "Image AUC")]
AGGREGATE_COLUMNS = [("pixel_f1", "Pixel F1"), ("pixel_f1_pos", "Pixel F1 positives"),
                     ("pixel_f1_positive", "Tumour F1, all"), ("iou", "IoU"),
                     ("image_auc", "Image AUC")]


def _ci(metric: Any) -> str:
    return fmt_ci(metric_parts(metric))


def weak_sections(runs: Sequence[Mapping[str, Any]], rounds: Sequence[Mapping[str, Any]],
                  recipe: Any, figures: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """``results["sections"]`` of a mil_fusion run."""
    e = recipe.eval
    rows = [[str(r["name"]), ROLE_NAMES.get(r["role"], r["role"]), str(r["seed"]),
             f"{r['n']} ({r['n_positive']} pos)"]
            + [_ci(r["metrics"].get(k)) for k, _ in TEST_COLUMNS] for r in runs]
    sections = [{
        "title": "Weakly supervised segmentation: test split",
        "text": (f"Means over test images with 95% bootstrap CIs. Probability maps at the "
                 f"original image size, Gaussian smoothing sigma {e.sigma} px (of the "
                 f"{'model input' if e.sigma_at == 'input' else 'original image'}), threshold "
                 f"{e.threshold}. Pixel F1 and IoU (the authors'): per image those of its own "
                 "class, tumour on a tumour image, background on a negative image (empty "
                 "truth), so a small false positive on a negative costs a little. Tumour F1, "
                 "all (ours): the tumour class on every image, a negative scoring 1 if nothing "
                 "is predicted, else 0; Negatives clean: the share of negatives with nothing "
                 "predicted. Image AUC: image label from the maximum pixel probability."),
        "table": {"headers": ["Name", "Run", "Seed", "Images"] + [c for _, c in TEST_COLUMNS],
                  "rows": rows},
    }]
    by_role: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        by_role.setdefault(str(r["role"]), []).append(r)
    agg = []
    for role, rs in by_role.items():
        vals = [fmt_mean_std([finite(metric_parts(x["metrics"].get(k))[0]) for x in rs])
                for k, _ in AGGREGATE_COLUMNS]
        agg.append([ROLE_NAMES.get(role, role), str(len(rs)), *vals])
    sections.append({"title": "Aggregate over seeds",
                     "text": "Mean ± sample standard deviation (n-1) over seeds.",
                     "table": {"headers": ["Run", "Seeds"] + [c for _, c in AGGREGATE_COLUMNS],
                               "rows": agg}})
    f = recipe.fusion
    round_rows = [[str(x["seed"]), ROLE_NAMES.get(x["run"], x["run"]), str(x["round"]),
                   f"{x['teacher_val']:.3f}", f"{x['student_val']:.3f}",
                   "swap" if x["swapped"] else "no", f"{x['teacher_test_f1']:.3f}",
                   f"{x['student_test_f1']:.3f}"] for x in rounds]
    sections.append({
        "title": "Iterative fusion KD: rounds",
        "text": (f"Per round: the teacher's and the trained student's VALIDATION "
                 f"{f.compare_metric} (the role-reversal decision: swap when the student is "
                 f"better by more than {f.min_delta}) and, for information only, their test "
                 "pixel F1 (the authors'; never used for any decision). Round 1 is shared by "
                 "both runs."),
        "table": {"headers": ["Seed", "Run", "Round", f"Teacher val {f.compare_metric}",
                              f"Student val {f.compare_metric}", "Swap",
                              "Teacher test F1", "Student test F1"], "rows": round_rows},
    })
    if figures:
        sections.append({"title": "Predictions", "text": "",
                         "figures": [{"file": fig["path"], "caption": fig["caption"]}
                                     for fig in figures]})
    return sections


def write_weak_figure(out_dir: Path, rows: Sequence[tuple[str, np.ndarray,
                                                       Mapping[str, np.ndarray]]]
                      ) -> list[dict[str, str]]:
    """``figures/overlays.png`` from ``rows`` of ``(title, image, {"truth": mask, model name:
    thresholded map, ...})`` (predicted by the caller,
    :func:`medistill.pipelines.overlays.weak_overlays`); ``[]`` without rows."""
    if not rows:
        return []
    path = Path(out_dir) / "figures" / "overlays.png"
    atomic_write_bytes(path, lambda fh: fh.write(overlay_figure(rows)))
    caption = ("Test images (rows; pos = tumour image, neg = no tumour) with the truth and the "
               "thresholded maps of the first seed's MIL teacher and distilled models (outlined in "
               "green).")
    return [{"key": "overlays", "path": "figures/overlays.png", "caption": caption}]
