"""Evaluating a trained classifier on any split: metrics with bootstrap CIs + efficiency."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from medistill.config import EvalConfig
from medistill.data import PairedViewDataset, SampleList
from medistill.data.views import view_from_spec, view_input_size
from medistill.engine.checkpoint import load_model
from medistill.engine.trainer import predict_loader, resolve_device
from medistill.errors import CheckpointError
from medistill.metrics import profile_model
from medistill.models.base import Classifier
from medistill.tasks.classification import score_logits


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
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():  # metrics of NaN logits would look like a real (if poor) model
        first = samples.samples[int(np.argmax(bad))].path
        raise CheckpointError(f"the model's outputs are not finite for {int(bad.sum())} of "
                              f"{len(bad)} images (e.g. {first}); it cannot be evaluated")
    report = score_logits(logits, labels, len(meta["classes"]), n_resamples, ci_seed)
    preds = report["predictions"]
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


def read_history(log_csv: Path) -> list[dict[str, float]]:
    """A run's ``log.csv`` as a list of epoch rows (empty if there is none)."""
    if not log_csv.is_file():
        return []
    with log_csv.open() as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def run_record(model_path: Path, samples: SampleList, e: EvalConfig,
               **fields: Any) -> dict[str, Any]:
    """Evaluate a saved model on ``samples``: the report's run record (see
    :func:`medistill.reports.write_report`) with ``fields`` (name, role, seed, ...) first."""
    model, meta = load_model(model_path)
    res = evaluate_classifier(model, meta, samples, n_resamples=e.n_resamples, ci_seed=e.ci_seed,
                              latency=e.latency, latency_repeats=e.latency_repeats,
                              threads=e.threads)
    return {
        **fields, "split": fields.get("split", e.split), "input_size": res["input_size"],
        "metrics": res["metrics"], "confusion_matrix": res["confusion_matrix"],
        "predictions": res["predictions"], "labels": res["labels"],  # for paired comparisons
        "efficiency": {k: res["efficiency"][k] for k in ("gflops", "params", "latency_ms",
                                                         "latency_q25_ms", "latency_q75_ms",
                                                         "latency_threads")
                       if k in res["efficiency"]},
        "history": read_history(model_path.parent / "log.csv"), "model_path": str(model_path),
    }
