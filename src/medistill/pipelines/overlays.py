"""The prediction figures of a run's report: load each model file, predict a few test images,
and hand the images, truths and predictions to the report's renderer (reports only render:
they never load a model; see the layering in :mod:`medistill`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medistill.engine.checkpoint import load_model
from medistill.metrics.weak_scoring import predict_probabilities, sigma_axes
from medistill.metrics.weak_segmentation import smooth_probability
from medistill.pipelines.evaluate_instances import dataset_for_model, predict_instances
from medistill.pipelines.evaluate_segmentation import dataset_for_segmenter, predict_masks
from medistill.reports.instance import write_instance_figure
from medistill.reports.segmentation import write_overlay_figure
from medistill.reports.weak_segmentation import write_weak_figure

Row = tuple[str, np.ndarray, dict[str, np.ndarray]]


def _rows(models: Mapping[str, Path], items: Sequence[Any],
          build: Callable[[Sequence[Any], dict[str, Any]], Any],
          predict: Callable[[Any, dict[str, Any], Any], list[np.ndarray]],
          original: Callable[[Any, int], tuple[np.ndarray, np.ndarray]]) -> list[Row]:
    """Load each model file, ``build`` its dataset of ``items`` from its card, ``predict``
    every item; one row per item: its ``original`` image, the truth and each model's map."""
    preds: dict[str, list[np.ndarray]] = {}
    dataset = None
    for name, path in models.items():
        model, meta = load_model(path)
        dataset = build(items, meta)
        preds[name] = predict(model, meta, dataset)
    rows: list[Row] = []
    for i, item in enumerate(items):
        image, truth = original(dataset, i)
        rows.append((item.name, image, {"truth": truth, **{n: p[i] for n, p in preds.items()}}))
    return rows


def write_overlays(out_dir: Path, models: Mapping[str, Path], items: Sequence[Any],
                   seed: int = 0) -> list[dict[str, str]]:
    """Predict ``items`` with every segmentation model file, write ``figures/overlays.png``,
    return its figure entry for ``results["figures"]``."""
    if not items or not models:
        return []
    rows = _rows(models, items, dataset_for_segmenter,
                 lambda model, meta, ds: predict_masks(model, ds, meta.get("threshold", 0.4)),
                 lambda ds, i: ds.pair(i))
    return write_overlay_figure(out_dir, rows, seed)


def write_instance_overlays(out_dir: Path, models: Mapping[str, Path], items: Sequence[Any]
                            ) -> list[dict[str, str]]:
    """Predict ``items`` with every instance model file, write
    ``figures/instance_overlays.png``."""
    if not items or not models:
        return []
    rows = _rows(models, items, dataset_for_model,
                 lambda model, meta, ds: predict_instances(model, meta, items, ds),
                 lambda ds, i: ds.original(i))
    return write_instance_figure(out_dir, rows)


def weak_overlays(out_dir: Path, models: Mapping[str, Path], dataset: Any, eval_cfg: Any
                  ) -> list[dict[str, str]]:
    """``figures/overlays.png``: test images (half positive, half negative where possible),
    truth and each model's thresholded (smoothed) map."""
    n = eval_cfg.overlays
    pos = [i for i, y in enumerate(dataset.labels) if y]
    neg = [i for i, y in enumerate(dataset.labels) if not y]
    picks = (pos[: n - min(len(neg), n // 2)] + neg[: n // 2])[:n]
    if not picks or not models:
        return []
    sub = type(dataset)([dataset.items[i] for i in picks], [dataset.labels[i] for i in picks],
                        dataset.num_classes, dataset.image_size, dataset.mean.flatten().tolist(),
                        dataset.std.flatten().tolist(), None, dataset.mask_mode)
    preds = {}
    for name, path in models.items():
        probs = predict_probabilities(load_model(path)[0], sub)
        preds[name] = [(smooth_probability(p, sigma_axes(eval_cfg.sigma, p.shape, sub.image_size,
                                                         eval_cfg.sigma_at))
                        > eval_cfg.threshold).astype(np.uint8) for p in probs]
    rows: list[Row] = []
    for j, item in enumerate(sub.items):
        image, truth = sub.pair(j)
        label = "pos" if sub.labels[j] else "neg"
        rows.append((f"{item.name} ({label})", image,
                     {"truth": truth, **{n_: p[j] for n_, p in preds.items()}}))
    return write_weak_figure(out_dir, rows)
