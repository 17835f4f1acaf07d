"""Distillation losses as plain ``torch.nn.Module``s, usable in any training loop."""

from medistill.losses.feature_mse import ResizedFeatureMSE, resize_map
from medistill.losses.soft_target import SoftTargetKL

__all__ = ["ResizedFeatureMSE", "SoftTargetKL", "resize_map"]
