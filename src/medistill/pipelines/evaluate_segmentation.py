"""Evaluating a trained segmenter: per-case DSC / IoU / VOE / RVD / HD95 with bootstrap CIs
over cases, per class, plus params / GFLOPs / CPU latency.

The model sees each image resized to its ``image_size`` (as in training); its logits are
resized back (bilinear) to the ORIGINAL mask size before thresholding, so metrics are computed
against the original masks. Items sharing a case id (the slices of one volume) are stacked
into one 3-D case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medistill.data.segmentation import SegItem, SegmentationDataset
from medistill.metrics import profile_model
from medistill.metrics.segmentation import (
    logits_to_labels,
    multiclass_case_metrics,
    segmentation_report,
)


def dataset_for_segmenter(items: Sequence[SegItem], meta: dict[str, Any]) -> SegmentationDataset:
    norm = meta["normalization"]
    return SegmentationDataset(items, len(meta["classes"]), meta.get("image_size"),
                               norm["mean"], norm["std"],
                               mask_mode=meta.get("data", {}).get("mask_mode", "index"))


@torch.no_grad()
def predict_masks(model: torch.nn.Module, dataset: SegmentationDataset, threshold: float = 0.4,
                  batch_size: int = 8, device: torch.device | str = "cpu") -> list[np.ndarray]:
    """The predicted (H, W) uint8 class mask of every item, at its ORIGINAL size (the model
    runs on ``device``; it must be there already)."""
    model = model.eval()
    preds: list[np.ndarray] = []
    step = batch_size if dataset.image_size else 1
    for start in range(0, len(dataset), step):
        idx = range(start, min(start + step, len(dataset)))
        x = torch.stack([dataset[i]["image"] for i in idx])
        logits = model(x.to(device)).float().cpu()
        for j, i in enumerate(idx):
            h, w = dataset.pair(i)[1].shape
            lg = F.interpolate(logits[j : j + 1], size=(h, w), mode="bilinear",
                               align_corners=False)
            preds.append(logits_to_labels(lg, threshold)[0].numpy().astype(np.uint8))
    return preds


def case_arrays(items: Sequence[SegItem], masks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Masks grouped by case id: one 2-D mask, or the item masks stacked to 3-D."""
    groups: dict[str, list[np.ndarray]] = {}
    for item, m in zip(items, masks, strict=True):
        groups.setdefault(item.case_id, []).append(m)
    return {k: v[0] if len(v) == 1 else np.stack(v, axis=-1) for k, v in groups.items()}


def evaluate_segmenter(
    model: torch.nn.Module,
    meta: dict[str, Any],
    items: Sequence[SegItem],
    n_resamples: int = 10_000,
    ci_seed: int = 0,
    threshold: float | None = None,
    hd95: bool = True,
    latency: bool = True,
    latency_repeats: int = 20,
    threads: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Metrics with 95% CIs over cases (overall and per class), efficiency, per-case values;
    the masks are predicted on ``device`` (``auto``: a GPU if there is one), latency on the
    CPU."""
    from medistill.engine.trainer import resolve_device

    dataset = dataset_for_segmenter(items, meta)
    thr = meta.get("threshold", 0.4) if threshold is None else threshold
    dev = resolve_device(device)
    preds = predict_masks(model.to(dev).eval(), dataset, thr, device=dev)
    model = model.cpu()
    truths = [dataset.pair(i)[1] for i in range(len(dataset))]
    pred_cases, true_cases = case_arrays(items, preds), case_arrays(items, truths)
    k = len(meta["classes"])
    per_case = {c: multiclass_case_metrics(pred_cases[c], true_cases[c], k, hd95=hd95)
                for c in true_cases}
    report = segmentation_report(list(per_case.values()), meta["classes"], n_resamples, ci_seed)
    size = meta.get("image_size") or dataset.pair(0)[0].shape[0]
    efficiency = profile_model(model, (3, size, size), latency=latency, repeats=latency_repeats,
                               threads=threads)
    return {
        "metrics": report["metrics"],
        "per_class": report["per_class"],
        "n": report["n"],
        "input_size": [size, size],
        "efficiency": efficiency,
        "threshold": thr,
        "cases": {c: {meta["classes"][kk]: v for kk, v in m.items()}
                  for c, m in per_case.items()},
    }
