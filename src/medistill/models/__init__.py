"""Teacher and student networks with named feature taps, by name from a registry."""

from torch import nn

from medistill.errors import RecipeError
from medistill.models import mil_segmenter as _mil  # noqa: F401  (weakly supervised MIL)
from medistill.models import resnet as _resnet  # noqa: F401  (registers the ResNets)
from medistill.models import resnet_unet as _resnet_unet  # noqa: F401  (segmentation student)
from medistill.models import resunet as _resunet  # noqa: F401  (instance embeddings)
from medistill.models import unetpp as _unetpp  # noqa: F401  (segmentation teacher)
from medistill.models.base import Classifier
from medistill.models.registry import MODELS
from medistill.models.segmenter import Segmenter


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model, e.g. ``create_model("small_resnet", num_classes=6)``.

    Classifiers return :class:`Classifier`, segmentation models :class:`Segmenter`.
    Keyword arguments the factory rejects (unknown names, values of the wrong type or range)
    are a one-line :class:`~medistill.errors.RecipeError` naming the model.
    """
    factory = MODELS.get(name)
    try:
        return factory(num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, ArithmeticError, RuntimeError) as e:
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no kwargs"
        raise RecipeError(f"model {name!r} ({given}): {e}") from None


def list_models() -> list[str]:
    return MODELS.names()


def segmentation_models() -> list[str]:
    """The registered names whose factory builds a :class:`Segmenter`."""
    return [n for n in MODELS.names() if getattr(MODELS.get(n), "task", "") == "segmentation"]


def instance_models() -> list[str]:
    """The registered names whose factory builds an instance embedding network."""
    return [n for n in MODELS.names() if getattr(MODELS.get(n), "task", "") == "instance"]


def classification_models() -> list[str]:
    """The registered names whose factory builds a :class:`Classifier`."""
    other = set(segmentation_models()) | set(instance_models())
    return [n for n in MODELS.names() if n not in other]


__all__ = ["MODELS", "Classifier", "Segmenter", "classification_models", "create_model",
           "instance_models", "list_models", "segmentation_models"]
