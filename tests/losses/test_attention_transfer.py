"""AttentionTransfer against a hand-computed example of eq. 1-2."""

from __future__ import annotations

import math

import pytest
import torch

from medistill.losses import AttentionTransfer, attention_map


def test_attention_map_is_the_normalised_channel_mean_of_abs_x_to_the_p():
    # one sample, 2 channels, 1x2 pixels
    x = torch.tensor([[[[1.0, -2.0]], [[1.0, 0.0]]]])
    # |x|^2 channel mean: pixel 0 = (1 + 1)/2 = 1, pixel 1 = (4 + 0)/2 = 2; L2 norm sqrt(5)
    a = attention_map(x, p=2)
    assert torch.allclose(a, torch.tensor([[1.0, 2.0]]) / math.sqrt(5))
    # p = 4: (1 + 1)/2 = 1, (16 + 0)/2 = 8
    assert torch.allclose(attention_map(x, p=4), torch.tensor([[1.0, 8.0]]) / math.sqrt(65))


def test_loss_is_the_mean_squared_difference_of_the_maps():
    s = torch.tensor([[[[1.0, 0.0]]]])  # map (1, 0)
    t = torch.tensor([[[[0.0, 3.0]]], [[[1.0, 1.0]]]])[:1]  # map (0, 1)
    # ((1 - 0)^2 + (0 - 1)^2) / 2 positions = 1
    assert AttentionTransfer(p=4)(s, t).item() == pytest.approx(1.0)
    # batch of 2: the second sample identical -> mean over batch and positions = 0.5
    s2 = torch.cat([s, s])
    t2 = torch.cat([t, s])
    assert AttentionTransfer(p=4)(s2, t2).item() == pytest.approx(0.5)


def test_teacher_is_resized_bilinearly_and_channels_may_differ():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 7, 8, 8)
    loss = AttentionTransfer()(s, t)
    t_small = torch.nn.functional.interpolate(t, size=(4, 4), mode="bilinear",
                                              align_corners=False)
    expected = (attention_map(s) - attention_map(t_small)).pow(2).mean()
    assert torch.allclose(loss, expected)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
    assert AttentionTransfer()(t, t).item() == pytest.approx(0.0, abs=1e-12)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="N, C, H, W"):
        AttentionTransfer()(torch.randn(2, 3), torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="batch"):
        AttentionTransfer()(torch.randn(2, 3, 4, 4), torch.randn(3, 3, 4, 4))
    with pytest.raises(ValueError):
        AttentionTransfer(p=0)
