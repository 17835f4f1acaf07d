"""Distillation losses as plain ``torch.nn.Module``s, usable in any training loop."""

from medistill.losses.agreement_ce import AgreementWeightedBCE
from medistill.losses.attention_transfer import AttentionTransfer, attention_map
from medistill.losses.feature_mse import ResizedFeatureMSE, resize_map
from medistill.losses.focal_dice import FocalDiceLoss
from medistill.losses.fusion_kd import FusionKDLoss, soft_dice_loss
from medistill.losses.mil_pooling import MILPoolingLoss, mil_pool
from medistill.losses.ntxent import NTXentLoss
from medistill.losses.pixel_kl import PixelKL
from medistill.losses.soft_target import SoftTargetKL
from medistill.losses.vicreg import VICRegLoss

__all__ = [
    "AgreementWeightedBCE",
    "AttentionTransfer",
    "FocalDiceLoss",
    "FusionKDLoss",
    "MILPoolingLoss",
    "NTXentLoss",
    "PixelKL",
    "ResizedFeatureMSE",
    "SoftTargetKL",
    "VICRegLoss",
    "attention_map",
    "mil_pool",
    "resize_map",
    "soft_dice_loss",
]
