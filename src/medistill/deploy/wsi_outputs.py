"""Outputs of whole-slide prediction: class colours, the overlay and heatmap PNGs (drawn with
array operations and PIL, no matplotlib figure: the figure took ~5 s per slide), the tile CSV
and a QuPath-readable GeoJSON of the tiles."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence

import numpy as np

from medistill.deploy.predict import probability_columns

#: opacity of the class colours over the thumbnail
OVERLAY_ALPHA = 0.45
#: longest side of each heatmap panel in pixels (the tile grid is scaled to it, nearest)
PANEL_SIDE = 360
#: at most this many per-class probability panels next to the class map
MAX_PROB_PANELS = 6
FONT_PX = 14
PAD = 8
WHITE = (255, 255, 255)
INK = (30, 30, 30)


def class_colors(n: int) -> np.ndarray:
    """(n, 3) ``uint8`` colours: matplotlib's tab10 (tab20 beyond 10 classes)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    rgba = np.array([cmap(i % cmap.N) for i in range(n)])
    return np.rint(rgba[:, :3] * 255).astype(np.uint8)


def viridis_lut() -> np.ndarray:
    """(256, 3) ``uint8`` lookup table of matplotlib's viridis (a colour map, not a figure)."""
    import matplotlib

    return np.rint(matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255
                   ).astype(np.uint8)


# --------------------------------------------------------------------------- drawing helpers
def _font(size: int = FONT_PX):  # noqa: ANN202  (a PIL font)
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _text_width(font, text: str) -> int:  # noqa: ANN001
    from PIL import Image, ImageDraw

    return int(math.ceil(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)))


def _short(text: str, limit: int = 28) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def legend_strip(entries: Sequence[tuple[str, Sequence[int]]], width: int) -> np.ndarray:
    """An (h, width, 3) white strip: one colour swatch + label per entry, wrapped into lines."""
    from PIL import Image, ImageDraw

    font = _font()
    line_h = FONT_PX + 8
    boxes, x, y = [], PAD, 0
    for label, _ in entries:
        w = line_h - 6 + 6 + _text_width(font, label) + 16
        if x + w > width - PAD and x > PAD:
            x, y = PAD, y + line_h
        boxes.append((x, y))
        x += w
    img = Image.new("RGB", (width, y + line_h + PAD), WHITE)
    draw = ImageDraw.Draw(img)
    for (label, colour), (x, y) in zip(entries, boxes, strict=True):
        s = line_h - 6
        draw.rectangle((x, y + 3 + PAD // 2, x + s, y + 3 + PAD // 2 + s),
                       fill=tuple(int(c) for c in colour), outline=INK)
        draw.text((x + s + 6, y + PAD // 2 + 3), label, fill=INK, font=font)
    return np.asarray(img)


def _titled(panel: np.ndarray, title: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    head = Image.new("RGB", (panel.shape[1], FONT_PX + 2 * PAD), WHITE)
    ImageDraw.Draw(head).text((PAD // 2, PAD), title, fill=INK, font=_font())
    return np.concatenate([np.asarray(head), panel])


def _stack(parts: Sequence[np.ndarray], axis: int) -> np.ndarray:
    """Concatenate RGB images along ``axis`` (0: below, 1: beside), padding with white."""
    other = 1 - axis
    size = max(p.shape[other] for p in parts)
    padded = []
    for p in parts:
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[other] = (0, size - p.shape[other])
        padded.append(np.pad(p, pad, constant_values=255))
    return np.concatenate(padded, axis=axis)


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _scaled(grid_rgb: np.ndarray) -> np.ndarray:
    """The (rows, cols, 3) tile grid scaled (nearest) so its longest side is PANEL_SIDE."""
    from PIL import Image

    rows, cols = grid_rgb.shape[:2]
    scale = PANEL_SIDE / max(rows, cols)
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    return np.asarray(Image.fromarray(grid_rgb).resize(size, Image.Resampling.NEAREST))


# --------------------------------------------------------------------------- the two PNGs
def overlay_png(
    thumbnail: np.ndarray, classes_grid: np.ndarray, tile0: float, level0_size: tuple[int, int],
    colors: np.ndarray, classes: Sequence[str] | None = None,
) -> bytes:
    """The thumbnail with each classified tile blended in its class colour, and a legend
    (class colour, name and tile count) below it."""
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
    image = np.rint(out).astype(np.uint8)
    if classes is not None:
        counts = np.bincount(classes_grid[classes_grid >= 0], minlength=len(classes))
        entries = [(f"{_short(c)} ({n})", colors[i]) for i, (c, n) in
                   enumerate(zip(classes, counts.tolist(), strict=True))]
        image = _stack([image, legend_strip(entries, max(tw, 240))], axis=0)
    return _png(image)


def heatmap_png(probs_grid: np.ndarray, classes: Sequence[str], colors: np.ndarray,
                title: str) -> bytes:
    """Argmax class map (white: background) with its legend, then one probability map per
    class (viridis, 0 to 1, up to ``MAX_PROB_PANELS``) with a colour bar; a title above."""
    rows, cols, k = probs_grid.shape
    tissue = np.isfinite(probs_grid[..., 0])
    argmax = np.where(tissue, np.nan_to_num(probs_grid, nan=-1.0).argmax(-1), -1)
    rgb = np.full((rows, cols, 3), 255, dtype=np.uint8)
    rgb[tissue] = colors[argmax[tissue]]
    class_map = _scaled(rgb)
    width = class_map.shape[1]
    legend = legend_strip([(_short(c), colors[i]) for i, c in enumerate(classes)],
                          max(width, 200))
    panels = [_stack([_titled(class_map, "predicted class"), legend], axis=0)]
    if k <= MAX_PROB_PANELS:
        lut = viridis_lut()
        bar = _colour_bar(lut, width)
        for i in range(k):
            p = probs_grid[..., i]
            level = np.rint(np.clip(np.nan_to_num(p, nan=0.0), 0, 1) * 255).astype(np.int64)
            prob_rgb = np.where(np.isfinite(p)[..., None], lut[level], 255).astype(np.uint8)
            panels.append(_stack([_titled(_scaled(prob_rgb), f"P({_short(classes[i], 20)})"),
                                  bar], axis=0))
    spaced = []
    for p in panels:
        spaced += [p, np.full((p.shape[0], PAD * 2, 3), 255, np.uint8)]
    body = _stack(spaced[:-1], axis=1)
    return _png(_stack([_titled(np.full((0, body.shape[1], 3), 255, np.uint8),
                                _short(title, 120)), body], axis=0))


def _colour_bar(lut: np.ndarray, width: int) -> np.ndarray:
    """A horizontal 0-1 gradient of ``lut`` with its end labels, ``width`` pixels wide."""
    from PIL import Image, ImageDraw

    inner = max(width - 2 * PAD, 16)
    ramp = lut[np.linspace(0, 255, inner).round().astype(np.int64)]
    strip = Image.new("RGB", (width, 12 + FONT_PX + 2 * PAD), WHITE)
    strip.paste(Image.fromarray(np.repeat(ramp[None], 12, axis=0)), (PAD, PAD // 2))
    draw, font = ImageDraw.Draw(strip), _font()
    draw.text((PAD, 12 + PAD // 2 + 2), "0", fill=INK, font=font)
    draw.text((PAD + inner - _text_width(font, "1"), 12 + PAD // 2 + 2), "1", fill=INK,
              font=font)
    return np.asarray(strip)


# --------------------------------------------------------------------------- tables
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


def tiles_geojson(
    index: np.ndarray, tile0: float, fractions: np.ndarray, probs: np.ndarray,
    classes: Sequence[str], colors: np.ndarray,
) -> str:
    """A GeoJSON FeatureCollection QuPath imports (File > Import objects, or drag and drop):
    one square ``detection`` per classified tile, in level-0 pixel coordinates, classified
    as its predicted class (name and the overlay's RGB colour) with the measurements
    ``probability`` (of that class), ``P(<class>)`` for every class, ``tissue_fraction``,
    ``row`` and ``col``."""
    predicted = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    classification = [{"name": str(c), "color": [int(v) for v in colors[i]]}
                      for i, c in enumerate(classes)]
    names = [f"P({c})" for c in classes]
    features = []
    for (r, c), f, p, pr in zip(index.tolist(), fractions.tolist(), predicted.tolist(),
                                probs.tolist(), strict=True):
        x0, y0 = round(c * tile0, 3), round(r * tile0, 3)
        x1, y1 = round((c + 1) * tile0, 3), round((r + 1) * tile0, 3)
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon",
                         "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            "properties": {
                "objectType": "detection",
                "classification": classification[p],
                "measurements": {"probability": round(pr[p], 6),
                                 **{n: round(v, 6) for n, v in zip(names, pr, strict=True)},
                                 "tissue_fraction": round(f, 4), "row": r, "col": c},
            },
        })
    return json.dumps({"type": "FeatureCollection", "features": features},
                      separators=(",", ":")) + "\n"
