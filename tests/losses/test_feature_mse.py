"""ResizedFeatureMSE: 1/K sum_k mean((g_k(F_t) - F_s)^2) (DiPalma et al., eq. 3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medistill.losses import ResizedFeatureMSE, resize_map

pytestmark = pytest.mark.usefixtures("single_thread")

# Keys' cubic convolution kernel (a = -0.75, PyTorch's bicubic) evaluated by hand:
#   |x| <= 1: (a + 2)|x|^3 - (a + 3)|x|^2 + 1     |x| = 0.5 -> 1.25/8 - 2.25/4 + 1 = 0.59375
#   1 < |x| < 2: a(|x|^3 - 5|x|^2 + 8|x| - 4)      |x| = 1.5 -> -0.75 * 0.125 = -0.09375
W_NEAR, W_FAR = 0.59375, -0.09375


def _map(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).view(1, 1, len(rows), len(rows[0]))


def test_hand_computed_2x2_teacher_to_1x1_student() -> None:
    teacher = _map([[1.0, 2.0], [3.0, 6.0]])
    student = _map([[1.0]])
    # max-pool: max(1, 2, 3, 6) = 6 -> (1 - 6)^2 = 25
    # bicubic (align_corners=False): output 0 samples source coordinate (0 + 0.5) * 2 - 0.5 = 0.5;
    # taps -1, 0, 1, 2 (clamped to 0, 0, 1, 1) get W_FAR, W_NEAR, W_NEAR, W_FAR, i.e. 0.5 per
    # pixel along each axis, so the value is the mean (1 + 2 + 3 + 6) / 4 = 3 -> (1 - 3)^2 = 4
    assert W_FAR + W_NEAR == pytest.approx(0.5)
    assert ResizedFeatureMSE(("maxpool",))(student, teacher).item() == pytest.approx(25.0)
    assert ResizedFeatureMSE(("bicubic",))(student, teacher).item() == pytest.approx(4.0)
    assert ResizedFeatureMSE()(student, teacher).item() == pytest.approx((25.0 + 4.0) / 2)


def test_hand_computed_bicubic_4x4_to_2x2() -> None:
    # Every row is [0, 0, 4, 4]. Output column 0 samples source x = 0.5: taps at x = -1, 0, 1, 2
    # (clamped -1 -> 0) hold 0, 0, 0, 4 -> 4 * W_FAR = -0.375. Column 1 samples x = 2.5: taps
    # 1, 2, 3, 4 (clamped 4 -> 3) hold 0, 4, 4, 4 -> 4 * (W_NEAR + W_NEAR + W_FAR) = 4.375.
    teacher = _map([[0.0, 0.0, 4.0, 4.0]] * 4)
    assert 4 * W_FAR == pytest.approx(-0.375)
    assert 4 * (2 * W_NEAR + W_FAR) == pytest.approx(4.375)
    resized = resize_map(teacher, (2, 2), "bicubic")
    assert resized.flatten().tolist() == pytest.approx([-0.375, 4.375, -0.375, 4.375], abs=1e-5)
    # adaptive max-pooling takes the max of each 2x2 block: [0, 4]
    maxed = resize_map(teacher, (2, 2), "maxpool")
    assert maxed.flatten().tolist() == pytest.approx([0.0, 4.0, 0.0, 4.0])

    student = _map([[0.0, 4.0], [0.0, 4.0]])
    # max-pool term: 0. bicubic term: mean of (0.375^2, 0.375^2, 0.375^2, 0.375^2) = 0.140625
    assert ResizedFeatureMSE(("maxpool",))(student, teacher).item() == pytest.approx(0.0)
    assert ResizedFeatureMSE(("bicubic",))(student, teacher).item() == pytest.approx(0.140625)
    assert ResizedFeatureMSE()(student, teacher).item() == pytest.approx(0.0703125)


def test_default_averages_maxpool_and_bicubic_not_maxpool_only_as_in_authors_code() -> None:
    # The authors' code computes only the max-pool term in "KD+MP+INT" mode; eq. 3 averages both.
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)
    both = ResizedFeatureMSE()(student, teacher)
    maxpool = ResizedFeatureMSE(("maxpool",))(student, teacher)
    bicubic = ResizedFeatureMSE(("bicubic",))(student, teacher)
    assert both.item() == pytest.approx((maxpool.item() + bicubic.item()) / 2, rel=1e-6)
    assert both.item() != pytest.approx(maxpool.item(), rel=1e-3)


def test_mean_over_all_elements_batch_and_channels() -> None:
    # Two samples x two channels, 1x1 maps on both sides: no resizing, plain mean of squares.
    student = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(2, 2, 1, 1)
    teacher = torch.tensor([0.0, 0.0, 0.0, 0.0]).view(2, 2, 1, 1)
    expected = (1 + 4 + 9 + 16) / 4
    assert ResizedFeatureMSE()(student, teacher).item() == pytest.approx(expected)


@pytest.mark.parametrize("method", ["maxpool", "bicubic", "bilinear", "avgpool"])
def test_same_size_maps_are_not_resized(method: str) -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert resize_map(teacher, (4, 4), method) is teacher
    expected = ((student - teacher) ** 2).sum().item() / student.numel()
    assert ResizedFeatureMSE((method,))(student, teacher).item() == pytest.approx(expected)


@pytest.mark.parametrize("method", ["avgpool", "bilinear"])
def test_other_resizers_give_the_block_mean_for_2x2_to_1x1(method: str) -> None:
    teacher = _map([[1.0, 2.0], [3.0, 6.0]])
    assert resize_map(teacher, (1, 1), method).item() == pytest.approx(3.0)


def test_single_method_may_be_a_string() -> None:
    teacher, student = _map([[1.0, 2.0], [3.0, 6.0]]), _map([[1.0]])
    assert ResizedFeatureMSE("maxpool")(student, teacher).item() == pytest.approx(25.0)


def test_channel_mismatch_raises_and_mentions_projection() -> None:
    with pytest.raises(ValueError, match="project"):
        ResizedFeatureMSE()(torch.zeros(1, 4, 2, 2), torch.zeros(1, 8, 4, 4))


def test_batch_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        ResizedFeatureMSE()(torch.zeros(2, 4, 2, 2), torch.zeros(3, 4, 4, 4))


def test_unknown_method_raises() -> None:
    with pytest.raises(ValueError, match="nearest"):
        ResizedFeatureMSE(("maxpool", "nearest"))
    with pytest.raises(ValueError, match="unknown resize method"):
        resize_map(torch.zeros(1, 1, 4, 4), (2, 2), "nearest")


def test_empty_method_list_raises() -> None:
    with pytest.raises(ValueError):
        ResizedFeatureMSE(())


def test_teacher_is_detached_and_student_gets_gradient() -> None:
    torch.manual_seed(0)
    student = torch.randn(1, 2, 2, 2, requires_grad=True)
    teacher = torch.randn(1, 2, 4, 4, requires_grad=True)
    ResizedFeatureMSE()(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_student_gradient_matches_hand_formula() -> None:
    # d/ds 1/2 * [(s - 6)^2 + (s - 3)^2] = (s - 6) + (s - 3) = -7 at s = 1
    student = _map([[1.0]]).requires_grad_(True)
    ResizedFeatureMSE()(student, _map([[1.0, 2.0], [3.0, 6.0]])).backward()
    assert student.grad.item() == pytest.approx(-7.0)


def test_precomputed_targets_give_the_same_loss_and_gradient() -> None:
    """``targets`` (what a teacher replay stores): the same loss and student gradient as
    resizing the teacher map in the step, bit for bit."""
    torch.manual_seed(0)
    teacher = torch.randn(3, 4, 4, 4)
    s1 = torch.randn(3, 4, 2, 2, requires_grad=True)
    s2 = s1.detach().clone().requires_grad_(True)
    loss = ResizedFeatureMSE()
    targets = loss.targets(teacher, (2, 2))
    assert [tuple(t.shape) for t in targets] == [(3, 4, 2, 2)] * 2
    assert torch.equal(targets[0], F.adaptive_max_pool2d(teacher, 2))
    a, b = loss(s1, teacher), loss(s2, targets)
    a.backward()
    b.backward()
    assert torch.equal(a, b) and torch.equal(s1.grad, s2.grad)


def test_targets_must_be_one_per_method_of_the_student_shape() -> None:
    loss = ResizedFeatureMSE()
    student = torch.zeros(2, 4, 2, 2)
    with pytest.raises(ValueError, match="one per method"):
        loss(student, [torch.zeros(2, 4, 2, 2)])
    with pytest.raises(ValueError, match="of the student map's shape"):
        loss(student, [torch.zeros(2, 4, 1, 1)] * 2)
