"""Classification: one label per image (resolution KD, More From Less probes)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import Field

from medistill.metrics import classification_report
from medistill.tasks.base import IDENTITY_VIEW, MetricColumn, ModelCard, Task, register_task


class ClassificationCard(ModelCard):
    task: Literal["classification"] = "classification"
    view: dict[str, Any] = Field(default_factory=lambda: dict(IDENTITY_VIEW), description=(
        "how an original image becomes the input (medistill.data.views.view_from_spec)"))


CLASSIFICATION = register_task(Task(
    "classification", ClassificationCard,
    columns=(MetricColumn("accuracy", "accuracy"), MetricColumn("macro_f1", "macro F1"))))


# ---- the ONE metric path (validation and the final evaluation) ----


def score_logits(logits: ArrayLike, labels: ArrayLike, num_classes: int,
                 n_resamples: int = 0, seed: int = 0) -> dict[str, Any]:
    """The classification metrics of ``(N, K)`` logits against ``(N,)`` labels: the argmax
    class of each row scored by :func:`~medistill.metrics.classification_report` (its
    confusion matrix, point metrics and, for ``n_resamples > 0``, bootstrap CIs). Both the
    trainer's validation (:func:`validation_scores`) and ``evaluate_classifier`` call it."""
    preds = np.asarray(logits).argmax(1)
    report = classification_report(labels, preds, num_classes, n_resamples, seed)
    report["predictions"] = preds
    return report


def validation_scores(logits: ArrayLike, labels: ArrayLike, num_classes: int
                      ) -> dict[str, float]:
    """The scores epochs are selected on: the point values of :func:`score_logits` (the final
    evaluation's metrics without the bootstrap)."""
    report = score_logits(logits, labels, num_classes)
    return {name: float(m["value"]) for name, m in report["metrics"].items()}
