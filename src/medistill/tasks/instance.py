"""Instance segmentation by pixel embeddings (graph relation distillation): every nucleus
an id. The model sees the image as it is (rescaled by ``scale``): its card has no view."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from medistill.tasks.base import ModelCard, Task, register_task


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
    columns=("aji", "pq"),
    export_keys=("scale", "offsets", "postprocess")))
