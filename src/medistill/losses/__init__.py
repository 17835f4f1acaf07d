"""Distillation losses as plain ``torch.nn.Module``s, usable in any training loop."""

from medistill.losses.feature_mse import ResizedFeatureMSE, resize_map
from medistill.losses.ntxent import NTXentLoss
from medistill.losses.soft_target import SoftTargetKL
from medistill.losses.vicreg import VICRegLoss

__all__ = ["NTXentLoss", "ResizedFeatureMSE", "SoftTargetKL", "VICRegLoss", "resize_map"]
