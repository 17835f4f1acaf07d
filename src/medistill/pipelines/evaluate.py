"""Evaluating a trained classifier on any split: metrics with bootstrap CIs + efficiency."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from medistill.data import PairedViewDataset, SampleList
from medistill.data.views import view_from_spec, view_input_size
from medistill.engine.trainer import predict_loader, resolve_device
from medistill.metrics import classification_report, profile_model
from medistill.models.base import Classifier


def model_input_size(meta: dict[str, Any], original_hw: tuple[int, int]) -> tuple[int, int]:
    return view_input_size(meta["view"], original_hw)


def dataset_for_model(samples: SampleList, meta: dict[str, Any]) -> PairedViewDataset:
    """An evaluation dataset feeding ``meta``'s view and normalisation to the model."""
    view = view_from_spec(meta["view"])
    norm = meta["normalization"]
    return PairedViewDataset(
        samples.samples, {"input": view}, norm["mean"], norm["std"],
        image_size=meta.get("image_size"),
    )


def evaluate_classifier(
    model: Classifier,
    meta: dict[str, Any],
    samples: SampleList,
    batch_size: int = 64,
    n_resamples: int = 10_000,
    ci_seed: int = 0,
    latency: bool = True,
    latency_repeats: int = 20,
    threads: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Test metrics (with 95% bootstrap CIs), confusion matrix and efficiency of ``model``."""
    dataset = dataset_for_model(samples, meta)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    dev = resolve_device(device)
    model = model.to(dev).eval()

    def predict(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return model(batch["views"]["input"])[1], batch["label"]

    logits, labels = predict_loader(predict, loader, dev, progress=progress, desc="evaluate")
    preds = logits.argmax(1)
    report = classification_report(labels, preds, len(meta["classes"]), n_resamples, ci_seed)
    h, w = dataset.original(0).shape[:2]
    size = model_input_size(meta, (h, w))
    model = model.cpu()
    efficiency = profile_model(
        model, (3, *size), latency=latency, repeats=latency_repeats, threads=threads
    )
    return {
        "metrics": report["metrics"],
        "confusion_matrix": report["confusion_matrix"],
        "n": report["n"],
        "input_size": list(size),
        "efficiency": efficiency,
        "predictions": preds.astype(int).tolist(),
        "labels": np.asarray(labels).astype(int).tolist(),
    }
