"""Instance segmentation by pixel embeddings (graph relation distillation): every nucleus
an id. The model sees the image as it is (rescaled by ``scale``): its card has no view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from medistill.data.instance import InstanceDataset
from medistill.metrics.instance import instance_case_metrics, instance_report
from medistill.postprocess import decode_embeddings
from medistill.tasks.base import MetricColumn, ModelCard, Task, register_task


class InstanceCard(ModelCard):
    task: Literal["instance"] = "instance"
    scale: float = 1.0
    offsets: list[int]
    postprocess: dict[str, Any] = {}
    data: dict[str, Any] = Field({}, description="the data settings without the root "
                                 "(medistill evaluate reads a split with them)")


INSTANCE = register_task(Task(
    "instance", InstanceCard,
    output_kind="per-pixel embedding channels then 1 foreground logit (sigmoid)",
    columns=(MetricColumn("aji", "AJI"), MetricColumn("pq", "PQ"),
             MetricColumn("voi_split", "VOI s/m", 11, ci=False, digits=2, then="voi_merge")),
    export_keys=("scale", "offsets", "postprocess")))


# ---- the ONE inference routine and metric path (validation and the final evaluation) ----


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An instance map resized (nearest) to ``shape``."""
    if labels.shape == shape:
        return labels
    im = Image.fromarray(labels.astype(np.int32)).resize((shape[1], shape[0]),
                                                        Image.Resampling.NEAREST)
    return np.asarray(im).astype(np.int32)


@torch.no_grad()
def predict_instances(model: torch.nn.Module, dataset: InstanceDataset, offsets: Sequence[int],
                      postprocess: dict[str, Any] | None = None,
                      device: torch.device | str = "cpu") -> list[np.ndarray]:
    """The predicted instance map of every image at its ORIGINAL size: predicted whole at the
    dataset's scale (the networks are fully convolutional), decoded
    (:func:`~medistill.postprocess.decode_embeddings`), resized back (nearest). The model
    must be on ``device``."""
    model = model.eval()
    preds = []
    for i in range(len(dataset)):
        out = model(dataset[i]["image"][None].to(device))[0].cpu()
        pred = decode_embeddings(out, list(offsets), **(postprocess or {}))
        preds.append(resize_labels(pred, dataset.original(i)[1].shape))
    return preds


def case_metrics(model: torch.nn.Module, dataset: InstanceDataset, offsets: Sequence[int],
                 postprocess: dict[str, Any] | None = None,
                 device: torch.device | str = "cpu") -> list[dict[str, float]]:
    """Every instance metric per image, against the original labels."""
    preds = predict_instances(model, dataset, offsets, postprocess, device)
    return [instance_case_metrics(p, dataset.original(i)[1]) for i, p in enumerate(preds)]


def validation_scores(model: torch.nn.Module, dataset: InstanceDataset, offsets: Sequence[int],
                      postprocess: dict[str, Any] | None = None,
                      device: torch.device | str = "cpu") -> dict[str, float]:
    """The scores epochs are selected on: the final evaluation's ``aji`` / ``pq`` values."""
    report = instance_report(case_metrics(model, dataset, offsets, postprocess, device), 0)
    return {m: report["metrics"][m]["value"] for m in ("aji", "pq")}
