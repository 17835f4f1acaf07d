"""Semantic segmentation: a class per pixel (HLFD)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from medistill.tasks.base import IDENTITY_VIEW, ModelCard, Task, register_task


class SegmentationCard(ModelCard):
    task: Literal["segmentation"] = "segmentation"
    view: dict[str, Any] = Field(default_factory=lambda: dict(IDENTITY_VIEW), description=(
        "how an original image becomes the input (medistill.data.views.view_from_spec)"))
    threshold: float = Field(0.4, description="binary foreground probability threshold")
    data: dict[str, Any] = Field({}, description="the data settings without the root")


SEGMENTATION = register_task(Task(
    "segmentation", SegmentationCard, columns=("dice", "iou", "voe", "rvd", "hd95"),
    export_keys=("threshold",)))
