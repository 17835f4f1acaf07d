"""The model registry (kept in its own module so architecture files can import it)."""

from medistill.models.base import Classifier
from medistill.registry import Registry

MODELS: Registry[Classifier] = Registry("model")
