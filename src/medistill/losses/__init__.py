"""Distillation losses as plain ``torch.nn.Module``s, usable in any training loop."""

from medistill.losses.affinity import AffinityLoss, affinity, label_affinity, masked_mse
from medistill.losses.agd import AffinityGraphKD, inter_image_agd, pooled_nodes
from medistill.losses.agreement_ce import AgreementWeightedBCE
from medistill.losses.attention_transfer import AttentionTransfer, attention_map
from medistill.losses.feature_mse import ResizedFeatureMSE, resize_map
from medistill.losses.focal_dice import FocalDiceLoss
from medistill.losses.fusion_kd import FusionKDLoss, soft_dice_loss
from medistill.losses.igd import InstanceGraphKD, instance_nodes, inter_image_igd
from medistill.losses.mil_pooling import MILDiceLoss, MILPoolingLoss, mil_pool
from medistill.losses.ntxent import NTXentLoss
from medistill.losses.pixel_kl import PixelKL
from medistill.losses.soft_target import SoftTargetKL
from medistill.losses.vicreg import VICRegLoss

__all__ = [
    "AffinityGraphKD",
    "AffinityLoss",
    "AgreementWeightedBCE",
    "AttentionTransfer",
    "FocalDiceLoss",
    "FusionKDLoss",
    "InstanceGraphKD",
    "MILDiceLoss",
    "MILPoolingLoss",
    "NTXentLoss",
    "PixelKL",
    "ResizedFeatureMSE",
    "SoftTargetKL",
    "VICRegLoss",
    "affinity",
    "attention_map",
    "instance_nodes",
    "inter_image_agd",
    "inter_image_igd",
    "label_affinity",
    "masked_mse",
    "mil_pool",
    "pooled_nodes",
    "resize_map",
    "soft_dice_loss",
]
