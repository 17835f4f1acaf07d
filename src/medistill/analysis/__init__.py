"""Analysis of trained networks: representation similarity (linear CKA) between layers."""

from medistill.analysis.cka import linear_cka, linear_cka_matrix

__all__ = ["linear_cka", "linear_cka_matrix"]
