"""Teacher and student networks with named feature taps, by name from a registry."""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from medistill.errors import RecipeError
from medistill.models import mil_segmenter as _mil  # noqa: F401  (weakly supervised MIL)
from medistill.models import resnet as _resnet  # noqa: F401  (registers the ResNets)
from medistill.models import resnet_unet as _resnet_unet  # noqa: F401  (segmentation student)
from medistill.models import resunet as _resunet  # noqa: F401  (instance embeddings)
from medistill.models import unetpp as _unetpp  # noqa: F401  (segmentation teacher)
from medistill.models.adapter import TappedModel
from medistill.models.base import Classifier
from medistill.models.registry import MODELS
from medistill.models.segmenter import Segmenter
from medistill.plugins import load_entry_points


class ModelSpec(Protocol):
    """What :func:`build_model` reads of a recipe's model section
    (:class:`medistill.config.ModelConfig`; the schema sits above the models it names)."""

    name: str
    kwargs: dict[str, Any]
    init_checkpoint: str | None
    init_strict: bool


#: ``@register_model("my_net")`` on a factory ``(num_classes, **kwargs) -> nn.Module``
register_model = MODELS.register


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


def build_model(spec: ModelSpec, num_classes: int) -> nn.Module:
    """The model a recipe's model section describes: :func:`create_model` with its ``name``
    and ``kwargs``, then, with ``init_checkpoint``, those initial weights (strict unless
    ``init_strict: false``; see :mod:`medistill.models.pretrained`)."""
    model = create_model(spec.name, num_classes, **spec.kwargs)
    if spec.init_checkpoint:
        from medistill.models.pretrained import load_initial_weights

        load_initial_weights(model, spec.init_checkpoint, spec.init_strict, spec.name)
    return model


def list_models() -> list[str]:
    load_entry_points()
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


__all__ = ["MODELS", "Classifier", "Segmenter", "TappedModel", "build_model",
           "classification_models", "create_model", "instance_models", "list_models",
           "register_model", "segmentation_models"]
