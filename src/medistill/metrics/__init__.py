"""Evaluation metrics: classification, segmentation and instance segmentation quality with
bootstrap CIs, and model efficiency."""

from medistill.metrics.classification import (
    METRIC_NAMES,
    classification_report,
    confusion_matrix,
    metrics_from_confusion,
)
from medistill.metrics.efficiency import (
    count_gflops,
    count_parameters,
    measure_latency,
    profile_model,
)
from medistill.metrics.instance import (
    INSTANCE_METRICS,
    aji,
    instance_case_metrics,
    instance_report,
    panoptic_quality,
)
from medistill.metrics.segmentation import (
    SEG_METRICS,
    bootstrap_mean,
    case_metrics,
    logits_to_labels,
    multiclass_case_metrics,
    segmentation_report,
)
from medistill.metrics.weak_segmentation import (
    WEAK_METRICS,
    binary_auc,
    weak_case_metrics,
    weak_segmentation_report,
)

__all__ = [
    "WEAK_METRICS",
    "binary_auc",
    "weak_case_metrics",
    "weak_segmentation_report",
    "INSTANCE_METRICS",
    "aji",
    "instance_case_metrics",
    "instance_report",
    "panoptic_quality",
    "SEG_METRICS",
    "bootstrap_mean",
    "case_metrics",
    "logits_to_labels",
    "multiclass_case_metrics",
    "segmentation_report",
    "METRIC_NAMES",
    "classification_report",
    "confusion_matrix",
    "count_gflops",
    "count_parameters",
    "measure_latency",
    "metrics_from_confusion",
    "profile_model",
]
