"""AttentionTransfer against hand-computed examples of the HLFD authors' formula:
``mean over batch of sum over positions (a_s - a_t)^2``, ``a = normalize(mean_c x^4)``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medistill.losses import AttentionTransfer, attention_map


def test_attention_map_is_the_normalised_channel_mean_of_abs_x_to_the_p():
    # one sample, 2 channels, 1x2 pixels
    x = torch.tensor([[[[1.0, -2.0]], [[1.0, 0.0]]]])
    # |x|^2 channel mean: pixel 0 = (1 + 1)/2 = 1, pixel 1 = (4 + 0)/2 = 2; L2 norm sqrt(5)
    a = attention_map(x, p=2)
    assert torch.allclose(a, torch.tensor([[1.0, 2.0]]) / math.sqrt(5))
    # p = 4: (1 + 1)/2 = 1, (16 + 0)/2 = 8
    assert torch.allclose(attention_map(x, p=4), torch.tensor([[1.0, 8.0]]) / math.sqrt(65))


def test_sum_over_positions_mean_over_batch_by_hand():
    # student: 2 channels, 1x2 pixels -> x^4 channel mean (1, 8) -> a_s = (1, 8) / sqrt(65)
    s = torch.tensor([[[[1.0, -2.0]], [[1.0, 0.0]]]])
    # teacher: 1 channel (2, 2) -> (16, 16) -> a_t = (1, 1) / sqrt(2)
    t = torch.tensor([[[[2.0, 2.0]]]])
    r65, r2 = math.sqrt(65), math.sqrt(2)
    per_sample = (1 / r65 - 1 / r2) ** 2 + (8 / r65 - 1 / r2) ** 2  # sum over the 2 positions
    assert AttentionTransfer()(s, t).item() == pytest.approx(per_sample, rel=1e-6)
    # batch of 2, the second sample identical in both: mean over the batch = half
    s2, t2 = torch.cat([s, t.expand(1, 2, 1, 2)]), torch.cat([t, t])
    assert AttentionTransfer(p=4)(s2, t2).item() == pytest.approx(per_sample / 2, rel=1e-6)
    # disjoint maps (1, 0) vs (0, 1): 1 + 1 = 2 per sample, the maximum for non-negative maps
    one_hot_s = torch.tensor([[[[1.0, 0.0]]]])
    one_hot_t = torch.tensor([[[[0.0, 3.0]]]])
    assert AttentionTransfer()(one_hot_s, one_hot_t).item() == pytest.approx(2.0)


def test_the_authors_x_pow_4_without_abs_gives_the_same_value():
    """Their ``at`` is ``normalize(x.pow(4).mean(1).view(N, -1))``; |x| changes nothing at p=4."""
    torch.manual_seed(0)
    s, t = torch.randn(3, 4, 5, 5), torch.randn(3, 6, 5, 5)

    def authors(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.pow(4).mean(1).view(x.size(0), -1))

    ref = torch.sum((authors(s) - authors(t)).pow(2), dim=1).mean()
    assert AttentionTransfer(p=4)(s, t).item() == pytest.approx(ref.item(), rel=1e-6)


def test_mean_reduction_option_is_h_times_w_smaller():
    """Deliberate option, not the HLFD default: the Zagoruyko-Komodakis mean over positions
    (their beta 1e3). With HLFD's beta = 0.9 it would switch the feature terms off."""
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 8, 6), torch.randn(2, 5, 8, 6)
    summed = AttentionTransfer(reduction="sum")(s, t)
    mean = AttentionTransfer(reduction="mean")(s, t)
    assert AttentionTransfer()(s, t).item() == pytest.approx(summed.item())  # sum is default
    assert summed.item() == pytest.approx(48 * mean.item(), rel=1e-6)
    assert summed.item() > 0.05  # not ~0: same order as the segmentation loss


def test_resize_teacher_or_student_bilinearly_and_channels_may_differ():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 7, 8, 8)

    def interp(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    # resize="teacher" (UFD): compared at the student's 4x4
    loss = AttentionTransfer()(s, t)
    expected = (attention_map(s) - attention_map(interp(t, (4, 4)))).pow(2).sum(1).mean()
    assert torch.allclose(loss, expected)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
    # resize="student" (the authors' IFD / AT): compared at the teacher's 8x8
    up = AttentionTransfer(resize="student")(s, t)
    expected_up = (attention_map(interp(s, (8, 8))) - attention_map(t)).pow(2).sum(1).mean()
    assert torch.allclose(up, expected_up)
    assert not torch.allclose(up, loss)
    assert AttentionTransfer()(t, t).item() == pytest.approx(0.0, abs=1e-12)


def test_bad_shapes_and_options_are_rejected():
    with pytest.raises(ValueError, match="N, C, H, W"):
        AttentionTransfer()(torch.randn(2, 3), torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="batch"):
        AttentionTransfer()(torch.randn(2, 3, 4, 4), torch.randn(3, 3, 4, 4))
    with pytest.raises(ValueError):
        AttentionTransfer(p=0)
    with pytest.raises(ValueError, match="reduction"):
        AttentionTransfer(reduction="batchmean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resize"):
        AttentionTransfer(resize="both")  # type: ignore[arg-type]
