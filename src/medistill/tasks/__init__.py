"""The task layer: one module per task, each with its typed, versioned model card
(see :mod:`medistill.tasks.base`), registered in :data:`TASKS`."""

from medistill.tasks.base import (
    CARD_VERSION,
    IDENTITY_VIEW,
    INPUT_NAME,
    OUTPUT_NAME,
    TASKS,
    MetricColumn,
    ModelCard,
    Task,
    card_from_meta,
    get_task,
    migrate,
    register_task,
    task_name,
)
from medistill.tasks.classification import CLASSIFICATION, ClassificationCard
from medistill.tasks.instance import INSTANCE, InstanceCard
from medistill.tasks.segmentation import SEGMENTATION, SegmentationCard
from medistill.tasks.weak_segmentation import WEAK_SEGMENTATION, WeakSegmentationCard

__all__ = [
    "CARD_VERSION", "CLASSIFICATION", "IDENTITY_VIEW", "INPUT_NAME", "INSTANCE", "OUTPUT_NAME",
    "SEGMENTATION", "TASKS", "WEAK_SEGMENTATION", "ClassificationCard", "InstanceCard",
    "MetricColumn", "ModelCard", "SegmentationCard", "Task", "WeakSegmentationCard",
    "card_from_meta",
    "get_task", "migrate", "register_task", "task_name",
]
