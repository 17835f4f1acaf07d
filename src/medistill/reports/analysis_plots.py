"""Figures of representation analyses: CKA heatmaps and Grad-CAM overlays (PNG bytes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medistill.reports.plots import _figure_class, _png, mpl_text


def cka_heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str],
                row_title: str, col_title: str) -> bytes:
    """A layer-by-layer linear CKA matrix as an annotated heatmap (values in [0, 1])."""
    matrix = np.asarray(matrix, dtype=float)
    fig = _figure_class()(figsize=(1.2 + 0.8 * len(cols), 1.0 + 0.6 * len(rows)),
                          layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma")
    ax.set_xticks(range(len(cols)), [mpl_text(c) for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [mpl_text(r) for r in rows])
    ax.set_xlabel(mpl_text(col_title))
    ax.set_ylabel(mpl_text(row_title))
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if matrix[i, j] > 0.6 else "white")
    fig.colorbar(im, ax=ax, shrink=0.8, label="linear CKA")
    return _png(fig)


def gradcam_overlays(images: Sequence[np.ndarray], maps: Mapping[str, Sequence[np.ndarray]],
                     titles: Sequence[str] = ()) -> bytes:
    """One column per image: the input, then each model's Grad-CAM map over it (jet, alpha .45).

    Args:
        images: (H, W, 3) uint8 images as the models saw them.
        maps: model name -> one (H, W) map in [0, 1] per image.
        titles: optional column titles (e.g. the true class).
    """
    n, names = len(images), list(maps)
    fig = _figure_class()(figsize=(1.6 * n, 1.6 * (len(names) + 1)), layout="constrained")
    axes = fig.subplots(len(names) + 1, n, squeeze=False)
    for j, image in enumerate(images):
        axes[0, j].imshow(image)
        if j < len(titles):
            axes[0, j].set_title(mpl_text(titles[j], 18), fontsize=8)
        for i, name in enumerate(names, start=1):
            axes[i, j].imshow(image)
            axes[i, j].imshow(np.asarray(maps[name][j]), cmap="jet", alpha=0.45, vmin=0, vmax=1)
    for i, name in enumerate(["input", *names]):
        axes[i, 0].set_ylabel(mpl_text(name, 22), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return _png(fig)
