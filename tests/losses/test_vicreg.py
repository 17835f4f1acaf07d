"""VICRegLoss: 25 * MSE + 25 * mean variance hinge + 1 * off-diagonal covariance (Bardes et al.)."""

from __future__ import annotations

import math

import pytest
import torch

from medistill.losses import VICRegLoss

pytestmark = pytest.mark.usefixtures("single_thread")

# N = 3 samples, D = 2 dimensions.
Z_A = [[0.0, 0.0], [0.5, 0.5], [1.0, -0.5]]
Z_B = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]
# Invariance: z_a - z_b = [[-1, 0], [0.5, -0.5], [2, 0.5]]; squares sum to
#   1 + 0 + 0.25 + 0.25 + 4 + 0.25 = 5.75 over 6 elements -> 23/24.
INVARIANCE = 23 / 24
# z_a: column means (0.5, 0); centred columns (-0.5, 0, 0.5) and (0, 0.5, -0.5).
#   Unbiased variances: 0.5 / 2 = 0.25 each -> std 0.5 -> hinge 1 - 0.5 = 0.5 per column.
#   Covariance: (-0.5 * 0 + 0 * 0.5 + 0.5 * -0.5) / 2 = -0.125; two off-diagonal entries:
#   2 * 0.125^2 / D = 0.015625.
# z_b: column means (0, 0); columns (1, 0, -1) and (0, 1, -1).
#   Unbiased variances: 2 / 2 = 1 each -> std 1 -> hinge 0.
#   Covariance: (0 + 0 + 1) / 2 = 0.5 -> 2 * 0.5^2 / D = 0.25.
VARIANCE_EPS0 = (0.5 + 0.0) / 2
COVARIANCE = 0.015625 + 0.25


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_hand_computed_terms_without_eps() -> None:
    loss = VICRegLoss(eps=0.0)
    terms = loss.terms(_t(Z_A), _t(Z_B))
    assert set(terms) == {"invariance", "variance", "covariance"}
    assert terms["invariance"].item() == pytest.approx(INVARIANCE)
    assert terms["variance"].item() == pytest.approx(VARIANCE_EPS0)
    assert terms["covariance"].item() == pytest.approx(COVARIANCE)
    expected = 25 * INVARIANCE + 25 * VARIANCE_EPS0 + 1 * COVARIANCE
    assert expected == pytest.approx(30.4739583333, abs=1e-9)
    value = loss(_t(Z_A), _t(Z_B))
    assert value.ndim == 0
    assert value.item() == pytest.approx(expected)


def test_hand_computed_with_default_eps() -> None:
    # eps = 1e-4 inside the square root: z_a hinge 1 - sqrt(0.2501) per column, z_b
    # max(0, 1 - sqrt(1.0001)) = 0. Invariance and covariance do not use eps.
    variance = ((1 - math.sqrt(0.2501)) + 0.0) / 2
    expected = 25 * INVARIANCE + 25 * variance + COVARIANCE
    loss, terms = VICRegLoss()(_t(Z_A), _t(Z_B), return_terms=True)
    assert terms["variance"].item() == pytest.approx(variance, rel=1e-12)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_weights_scale_each_term() -> None:
    z_a, z_b = _t(Z_A), _t(Z_B)
    kw = {"eps": 0.0}
    assert VICRegLoss(1, 0, 0, **kw)(z_a, z_b).item() == pytest.approx(INVARIANCE)
    assert VICRegLoss(0, 1, 0, **kw)(z_a, z_b).item() == pytest.approx(VARIANCE_EPS0)
    assert VICRegLoss(0, 0, 1, **kw)(z_a, z_b).item() == pytest.approx(COVARIANCE)
    assert VICRegLoss(2, 3, 4, **kw)(z_a, z_b).item() == pytest.approx(
        2 * INVARIANCE + 3 * VARIANCE_EPS0 + 4 * COVARIANCE
    )


def test_covariance_counts_both_off_diagonal_entries_and_divides_by_dim() -> None:
    # N = 2, D = 3: columns (1, -1), (1, -1), (0, 0). Covariance entries (unbiased, / (N - 1)):
    # C_01 = C_10 = (1 * 1 + (-1) * (-1)) / 1 = 2; every entry with column 2 is 0.
    # Off-diagonal squares: 2^2 + 2^2 = 8, divided by D = 3 -> 8/3 (z_b = 0 adds 0).
    z_a = _t([[1.0, 1.0, 0.0], [-1.0, -1.0, 0.0]])
    z_b = torch.zeros(2, 3, dtype=torch.float64)
    assert VICRegLoss(0, 0, 1)(z_a, z_b).item() == pytest.approx(8 / 3)


def test_variance_is_unbiased() -> None:
    # One column (0, 0.6): unbiased variance 0.18 (biased would be 0.09, std 0.3).
    z = _t([[0.0], [0.6]])
    hinge = 1 - math.sqrt(0.18)
    assert VICRegLoss(0, 1, 0, eps=0.0)(z, z).item() == pytest.approx(hinge)
    assert hinge != pytest.approx(1 - 0.3)


def test_spread_embeddings_have_no_variance_penalty() -> None:
    z = _t([[3.0], [-3.0], [0.0]])  # std 3 > 1
    assert VICRegLoss(0, 1, 0)(z, z).item() == 0.0


def test_collapsed_batch_costs_var_weight_not_twice_as_in_authors_code() -> None:
    # Both branches collapsed to one point: invariance 0, covariance 0, each branch's hinge is
    # 1 - sqrt(0 + 1e-4) = 0.99 and the two are averaged: 25 * 0.99 = 24.75. The authors'
    # TensorFlow n_branch_loss sums the hinges: 25 * 2 * (1 - sqrt(1e-5)) ~= 49.84 per sample.
    z = torch.ones(4, 3, dtype=torch.float64)
    assert VICRegLoss()(z, z.clone()).item() == pytest.approx(24.75)
    authors = 25 * 2 * (1 - math.sqrt(1e-5))
    assert authors == pytest.approx(49.8419, abs=1e-4)


def _authors_tensorflow_variant(z_a: list[list[float]], z_b: list[list[float]]) -> list[float]:
    """The authors' ``n_branch_loss`` for two branches, written out in plain Python.

    Invariance: Keras MSE with ``Reduction.NONE``, a per-sample mean over the dimensions, summed
    over both ordered pairs (a, b) and (b, a). Variance: biased, eps = 1e-5, hinge means summed
    over the branches. Covariance: divided by N (biased). The result is one loss per sample;
    TensorFlow's gradient tape differentiates their sum.
    """
    n, dim = len(z_a), len(z_a[0])

    def columns(z: list[list[float]]) -> list[list[float]]:
        cols = [[row[j] for row in z] for j in range(dim)]
        return [[v - sum(col) / n for v in col] for col in cols]

    def hinge(z: list[list[float]]) -> float:
        stds = [math.sqrt(sum(v * v for v in col) / n + 1e-5) for col in columns(z)]
        return sum(max(0.0, 1 - s) for s in stds) / dim

    def cov(z: list[list[float]]) -> float:
        cols = columns(z)
        off = [
            sum(u * v for u, v in zip(cols[i], cols[j], strict=True)) / n
            for i in range(dim)
            for j in range(dim)
            if i != j
        ]
        return sum(c * c for c in off) / dim

    per_sample_mse = [
        sum((a - b) ** 2 for a, b in zip(ra, rb, strict=True)) / dim
        for ra, rb in zip(z_a, z_b, strict=True)
    ]
    shared = 25 * (hinge(z_a) + hinge(z_b)) + 1 * (cov(z_a) + cov(z_b))
    return [25 * 2 * m + shared for m in per_sample_mse]


def test_differs_from_authors_tensorflow_variant() -> None:
    # On the hand example: per-sample MSEs 0.5, 0.25, 2.125 (mean 23/24), counted twice.
    # Biased variances 1/6 (z_a) and 2/3 (z_b); biased covariances -1/12 and 1/3 -> 17/144.
    authors = _authors_tensorflow_variant(Z_A, Z_B)
    expected_authors = [
        25 * 2 * m + 25 * ((1 - math.sqrt(1 / 6 + 1e-5)) + (1 - math.sqrt(2 / 3 + 1e-5))) + 17 / 144
        for m in (0.5, 0.25, 2.125)
    ]
    assert authors == pytest.approx(expected_authors, rel=1e-12)
    authors_mean = sum(authors) / len(authors)
    assert authors_mean == pytest.approx(67.4156, abs=1e-4)

    loss, terms = VICRegLoss()(_t(Z_A), _t(Z_B), return_terms=True)
    assert loss.item() == pytest.approx(30.4727, abs=1e-4)  # the standard loss, as above
    assert abs(loss.item() - authors_mean) > 30
    # Invariance: the authors' per-sample mean is exactly twice the standard weighted term.
    authors_invariance = sum(25 * 2 * m for m in (0.5, 0.25, 2.125)) / 3
    assert authors_invariance == pytest.approx(2 * 25 * terms["invariance"].item())


def test_symmetric_in_the_two_branches() -> None:
    torch.manual_seed(0)
    z_a, z_b = torch.randn(8, 5), torch.randn(8, 5)
    loss = VICRegLoss()
    assert loss(z_a, z_b).item() == pytest.approx(loss(z_b, z_a).item(), rel=1e-6)


def test_gradient_reaches_both_branches() -> None:
    torch.manual_seed(0)
    z_a = torch.randn(6, 4, requires_grad=True)
    z_b = torch.randn(6, 4, requires_grad=True)
    VICRegLoss()(z_a, z_b).backward()
    assert z_a.grad is not None and z_a.grad.abs().sum() > 0
    assert z_b.grad is not None and z_b.grad.abs().sum() > 0


def test_invariance_gradient_matches_hand_formula() -> None:
    # d/dz_a [w * 1/(N D) * sum (z_a - z_b)^2] = 2 w (z_a - z_b) / (N D); N D = 6, w = 25.
    z_a = _t(Z_A).requires_grad_(True)
    VICRegLoss(25, 0, 0)(z_a, _t(Z_B)).backward()
    diff = [[a - b for a, b in zip(ra, rb, strict=True)] for ra, rb in zip(Z_A, Z_B, strict=True)]
    expected = [[2 * 25 * d / 6 for d in row] for row in diff]
    assert z_a.grad.tolist() == [pytest.approx(row) for row in expected]


@pytest.mark.parametrize(
    ("shape_a", "shape_b", "match"),
    [
        ((4,), (4,), "2-D"),
        ((2, 3, 4), (2, 3, 4), "2-D"),
        ((4, 3), (4, 2), "shape"),
        ((4, 3), (5, 3), "shape"),
        ((1, 3), (1, 3), "at least 2"),
    ],
)
def test_bad_shapes_raise(shape_a: tuple, shape_b: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VICRegLoss()(torch.zeros(shape_a), torch.zeros(shape_b))


@pytest.mark.parametrize(
    "kwargs",
    [{"sim_weight": -1.0}, {"var_weight": float("nan")}, {"cov_weight": -0.1}, {"eps": -1e-4}],
)
def test_bad_weights_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        VICRegLoss(**kwargs)
