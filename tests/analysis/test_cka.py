"""linear_cka: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), centred columns (Kornblith et al.)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medistill.analysis import linear_cka, linear_cka_matrix


def _random(n: int, features: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, features))


def _orthogonal(size: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(_random(size, size, seed))
    return q


def test_hand_computed_one_feature_each() -> None:
    # x = (1, 2, 3) -> centred (-1, 0, 1); y = (1, 2, 6) -> mean 3 -> centred (-2, -1, 3).
    # Y^T X = 2 + 0 + 3 = 5; X^T X = 2; Y^T Y = 4 + 1 + 9 = 14 -> CKA = 25 / (2 * 14) = 25/28,
    # the squared Pearson correlation, as for any pair of single features.
    x, y = np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [2.0], [6.0]])
    assert linear_cka(x, y) == pytest.approx(25 / 28)


def test_hand_computed_different_feature_counts() -> None:
    # x: one centred feature (-1, 0, 1). y: that feature and (1, -2, 1), which is orthogonal
    # to it. Y^T X = (2, 0) -> 4; ||X^T X||_F = 2; Y^T Y = diag(2, 6) -> sqrt(4 + 36).
    # CKA = 4 / (2 * sqrt(40)) = 1 / sqrt(10); shifting x's column does not change it.
    x = np.array([[0.0], [1.0], [2.0]])
    y = np.array([[-1.0, 1.0], [0.0, -2.0], [1.0, 1.0]])
    assert linear_cka(x, y) == pytest.approx(1 / math.sqrt(10))
    assert linear_cka(y, x) == pytest.approx(1 / math.sqrt(10))


def test_identical_inputs_give_one() -> None:
    x = _random(10, 4, seed=0)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, x.copy()) <= 1.0


def test_invariant_to_orthogonal_transforms_of_either_input() -> None:
    x, y = _random(12, 5, seed=1), _random(12, 3, seed=2)
    reference = linear_cka(x, y)
    assert 0.0 < reference < 1.0
    assert linear_cka(x @ _orthogonal(5, seed=3), y) == pytest.approx(reference)
    assert linear_cka(x, y @ _orthogonal(3, seed=4)) == pytest.approx(reference)
    # A hand-written 2-D rotation by 30 degrees of the same data: CKA with itself stays 1.
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    rotation = np.array([[c, -s], [s, c]])
    z = _random(6, 2, seed=5)
    assert linear_cka(z, z @ rotation) == pytest.approx(1.0)


def test_invariant_to_isotropic_scaling_of_either_input() -> None:
    x, y = _random(9, 4, seed=6), _random(9, 6, seed=7)
    reference = linear_cka(x, y)
    assert linear_cka(3.5 * x, y) == pytest.approx(reference)
    assert linear_cka(x, 1e-3 * y) == pytest.approx(reference)
    assert linear_cka(x, 2.0 * x) == pytest.approx(1.0)


def test_not_invariant_to_non_isotropic_scaling() -> None:
    # x = (1, 0), (-1, 0), (0, 1), (0, -1) (already centred): X^T X = diag(2, 2).
    # y = x @ diag(1, 3): Y^T X = diag(2, 6) -> 4 + 36 = 40; ||X^T X||_F = sqrt(8);
    # Y^T Y = diag(2, 18) -> ||.||_F = sqrt(4 + 324). CKA = 40 / sqrt(8 * 328) ~= 0.78087.
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    y = x @ np.diag([1.0, 3.0])
    expected = 40 / math.sqrt(8 * 328)
    assert expected == pytest.approx(0.7808688094, abs=1e-9)
    assert linear_cka(x, y) == pytest.approx(expected)
    assert linear_cka(x, 3.0 * x) == pytest.approx(1.0)


def test_accepts_torch_tensors_and_mixed_inputs() -> None:
    x, y = _random(8, 3, seed=8), _random(8, 5, seed=9)
    reference = linear_cka(x, y)
    tx = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    assert isinstance(linear_cka(tx, torch.from_numpy(y)), float)
    assert linear_cka(tx, torch.from_numpy(y)) == pytest.approx(reference, rel=1e-5)
    assert linear_cka(x, torch.from_numpy(y)) == pytest.approx(reference)


def test_feature_maps_are_flattened_per_example() -> None:
    maps = _random(6, 2 * 3 * 3, seed=10)
    other = _random(6, 4, seed=11)
    assert linear_cka(maps.reshape(6, 2, 3, 3), other) == pytest.approx(linear_cka(maps, other))


def test_wide_activations_use_the_gram_path_and_agree() -> None:
    # n = 4 examples, 50 and 40 features: computed from 4 x 4 Gram matrices. The same value
    # follows from the feature-space formula written out with numpy.
    x, y = _random(4, 50, seed=12), _random(4, 40, seed=13)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    expected = np.sum((yc.T @ xc) ** 2) / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(x, y) == pytest.approx(float(expected))


def test_mismatched_examples_raise() -> None:
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(_random(5, 2, seed=0), _random(6, 2, seed=1))


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.arange(4.0), "shape"),
        (np.ones((1, 3)), "at least 2"),
        (np.ones((4, 3)), "constant"),
        (np.array([[1.0], [np.nan], [2.0]]), "NaN"),
    ],
)
def test_bad_inputs_raise(x: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        linear_cka(x, np.arange(float(x.shape[0])).reshape(-1, 1))


def test_matrix_matches_pairwise_cka_and_shapes() -> None:
    acts_a = [_random(7, 3, seed=20), _random(7, 5, seed=21)]
    acts_b = [acts_a[0] @ _orthogonal(3, seed=22), _random(7, 2, seed=23), _random(7, 9, seed=24)]
    matrix = linear_cka_matrix(acts_a, acts_b)
    assert matrix.shape == (2, 3) and matrix.dtype == np.float64
    for i, x in enumerate(acts_a):
        for j, y in enumerate(acts_b):
            assert matrix[i, j] == pytest.approx(linear_cka(x, y))
    assert matrix[0, 0] == pytest.approx(1.0)


def test_matrix_of_a_network_with_itself_is_symmetric_with_unit_diagonal() -> None:
    acts = [_random(6, 4, seed=30), torch.tensor(_random(6, 2, seed=31))]
    matrix = linear_cka_matrix(acts, acts)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    np.testing.assert_allclose(matrix, matrix.T)


def test_matrix_validates_examples_and_empty_lists() -> None:
    with pytest.raises(ValueError, match=r"acts_b\[1\]"):
        linear_cka_matrix([_random(5, 2, seed=0)], [_random(5, 2, seed=1), _random(4, 2, seed=2)])
    with pytest.raises(ValueError, match="at least one layer"):
        linear_cka_matrix([], [_random(5, 2, seed=0)])
