"""SoftTargetKL: KL(softmax(t/T) || softmax(s/T)) * T^2, batch mean (DiPalma et al., eq. 2)."""

from __future__ import annotations

import math

import pytest
import torch

from medistill.losses import SoftTargetKL

pytestmark = pytest.mark.usefixtures("single_thread")


def _softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_hand_computed_two_samples_three_classes_t2() -> None:
    teacher = [[2.0, 0.0, -2.0], [0.0, 2.0, 4.0]]
    student = [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    t = 2.0
    # Sample 1: p_t = softmax([1, 0, -1]) = [0.66524, 0.24473, 0.09003], p_s = [1/3] * 3.
    p1 = [math.exp(1) / (math.exp(1) + 1 + math.exp(-1)),
          1 / (math.exp(1) + 1 + math.exp(-1)),
          math.exp(-1) / (math.exp(1) + 1 + math.exp(-1))]
    kl1 = sum(p * math.log(p / (1 / 3)) for p in p1)
    # Sample 2: p_t = softmax([0, 1, 2]), p_s = softmax([0.5, 0.5, 0]).
    kl2 = _kl(_softmax([0.0, 1.0, 2.0]), _softmax([0.5, 0.5, 0.0]))
    expected = (kl1 + kl2) / 2 * t**2
    assert kl1 == pytest.approx(0.2662167068, abs=1e-9)
    assert kl2 == pytest.approx(0.4582449840, abs=1e-9)
    assert expected == pytest.approx(1.4489233816, abs=1e-9)

    loss = SoftTargetKL(t)(torch.tensor(student), torch.tensor(teacher))
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_hand_computed_single_binary_sample() -> None:
    # teacher [2, 0] / T=2 -> [1, 0] -> p_t = [e/(e+1), 1/(e+1)]; student uniform.
    pt = math.exp(1) / (math.exp(1) + 1)
    expected = (pt * math.log(pt / 0.5) + (1 - pt) * math.log((1 - pt) / 0.5)) * 4
    assert expected == pytest.approx(0.4437762867, abs=1e-9)
    loss = SoftTargetKL(2.0)(torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_direction_is_teacher_to_student() -> None:
    # KL is asymmetric: the teacher distribution must be the first argument.
    teacher, student = [3.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    forward = _kl(_softmax(teacher), _softmax(student))
    backward = _kl(_softmax(student), _softmax(teacher))
    assert abs(forward - backward) > 0.1
    loss = SoftTargetKL(1.0)(torch.tensor([student]), torch.tensor([teacher]))
    assert loss.item() == pytest.approx(forward, rel=1e-5)


def test_scaled_by_temperature_squared() -> None:
    student, teacher = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    raw = {t: _kl(_softmax([1 / t, 0.0]), _softmax([0.0, 1 / t])) for t in (1.0, 4.0)}
    # T=1: KL(sigmoid pair) = 0.46212; T=4: raw KL 0.03109, times 16 = 0.49741.
    assert raw[1.0] == pytest.approx(0.4621171573, abs=1e-9)
    assert raw[4.0] * 16 == pytest.approx(0.4974120071, abs=1e-9)
    assert SoftTargetKL(1.0)(student, teacher).item() == pytest.approx(raw[1.0], rel=1e-5)
    assert SoftTargetKL(4.0)(student, teacher).item() == pytest.approx(16 * raw[4.0], rel=1e-5)


def test_zero_when_logits_equal() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    assert SoftTargetKL(3.0)(logits.clone(), logits.clone()).item() == pytest.approx(0, abs=1e-6)


def test_positive_when_logits_differ() -> None:
    torch.manual_seed(0)
    loss = SoftTargetKL(2.0)(torch.randn(4, 3), torch.randn(4, 3))
    assert loss.item() > 0


def test_invariant_to_a_constant_shift_of_the_logits() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    loss = SoftTargetKL(2.0)
    assert loss(s + 5.0, t - 3.0).item() == pytest.approx(loss(s, t).item(), rel=1e-4)


def test_gradient_reaches_student_not_teacher() -> None:
    torch.manual_seed(0)
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    SoftTargetKL(2.0)(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_student_gradient_matches_hand_formula() -> None:
    # d/ds [T^2 * KL(p_t || softmax(s/T))] = T * (softmax(s/T) - p_t) for one sample.
    t = 2.0
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    SoftTargetKL(t)(student, torch.tensor([[2.0, 0.0]])).backward()
    pt = math.exp(1) / (math.exp(1) + 1)
    expected = [t * (0.5 - pt), t * (0.5 - (1 - pt))]
    assert student.grad[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        SoftTargetKL(2.0)(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_non_positive_temperature_raises(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        SoftTargetKL(temperature)
