"""NTXentLoss: SimCLR's cross entropy over 2N views, self-similarity excluded (Chen et al.)."""

from __future__ import annotations

import math

import pytest
import torch

from medistill.losses import NTXentLoss

pytestmark = pytest.mark.usefixtures("single_thread")

# N = 2 samples in 2-D, unnormalised on purpose (the loss L2-normalises):
#   view 0 = z_a[0] = (1, 0)    0 deg      view 2 = z_b[0] = (3, 0)    0 deg   (positive of 0)
#   view 1 = z_a[1] = (0, 2)   90 deg      view 3 = z_b[1] = (-2, 0) 180 deg   (positive of 1)
Z_A = [[1.0, 0.0], [0.0, 2.0]]
Z_B = [[3.0, 0.0], [-2.0, 0.0]]
# Cosines (rows: anchor; the diagonal is excluded):
#         v0   v1   v2   v3
#   v0    .    0    1   -1
#   v1    0    .    0    0
#   v2    1    0    .   -1
#   v3   -1    0   -1    .


def _hand_loss(t: float) -> float:
    """The four anchor losses -log(exp(pos / T) / sum_{k != i} exp(cos_ik / T)), averaged."""
    e = math.exp
    l0 = -math.log(e(1 / t) / (e(0 / t) + e(1 / t) + e(-1 / t)))  # positive v2, cos 1
    l1 = -math.log(e(0 / t) / (e(0 / t) + e(0 / t) + e(0 / t)))  # positive v3, cos 0
    l2 = -math.log(e(1 / t) / (e(1 / t) + e(0 / t) + e(-1 / t)))  # positive v0, cos 1
    l3 = -math.log(e(0 / t) / (e(-1 / t) + e(0 / t) + e(-1 / t)))  # positive v1, cos 0
    return (l0 + l1 + l2 + l3) / 4


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_hand_computed_two_samples_t05() -> None:
    # T = 0.5: l0 = l2 = log(1 + e^-2 + e^-4), l1 = log 3, l3 = log(1 + 2 e^-2).
    e = math.exp
    closed = (2 * math.log(1 + e(-2) + e(-4)) + math.log(3) + math.log(1 + 2 * e(-2))) / 4
    assert _hand_loss(0.5) == pytest.approx(closed, rel=1e-12)
    assert closed == pytest.approx(0.4060050780, abs=1e-9)
    loss = NTXentLoss()(_t(Z_A), _t(Z_B))
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(closed, rel=1e-9)


@pytest.mark.parametrize("temperature", [0.1, 1.0, 2.0])
def test_hand_computed_two_samples_other_temperatures(temperature: float) -> None:
    loss = NTXentLoss(temperature)(_t(Z_A), _t(Z_B))
    assert loss.item() == pytest.approx(_hand_loss(temperature), rel=1e-9)


def test_self_similarity_is_excluded() -> None:
    # Were exp(cos(u_i, u_i) / T) = e^2 in each denominator, anchor 1 alone would cost
    # log(3 + e^2) instead of log 3; the total would be much larger.
    e = math.exp
    with_self = (
        -math.log(e(2) / (e(2) + 1 + e(2) + e(-2))) * 2
        - math.log(1 / (e(2) + 3))
        - math.log(1 / (e(-2) + e(2) + 1 + e(-2)))
    ) / 4
    loss = NTXentLoss(0.5)(_t(Z_A), _t(Z_B)).item()
    assert loss == pytest.approx(_hand_loss(0.5))
    assert loss < with_self - 1.0


def test_orthonormal_aligned_views_closed_form() -> None:
    # z_a = z_b = I_3: every anchor's positive has cos 1 and its 2N - 2 = 4 negatives cos 0,
    # so each anchor costs -log(e^(1/T) / (e^(1/T) + 4)) = log(1 + 4 e^(-1/T)).
    eye = torch.eye(3, dtype=torch.float64)
    expected = math.log(1 + 4 * math.exp(-2))
    assert expected == pytest.approx(0.4326529030, abs=1e-9)
    assert NTXentLoss(0.5)(eye, eye.clone()).item() == pytest.approx(expected, rel=1e-9)


def test_invariant_to_positive_rescaling_of_embeddings() -> None:
    torch.manual_seed(0)
    z_a, z_b = torch.randn(5, 4), torch.randn(5, 4)
    scale = torch.rand(5, 1) * 10 + 0.1
    loss = NTXentLoss(0.3)
    assert loss(z_a * scale, z_b).item() == pytest.approx(loss(z_a, z_b).item(), rel=1e-5)


def test_symmetric_in_the_two_views_and_sample_order() -> None:
    torch.manual_seed(0)
    z_a, z_b = torch.randn(6, 4), torch.randn(6, 4)
    loss = NTXentLoss()
    reference = loss(z_a, z_b).item()
    assert loss(z_b, z_a).item() == pytest.approx(reference, rel=1e-6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert loss(z_a[perm], z_b[perm]).item() == pytest.approx(reference, rel=1e-6)


def test_matching_views_cost_less_than_mismatched() -> None:
    torch.manual_seed(0)
    z = torch.randn(8, 16)
    loss = NTXentLoss()
    assert loss(z, z + 0.01 * torch.randn(8, 16)) < loss(z, torch.randn(8, 16))


def test_gradient_reaches_both_views() -> None:
    torch.manual_seed(0)
    z_a = torch.randn(4, 3, requires_grad=True)
    z_b = torch.randn(4, 3, requires_grad=True)
    NTXentLoss()(z_a, z_b).backward()
    assert z_a.grad is not None and z_a.grad.abs().sum() > 0
    assert z_b.grad is not None and z_b.grad.abs().sum() > 0


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
        NTXentLoss()(torch.ones(shape_a), torch.ones(shape_b))


@pytest.mark.parametrize("temperature", [0.0, -0.5, float("nan"), float("inf")])
def test_bad_temperature_raises(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(temperature)
