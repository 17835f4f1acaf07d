"""Classification: one label per image (resolution KD, More From Less probes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from medistill.tasks.base import IDENTITY_VIEW, ModelCard, Task, register_task


class ClassificationCard(ModelCard):
    task: Literal["classification"] = "classification"
    view: dict[str, Any] = Field(default_factory=lambda: dict(IDENTITY_VIEW), description=(
        "how an original image becomes the input (medistill.data.views.view_from_spec)"))


CLASSIFICATION = register_task(Task(
    "classification", ClassificationCard,
    columns=("accuracy", "macro_f1", "macro_precision", "macro_recall", "ovr_accuracy")))
