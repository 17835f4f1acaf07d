"""Segmentation parts of the run report: metric tables and image / truth / prediction overlays.

Used by :func:`medistill.reports.write_report` when ``results["task"] == "segmentation"``;
run records then carry ``metrics`` with ``dice``, ``iou``, ``voe``, ``rvd`` and ``hd95`` (each
``{"value", "low", "high"}``) and optionally ``per_class`` (class name -> the same); an
optional ``results["paired"]`` (from :func:`medistill.pipelines.segmentation.paired_comparisons`)
is rendered as the paired differences against the reference run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medistill.output import atomic_write_bytes
from medistill.reports.plots import _figure_class, _png, as_map, finite, metric_parts

SEG_HEADERS = ("Name|Role|Model|Seed|Split|Cases|DSC (95% CI)|RVD (95% CI)|VOE (95% CI)|"
               "HD95 px (95% CI)|GFLOPs|Params|Latency ms, median (IQR)").split("|")
#: class index -> RGB overlay colour (background transparent)
COLOURS = np.array([[0, 0, 0], [0, 200, 70], [230, 40, 40], [40, 90, 240], [240, 200, 0],
                    [200, 0, 200]], dtype=np.float32)


def _ci(m: Any, decimals: int = 3) -> str:
    from medistill.reports.report import fmt_ci

    return fmt_ci(metric_parts(m), decimals)


def _signed(x: Any, decimals: int = 3) -> str:
    from medistill.reports.report import DASH

    v = finite(x)
    return DASH if v is None else f"{v:+.{decimals}f}"


def paired_blocks(paired: Mapping[str, Any]) -> list[Any]:
    """Per seed: each role minus the reference on the same test cases, with its paired 95% CI;
    over seeds: the mean and sd of those differences."""
    from medistill.reports.report import Heading, Para, Table, _text

    ref, metric = _text(paired.get("reference")), _text(paired.get("metric"))
    rows = []
    for d in paired.get("per_seed") or []:
        rows.append([_text(d.get("role")), _text(d.get("seed")), _text(d.get("n")),
                     _ci(d.get("model")), _ci(d.get("reference")),
                     f"{_signed(d.get('value'))} [{_signed(d.get('low'))}, "
                     f"{_signed(d.get('high'))}]", _ci(d.get("p_not_better"))])
    agg = []
    for s in paired.get("over_seeds") or []:
        sd = finite(s.get("sd"))
        agg.append([_text(s.get("role")), _text(s.get("n_seeds")),
                    _signed(s.get("mean")) + ("" if sd is None else f" ± {sd:.3f}"),
                    _text(s.get("n_positive")),
                    f"{_text(s.get('n_ci_above_zero'))} / {_text(s.get('n_ci_below_zero'))}"])
    return [
        Heading(f"Paired differences vs {ref} ({metric} per case)"),
        Table(["Role", "Seed", "Cases", "Model", ref, "Difference [95% CI]",
               "P(diff <= 0)"], rows, frozenset(range(1, 7))),
        Table(["Role", "Seeds", "Difference (mean ± sd)", "Seeds > 0",
               "CIs above / below 0"], agg, frozenset(range(1, 5))),
        Para(f"Role minus {ref} of the same seed on the same test cases: the per-case "
             f"differences resampled together ({_text(paired.get('n_resamples'))} "
             "percentile-bootstrap resamples), so the interval is that of the difference. "
             "The teacher row is the teacher-student gap. Over seeds: mean ± sample sd.",
             css="caption"),
    ]


def seg_blocks(runs: Sequence[Mapping[str, Any]],
               paired: Mapping[str, Any] | None = None) -> list[Any]:
    """Headings, tables and captions of the segmentation report."""
    from medistill.reports.report import (
        DASH,
        Heading,
        Para,
        Table,
        _text,
        fmt_latency,
        fmt_params,
        fmt_sig,
        role_aggregate_blocks,
    )

    rows = []
    for r in runs:
        m, eff = as_map(r.get("metrics")), as_map(r.get("efficiency"))
        rows.append([_text(r.get("name")), _text(r.get("role")), _text(r.get("model")),
                     _text(r.get("seed")), _text(r.get("split")), _text(r.get("n")),
                     _ci(m.get("dice")), _ci(m.get("rvd")), _ci(m.get("voe")),
                     _ci(m.get("hd95"), 1), fmt_sig(eff.get("gflops")),
                     fmt_params(eff.get("params")), fmt_latency(eff)])
    blocks: list[Any] = [Heading("Models"), Table(SEG_HEADERS, rows,
                                                  frozenset(range(5, 13))).without_empty(6)]
    blocks.append(Para(
        "Means over test cases with 95% bootstrap CIs. DSC: Dice; RVD: predicted/true area - 1 "
        "(signed); VOE: 1 - IoU; HD95: 95th-percentile Hausdorff distance in pixels of the "
        f"original images. {DASH} = not available.", css="caption"))
    # aggregate over seeds
    roles = [str(r.get("role")) for r in runs]
    if len(set(roles)) < len(roles):  # some role has several seeds
        present = {k for r in runs for k in as_map(r.get("metrics"))}
        blocks += role_aggregate_blocks(runs, [(k, h) for k, h in (
            ("dice", "DSC (mean ± sd)"), ("rvd", "RVD (mean ± sd)"), ("voe", "VOE (mean ± sd)"),
            ("hd95", "HD95 (mean ± sd)")) if k in present])
    if paired:
        blocks += paired_blocks(paired)
    # per class
    classes = [c for r in runs for c in as_map(r.get("per_class"))]
    if classes:
        names = list(dict.fromkeys(classes))
        pc_rows = []
        for r in runs:
            pc = as_map(r.get("per_class"))
            pc_rows.append([_text(r.get("name"))] + [
                f"{_ci(as_map(pc.get(c)).get('dice'))} / {_ci(as_map(pc.get(c)).get('rvd'))}"
                for c in names])
        blocks += [Heading("Per class"),
                   Table(["Name"] + [f"{c}: DSC / RVD" for c in names], pc_rows,
                         frozenset(range(1, len(names) + 1)))]
    return blocks


def outline_width(shape: tuple[int, ...]) -> int:
    """Contour width in pixels: 1 px up to 256 px images, about 1/256 of the side beyond."""
    return max(1, round(max(shape[:2]) / 256))


def contours(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Boolean map of the inner boundary of every labelled region (``labels > 0``), ``width``
    pixels thick (the boundary dilated inwards, so it never covers background)."""
    from scipy.ndimage import binary_dilation
    from skimage.segmentation import find_boundaries

    edges = find_boundaries(labels, mode="inner") & (labels > 0)
    if width > 1:
        edges = binary_dilation(edges, iterations=width - 1) & (labels > 0)
    return edges


def overlay(image: np.ndarray, mask: np.ndarray, width: int | None = None) -> np.ndarray:
    """An (H, W, 3) uint8 copy of ``image`` with each class region of ``mask`` OUTLINED in
    its colour (contours only: the tissue under a prediction stays visible, which a filled
    blend hid)."""
    out = np.ascontiguousarray(image[..., :3]).astype(np.uint8, copy=True)
    mask = np.asarray(mask)
    edges = contours(mask, outline_width(mask.shape) if width is None else width)
    out[edges] = COLOURS[np.clip(mask[edges], 0, len(COLOURS) - 1)].astype(np.uint8)
    return out


def overlay_figure(rows: Sequence[tuple[str, np.ndarray, Mapping[str, np.ndarray]]]) -> bytes:
    """PNG of a grid: one row per image (image, then one overlay per named mask)."""
    names = list(rows[0][2])
    fig = _figure_class()(figsize=(2.2 * (len(names) + 1), 2.2 * len(rows)),
                          layout="constrained")
    axes = fig.subplots(len(rows), len(names) + 1, squeeze=False)
    for i, (title, image, masks) in enumerate(rows):
        panels = [("image", image)] + [(n, overlay(image, masks[n])) for n in names]
        for j, (name, arr) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(arr)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0:
                ax.set_ylabel(title[:24], fontsize=8)
    return _png(fig)


def write_overlay_figure(out_dir: Path, rows: Sequence[tuple[str, np.ndarray,
                                                          Mapping[str, np.ndarray]]],
                         seed: int = 0) -> list[dict[str, str]]:
    """Write ``figures/overlays.png`` from ``rows`` of ``(title, image, {"truth": mask,
    model name: mask, ...})`` (the predictions come from the caller,
    :func:`medistill.pipelines.overlays.write_overlays`); return its figure entry for
    ``results["figures"]`` (``[]`` without rows)."""
    if not rows:
        return []
    path = Path(out_dir) / "figures" / "overlays.png"
    atomic_write_bytes(path, lambda f: f.write(overlay_figure(rows)))
    caption = (f"Test images (rows) with the ground truth and each model's prediction (seed "
               f"{seed}) outlined in colour: " + ", ".join(
                   f"class {k} {c}" for k, c in ((1, "green"), (2, "red"), (3, "blue"))) + ".")
    return [{"key": "overlays", "path": "figures/overlays.png", "caption": caption}]
