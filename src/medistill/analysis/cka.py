"""Linear centred kernel alignment (CKA; Kornblith et al., 2019, eq. 5).

``CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F * ||Y^T Y||_F)`` for activations X (n, p1) and
Y (n, p2) of the same n examples, after centring every column (feature). It lies in [0, 1], is
invariant to orthogonal transforms and to isotropic scaling of either input, but not to
non-isotropic scaling, and the two inputs may have different numbers of features.

Because ``||Y^T X||_F^2 = <X X^T, Y Y^T>_F`` and ``||X^T X||_F = ||X X^T||_F``, each product is
computed in whichever space is cheaper: features (p1 x p2 matrices) or examples (n x n Gram
matrices, the usual case for flattened convolutional maps). Computation is in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _centred(acts: Any, name: str) -> np.ndarray:
    """``acts`` as a float64 (n, features) array with centred columns and unit Frobenius norm.

    Accepts numpy arrays, torch tensors (detached and moved to the CPU) and nested sequences.
    Arrays with more than two dimensions (e.g. (n, C, H, W) feature maps) are flattened to
    (n, C*H*W). The rescaling does not change CKA (it is scale invariant) but keeps the fourth
    powers in the formula far from overflow.
    """
    if isinstance(acts, torch.Tensor):
        acts = acts.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(acts, dtype=np.float64)
    if arr.ndim < 2:
        raise ValueError(
            f"{name} must have shape (n, features), got {arr.shape}; "
            "reshape a single feature to (n, 1)"
        )
    arr = arr.reshape(arr.shape[0], -1)
    n, features = arr.shape
    if n < 2:
        raise ValueError(f"{name} needs at least 2 examples (rows), got {n}")
    if features == 0:
        raise ValueError(f"{name} has no features: shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite values")
    arr = arr - arr.mean(axis=0)
    norm = np.linalg.norm(arr)
    if norm == 0:
        raise ValueError(f"{name} is constant over the examples: CKA is undefined")
    return arr / norm


def _cross(x: np.ndarray, y: np.ndarray) -> float:
    """``||Y^T X||_F^2`` for (n, p1) and (n, p2) arrays, in feature or example space."""
    n, p1 = x.shape
    p2 = y.shape[1]
    if n * n * (p1 + p2) < n * p1 * p2:  # Gram matrices are cheaper
        return float(np.sum((x @ x.T) * (y @ y.T)))
    return float(np.sum((y.T @ x) ** 2))


def _cka(x: np.ndarray, y: np.ndarray, self_x: float, self_y: float) -> float:
    return min(_cross(x, y) / math.sqrt(self_x * self_y), 1.0)


def _check_examples(shapes: dict[str, int]) -> None:
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in shapes.items())
        raise ValueError(f"activations must cover the same examples (rows); got {listed}")


def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA between activations ``x`` (n, p1) and ``y`` (n, p2) of the same n examples.

    Args:
        x, y: numpy arrays or torch tensors; rows are examples, columns features. The feature
            counts may differ; inputs with more than 2 dimensions are flattened per example.

    Returns:
        A float in [0, 1]; 1 when ``y`` is an orthogonal transform of ``x`` up to a scale.

    Raises:
        ValueError: the row counts differ, there are fewer than 2 rows, a value is not finite,
            or an input is constant over the examples (CKA is then undefined).
    """
    cx, cy = _centred(x, "x"), _centred(y, "y")
    _check_examples({"x": cx.shape[0], "y": cy.shape[0]})
    return _cka(cx, cy, _cross(cx, cx), _cross(cy, cy))


def linear_cka_matrix(acts_a: Sequence[Any], acts_b: Sequence[Any]) -> np.ndarray:
    """Layer-by-layer linear CKA: ``M[i, j] = linear_cka(acts_a[i], acts_b[j])``.

    Args:
        acts_a: activations of the layers of one network, each (n, features_i).
        acts_b: activations of the layers of another (or the same) network, on the same n
            examples in the same order.

    Returns:
        A float64 array of shape ``(len(acts_a), len(acts_b))``, ready for a heatmap.
    """
    if len(acts_a) == 0 or len(acts_b) == 0:
        raise ValueError("acts_a and acts_b need at least one layer each")
    a = [_centred(x, f"acts_a[{i}]") for i, x in enumerate(acts_a)]
    b = [_centred(y, f"acts_b[{j}]") for j, y in enumerate(acts_b)]
    _check_examples(
        {f"acts_a[{i}]": x.shape[0] for i, x in enumerate(a)}
        | {f"acts_b[{j}]": y.shape[0] for j, y in enumerate(b)}
    )
    self_a = [_cross(x, x) for x in a]
    self_b = [_cross(y, y) for y in b]
    matrix = np.empty((len(a), len(b)), dtype=np.float64)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            matrix[i, j] = _cka(x, y, self_a[i], self_b[j])
    return matrix
