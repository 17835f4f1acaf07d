"""Analysis of trained networks: representation similarity (linear CKA) between layers and
Grad-CAM maps."""

from medistill.analysis.cka import linear_cka, linear_cka_matrix
from medistill.analysis.gradcam import gradcam

__all__ = ["gradcam", "linear_cka", "linear_cka_matrix"]
