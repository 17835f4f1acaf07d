"""Figures of the run report, and the small value helpers they share with the tables.

:func:`render_figures` turns the runs into ``(key, png bytes, caption)`` triples, all rendered
**in memory**; :mod:`medistill.reports.report` decides where they are written. Each figure
function returns the PNG bytes, or ``None`` when there is nothing to draw. matplotlib and numpy
are imported lazily inside the functions so that ``import medistill.reports`` stays cheap.

The figures are built with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``,
so no global figure state is touched and nothing is ever shown on screen.
"""

from __future__ import annotations

import io
import math
import numbers
import sys
from collections.abc import Mapping, Sequence
from typing import Any

DPI = 110
CM_PER_FIGURE = 12
ROLE_ORDER = ("teacher", "baseline", "kd", "kd_aux")
_MARKERS = "osD^vP*X<>h"
_LINESTYLES = ("-", "--", ":", "-.")


def _figure_class() -> Any:
    """Select the Agg backend and return :class:`matplotlib.figure.Figure`.

    The backend is only switched when ``pyplot`` has not been imported yet: a user who already
    works with an interactive backend (e.g. a notebook) keeps it. Rendering does not depend on
    the backend anyway, since figures are saved straight to PNG bytes.
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def clipped_texts(fig: Any, tolerance_px: float = 1.0) -> list[str]:
    """What a PNG of ``fig`` would cut off: one description per axes (titles, axis and tick
    labels, colour-bar labels: its drawn extent), figure text or legend that reaches outside
    the canvas once drawn. Empty when everything fits."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # what savefig draws with
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    out = []

    def outside(ext: Any) -> bool:
        return (ext.x0 < box.x0 - tolerance_px or ext.y0 < box.y0 - tolerance_px
                or ext.x1 > box.x1 + tolerance_px or ext.y1 > box.y1 + tolerance_px)

    for ax in fig.axes:
        ext = ax.get_tightbbox(renderer)
        if ax.get_visible() and ext is not None and outside(ext):
            out.append(f"axes {ax.get_title() or ax.get_ylabel() or ax.get_label()!r}")
    for artist in [*fig.texts, *fig.legends]:
        if artist.get_visible() and outside(artist.get_window_extent(renderer)):
            out.append(f"{type(artist).__name__} {getattr(artist, 'get_text', str)()!r}")
    return out


# ------------------------------------------------------------------------------ value helpers
def finite(x: Any) -> float | None:
    """``x`` as a finite float, or ``None`` (missing, non-numeric, NaN or infinite)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def as_map(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def mag_label(factor: Any) -> str:
    """Magnification label of a downsampling factor: 1 -> ``1x``, 8 -> ``1/8x``, 0.5 -> ``2x``."""
    f = finite(factor)
    if f is None or f <= 0:
        return "–"
    if f == 1:
        return "1x"
    return f"1/{f:g}x" if f > 1 else f"{1 / f:g}x"


def metric_parts(metric: Any) -> tuple[float | None, float | None, float | None]:
    """``(value, low, high)`` of a metric given as ``{"value", "low", "high"}`` or a bare number."""
    if isinstance(metric, Mapping):
        return finite(metric.get("value")), finite(metric.get("low")), finite(metric.get("high"))
    return finite(metric), None, None


def run_metric(run: Mapping[str, Any], name: str) -> tuple[float | None, ...]:
    return metric_parts(as_map(run.get("metrics")).get(name))


Group = tuple[str, float | None, str, list[Mapping[str, Any]]]


def group_runs(runs: Sequence[Mapping[str, Any]]) -> list[Group]:
    """Runs grouped by (role, factor, split), sorted by role (teacher first) then factor."""
    groups: dict[tuple[str, float | None, str], list[Mapping[str, Any]]] = {}
    for run in runs:
        key = (str(run.get("role", "")), finite(run.get("factor")), str(run.get("split", "")))
        groups.setdefault(key, []).append(run)

    def order(k: tuple[str, float | None, str]) -> tuple:
        role = ROLE_ORDER.index(k[0]) if k[0] in ROLE_ORDER else len(ROLE_ORDER)
        return (role, k[0], k[1] is None, k[1] or 0.0, k[2])

    return [(*key, groups[key]) for key in sorted(groups, key=order)]


def mpl_text(text: str, limit: int | None = None) -> str:
    """Make ``text`` safe for matplotlib (no mathtext from ``$``), optionally shortened."""
    text = " ".join(str(text).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def accuracy_vs_gflops(points: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Accuracy vs GFLOPs (log x), one line+marker series per ``series`` key.

    Each point is a mapping with ``series``, ``factor``, ``label`` (magnification), ``x``
    (GFLOPs > 0), ``y`` (accuracy) and ``low``/``high`` (error-bar ends). Points of one series
    are joined in order of increasing downsampling factor.
    """
    if not points:
        return None
    figure_cls = _figure_class()
    fig = figure_cls(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    series: dict[str, list[Mapping[str, Any]]] = {}
    for point in points:
        series.setdefault(str(point["series"]), []).append(point)
    for i, (name, pts) in enumerate(series.items()):
        pts = sorted(pts, key=lambda p: p["factor"])
        xs = [p["x"] for p in pts]
        ys = [p["y"] for p in pts]
        below = [max(p["y"] - p["low"], 0.0) for p in pts]
        above = [max(p["high"] - p["y"], 0.0) for p in pts]
        color = f"C{i % 10}"
        ax.errorbar(
            xs,
            ys,
            yerr=[below, above],
            fmt="-" + _MARKERS[i % len(_MARKERS)],
            color=color,
            capsize=3,
            markersize=6,
            linewidth=1.5,
            label=mpl_text(name, 40),
        )
        # alternate label corners between series so labels at the same GFLOPs rarely collide
        dx, dy = ((6, 5), (6, -12), (-6, 5), (-6, -12))[i % 4]
        for p in pts:
            ax.annotate(
                mpl_text(p["label"]),
                (p["x"], p["y"]),
                textcoords="offset points",
                xytext=(dx, dy),
                ha="left" if dx > 0 else "right",
                fontsize=8,
                color=color,
            )
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.1)
    ax.set_xlabel("GFLOPs per image (log scale)")
    ax.set_ylabel("Accuracy")
    ax.set_title("Accuracy vs GFLOPs across magnifications")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="Role", fontsize=8, title_fontsize=9)
    return _png(fig)


def confusion_matrices(
    items: Sequence[tuple[str, Sequence[Sequence[float]]]], classes: Sequence[str]
) -> bytes | None:
    """A grid of row-normalised confusion-matrix heatmaps, counts written in the cells.

    ``items`` is a list of ``(run name, square matrix)``; rows are true labels, columns are
    predictions. ``classes`` labels the ticks when its length matches the matrix size.
    """
    fig = confusion_matrices_figure(items, classes)
    return None if fig is None else _png(fig)


def confusion_matrices_figure(
    items: Sequence[tuple[str, Sequence[Sequence[float]]]], classes: Sequence[str]
) -> Any:
    """The :class:`~matplotlib.figure.Figure` of :func:`confusion_matrices` (``None``: no items).

    The colour bar spans the full height of the panels and its label is two short lines, so
    it fits beside a single row of small matrices (a one-line label longer than the bar was
    cut off at the figure's edges).
    """
    if not items:
        return None
    import numpy as np

    figure_cls = _figure_class()
    n = len(items)
    k = max(len(cm) for _, cm in items)
    ncols = min(4 if k <= 5 else 3, n)  # wider panels for many classes: counts stay legible
    nrows = math.ceil(n / ncols)
    cell = max(3.0, 0.4 * k + 1.7)
    fig = figure_cls(figsize=(cell * ncols + 1.0, cell * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    font = max(5.0, min(10.0, 90.0 / k))
    image = None
    for ax, (name, cm) in zip(axes.flat, items, strict=False):
        counts = np.array([[np.nan if (x := finite(v)) is None else x for v in row] for row in cm])
        totals = np.nansum(counts, axis=1, keepdims=True)
        norm = np.divide(np.nan_to_num(counts), totals, out=np.zeros_like(counts), where=totals > 0)
        image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
        size = counts.shape[0]
        labels = list(classes) if len(classes) == size else [str(i) for i in range(size)]
        labels = [mpl_text(label, 14) for label in labels]
        ax.set_xticks(range(size), labels, rotation=45, ha="right", fontsize=font)
        ax.set_yticks(range(size), labels, fontsize=font)
        ax.set_xlabel("Predicted", fontsize=8)
        ax.set_ylabel("True", fontsize=8)
        ax.set_title(mpl_text(name, 32), fontsize=9)
        if size <= 30:
            for r in range(size):
                for c in range(size):
                    value = counts[r, c]
                    text = "–" if np.isnan(value) else f"{value:.4g}"
                    color = "white" if norm[r, c] > 0.55 else "black"
                    ax.text(c, r, text, ha="center", va="center", fontsize=font, color=color)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.9, fraction=0.05)
        bar.set_label("Fraction of true class\n(row-normalised)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return fig


def training_curves(curves: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> bytes | None:
    """``train_loss`` per epoch on the first panel, one more panel per ``val_*`` metric.

    ``curves`` is a list of ``(run name, history)``; a history row's x value is its ``epoch``
    (or its 1-based position when that is missing). Returns ``None`` when no row holds
    ``train_loss`` or a ``val_*`` value.
    """
    keys: list[str] = []
    val_keys: set[str] = set()
    for _, history in curves:
        for row in history:
            for key, value in row.items():
                if finite(value) is None:
                    continue
                if key == "train_loss" and key not in keys:
                    keys.insert(0, key)
                elif isinstance(key, str) and key.startswith("val_"):
                    val_keys.add(key)
    keys += sorted(val_keys)
    if not keys:
        return None
    figure_cls = _figure_class()
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    legend_rows = math.ceil(len(curves) / 3)
    fig = figure_cls(
        figsize=(5.0 * ncols, 3.6 * nrows + 0.25 * legend_rows + 0.3), layout="constrained"
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if len(curves) > 10 else "tab10"]
    handles: dict[str, Any] = {}
    for ri, (name, history) in enumerate(curves):
        color = cmap(ri % cmap.N)
        style = _LINESTYLES[(ri // cmap.N) % len(_LINESTYLES)]
        for ax, key in zip(axes.flat, keys, strict=False):
            xs: list[float] = []
            ys: list[float] = []
            for i, row in enumerate(history):
                if key not in row:
                    continue
                epoch = finite(row.get("epoch"))
                y = finite(row.get(key))
                xs.append(float(i + 1) if epoch is None else epoch)
                ys.append(math.nan if y is None else y)
            if not xs:
                continue
            (line,) = ax.plot(
                xs,
                ys,
                color=color,
                linestyle=style,
                linewidth=1.4,
                marker="o" if len(xs) <= 40 else None,
                markersize=3,
            )
            handles.setdefault(name, line)
    for ax, key in zip(axes.flat, keys, strict=False):
        ax.set_title(mpl_text(key), fontsize=10)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(mpl_text(key))
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(keys) :]:
        ax.set_axis_off()
    fig.legend(
        list(handles.values()),
        [mpl_text(n, 40) for n in handles],
        loc="outside lower center",
        ncol=min(3, max(len(handles), 1)),
        fontsize=8,
    )
    return _png(fig)


# ------------------------------------------------------------------------------ report figures
def curve_points(groups: Sequence[Group]) -> tuple[list[dict[str, Any]], int]:
    """Points of :func:`accuracy_vs_gflops` (one per group), and how many runs were left out.

    A group's point is its mean GFLOPs and mean accuracy over seeds; the error bar runs from the
    lowest CI lower bound to the highest CI upper bound of its runs (the CI itself for one run).
    """
    multi_split = len({g[2] for g in groups}) > 1
    points, skipped = [], 0
    for role, factor, split, runs in groups:
        gflops = [finite(as_map(r.get("efficiency")).get("gflops")) for r in runs]
        gflops = [g for g in gflops if g is not None and g > 0]
        accs = [
            (v, lo, hi) for v, lo, hi in (run_metric(r, "accuracy") for r in runs) if v is not None
        ]
        if not gflops or not accs:
            skipped += len(runs)
            continue
        skipped += len(runs) - len(accs)
        points.append(
            {
                "series": f"{role} ({split})" if multi_split else role,
                "n": len(accs),
                "factor": math.inf if factor is None else factor,
                "label": mag_label(factor),
                "x": sum(gflops) / len(gflops),
                "y": sum(v for v, _, _ in accs) / len(accs),
                "low": min(v if lo is None else lo for v, lo, _ in accs),
                "high": max(v if hi is None else hi for v, _, hi in accs),
            }
        )
    return points, skipped


def _square(cm: Any) -> bool:
    if not isinstance(cm, Sequence) or isinstance(cm, str) or not cm:
        return False
    return all(isinstance(r, Sequence) and not isinstance(r, str) and len(r) == len(cm) for r in cm)


def render_figures(
    runs: Sequence[Mapping[str, Any]], classes: Sequence[str], groups: Sequence[Group]
) -> list[tuple[str, bytes, str]]:
    """Every report figure as ``(key, png bytes, caption)``; nothing is written to disk."""
    figures: list[tuple[str, bytes, str]] = []

    def add(key: str, png: bytes | None, caption: str) -> None:
        if png is not None:
            figures.append((key, png, caption))

    points, skipped = curve_points(groups)
    caption = (
        "Accuracy vs GFLOPs across magnifications (x: GFLOPs per image, log scale). One series "
        "per role, points joined in order of downsampling factor and labelled with the "
        "magnification. Single-seed points: error bars are the 95% bootstrap CI."
    )
    if any(p["n"] > 1 for p in points):
        caption += (
            " Multi-seed points: the marker is the mean accuracy over seeds and the error bar "
            "spans from the lowest CI lower bound to the highest CI upper bound across seeds."
        )
    if skipped:
        caption += f" {skipped} run(s) without GFLOPs or accuracy are not plotted."
    add("accuracy_vs_gflops", accuracy_vs_gflops(points), caption)

    cms = [
        (str(r.get("name", "")), r["confusion_matrix"])
        for r in runs
        if _square(r.get("confusion_matrix"))
    ]
    chunks = [cms[i : i + CM_PER_FIGURE] for i in range(0, len(cms), CM_PER_FIGURE)]
    for i, chunk in enumerate(chunks, start=1):
        part = f" (part {i} of {len(chunks)})" if len(chunks) > 1 else ""
        add(
            f"confusion_matrices_{i}",
            confusion_matrices(chunk, classes),
            f"Confusion matrices{part}: rows are true classes, columns predictions; colours are "
            "row-normalised (fraction of the true class), cells show raw counts.",
        )

    curves = []
    for run in runs:
        history = run.get("history")
        if isinstance(history, Sequence) and not isinstance(history, str):
            rows = [h for h in history if isinstance(h, Mapping)]
            if rows:
                curves.append((str(run.get("name", "")), rows))
    add(
        "training_curves",
        training_curves(curves),
        "Training curves: train_loss per epoch (first panel) and every val_* metric recorded "
        "in the run histories (one panel each).",
    )
    return figures
