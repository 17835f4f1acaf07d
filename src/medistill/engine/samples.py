"""Pictures of a few fixed validation items, drawn by a method for TensorBoard.

The trainer knows no task: every few epochs it hands a batch of the first validation items to
:meth:`medistill.engine.method.Method.sample_overlays` and logs the ``(image, caption)`` it gets
back (:meth:`medistill.engine.logging.RunLogger.log_samples`). These helpers draw that picture:

- :func:`class_samples`: a grid of the images, each framed green (predicted = true class) or
  red (wrong), with ``item i: predicted c (p 0.87), true t`` per image in the caption;
- :func:`mask_samples`: a grid of the images with the ground truth OUTLINED in green and the
  prediction outlined in magenta (contours, so the tissue under both stays visible).

Images are shown min-max rescaled per image (the normalisation differs between datasets; this
is for looking, not measuring).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: outline colours of :func:`mask_samples`
TRUTH_RGB = (0, 220, 0)
PRED_RGB = (255, 0, 255)
RIGHT_RGB, WRONG_RGB = (0, 200, 70), (230, 40, 40)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) float -> (N, H, W, 3) uint8, each image rescaled to [0, 255] (one channel
    is repeated to three; more than three: the first three)."""
    x = images.detach().float().cpu()
    x = x[:, :3] if x.shape[1] >= 3 else x[:, :1].expand(-1, 3, -1, -1)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-8)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def grid(tiles: Sequence[np.ndarray], cols: int = 4, gap: int = 2) -> np.ndarray:
    """The (H, W, 3) tiles (one size) in rows of ``cols``, ``gap`` white pixels between."""
    h, w = tiles[0].shape[:2]
    cols = max(1, min(cols, len(tiles)))
    rows = -(-len(tiles) // cols)
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = t
    return out


def _frame(tile: np.ndarray, rgb: tuple[int, int, int], width: int) -> np.ndarray:
    out = tile.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = rgb, rgb, rgb, rgb
    return out


def class_samples(images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                  names: Sequence[str] | None = None) -> tuple[np.ndarray, str]:
    """The classification picture (see the module docstring); ``names``: class names."""
    probs = logits.detach().float().softmax(1).cpu()
    pred = probs.argmax(1)
    width = max(2, images.shape[-1] // 32)

    def name(k: int) -> str:
        return names[k] if names is not None and k < len(names) else str(k)

    tiles, lines = [], []
    for i, (img, p, t) in enumerate(zip(to_uint8(images), pred.tolist(),
                                        labels.cpu().tolist(), strict=True)):
        tiles.append(_frame(img, RIGHT_RGB if p == t else WRONG_RGB, width))
        lines.append(f"item {i}: predicted {name(p)} (p {float(probs[i, p]):.2f}), "
                     f"true {name(t) if t >= 0 else 'unlabelled'}")
    caption = ("Validation items (left to right, top to bottom); frame green: right, red: "
               "wrong.  \n" + "  \n".join(lines))
    return grid(tiles), caption


def mask_samples(images: torch.Tensor, pred: np.ndarray, truth: np.ndarray
                 ) -> tuple[np.ndarray, str]:
    """The segmentation picture: ``pred`` and ``truth`` are (N, H, W) class-index maps."""
    from medistill.reports.segmentation import contours, outline_width

    tiles = []
    for img, p, t in zip(to_uint8(images), pred, truth, strict=True):
        width = outline_width(t.shape)
        tile = img.copy()
        tile[contours(np.asarray(t), width)] = TRUTH_RGB
        tile[contours(np.asarray(p), width)] = PRED_RGB  # drawn last: on top where both agree
        tiles.append(tile)
    caption = (f"Validation items 0-{len(tiles) - 1} (left to right, top to bottom): ground "
               "truth outlined green, prediction outlined magenta.")
    return grid(tiles), caption
