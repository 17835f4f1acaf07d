"""PixelKL against a hand-computed example and the authors' view(-1, 2) + batchmean KL."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medistill.losses import PixelKL


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_per_pixel_kl_over_classes_times_t_squared():
    # 1 image, 2 classes, 1x2 pixels; T = 1 to keep the arithmetic by hand
    s = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]])  # pixel0 (.5,.5), pixel1 (.25,.75)
    t = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]])  # pixel0 (.75,.25), pixel1 (.5,.5)
    expected = (_kl([0.75, 0.25], [0.5, 0.5]) + _kl([0.5, 0.5], [0.25, 0.75])) / 2
    assert PixelKL(temperature=1.0)(s, t).item() == pytest.approx(expected, rel=1e-6)
    # T = 4: logits divided by 4, result times 16
    p0s = torch.softmax(s / 4, 1)
    p0t = torch.softmax(t / 4, 1)
    manual = (p0t * (p0t.log() - p0s.log())).sum(1).mean() * 16
    assert PixelKL(4.0)(s, t).item() == pytest.approx(manual.item(), rel=1e-6)


def _authors_kl(s: torch.Tensor, t: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """The authors' prediction_map_distillation after the projection: softmax over dim 1, then
    ``view(-1, 2)`` and ``kl_div(..., reduction="batchmean") * T^2``."""
    p = F.log_softmax(s / temperature, dim=1).reshape(-1, 2)
    q = F.softmax(t / temperature, dim=1).reshape(-1, 2)
    return F.kl_div(p, q, reduction="batchmean") * temperature ** 2


def test_per_pixel_loop_reference_and_the_authors_view_for_two_classes():
    """The authors' view(-1, 2) comes after the softmax, so it only sets the batchmean divisor
    (N*K*H*W / 2 rows): for K = 2 that is the number of pixels and the values are equal."""
    torch.manual_seed(0)
    s, t = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    ours = PixelKL(4.0)(s, t)
    # reference: explicit loop over pixels, softmax over the class dimension
    ref = 0.0
    for n in range(2):
        for i in range(4):
            for j in range(4):
                ps = torch.softmax(s[n, :, i, j] / 4, 0)
                pt = torch.softmax(t[n, :, i, j] / 4, 0)
                ref += float((pt * (pt.log() - ps.log())).sum())
    assert ours.item() == pytest.approx(ref / 32 * 16, rel=1e-5)
    assert ours.item() == pytest.approx(_authors_kl(s, t).item(), rel=1e-5)


def test_the_authors_view_differs_for_three_classes():
    """For K = 3 the authors' divisor is 1.5 x the pixel count: their value is 2/3 of the
    per-pixel mean, which is what PixelKL keeps for every K (deliberate difference)."""
    torch.manual_seed(1)
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ours = PixelKL(4.0)(s, t)
    authors = _authors_kl(s, t)
    assert authors.item() == pytest.approx(2 / 3 * ours.item(), rel=1e-5)
    assert abs(authors.item() - ours.item()) > 1e-3


def test_zero_for_equal_logits_teacher_detached_and_shapes_checked():
    x = torch.randn(1, 3, 2, 2, requires_grad=True)
    t = torch.randn(1, 3, 2, 2, requires_grad=True)
    assert PixelKL()(t.detach(), t.detach()).item() == pytest.approx(0.0, abs=1e-6)
    PixelKL()(x, t).backward()
    assert t.grad is None and x.grad is not None
    with pytest.raises(ValueError, match="same-shape"):
        PixelKL()(torch.randn(1, 2, 2, 2), torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError):
        PixelKL(temperature=0)
