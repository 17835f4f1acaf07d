"""Evaluating a trained embedding network on instance maps: AJI, PQ (DQ, SQ), object F1,
VOI split / merge and ARAND per image with bootstrap CIs over images, plus params / GFLOPs /
CPU latency.

Each image is rescaled by the model's ``scale`` (as in training) and predicted whole (the
networks are fully convolutional); the predicted instance map is resized back (nearest) to the
ORIGINAL size and compared with the original labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medistill.data.instance import InstanceDataset
from medistill.data.segmentation import SegItem
from medistill.metrics import profile_model
from medistill.metrics.instance import instance_report
from medistill.tasks.instance import case_metrics, resize_labels
from medistill.tasks.instance import predict_instances as task_predict

#: resize_labels lives in the instance task now (kept importable here)
__all__ = ["dataset_for_model", "evaluate_instance_model", "predict_instances",
           "resize_labels"]


def dataset_for_model(items: Sequence[SegItem], meta: dict[str, Any]) -> InstanceDataset:
    norm = meta["normalization"]
    return InstanceDataset(items, None, meta.get("scale", 1.0), mean=norm["mean"],
                           std=norm["std"])


def predict_instances(model: torch.nn.Module, meta: dict[str, Any], items: Sequence[SegItem],
                      dataset: InstanceDataset | None = None) -> list[np.ndarray]:
    """The predicted instance map of every item at its ORIGINAL size (the instance task's
    routine, :func:`medistill.tasks.instance.predict_instances`)."""
    dataset = dataset or dataset_for_model(items, meta)
    return task_predict(model.cpu(), dataset, meta["offsets"], meta.get("postprocess", {}))


def evaluate_instance_model(model: torch.nn.Module, meta: dict[str, Any],
                            items: Sequence[SegItem], n_resamples: int = 10_000,
                            ci_seed: int = 0, latency: bool = True, latency_size: int = 256,
                            latency_repeats: int = 20, threads: int | None = None,
                            device: str = "cpu") -> dict[str, Any]:
    """Metrics with 95% CIs over images, efficiency at ``latency_size`` px, per-image values;
    the instances are predicted on ``device`` (``auto``: a GPU if there is one), latency on the
    CPU."""
    from medistill.engine.trainer import resolve_device

    dev = resolve_device(device)
    dataset = dataset_for_model(items, meta)
    # the task's one inference + metric path (validation selects epochs on the same)
    cases = case_metrics(model.to(dev).eval(), dataset, meta["offsets"],
                         meta.get("postprocess", {}), dev)
    model = model.cpu()
    report = instance_report(cases, n_resamples, ci_seed)
    eff = profile_model(model, (3, latency_size, latency_size), latency=latency,
                        repeats=latency_repeats, threads=threads)
    eff["input_size"] = [latency_size, latency_size]
    return {**report, "efficiency": eff,
            "cases": [{"name": it.name, **c} for it, c in zip(items, cases, strict=True)]}
