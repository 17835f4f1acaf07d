"""Whole-slide inference: tile a slide with OpenSlide at a chosen resolution and classify it.

:func:`predict_wsi` runs a medistill model (a PyTorch model file such as a run's ``best.pt``,
or a model exported by ``medistill export``) over every tissue tile of a whole-slide image;
:func:`predict_slides` does so for several slides with the model loaded once, one output
folder per slide.

Resolution
    The slide is processed at ONE resolution, stated by the caller as microns per pixel
    (``mpp``) or as an objective magnification (``magnification``, converted with the slide's
    ``openslide.objective-power``: 10x on a 40x slide is a downsample of 4). Without either,
    the model file's own ``mpp`` is used: recorded at training time when the data config
    gives ``source_mpp`` (``mpp = source_mpp x view factor``, the resolution of the model's
    input tiles). Model files without it fall back to the slide's base resolution downsampled
    by the model's view factor (``mpp = openslide.mpp-x * factor``), which is right only when
    the training images were scanned at the slide's base resolution; the summary records which
    rule was used. A slide without mpp metadata needs ``magnification``. Requests finer than
    the slide's base resolution (by more than 2 %) are refused.

Reading
    The pyramid level read is the one with the largest downsample not above the requested one
    (``slide.get_best_level_for_downsample``); the remaining factor is applied with the same
    Lanczos filter as training (:func:`medistill.data.transforms.lanczos_resize`). Within 2 % of
    a level's downsample the level is used as is (no resampling; the mpp actually used is
    reported). Regions are read a row segment at a time (up to ``MAX_TILES_PER_READ`` tiles per
    ``read_region`` call), resampled as one image and cut into tiles with a reshape, by a pool
    of ``readers`` threads while the model runs on the previous batch.

Tiles
    A grid of non-overlapping ``tile_px`` x ``tile_px`` tiles at the processing resolution,
    starting at the slide's top-left corner; partial tiles at the right and bottom edges are
    dropped. ``tile_px`` defaults to the model's input size (for ``view.upsample`` models: the
    degraded size, upsampled bilinearly to the model input as in training).

Tissue
    The thumbnail has >= ``THUMB_PX_PER_TILE`` pixels per tile side and a long side of at
    least ``THUMB_MIN_SIDE``: a whole pyramid level read as is when one is close to that size
    (no resampling: reading a finer level and shrinking it cost ~1 s per large slide), else
    OpenSlide's ``get_thumbnail`` (see :func:`medistill.deploy.wsi_slide.read_thumbnail`).
    Otsu's threshold on the HSV saturation of the thumbnail (lightly smoothed; never below
    ``MIN_SATURATION``, so an empty slide gives no tissue); a tile is kept when the fraction of
    tissue pixels under it is ``>= tissue_threshold``. Background glass is white-grey (low
    saturation), stained tissue is not. (On a slide covered wall to wall by tissue Otsu splits
    the tissue itself: pass ``tissue_threshold=0`` to keep every tile.)

Outputs (each written atomically: temp file + ``os.replace``; ``summary.json`` last)
    ``tiles.csv``, ``tiles.geojson`` (QuPath: one classified detection per tile with its
    probabilities), ``heatmap.png`` (class map with legend + per-class probability maps with a
    colour bar), ``overlay.png`` (thumbnail with the class colours and a legend) and
    ``summary.json`` in ``out_dir``; both PNGs are drawn with array operations (no matplotlib
    figure).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medistill.data.transforms import degraded_size
from medistill.deploy.predict import load_exported, sidecar_path, softmax
from medistill.deploy.wsi_outputs import (
    class_colors,
    heatmap_png,
    overlay_png,
    tiles_csv,
    tiles_geojson,
)
from medistill.deploy.wsi_slide import (  # noqa: F401  (re-exported: the public helpers)
    LEVEL_TOLERANCE,
    MAX_TILES_PER_READ,
    MIN_SATURATION,
    THUMB_MAX_SIDE,
    THUMB_MIN_SIDE,
    THUMB_PX_PER_TILE,
    _batches,
    _read_tiles,
    choose_level,
    open_slide,
    read_thumbnail,
    requested_downsample,
    slide_resolution,
    tile_fractions,
    tissue_mask,
)
from medistill.engine.checkpoint import atomic_write_bytes, atomic_write_text, load_model
from medistill.errors import CheckpointError, DataError, MedistillError

OUTPUT_FILES = ("tiles.csv", "tiles.geojson", "heatmap.png", "overlay.png", "summary.json")
#: default number of tile-reading threads
DEFAULT_READERS = min(4, os.cpu_count() or 1)


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
    the sidecar). Tiles are scaled to [0, 1] and normalised exactly as in training. ``device``
    (``cpu``, ``cuda``, ...) runs a PyTorch model file there; exported models run on the CPU.
    ``mpp`` is the resolution recorded in the model file at training time (``None`` for files
    trained without ``data.source_mpp``).
    """

    def __init__(self, model_path: str | Path, tile_px: int | None = None,
                 device: str = "cpu") -> None:
        path = Path(model_path)
        self.path = path
        self.device = torch.device(device)
        if path.suffix.lower() == ".onnx" or sidecar_path(path).is_file():
            if self.device.type != "cpu":
                raise CheckpointError(f"{path} is an exported model: it runs on the CPU "
                                      f"(device {device!r} is for PyTorch model files)")
            self._exported, info = load_exported(path)
            self._net = None
            self.format = str(info["format"])
            self.meta = info
        else:
            self._net, self.meta = load_model(path)
            self._net.to(self.device)
            self._exported = None
            self.format = "pytorch"
        self.classes = [str(c) for c in self.meta["classes"]]
        self.view_factor = float(self.meta["view"].get("factor", 1.0))
        mpp = self.meta.get("mpp")
        self.mpp = float(mpp) if isinstance(mpp, int | float) and mpp > 0 else None
        norm = self.meta["normalization"]
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(norm["std"], dtype=torch.float32).view(1, -1, 1, 1)
        self.tile_px, self.input_px = model_tile_geometry(self.meta, tile_px, str(path))

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2)
        if self._net is not None:
            x = x.to(self.device)
        x = x.float()
        if self.input_px != self.tile_px:  # view.upsample: bilinear, re-quantised like PIL's
            x = torch.nn.functional.interpolate(
                x, size=(self.input_px, self.input_px), mode="bilinear", align_corners=False
            ).round_().clamp_(0, 255)
        x = (x / 255.0 - self.mean.to(x.device)) / self.std.to(x.device)
        if self._net is not None:
            with torch.inference_mode():
                logits = self._net(x)[1].float().cpu().numpy()
        else:
            logits = self._exported(x.numpy())
        if logits.shape != (len(tiles), len(self.classes)):
            raise CheckpointError(
                f"{self.path}: model returned shape {tuple(logits.shape)}, expected "
                f"({len(tiles)}, {len(self.classes)})"
            )
        return softmax(logits).astype(np.float32)


# --------------------------------------------------------------------------- the entry points
def predict_wsi(
    slide_path: str | Path,
    model_path: str | Path | TileClassifier,
    out_dir: str | Path,
    mpp: float | None = None,
    magnification: float | None = None,
    tile_px: int | None = None,
    batch_size: int = 64,
    tissue_threshold: float = 0.5,
    progress: bool = True,
    readers: int = DEFAULT_READERS,
    device: str = "cpu",
) -> dict[str, Any]:
    """Classify every tissue tile of a whole-slide image; write a heatmap, overlay, CSV,
    GeoJSON and summary.

    Args:
        slide_path: any slide OpenSlide reads (.svs, .ndpi, .mrxs, pyramidal TIFF, ...).
        model_path: a PyTorch model file (a run's ``best.pt``) or an exported model (``.onnx``
            or TorchScript ``.pt`` with its ``.json`` sidecar), or a loaded
            :class:`TileClassifier` (then ``tile_px`` and ``device`` are its own).
        out_dir: output folder (created); gets ``tiles.csv``, ``tiles.geojson``,
            ``heatmap.png``, ``overlay.png`` and ``summary.json``, each written atomically.
        mpp: process the slide at this many microns per pixel: the resolution the model
            expects (its training images' mpp times its view factor).
        magnification: alternatively, an objective magnification (e.g. ``5`` for 5x),
            converted with the slide's ``openslide.objective-power``.
            With neither, the model file's recorded mpp, else the slide's base mpp times the
            model's view factor (see module doc).
        tile_px: tile side in pixels at the processing resolution (default: the model's input
            size; needed for PyTorch models trained on images of any size).
        batch_size: tiles per model call.
        tissue_threshold: keep a tile when at least this fraction of it is tissue (0 keeps
            every tile).
        progress: show a tqdm progress bar (tiles/s).
        readers: threads reading and resampling tiles (1: one background reader).
        device: where a PyTorch model file runs (``cpu``, ``cuda``, ...).

    Returns:
        The summary (also written as ``summary.json``): slide, resolution used (``mpp``,
        ``magnification``, ``downsample``, ``level``, ``resample_factor``), tile grid,
        ``n_tiles_total`` (full grid) and ``n_tiles_tissue`` (classified), ``seconds`` and
        ``tiles_per_second`` (end to end), ``stage_seconds`` (tissue mask, tile loop,
        outputs), ``class_counts`` and the output files.

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
    if not (isinstance(readers, int | np.integer) and readers >= 1):
        raise DataError(f"readers must be a positive integer, got {readers}")
    if not 0.0 <= tissue_threshold <= 1.0:
        raise DataError(f"tissue_threshold must be in [0, 1], got {tissue_threshold}")
    slide_path, out_dir = Path(slide_path), Path(out_dir)
    check_output_dir(out_dir)  # before the slide is read, not after the last tile
    slide = open_slide(slide_path)
    try:
        model = model_path if isinstance(model_path, TileClassifier) else \
            TileClassifier(model_path, tile_px, device)
        width0, height0 = (int(v) for v in slide.dimensions)
        base_mpp, power = slide_resolution(slide)
        downsample, rule = requested_downsample(
            slide, model.view_factor, mpp, magnification, str(slide_path), model.mpp)
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

        thumbnail = read_thumbnail(slide, tile0)  # >= THUMB_PX_PER_TILE px per tile side
        fractions = tile_fractions(tissue_mask(thumbnail), (width0, height0), tile0, grid)
        keep = fractions >= tissue_threshold
        index = np.argwhere(keep)  # row-major, the order tiles are read in
        n_keep = len(index)

        classes = model.classes
        probs = np.zeros((n_keep, len(classes)), dtype=np.float32)
        loop_start = time.perf_counter()
        bar = tqdm(total=n_keep, unit="tile", desc=slide_path.name, disable=not progress,
                   dynamic_ncols=True, leave=False)
        batches = _batches(_read_tiles(slide, level, factor, tile, tile0, keep,
                                       str(slide_path), workers=readers), batch_size)
        done = 0
        with bar, ThreadPoolExecutor(max_workers=1) as reader:  # assemble batch k+1 during k
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
    outputs_start = time.perf_counter()
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
    atomic_write_text(out_dir / "tiles.geojson",
                      tiles_geojson(index, tile0, fractions[keep], probs, classes, colors))
    heatmap = heatmap_png(probs_grid, classes, colors, title)
    atomic_write_bytes(out_dir / "heatmap.png", lambda f: f.write(heatmap))
    overlay = overlay_png(thumbnail, classes_grid, tile0, (width0, height0), colors, classes)
    atomic_write_bytes(out_dir / "overlay.png", lambda f: f.write(overlay))
    outputs_seconds = time.perf_counter() - outputs_start

    seconds = time.perf_counter() - started
    counts = np.bincount(predicted, minlength=len(classes)) if n_keep else [0] * len(classes)
    summary = {
        "slide": str(slide_path),
        "slide_size": [width0, height0],
        "slide_mpp": base_mpp,
        "objective_power": power,
        "model": str(model.path),
        "model_format": model.format,
        "model_mpp": model.mpp,
        "device": str(model.device),
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
        "readers": int(readers),
        "seconds": seconds,
        "tiles_per_second": n_keep / seconds if seconds > 0 else None,
        "tile_loop_seconds": loop_seconds,
        "tile_loop_tiles_per_second": n_keep / loop_seconds if loop_seconds > 0 else None,
        "stage_seconds": {"open_and_tissue": loop_start - started, "tile_loop": loop_seconds,
                          "outputs": outputs_seconds},
        "class_counts": {c: int(n) for c, n in zip(classes, counts, strict=True)},
        "files": files,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def slide_folders(slides: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """One output folder per slide under ``out_dir``: the slide's file name without its
    extension (``a.svs`` -> ``out/a``), the parent folder's name prepended when two slides
    share a name; a slide given twice is an error."""
    paths = [Path(s) for s in slides]
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise DataError(f"slide given twice: {p}")
        seen[key] = p
    stems = [p.stem for p in paths]
    names = [f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"two slides would share the output folder {Path(out_dir) / dup}; "
                        "rename one or run them separately")
    return [Path(out_dir) / n for n in names]


def predict_slides(
    slides: Sequence[str | Path],
    model_path: str | Path,
    out_dir: str | Path,
    tile_px: int | None = None,
    device: str = "cpu",
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """:func:`predict_wsi` for each slide, the model loaded once, into ``out_dir/<slide>/``
    (see :func:`slide_folders`), then ``out_dir/slides.csv`` (one line per slide: folder,
    tiles, seconds, class counts). Every slide is opened first, so a missing or unreadable
    one stops the call before any work. ``kwargs`` go to :func:`predict_wsi`."""
    import csv
    import io

    if not slides:
        raise DataError("no slide given")
    folders = slide_folders(slides, out_dir)
    for s in slides:
        open_slide(s).close()
    model = TileClassifier(model_path, tile_px, device)
    summaries = [predict_wsi(s, model, folder, **kwargs)
                 for s, folder in zip(slides, folders, strict=True)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["slide", "folder", "mpp", "tissue_tiles", "seconds", *model.classes])
    for s, folder in zip(summaries, folders, strict=True):
        writer.writerow([s["slide"], folder.name, f"{s['mpp']:.4g}" if s["mpp"] else "",
                         s["n_tiles_tissue"], f"{s['seconds']:.2f}",
                         *(s["class_counts"][c] for c in model.classes)])
    atomic_write_text(Path(out_dir) / "slides.csv", buffer.getvalue())
    return summaries
