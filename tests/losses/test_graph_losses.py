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
    masked_mse,
    pooled_nodes,
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


def test_affinity_mse_sums_channels_like_the_authors():
    """Issue #12 item 6: the authors' AGD is sum((A_S - A_T)^2) / (N H W) over ALL affinity
    channels, i.e. a sum over channels of per-channel means (times their weight 10); a mean
    over the channels too would make the effective weight 1."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 4, 5, generator=g), torch.rand(2, 3, 4, 5, generator=g)
    valid = torch.ones(1, 3, 4, 5, dtype=torch.bool)
    authors = ((a - b) ** 2).sum() / (2 * 4 * 5)
    assert masked_mse(a, b, valid).item() == pytest.approx(authors.item())
    assert masked_mse(a, b, valid).item() == pytest.approx(3 * ((a - b) ** 2).mean().item())
    # masked: each channel is averaged over its own valid positions
    valid[0, 0, :, 3:] = False
    err = (a - b) ** 2
    expect = err[:, 0, :, :3].mean() + err[:, 1].mean() + err[:, 2].mean()
    assert masked_mse(a, b, valid).item() == pytest.approx(expect.item())
    # 2 x 2 image, offset 1: one valid row pair per column and one valid column pair per row
    t = _emb([[[1, 0], [1, 0]], [[1, 0], [1, 0]]])  # all teacher affinities 1
    s = _emb([[[1, 0], [0, 1]], [[1, 0], [1, 0]]])  # student: rows (1, 0), columns (0, 1)
    assert AffinityGraphKD((1,))(s, t).item() == pytest.approx((0 + 1) / 2 + (1 + 0) / 2)


def test_instance_nodes_and_intra_igd_hand_computed():
    labels = torch.tensor([[[1, 1, 2, 0]]])
    t = _emb([[[1, 0], [1, 0], [0, 1], [5, 5]]])  # nodes (1, 0), (0, 1)
    s = _emb([[[1, 0], [0, 1], [0, 1], [9, 9]]])  # nodes (.5, .5), (0, 1)
    assert instance_nodes(t[0], labels[0]).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    node, edge = InstanceGraphKD()(s, t, labels)
    # node: mean Euclidean distance (the authors' code): (sqrt(.5^2 + .5^2) + 0) / 2; the
    # squared distance used before would give 0.25
    assert node.item() == pytest.approx(math.sqrt(0.5) / 2)
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
    bank = [torch.tensor([[1.0, 0.0]])]  # one stored image with one node
    # cross cosines: teacher [1, 0], student [1, 1]; the authors' masked (N + M)^2 matrix
    # counts the cross block twice, divided by N M: 2 * (0 + 1) / (2 * 1), / K = 1
    assert inter_image_igd(s, t, labels, bank).item() == pytest.approx(1.0)
    # their "/ contrast_size * batch_size" on a batch mean: / K
    assert inter_image_igd(s, t, labels, bank, contrast_size=4).item() == pytest.approx(0.25)
    assert inter_image_igd(s, t, labels, []) == 0
    assert inter_image_igd(s, t, labels, [torch.zeros(0, 2)]) == 0


def test_inter_image_igd_does_not_accumulate_bank_nodes():
    """Defect in the authors' loop: the k-th bank image is compared with the current image
    AND the bank images before it. With bank images [(1, 0)] and [(0, 1)]: pair 1 gives 1
    for both; for pair 2 the authors' rows are {t1, t2, b1}, so 2 * 1 / (3 * 1) = 2/3 and
    their total is (1 + 2/3) / 2 = 5/6; ours compares the current image only: (1 + 1) / 2."""
    labels = torch.tensor([[[1, 2]]])
    t = _emb([[[1, 0], [0, 1]]])
    s = _emb([[[1, 0], [1, 0]]])
    bank = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    got = inter_image_igd(s, t, labels, bank).item()
    assert got == pytest.approx(1.0) and got != pytest.approx(5 / 6)


def test_pooled_nodes_follow_the_authors_pooling():
    """Issue #12 item 4: kernel = stride = 7, ceil mode, no re-normalisation: 37 x 37 = 1369
    nodes on a 256 px crop (before: a fixed 7 x 7 grid of 49 re-normalised nodes)."""
    assert pooled_nodes(torch.zeros(1, 16, 256, 256)).shape == (1, 1369, 16)
    e = torch.zeros(1, 2, 3, 3)
    e[0, 1] = 1
    e[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    nodes = pooled_nodes(e, pool=2)[0]  # 2 x 2 nodes; partial windows average what they cover
    assert nodes.tolist() == [[0.25, 0.75], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]
    assert nodes[0].norm() < 0.8  # not re-normalised


def test_inter_image_agd_hand_computed():
    t = torch.zeros(1, 2, 3, 3)
    t[0, 0] = 1  # every pixel (1, 0): pooled teacher nodes (1, 0)
    s = torch.zeros(1, 2, 3, 3)
    s[0, 1] = 1
    s[0, :, 0, 0] = torch.tensor([1.0, 0.0])  # pooled student nodes as above
    bank = [pooled_nodes(t, 2)[0]]  # 4 stored nodes (1, 0)
    # s.b - t.b = s_0 - 1 per (p, q): (-0.75, -1, -1, -1) -> mean of squares
    per_pair = (0.75**2 + 3) / 4
    assert inter_image_agd(s, t, bank, pool=2).item() == pytest.approx(per_pair)
    # batch of 2, two bank maps, contrast size 12: (B / K) * sum over the 4 pairs
    two = torch.cat([s, s]), torch.cat([t, t])
    got = inter_image_agd(*two, [bank[0], bank[0]], pool=2, contrast_size=12)
    assert got.item() == pytest.approx(2 / 12 * 4 * per_pair)
    assert inter_image_agd(t, t, bank, pool=2) == 0
    assert inter_image_agd(s, t, [], pool=2) == 0


def test_inter_image_agd_equals_the_explicit_similarity_matrices():
    g = torch.Generator().manual_seed(1)
    s = torch.nn.functional.normalize(torch.randn(2, 4, 10, 9, generator=g), dim=1)
    t = torch.nn.functional.normalize(torch.randn(2, 4, 10, 9, generator=g), dim=1)
    maps = [torch.nn.functional.normalize(torch.randn(1, 4, 10, 9, generator=g), dim=1)
            for _ in range(3)]
    bank = [pooled_nodes(m, 3)[0] for m in maps]
    ps, pt = pooled_nodes(s, 3), pooled_nodes(t, 3)
    pairs = sum(((ps[j] @ b.T - pt[j] @ b.T) ** 2).mean() for j in range(2) for b in bank)
    expect = 2 / 5 * pairs
    assert inter_image_agd(s, t, bank, 3, contrast_size=5).item() == pytest.approx(
        float(expect), rel=1e-5)


def test_losses_are_differentiable():
    s = torch.nn.functional.normalize(torch.randn(2, 4, 8, 8), dim=1).requires_grad_()
    t = torch.nn.functional.normalize(torch.randn(2, 4, 8, 8), dim=1)
    labels = torch.randint(0, 3, (2, 8, 8))
    node, edge = InstanceGraphKD()(s, t, labels)
    total = AffinityGraphKD()(s, t) + node + edge + \
        inter_image_agd(s, t, list(pooled_nodes(t))) + \
        inter_image_igd(s, t, labels, [torch.randn(5, 4)])
    total.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
