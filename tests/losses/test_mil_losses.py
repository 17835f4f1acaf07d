"""MIL losses (the authors' mask Dice, pooled BCE), fusion KD and the agreement-weighted soft
cross-entropy (issues #6, #12)."""

from __future__ import annotations

import pytest
import torch

from medistill.losses import (
    AgreementWeightedBCE,
    FusionKDLoss,
    MILDiceLoss,
    MILPoolingLoss,
    mil_pool,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _map(value: float, hot: float | None = None, size: int = 8) -> torch.Tensor:
    m = torch.full((1, 1, size, size), value)
    if hot is not None:
        m[0, 0, 2, 3] = hot
    return m


def test_lse_pooling_is_a_soft_maximum_between_mean_and_max():
    p = _map(0.05, hot=0.99)
    sharp, soft = mil_pool(p, "lse", r=50.0), mil_pool(p, "lse", r=0.01)
    assert float(sharp) > 0.9  # close to the max pixel
    assert abs(float(soft) - float(torch.sigmoid(torch.logit(p.clamp(1e-6, 1 - 1e-6)).mean()))) \
        < 1e-2  # close to the mean logit
    assert float(mil_pool(p, "topk", topk=1 / 64)) == pytest.approx(0.99)
    assert float(mil_pool(_map(0.3), "gmean")) == pytest.approx(0.3, abs=1e-5)


def test_mil_loss_wants_a_positive_pixel_in_positive_images_and_none_in_negatives():
    loss = MILPoolingLoss("lse", r=8.0)
    one_hot_pixel, all_low = _map(0.001, hot=0.999), _map(0.001)
    pos, neg = torch.tensor([1.0]), torch.tensor([0.0])
    assert float(loss([one_hot_pixel], pos)) < float(loss([all_low], pos))
    assert float(loss([all_low], neg)) < float(loss([one_hot_pixel], neg))
    # every map is scored: the mean over the maps
    both = loss([one_hot_pixel, all_low], pos)
    assert float(both) == pytest.approx((float(loss([one_hot_pixel], pos))
                                         + float(loss([all_low], pos))) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        MILPoolingLoss("max")


def test_mil_dice_is_the_authors_per_image_dice_to_the_label_as_a_full_mask():
    """Hand-computed: DiceLoss(smooth=1) of the authors' train.py, per image, target = the
    image label expanded to the map; a negative image scores the inverted map against ones."""
    pos = torch.tensor([[1.0, 1.0], [0.0, 0.5]]).reshape(1, 1, 2, 2)  # sum 2.5, N = 4
    neg = torch.tensor([[0.25, 0.0], [0.0, 0.0]]).reshape(1, 1, 2, 2)  # 1 - p sums to 3.75
    d_pos = 1 - (2 * 2.5 + 1) / (2.5 + 4 + 1)  # = 0.2
    d_neg = 1 - (2 * 3.75 + 1) / (3.75 + 4 + 1)  # = 1 / 35
    loss = MILDiceLoss()
    y = torch.tensor([1.0, 0.0])
    batch = torch.cat([pos, neg])
    assert float(loss.per_image(batch, y)[0]) == pytest.approx(d_pos, abs=1e-6)
    assert float(loss.per_image(batch, y)[1]) == pytest.approx(d_neg, abs=1e-6)
    # summed over the images and over the maps (sides + fused), as the authors' loss1+..+lossf
    side = torch.full_like(batch, 0.5)  # d = 1 - 5 / 7 on either label
    assert float(loss([batch, side], y)) == pytest.approx(d_pos + d_neg + 2 * (2 / 7),
                                                          abs=1e-5)
    # per image, not pooled over the batch: one batch-wide Dice would give another number
    pooled = 1 - (2 * (2.5 + 3.75) + 1) / (2.5 + 3.75 + 8 + 1)
    assert float(loss([batch], y)) != pytest.approx(pooled, abs=1e-3)
    # our options: the mean over images x maps, and a weight on positive images
    mean = MILDiceLoss(reduction="mean")
    assert float(mean([batch, side], y)) == pytest.approx(float(loss([batch, side], y)) / 4)
    weighted = MILDiceLoss(pos_weight=3.0)
    assert float(weighted([batch], y)) == pytest.approx(3 * d_pos + d_neg, abs=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        MILDiceLoss(reduction="max")


def test_mil_dice_prefers_a_diffuse_map_where_pooled_bce_prefers_a_focal_one():
    """Why the objective matters: on a tumour image the pooled BCE (LSE) is satisfied by one
    confident pixel, the authors' Dice asks for the whole map."""
    focal, diffuse = _map(0.001, hot=0.999), _map(0.6)
    y = torch.tensor([1.0])
    lse, dice = MILPoolingLoss("lse", r=4.0), MILDiceLoss()
    assert float(lse([focal], y)) < float(lse([diffuse], y))
    assert float(dice([diffuse], y)) < float(dice([focal], y))
    # on a normal image both want the map empty
    assert float(dice([_map(0.001)], torch.tensor([0.0]))) < float(
        dice([diffuse], torch.tensor([0.0])))


def test_weighted_ce_targets_the_soft_teacher_probability_not_its_integer_cast():
    """Defect in the authors' code: the target cast to int floors every pixel to 0."""
    teacher = _map(0.7)
    wce = AgreementWeightedBCE(gamma=0.0)  # plain soft BCE, to look at the target alone
    s = torch.full_like(teacher, 0.7, requires_grad=True)
    wce(s, teacher).backward()
    assert s.grad is not None and s.grad.abs().max() < 1e-6  # optimum at the soft target
    lo, at, hi = (float(wce(torch.full_like(teacher, v), teacher)) for v in (0.4, 0.7, 0.95))
    assert at < lo and at < hi
    # the integer cast would make "predict background" the optimum instead
    floored = teacher.long().float()
    assert float(floored.max()) == 0.0
    assert float(wce(torch.full_like(teacher, 0.01), floored)) < float(
        wce(torch.full_like(teacher, 0.7), floored))
    with pytest.raises(TypeError, match="float probability"):
        wce(s, teacher.long())


def test_weighted_ce_down_weights_disagreement():
    wce = AgreementWeightedBCE(gamma=1.0)
    t = torch.tensor([[[[1.0, 1.0, 0.0]]]])
    s = torch.tensor([[[[1.0, 0.5, 1.0]]]])
    assert torch.allclose(wce.weights(s, t), torch.tensor([[[[1.0, 0.5, 0.0]]]]))


def test_fusion_kd_teaches_every_student_map_from_the_teacher_fused_map():
    kd = FusionKDLoss()
    teacher = _map(0.9).requires_grad_(True)
    good, bad = _map(0.9), _map(0.1)
    single = [float(kd([m], teacher)) for m in (good, bad)]
    assert single[0] < single[1]
    assert float(kd([good, bad], teacher)) == pytest.approx(sum(single) / 2, rel=1e-5)
    maps = [_map(0.5).requires_grad_(True) for _ in range(4)]
    kd(maps, teacher).backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in maps)
    assert teacher.grad is None  # the teacher's map is a constant target
    with pytest.raises(ValueError, match="differ in shape"):
        kd([_map(0.5, size=4)], teacher)
