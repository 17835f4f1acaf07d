"""Instance-segmentation parts of the run report: metric tables, student / teacher
efficiency ratios, the AJI gap closed, and instance overlays.

Used by :func:`medistill.reports.write_report` when ``results["task"] == "instance"``; run
records carry ``metrics`` with ``aji``, ``pq``, ``dq``, ``sq``, ``f1``, ``voi_split``,
``voi_merge``, ``arand`` and (newer records) ``voi_split_bg`` / ``voi_merge_bg`` (each
``{"value", "low", "high"}``) and ``efficiency``. The VOI columns are the graph-relation
authors' convention (true background ignored); the background-included pair is an extra
column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medistill.metrics.gap import gap_closed
from medistill.output import atomic_write_bytes
from medistill.reports.plots import _figure_class, _png, as_map, finite, metric_parts

HEADERS = ("Name|Role|Seed|Images|AJI (95% CI)|PQ (95% CI)|DQ = F1|SQ|VOI split|VOI merge|"
           "VOI split / merge, bg incl.|ARAND|GFLOPs|Params|Latency ms, median (IQR)").split("|")
AGG_METRICS = ("aji", "pq", "voi_split", "voi_merge", "arand")


def _ci(m: Any) -> str:
    from medistill.reports.report import fmt_ci

    return fmt_ci(metric_parts(m), 3)


def _val(m: Any) -> str:
    v = finite(as_map(m).get("value"))
    return "–" if v is None else f"{v:.3f}"


def instance_blocks(runs: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Headings, tables and captions of the instance report."""
    from medistill.reports.report import (
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
        rows.append([_text(r.get("name")), _text(r.get("role")), _text(r.get("seed")),
                     _text(r.get("n")), _ci(m.get("aji")), _ci(m.get("pq")), _val(m.get("dq")),
                     _val(m.get("sq")), _val(m.get("voi_split")), _val(m.get("voi_merge")),
                     f"{_val(m.get('voi_split_bg'))} / {_val(m.get('voi_merge_bg'))}",
                     _val(m.get("arand")), fmt_sig(eff.get("gflops")),
                     fmt_params(eff.get("params")), fmt_latency(eff)])
    blocks: list[Any] = [Heading("Models"), Table(HEADERS, rows, frozenset(range(2, 15))),
                         Para("Means over test images with 95% bootstrap CIs. Higher is better "
                              "for AJI, PQ, DQ, SQ (0 for an image without matches, as in "
                              "HoVer-Net); lower for VOI (bits) and ARAND. VOI split / merge "
                              "over the true foreground (the graph-relation authors' "
                              "convention); 'bg incl.' counts the background as a region.",
                              css="caption")]
    headers = ["AJI", "PQ", "VOI split", "VOI merge", "ARAND"]
    blocks += role_aggregate_blocks(runs, list(zip(AGG_METRICS, headers, strict=True)), "Runs")
    return blocks


def instance_sections(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``results["sections"]``: efficiency ratios to the teacher and the AJI gap closed."""
    teacher = next((r for r in runs if r.get("role") == "teacher"), None)
    if teacher is None:
        return []
    te = as_map(teacher.get("efficiency"))
    rows, seen = [], set()
    for r in runs:
        if r.get("role") == "teacher" or r.get("role") in seen:
            continue
        seen.add(r.get("role"))
        e = as_map(r.get("efficiency"))
        ratio = [_ratio(e.get(k), te.get(k)) for k in ("params", "gflops", "latency_ms")]
        rows.append([str(r.get("role"))] + ratio)
    gap = gap_closed([dict(r) for r in runs])
    gap_rows = [[role, "–" if v is None else f"{100 * v:.1f}%"] for role, v in gap.items()
                if any(r.get("role") == role for r in runs)]
    return [
        {"title": "Student / teacher efficiency",
         "text": "Student cost as a percentage of the teacher's (first run of each role).",
         "table": {"headers": ["Role", "Params", "GFLOPs", "CPU latency"], "rows": rows}},
        {"title": "Teacher-student AJI gap closed",
         "text": "(AJI of the distilled student - AJI of the student without KD) / (AJI of "
                 "the teacher - AJI of the student without KD), per seed, averaged.",
         "table": {"headers": ["Role", "Gap closed"], "rows": gap_rows}},
    ]


def _ratio(a: Any, b: Any) -> str:
    x, y = finite(a), finite(b)
    return "–" if x is None or not y else f"{100 * x / y:.1f}%"


def colour_instances(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 image with every instance OUTLINED in its own colour (contours, not
    fills: the nucleus under each outline stays visible)."""
    from medistill.reports.segmentation import contours, outline_width

    rng = np.random.default_rng(0)
    colours = rng.integers(40, 256, (int(labels.max()) + 1, 3)).astype(np.uint8)
    out = np.ascontiguousarray(image[..., :3]).astype(np.uint8, copy=True)
    edges = contours(labels, outline_width(labels.shape))
    out[edges] = colours[labels[edges]]
    return out


def instance_figure(rows: Sequence[tuple[str, np.ndarray, Mapping[str, np.ndarray]]]) -> bytes:
    names = list(rows[0][2])
    fig = _figure_class()(figsize=(2.6 * (len(names) + 1), 2.6 * len(rows)),
                          layout="constrained")
    axes = fig.subplots(len(rows), len(names) + 1, squeeze=False)
    for i, (title, image, maps) in enumerate(rows):
        panels = [("image", image)] + [
            (f"{n} ({int(len(np.unique(maps[n])) - (maps[n] == 0).any())})",
             colour_instances(image, maps[n])) for n in names]
        for j, (name, arr) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(arr)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(title[:24], fontsize=8)
    return _png(fig)


def write_instance_figure(out_dir: Path, rows: Sequence[tuple[str, np.ndarray,
                                                           Mapping[str, np.ndarray]]]
                          ) -> list[dict[str, str]]:
    """Write ``figures/instance_overlays.png`` from ``rows`` of ``(title, image, {"truth":
    labels, model name: labels, ...})`` (predicted by the caller,
    :func:`medistill.pipelines.overlays.write_instance_overlays`); ``[]`` without rows."""
    if not rows:
        return []
    path = Path(out_dir) / "figures" / "instance_overlays.png"
    atomic_write_bytes(path, lambda f: f.write(instance_figure(rows)))
    caption = ("Test images (rows): ground truth and each model's instances (first seed), each "
               "outlined in its own colour; the panel titles give the instance counts.")
    return [{"key": "instance_overlays", "path": "figures/instance_overlays.png",
             "caption": caption}]
