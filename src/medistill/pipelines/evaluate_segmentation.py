"""Evaluating a trained segmenter: per-case DSC / IoU / VOE / RVD / HD95 with bootstrap CIs
over cases, per class, plus params / GFLOPs / CPU latency.

The model sees each image resized to its ``image_size`` (as in training); its logits are
resized back (bilinear) to the ORIGINAL mask size before thresholding, so metrics are computed
against the original masks. Items sharing a case id (the slices of one volume) are stacked
into one 3-D case. Inference and per-case metrics are the segmentation task's
(:mod:`medistill.tasks.segmentation`), which validation uses too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from medistill.data.segmentation import SegItem, SegmentationDataset
from medistill.metrics import profile_model
from medistill.metrics.segmentation import segmentation_report
from medistill.tasks.segmentation import case_arrays, case_metrics, predict_masks

#: predict_masks / case_arrays live in the segmentation task now (kept importable here)
__all__ = ["case_arrays", "dataset_for_segmenter", "evaluate_segmenter", "predict_masks"]


def dataset_for_segmenter(items: Sequence[SegItem], meta: dict[str, Any]) -> SegmentationDataset:
    norm = meta["normalization"]
    return SegmentationDataset(items, len(meta["classes"]), meta.get("image_size"),
                               norm["mean"], norm["std"],
                               mask_mode=meta.get("data", {}).get("mask_mode", "index"))


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
    # the task's one inference + metric path (validation selects epochs on the same)
    per_case = case_metrics(model.to(dev).eval(), dataset, thr, hd95=hd95, device=dev)
    model = model.cpu()
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
