"""VICReg: variance-invariance-covariance regularisation (Bardes et al., 2022, eqs. 1-6).

Used by "More From Less" (Farndale et al., 2023) to pull a sparse-stain branch towards a dense
(H&E) branch. This is the standard formulation of the VICReg paper and its reference PyTorch
code, not the authors' TensorFlow variant (``n_branch_loss``), which for two branches counts
the invariance term twice (both ordered pairs), sums the variance hinge over the branches
instead of averaging it, uses the biased variance and covariance and ``eps = 1e-5``, and returns
a per-sample loss vector that the gradient tape sums over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medistill.losses.checks import check_embedding_pair

TERMS = ("invariance", "variance", "covariance")


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square (D, D) matrix, as a flat tensor."""
    return matrix[~torch.eye(matrix.shape[0], dtype=torch.bool, device=matrix.device)]


def _check_weight(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):  # also rejects NaN
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return float(value)


class VICRegLoss(nn.Module):
    """``sim_weight * s(Z, Z') + var_weight * v + cov_weight * c`` (Bardes et al., eq. 6).

    For two batches of embeddings ``Z = z_a`` and ``Z' = z_b`` of shape (N, D):

    * invariance (eq. 5): ``s = 1/(N D) * sum_ij (Z_ij - Z'_ij)^2``, the mean squared error over
      all elements;
    * variance (eqs. 1-2): ``v(Z) = 1/D * sum_j max(0, 1 - sqrt(Var(Z_:j) + eps))`` with the
      unbiased variance over the batch, and ``v = (v(Z) + v(Z')) / 2``;
    * covariance (eqs. 3-4): ``C(Z) = 1/(N - 1) * (Z - mean Z)^T (Z - mean Z)`` and
      ``c = 1/D * sum_{i != j} C(Z)_ij^2 + 1/D * sum_{i != j} C(Z')_ij^2``.

    Args:
        sim_weight: weight of the invariance term (lambda in the paper).
        var_weight: weight of the variance term (mu).
        cov_weight: weight of the covariance term (nu).
        eps: added to the variance before the square root, for stability.

    Shapes: ``z_a`` and ``z_b`` are (N, D) with N >= 2; returns a scalar. Both inputs receive
    gradients (neither is detached): detach a frozen branch before calling.
    """

    def __init__(
        self,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.sim_weight = _check_weight("sim_weight", sim_weight)
        self.var_weight = _check_weight("var_weight", var_weight)
        self.cov_weight = _check_weight("cov_weight", cov_weight)
        self.eps = _check_weight("eps", eps)

    def terms(self, z_a: torch.Tensor, z_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three unweighted terms ``{"invariance": s, "variance": v, "covariance": c}``.

        The values keep their autograd graph; call ``.item()`` (or ``.detach()``) to log them.
        """
        check_embedding_pair(z_a, z_b, "VICRegLoss")
        invariance = F.mse_loss(z_a, z_b)
        variance = (self._variance(z_a) + self._variance(z_b)) / 2
        covariance = self._covariance(z_a) + self._covariance(z_b)
        return {"invariance": invariance, "variance": variance, "covariance": covariance}

    def forward(
        self, z_a: torch.Tensor, z_b: torch.Tensor, return_terms: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted loss; with ``return_terms=True`` also the dict of :meth:`terms`."""
        terms = self.terms(z_a, z_b)
        weighted = self.weighted(terms)
        loss = weighted["invariance"] + weighted["variance"] + weighted["covariance"]
        return (loss, terms) if return_terms else loss

    def weighted(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`terms` times their weights (lambda s, mu v, nu c); their sum is the loss."""
        return {"invariance": self.sim_weight * terms["invariance"],
                "variance": self.var_weight * terms["variance"],
                "covariance": self.cov_weight * terms["covariance"]}

    def _variance(self, z: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(z.var(dim=0, unbiased=True) + self.eps)
        return F.relu(1.0 - std).mean()

    @staticmethod
    def _covariance(z: torch.Tensor) -> torch.Tensor:
        n, dim = z.shape
        centred = z - z.mean(dim=0)
        cov = centred.T @ centred / (n - 1)
        return _off_diagonal(cov).pow(2).sum() / dim
