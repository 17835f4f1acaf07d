"""Affinities, AGD and IGD (graph relation distillation) on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from medistill.losses import (
    AffinityGraphKD,
    AffinityLoss,
    InstanceGraphKD,
    affinity,
    instance_nodes,
    inter_image_agd,
    inter_image_igd,
    label_affinity,
)


def _emb(rows: list[list[list[float]]]) -> torch.Tensor:
    """(H, W, C) nested lists -> (1, C, H, W)."""
    return torch.tensor(rows, dtype=torch.float32).permute(2, 0, 1)[None]


def test_affinity_hand_computed_and_layout():
    # 1 x 3 image, 2 channels: e0 = (1, 0), e1 = (0, 1), e2 = (1, 0)
    e = _emb([[[1, 0], [0, 1], [1, 0]]])
    aff, valid = affinity(e, offsets=(1, 2))
    assert aff.shape == (1, 4, 1, 3) and valid.shape == (1, 4, 1, 3)
    # axis 0 (rows): a single row, no neighbour below -> all invalid
    assert not valid[0, :2].any() and (aff[0, :2] == 0).all()
    # axis 1, offset 1: <e0, e1> = 0, <e1, e2> = 0, last column invalid
    assert aff[0, 2, 0].tolist() == [0.0, 0.0, 0.0]
    assert valid[0, 2, 0].tolist() == [True, True, False]
    # axis 1, offset 2: <e0, e2> = 1; the two last columns invalid
    assert aff[0, 3, 0].tolist() == [1.0, 0.0, 0.0]
    assert valid[0, 3, 0].tolist() == [True, False, False]


def test_affinity_masks_the_border_instead_of_wrapping():
    """Defect in the authors' code: torch.roll compares the last column with the first."""
    e = _emb([[[1, 0], [1, 0], [0, 1]]])  # last pixel differs from the first
    aff, valid = affinity(e, offsets=(1,))
    rolled = (e * torch.roll(e, shifts=-1, dims=3)).sum(1)  # the authors' shift
    assert rolled[0, 0, 2] == 0.0  # wrapped: compares pixel 2 with pixel 0
    assert not valid[0, 1, 0, 2]  # ours: the border position is masked out ...
    a = torch.zeros_like(aff)
    b = torch.ones_like(aff)
    # ... and never reaches a loss: only the valid positions count
    loss = AffinityGraphKD((1,))(e, e)
    assert loss == 0
    from medistill.losses import masked_mse

    assert masked_mse(a, b, valid) == pytest.approx(1.0)
    assert valid.sum() == 2  # 2 valid column pairs, no row pairs


def test_label_affinity_and_affinity_loss():
    labels = torch.tensor([[[1, 1, 0, 2]]])
    target, valid = label_affinity(labels, offsets=(1,))
    assert target[0, 1, 0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert valid[0, 1, 0].tolist() == [True, True, True, False]
    # embeddings that match the labels exactly: one-hot per id (background its own)
    e = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    assert AffinityLoss((1,))(e, labels) == 0
    # all embeddings equal: affinity 1 everywhere; errors at the 2 valid "different" pairs
    same = torch.ones(1, 1, 1, 4)
    assert AffinityLoss((1,))(same, labels).item() == pytest.approx(2 / 3)


def test_intra_agd_hand_computed():
    t = _emb([[[1, 0], [1, 0], [1, 0]]])  # teacher affinities (offset 1, columns): 1, 1
    s = _emb([[[1, 0], [0, 1], [0, 1]]])  # student: 0, 1
    assert AffinityGraphKD((1,))(s, t).item() == pytest.approx((1 + 0) / 2)


def test_instance_nodes_and_intra_igd_hand_computed():
    labels = torch.tensor([[[1, 1, 2, 0]]])
    t = _emb([[[1, 0], [1, 0], [0, 1], [5, 5]]])  # nodes (1, 0), (0, 1)
    s = _emb([[[1, 0], [0, 1], [0, 1], [9, 9]]])  # nodes (.5, .5), (0, 1)
    assert instance_nodes(t[0], labels[0]).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    node, edge = InstanceGraphKD()(s, t, labels)
    # node: mean of squared distances: ((.5^2 + .5^2) + 0) / 2
    assert node.item() == pytest.approx(0.25)
    # edge: teacher cos matrix [[1, 0], [0, 1]]; student [[1, c], [c, 1]] with c = 1/sqrt(2)
    c = 1 / math.sqrt(2)
    assert edge.item() == pytest.approx(2 * c**2 / 4)


def test_igd_ignores_images_without_instances():
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    node, edge = InstanceGraphKD()(torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2), labels)
    assert node == 0 and edge == 0


def test_inter_image_igd_uses_cross_edges_only():
    labels = torch.tensor([[[1, 2]]])
    t = _emb([[[1, 0], [0, 1]]])
    s = _emb([[[1, 0], [1, 0]]])  # intra edges differ, which must NOT count here
    bank = torch.tensor([[1.0, 0.0]])  # one stored node
    # cross cosines: teacher [1, 0], student [1, 1] -> (0 + 1) / (2 * 1)
    assert inter_image_igd(s, t, labels, bank).item() == pytest.approx(0.5)
    assert inter_image_igd(s, t, labels, torch.zeros(0, 2)) == 0


def test_inter_image_agd_pooled_hand_computed():
    t = torch.zeros(1, 2, 4, 4)
    t[:, 0] = 1  # every pooled teacher pixel (1, 0)
    s = torch.zeros(1, 2, 4, 4)
    s[:, 1] = 1  # every pooled student pixel (0, 1)
    bank = t.clone()
    # teacher-bank cosine 1, student-bank 0 -> mean squared difference 1
    assert inter_image_agd(s, t, bank, pool=2).item() == pytest.approx(1.0)
    assert inter_image_agd(s, t, [bank[0], bank[0]], pool=2).item() == pytest.approx(1.0)
    assert inter_image_agd(t, t, bank, pool=2) == 0


def test_losses_are_differentiable():
    s = torch.nn.functional.normalize(torch.randn(2, 4, 8, 8), dim=1).requires_grad_()
    t = torch.nn.functional.normalize(torch.randn(2, 4, 8, 8), dim=1)
    labels = torch.randint(0, 3, (2, 8, 8))
    node, edge = InstanceGraphKD()(s, t, labels)
    total = AffinityGraphKD()(s, t) + node + edge + inter_image_agd(s, t, t) + \
        inter_image_igd(s, t, labels, torch.randn(5, 4))
    total.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
