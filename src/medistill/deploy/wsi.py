"""Whole-slide inference: tile a slide with OpenSlide at a chosen resolution and classify it.

:func:`predict_wsi` runs a medistill model (a PyTorch model file such as a run's ``best.pt``,
or a model exported by ``medistill export``) over every tissue tile of a whole-slide image.

Resolution
    The slide is processed at ONE resolution, stated by the caller as microns per pixel
    (``mpp``) or as an objective magnification (``magnification``, converted with the slide's
    ``openslide.objective-power``: 10x on a 40x slide is a downsample of 4). The model file does
    not record the physical resolution of its training images (only the view ``factor``
    relative to them), so the resolution the model expects must come from the user. Without
    either argument the default is the slide's base resolution downsampled by the model's view
    factor (``mpp = openslide.mpp-x * factor``), which is right only when the training images
    were scanned at the slide's base resolution; the summary records which rule was used.
    A slide without mpp metadata needs ``magnification`` (``mpp`` cannot be converted then).
    Requests finer than the slide's base resolution (by more than 2 %) are refused.

Reading
    The pyramid level read is the one with the largest downsample not above the requested one
    (``slide.get_best_level_for_downsample``); the remaining factor is applied with the same
    Lanczos filter as training (:func:`medistill.data.transforms.lanczos_resize`). Within 2 % of
    a level's downsample the level is used as is (no resampling; the mpp actually used is
    reported). Regions are read a row segment at a time (up to ``MAX_TILES_PER_READ`` tiles per
    ``read_region`` call), resampled as one image and cut into tiles with a reshape, on a
    background thread while the model runs on the previous batch.

Tiles
    A grid of non-overlapping ``tile_px`` x ``tile_px`` tiles at the processing resolution,
    starting at the slide's top-left corner; partial tiles at the right and bottom edges are
    dropped. ``tile_px`` defaults to the model's input size (for ``view.upsample`` models: the
    degraded size, upsampled bilinearly to the model input as in training).

Tissue
    Otsu's threshold on the HSV saturation of a thumbnail (lightly smoothed; never below
    ``MIN_SATURATION``, so an empty slide gives no tissue); a tile is kept when the fraction of
    tissue pixels under it is ``>= tissue_threshold``. Background glass is white-grey (low
    saturation), stained tissue is not. (On a slide covered wall to wall by tissue Otsu splits
    the tissue itself: pass ``tissue_threshold=0`` to keep every tile.)

Outputs (each written atomically: temp file + ``os.replace``; ``summary.json`` last)
    ``tiles.csv``, ``heatmap.png``, ``overlay.png``, ``summary.json`` in ``out_dir``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medistill.data.transforms import degraded_size, lanczos_resize
from medistill.deploy.predict import load_exported, sidecar_path, softmax
from medistill.deploy.wsi_outputs import class_colors, heatmap_png, overlay_png, tiles_csv
from medistill.engine.checkpoint import atomic_write_bytes, atomic_write_text, load_model
from medistill.errors import CheckpointError, DataError, MedistillError

#: relative tolerance within which a requested downsample snaps to a pyramid level
LEVEL_TOLERANCE = 0.02
#: at most this many tiles are read (and resampled) by one ``read_region`` call
MAX_TILES_PER_READ = 32
#: the tissue thumbnail has at least this many pixels per tile side (up to THUMB_MAX_SIDE)
THUMB_PX_PER_TILE = 4
THUMB_MIN_SIDE = 1024
THUMB_MAX_SIDE = 4096
#: Otsu's saturation threshold is never below this (an empty slide gives no tissue)
MIN_SATURATION = 0.05
#: opacity of the class colours in overlay.png
OUTPUT_FILES = ("tiles.csv", "heatmap.png", "overlay.png", "summary.json")


# --------------------------------------------------------------------------- opening a slide
def open_slide(path: str | Path) -> Any:
    """``openslide.OpenSlide(path)`` with one-line :class:`DataError` messages naming the file."""
    try:
        import openslide
    except ImportError:
        raise MedistillError(
            "whole-slide inference needs OpenSlide: pip install 'medistill[wsi]'"
        ) from None
    path = Path(path)
    if not path.is_file():
        raise DataError(f"slide not found: {path}")
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        raise DataError(f"cannot read slide {path}: not a format OpenSlide supports") from None
    except (openslide.OpenSlideError, OSError) as e:
        raise DataError(f"cannot read slide {path}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _positive_float(props: Any, key: str) -> float | None:
    try:
        value = float(props.get(key))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def slide_resolution(slide: Any) -> tuple[float | None, float | None]:
    """``(base mpp, objective power)`` from OpenSlide's properties (``None`` when absent)."""
    props = slide.properties
    return _positive_float(props, "openslide.mpp-x"), _positive_float(
        props, "openslide.objective-power")


def requested_downsample(
    slide: Any,
    view_factor: float,
    mpp: float | None = None,
    magnification: float | None = None,
    name: str = "slide",
) -> tuple[float, str]:
    """The downsample (relative to level 0) to process at, and the rule that gave it.

    ``mpp`` -> ``mpp / base mpp``; ``magnification`` -> ``objective power / magnification``;
    neither -> the model's view factor (the slide's base resolution stands for the training
    images' resolution). Raises a one-line :class:`DataError` when the slide lacks the metadata
    the chosen rule needs.
    """
    base_mpp, power = slide_resolution(slide)
    if mpp is not None and magnification is not None:
        raise DataError("give the resolution as mpp or as magnification, not both")
    if mpp is not None:
        if not (math.isfinite(mpp) and mpp > 0):
            raise DataError(f"mpp must be a positive number, got {mpp}")
        if base_mpp is None:
            raise DataError(
                f"{name} has no microns-per-pixel metadata (openslide.mpp-x): give the "
                "magnification instead"
            )
        return mpp / base_mpp, f"mpp {mpp:g} requested"
    if magnification is not None:
        if not (math.isfinite(magnification) and magnification > 0):
            raise DataError(f"magnification must be a positive number, got {magnification}")
        if power is None:
            raise DataError(
                f"{name} has no objective power (openslide.objective-power): give the mpp instead"
            )
        return power / magnification, f"magnification {magnification:g}x requested " \
                                      f"(objective power {power:g})"
    if base_mpp is None:
        raise DataError(
            f"{name} has no microns-per-pixel metadata (openslide.mpp-x): give the mpp or the "
            "magnification the model expects"
        )
    return float(view_factor), (
        f"default: slide base mpp {base_mpp:g} x model view factor {view_factor:g} (assumes "
        "the training images were at the slide's base resolution; pass mpp to override)"
    )


def choose_level(
    slide: Any, downsample: float, tolerance: float = LEVEL_TOLERANCE, name: str = "the slide"
) -> tuple[int, float, float]:
    """``(level, level downsample, Lanczos factor)`` to read ``slide`` at ``downsample``.

    The level is ``slide.get_best_level_for_downsample`` (largest downsample <= the requested
    one, here with ``tolerance`` of slack so that 3.99 still picks a level of 4.0); the Lanczos
    factor is what remains, ``downsample / level downsample``, set to exactly 1 (no
    resampling) when within ``tolerance`` of 1.

    Raises:
        DataError: ``downsample`` is finer than level 0 by more than ``tolerance``.
    """
    if not downsample >= 1 - tolerance:
        raise DataError(
            f"the requested resolution is {1 / downsample:.3g}x finer than the base resolution "
            f"of {name}; medistill does not upsample slides"
        )
    level = int(slide.get_best_level_for_downsample(downsample * (1 + tolerance)))
    level_ds = float(slide.level_downsamples[level])
    factor = downsample / level_ds
    if abs(factor - 1) <= tolerance:
        factor = 1.0
    return level, level_ds, factor


# --------------------------------------------------------------------------- the model
def model_tile_geometry(
    info: dict[str, Any], tile_px: int | None = None, source: str = "model"
) -> tuple[int, int]:
    """``(tile px at the processing resolution, model input px)`` for a model's meta/sidecar.

    Without ``view.upsample`` the two are equal: the model input size (``image_size / factor``,
    or an exported model's ``input_size``). With it, tiles are read at the degraded size and
    upsampled bilinearly to the model input, as ``ResolutionView`` does in training.
    """
    view = info["view"]
    if view.get("kind", "resolution") != "resolution":
        raise CheckpointError(
            f"{source} was trained on {view.get('kind')} views; whole-slide prediction needs a "
            "resolution view (a model trained on downsampled images)"
        )
    factor = float(view.get("factor", 1.0))
    upsample = bool(view.get("upsample", False))
    image_size = info.get("image_size")
    fixed = None
    if info.get("input_size") is not None and not info.get("dynamic_size"):
        h, w = (int(v) for v in info["input_size"])
        if h != w:
            raise CheckpointError(f"{source} takes {h}x{w} inputs; WSI tiles are square")
        fixed = h
    if image_size:
        original: int | None = int(image_size)
        native: int | None = degraded_size(original, original, factor)[0]
    elif info.get("input_size") is not None:  # an exported model's (nominal) input size
        nominal = int(info["input_size"][0])
        original, native = (nominal, degraded_size(nominal, nominal, factor)[0]) if upsample \
            else (None, nominal)
    else:
        original, native = None, None
    if tile_px is None:
        if native is None:
            raise CheckpointError(
                f"{source} has no image_size (trained on images of any size): give tile_px"
            )
        tile_px = native
    if not (isinstance(tile_px, int | np.integer) and tile_px >= 1):
        raise DataError(f"tile_px must be a positive integer, got {tile_px}")
    tile_px = int(tile_px)
    if not upsample:
        net_px = tile_px
    elif original and tile_px == native:
        net_px = original
    else:
        net_px = max(1, round(tile_px * factor))
    if fixed is not None and net_px != fixed:
        raise CheckpointError(
            f"{source} takes {fixed}x{fixed} inputs; tile_px {tile_px} would give {net_px}x{net_px}"
        )
    return tile_px, net_px


class TileClassifier:
    """A model file as a function: RGB ``uint8`` tiles (N, t, t, 3) -> probabilities (N, K).

    ``model_path`` is a PyTorch model file (``save_model``'s format, e.g. a run's ``best.pt``) or
    an exported model (``.onnx`` / TorchScript ``.pt`` with its ``.json`` sidecar, recognised by
    the sidecar). Tiles are scaled to [0, 1] and normalised exactly as in training.
    """

    def __init__(self, model_path: str | Path, tile_px: int | None = None) -> None:
        path = Path(model_path)
        self.path = path
        if path.suffix.lower() == ".onnx" or sidecar_path(path).is_file():
            self._exported, info = load_exported(path)
            self._net = None
            self.format = str(info["format"])
            self.meta = info
        else:
            self._net, self.meta = load_model(path)
            self._exported = None
            self.format = "pytorch"
        self.classes = [str(c) for c in self.meta["classes"]]
        self.view_factor = float(self.meta["view"].get("factor", 1.0))
        norm = self.meta["normalization"]
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(norm["std"], dtype=torch.float32).view(1, -1, 1, 1)
        self.tile_px, self.input_px = model_tile_geometry(self.meta, tile_px, str(path))

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float()
        if self.input_px != self.tile_px:  # view.upsample: bilinear, re-quantised like PIL's
            x = torch.nn.functional.interpolate(
                x, size=(self.input_px, self.input_px), mode="bilinear", align_corners=False
            ).round_().clamp_(0, 255)
        x = (x / 255.0 - self.mean) / self.std
        if self._net is not None:
            with torch.inference_mode():
                logits = self._net(x)[1].float().numpy()
        else:
            logits = self._exported(x.numpy())
        if logits.shape != (len(tiles), len(self.classes)):
            raise CheckpointError(
                f"{self.path}: model returned shape {tuple(logits.shape)}, expected "
                f"({len(tiles)}, {len(self.classes)})"
            )
        return softmax(logits).astype(np.float32)


# --------------------------------------------------------------------------- tissue mask
def tissue_mask(thumbnail: np.ndarray) -> np.ndarray:
    """Boolean tissue mask of an RGB ``uint8`` thumbnail: Otsu on (smoothed) HSV saturation."""
    from skimage.filters import gaussian, threshold_otsu

    rgb = thumbnail.astype(np.float32) / 255.0
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
    saturation = gaussian(saturation, sigma=1.0, preserve_range=True)
    if float(saturation.max() - saturation.min()) < 1e-3:
        threshold = MIN_SATURATION
    else:
        threshold = max(float(threshold_otsu(saturation)), MIN_SATURATION)
    return saturation >= threshold


def tile_fractions(
    mask: np.ndarray, level0_size: tuple[int, int], tile0: float, grid: tuple[int, int]
) -> np.ndarray:
    """Fraction of ``mask`` pixels under each tile of a (rows, cols) grid of level-0 size
    ``tile0``; ``mask`` covers the whole slide (``level0_size`` = (W, H)) at lower resolution."""
    rows, cols = grid
    mh, mw = mask.shape
    sx, sy = level0_size[0] / mw, level0_size[1] / mh  # level-0 px per mask px

    def edges(n: int, scale: float, limit: int) -> tuple[np.ndarray, np.ndarray]:
        e = np.clip(np.rint(np.arange(n + 1) * tile0 / scale).astype(np.int64), 0, limit)
        start = np.minimum(e[:-1], limit - 1)
        return start, np.maximum(e[1:], start + 1)  # every tile covers >= 1 mask pixel

    x0, x1 = edges(cols, sx, mw)
    y0, y1 = edges(rows, sy, mh)
    integral = np.zeros((mh + 1, mw + 1), dtype=np.int64)
    integral[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    y0, y1, x0, x1 = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return inside / ((y1 - y0) * (x1 - x0))


# --------------------------------------------------------------------------- reading tiles
def _background(slide: Any) -> tuple[int, int, int]:
    value = str(slide.properties.get("openslide.background-color", "FFFFFF"))
    try:
        return tuple(int(value[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
    except ValueError:
        return (255, 255, 255)


def _segments(keep: np.ndarray, max_tiles: int) -> Iterator[tuple[int, int, int]]:
    """``(row, first col, end col)`` spans covering every kept tile, <= ``max_tiles`` wide."""
    for row in np.flatnonzero(keep.any(axis=1)):
        cols = np.flatnonzero(keep[row])
        start = 0
        while start < len(cols):
            c0 = int(cols[start])
            stop = int(np.searchsorted(cols, c0 + max_tiles))
            yield int(row), c0, int(cols[stop - 1]) + 1
            start = stop


def _read_tiles(
    slide: Any, level: int, factor: float, tile_px: int, tile0: float, keep: np.ndarray,
    name: str,
) -> Iterator[np.ndarray]:
    """The kept tiles, in row-major order, as (n, tile_px, tile_px, 3) ``uint8`` arrays."""
    from PIL import Image

    background = _background(slide)
    for row, c0, c1 in _segments(keep, MAX_TILES_PER_READ):
        n = c1 - c0
        location = (round(c0 * tile0), round(row * tile0))
        size = (max(1, round(n * tile_px * factor)), max(1, round(tile_px * factor)))
        try:
            region = slide.read_region(location, level, size)
        except Exception as e:  # noqa: BLE001  (OpenSlideError, decoder errors)
            raise DataError(f"cannot read slide {name} at {location}: {_first_line(e)}") from None
        canvas = Image.new("RGBA", region.size, (*background, 255))
        rgb = np.asarray(Image.alpha_composite(canvas, region).convert("RGB"))
        rgb = lanczos_resize(rgb, (tile_px, n * tile_px))
        tiles = rgb.reshape(tile_px, n, tile_px, 3).transpose(1, 0, 2, 3)
        yield np.ascontiguousarray(tiles[keep[row, c0:c1]])


def _batches(chunks: Iterator[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    pending: list[np.ndarray] = []
    count = 0
    for chunk in chunks:
        pending.append(chunk)
        count += len(chunk)
        while count >= batch_size:
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield joined[:batch_size]
            rest = joined[batch_size:]
            pending, count = ([rest] if len(rest) else []), len(rest)
    if count:
        yield np.concatenate(pending)


# --------------------------------------------------------------------------- the entry point
def predict_wsi(
    slide_path: str | Path,
    model_path: str | Path,
    out_dir: str | Path,
    mpp: float | None = None,
    magnification: float | None = None,
    tile_px: int | None = None,
    batch_size: int = 64,
    tissue_threshold: float = 0.5,
    progress: bool = True,
) -> dict[str, Any]:
    """Classify every tissue tile of a whole-slide image; write a heatmap, overlay, CSV, summary.

    Args:
        slide_path: any slide OpenSlide reads (.svs, .ndpi, .mrxs, pyramidal TIFF, ...).
        model_path: a PyTorch model file (a run's ``best.pt``) or an exported model (``.onnx``
            or TorchScript ``.pt`` with its ``.json`` sidecar).
        out_dir: output folder (created); gets ``tiles.csv``, ``heatmap.png``, ``overlay.png``
            and ``summary.json``, each written atomically.
        mpp: process the slide at this many microns per pixel: the resolution the model
            expects (its training images' mpp times its view factor).
        magnification: alternatively, an objective magnification (e.g. ``5`` for 5x),
            converted with the slide's ``openslide.objective-power``.
            With neither, the slide's base mpp times the model's view factor (see module doc).
        tile_px: tile side in pixels at the processing resolution (default: the model's input
            size; needed for PyTorch models trained on images of any size).
        batch_size: tiles per model call.
        tissue_threshold: keep a tile when at least this fraction of it is tissue (0 keeps
            every tile).
        progress: show a tqdm progress bar (tiles/s).

    Returns:
        The summary (also written as ``summary.json``): slide, resolution used (``mpp``,
        ``magnification``, ``downsample``, ``level``, ``resample_factor``), tile grid,
        ``n_tiles_total`` (full grid) and ``n_tiles_tissue`` (classified), ``seconds`` and
        ``tiles_per_second`` (end to end), ``class_counts`` and the output files.

    Raises:
        DataError: missing/unreadable slide, missing resolution metadata, a resolution finer
            than the slide's, a slide smaller than one tile, bad arguments.
        CheckpointError: missing or invalid model file / sidecar.
        OutputError: ``out_dir`` cannot be a folder this process writes into.
    """
    from tqdm.auto import tqdm

    from medistill.output import check_output_dir

    started = time.perf_counter()
    if not (isinstance(batch_size, int | np.integer) and batch_size >= 1):
        raise DataError(f"batch_size must be a positive integer, got {batch_size}")
    if not 0.0 <= tissue_threshold <= 1.0:
        raise DataError(f"tissue_threshold must be in [0, 1], got {tissue_threshold}")
    slide_path, out_dir = Path(slide_path), Path(out_dir)
    check_output_dir(out_dir)  # before the slide is read, not after the last tile
    slide = open_slide(slide_path)
    try:
        model = TileClassifier(model_path, tile_px)
        width0, height0 = (int(v) for v in slide.dimensions)
        base_mpp, power = slide_resolution(slide)
        downsample, rule = requested_downsample(
            slide, model.view_factor, mpp, magnification, str(slide_path))
        level, level_ds, factor = choose_level(slide, downsample, name=str(slide_path))
        used = level_ds * factor  # == downsample unless snapped to the level
        tile = model.tile_px
        tile0 = tile * used
        grid = (int(height0 // tile0), int(width0 // tile0))
        if min(grid) < 1:
            raise DataError(
                f"{slide_path} ({width0}x{height0} px) is smaller than one {tile} px tile at "
                f"downsample {used:.4g}"
            )

        # tissue mask on a thumbnail with >= THUMB_PX_PER_TILE px per tile side
        long_side = max(width0, height0)
        side = min(max(THUMB_MIN_SIDE, math.ceil(long_side * THUMB_PX_PER_TILE / tile0)),
                   THUMB_MAX_SIDE, long_side)
        thumbnail = np.asarray(slide.get_thumbnail((side, side)).convert("RGB"))
        fractions = tile_fractions(tissue_mask(thumbnail), (width0, height0), tile0, grid)
        keep = fractions >= tissue_threshold
        index = np.argwhere(keep)  # row-major, the order tiles are read in
        n_keep = len(index)

        classes = model.classes
        probs = np.zeros((n_keep, len(classes)), dtype=np.float32)
        loop_start = time.perf_counter()
        bar = tqdm(total=n_keep, unit="tile", desc=slide_path.name, disable=not progress,
                   dynamic_ncols=True, leave=False)
        batches = _batches(
            _read_tiles(slide, level, factor, tile, tile0, keep, str(slide_path)), batch_size)
        done = 0
        with bar, ThreadPoolExecutor(max_workers=1) as reader:  # read batch k+1 during k
            future = reader.submit(next, batches, None)
            while True:
                batch = future.result()
                if batch is None:
                    break
                future = reader.submit(next, batches, None)
                probs[done:done + len(batch)] = model(batch)
                done += len(batch)
                bar.update(len(batch))
        loop_seconds = time.perf_counter() - loop_start
        if done != n_keep:  # a guard on the reader's geometry, never expected
            raise MedistillError(f"{slide_path}: read {done} tiles, expected {n_keep}")
    finally:
        slide.close()

    # outputs
    predicted = probs.argmax(axis=1) if n_keep else np.zeros(0, dtype=np.int64)
    probs_grid = np.full((*grid, len(classes)), np.nan, dtype=np.float32)
    probs_grid[index[:, 0], index[:, 1]] = probs
    classes_grid = np.full(grid, -1, dtype=np.int64)
    classes_grid[index[:, 0], index[:, 1]] = predicted
    colors = class_colors(len(classes))
    mpp_used = base_mpp * used if base_mpp else None
    title = f"{slide_path.name}: {n_keep} tissue tiles" + (
        f" at {mpp_used:.3g} mpp" if mpp_used else f" at downsample {used:.3g}")
    files = {name: str(out_dir / name) for name in OUTPUT_FILES}
    atomic_write_text(out_dir / "tiles.csv",
                      tiles_csv(index, tile0, fractions[keep], probs, classes))
    heatmap = heatmap_png(probs_grid, classes, colors, title)
    atomic_write_bytes(out_dir / "heatmap.png", lambda f: f.write(heatmap))
    overlay = overlay_png(thumbnail, classes_grid, tile0, (width0, height0), colors)
    atomic_write_bytes(out_dir / "overlay.png", lambda f: f.write(overlay))

    seconds = time.perf_counter() - started
    counts = np.bincount(predicted, minlength=len(classes)) if n_keep else [0] * len(classes)
    summary = {
        "slide": str(slide_path),
        "slide_size": [width0, height0],
        "slide_mpp": base_mpp,
        "objective_power": power,
        "model": str(model_path),
        "model_format": model.format,
        "classes": classes,
        "resolution_rule": rule,
        "mpp_requested": None if mpp is None else float(mpp),
        "magnification_requested": None if magnification is None else float(magnification),
        "mpp": mpp_used,
        "magnification": power / used if power else None,
        "downsample": used,
        "level": level,
        "level_downsample": level_ds,
        "resample_factor": factor,
        "tile_px": tile,
        "model_input_px": model.input_px,
        "tile_size_level0": tile0,
        "grid": list(grid),
        "n_tiles_total": int(grid[0] * grid[1]),
        "n_tiles_tissue": int(n_keep),
        "tissue_threshold": tissue_threshold,
        "tissue_method": "Otsu on HSV saturation of a "
                         f"{thumbnail.shape[1]}x{thumbnail.shape[0]} thumbnail",
        "batch_size": int(batch_size),
        "seconds": seconds,
        "tiles_per_second": n_keep / seconds if seconds > 0 else None,
        "tile_loop_seconds": loop_seconds,
        "tile_loop_tiles_per_second": n_keep / loop_seconds if loop_seconds > 0 else None,
        "class_counts": {c: int(n) for c, n in zip(classes, counts, strict=True)},
        "files": files,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
