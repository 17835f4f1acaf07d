"""Evaluation metrics: classification quality with bootstrap CIs, and model efficiency."""

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

__all__ = [
    "METRIC_NAMES",
    "classification_report",
    "confusion_matrix",
    "count_gflops",
    "count_parameters",
    "measure_latency",
    "metrics_from_confusion",
    "profile_model",
]
