"""Teacher and student networks with named feature taps, by name from a registry."""

from medistill.models import resnet as _resnet  # noqa: F401  (registers the ResNets)
from medistill.models.base import Classifier
from medistill.models.registry import MODELS


def create_model(name: str, num_classes: int, **kwargs) -> Classifier:
    """Build a registered model, e.g. ``create_model("small_resnet", num_classes=6)``."""
    return MODELS.create(name, num_classes=num_classes, **kwargs)


def list_models() -> list[str]:
    return MODELS.names()


__all__ = ["MODELS", "Classifier", "create_model", "list_models"]
