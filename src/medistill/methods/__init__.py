"""Training objectives that plug into :class:`medistill.engine.Trainer`."""

from medistill.methods.base import METHODS, Method, freeze, register_method
from medistill.methods.resolution_kd import ResolutionKD
from medistill.methods.supervised import Supervised

__all__ = ["METHODS", "Method", "ResolutionKD", "Supervised", "freeze", "register_method"]

# self-supervised joint-embedding distillation (More From Less, Farndale et al., 2023)
from medistill.methods.joint_embedding import (  # noqa: E402
    Expander,
    FeatureDataset,
    JointEmbedding,
    LinearProbe,
    ProbedClassifier,
)

__all__ += ["Expander", "FeatureDataset", "JointEmbedding", "LinearProbe", "ProbedClassifier"]

# segmentation: supervised and HLFD-style distillation (Gorade et al., 2023)
from medistill.methods.hlfd import SegmentationKD  # noqa: E402
from medistill.methods.segmentation import SegmentationMethod, SegSupervised  # noqa: E402

__all__ += ["SegSupervised", "SegmentationKD", "SegmentationMethod"]

# weakly supervised segmentation: MIL teacher + iterative fusion KD (He, Li, Zemp, 2024)
from medistill.methods.mil_fusion import FusionKD, MILTraining, decide_swap  # noqa: E402

__all__ += ["FusionKD", "MILTraining", "decide_swap"]

# instance segmentation: embeddings and graph relation distillation (Liu et al., 2024)
from medistill.methods.graph_relation import GraphRelationKD, InstanceEmbedding  # noqa: E402
from medistill.methods.memory_bank import MemoryBank  # noqa: E402

__all__ += ["GraphRelationKD", "InstanceEmbedding", "MemoryBank"]
