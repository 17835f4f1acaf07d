"""The model registry (kept in its own module so architecture files can import it)."""

from torch import nn

from medistill.registry import Registry

#: classifiers (:class:`~medistill.models.base.Classifier`) and segmenters
#: (:class:`~medistill.models.segmenter.Segmenter`)
MODELS: Registry[nn.Module] = Registry("model")
