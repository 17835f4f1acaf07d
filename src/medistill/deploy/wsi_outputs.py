"""Outputs of whole-slide prediction: class colours, the overlay and heatmap PNGs, the tile CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import numpy as np

from medistill.deploy.predict import probability_columns

#: opacity of the class colours over the thumbnail
OVERLAY_ALPHA = 0.45


def class_colors(n: int) -> np.ndarray:
    """(n, 3) ``uint8`` colours: matplotlib's tab10 (tab20 beyond 10 classes)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    rgba = np.array([cmap(i % cmap.N) for i in range(n)])
    return np.rint(rgba[:, :3] * 255).astype(np.uint8)


def overlay_png(
    thumbnail: np.ndarray, classes_grid: np.ndarray, tile0: float, level0_size: tuple[int, int],
    colors: np.ndarray,
) -> bytes:
    from PIL import Image

    th, tw = thumbnail.shape[:2]
    rows, cols = classes_grid.shape
    sx, sy = level0_size[0] / tw, level0_size[1] / th
    col = np.floor((np.arange(tw) + 0.5) * sx / tile0).astype(np.int64)
    row = np.floor((np.arange(th) + 0.5) * sy / tile0).astype(np.int64)
    valid = (row[:, None] < rows) & (col[None, :] < cols)
    cls = np.full((th, tw), -1, dtype=np.int64)
    cls[valid] = classes_grid[np.minimum(row, rows - 1)[:, None],
                              np.minimum(col, cols - 1)[None, :]][valid]
    out = thumbnail.astype(np.float32)
    hit = cls >= 0
    out[hit] = (1 - OVERLAY_ALPHA) * out[hit] + OVERLAY_ALPHA * colors[cls[hit]]
    buf = io.BytesIO()
    Image.fromarray(np.rint(out).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def heatmap_png(probs_grid: np.ndarray, classes: Sequence[str], colors: np.ndarray,
                 title: str) -> bytes:
    """Argmax class map (white: background) + one probability map per class (up to 6)."""
    from matplotlib.patches import Patch

    from medistill.reports.plots import _figure_class, _png, mpl_text

    rows, cols, k = probs_grid.shape
    tissue = np.isfinite(probs_grid[..., 0])
    argmax = np.where(tissue, np.nan_to_num(probs_grid, nan=-1.0).argmax(-1), -1)
    rgb = np.full((rows, cols, 3), 255, dtype=np.uint8)
    rgb[tissue] = colors[argmax[tissue]]
    panels = 1 + (k if k <= 6 else 0)
    aspect = rows / max(cols, 1)
    width = 3.6
    height = min(max(width * aspect, 1.5), 8.0)
    fig = _figure_class()(figsize=(width * panels, height + 0.9), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    axes[0].imshow(rgb, interpolation="nearest")
    axes[0].set_title("predicted class", fontsize=9)
    axes[0].legend(
        handles=[Patch(color=colors[i] / 255, label=mpl_text(c, 24)) for i, c in
                 enumerate(classes)],
        fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=min(k, 3),
        frameon=False,
    )
    for i in range(panels - 1):
        image = axes[i + 1].imshow(np.ma.masked_invalid(probs_grid[..., i]), cmap="viridis",
                                   vmin=0.0, vmax=1.0, interpolation="nearest")
        axes[i + 1].set_title(f"P({mpl_text(classes[i], 24)})", fontsize=9)
        fig.colorbar(image, ax=axes[i + 1], shrink=0.7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(mpl_text(title, 80), fontsize=9)
    return _png(fig)


def tiles_csv(
    index: np.ndarray, tile0: float, fractions: np.ndarray, probs: np.ndarray,
    classes: Sequence[str],
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["x", "y", "size", "row", "col", "tissue_fraction", "prediction",
                     *probability_columns(classes)])
    xs = np.rint(index[:, 1] * tile0).astype(np.int64)
    ys = np.rint(index[:, 0] * tile0).astype(np.int64)
    predicted = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    size = f"{tile0:.6g}"
    writer.writerows(
        [x, y, size, r, c, f"{f:.4g}", classes[p], *(f"{v:.6g}" for v in pr)]
        for x, y, r, c, f, p, pr in zip(xs.tolist(), ys.tolist(), index[:, 0].tolist(),
                                        index[:, 1].tolist(), fractions.tolist(),
                                        predicted.tolist(), probs, strict=True)
    )
    return buffer.getvalue()

