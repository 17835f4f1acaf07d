"""Shared checks of the teacher-replay tests: a counting teacher, one exact training step."""

from __future__ import annotations

import torch


class Counted:
    """Counts the images the teacher of a ``cls`` method sees (its ``teacher_forward``)."""

    def __init__(self, monkeypatch, cls: type) -> None:
        self.images = 0
        forward = cls.teacher_forward
        monkeypatch.setattr(cls, "teacher_forward",
                            lambda method, x: (self._add(len(x)), forward(method, x))[1])

    def _add(self, n: int) -> None:
        self.images += n


def sgd_step(method: torch.nn.Module, batch: dict, lr: float = 0.1
             ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """One training step of ``method`` on ``batch`` and a plain SGD update of its trainable
    parameters: (the step's outputs, every trainable parameter after the update)."""
    method.train()
    method.zero_grad(set_to_none=True)
    out = method.training_step(batch)
    out["loss"].backward()
    with torch.no_grad():
        for p in method.parameters():
            if p.grad is not None:
                p -= lr * p.grad
    params = [p.detach().clone() for p in method.parameters() if p.requires_grad]
    return {k: v.detach().clone() for k, v in out.items()}, params


def assert_same_step(a: tuple[dict, list], b: tuple[dict, list]) -> None:
    """The two :func:`sgd_step` results are equal bit for bit (every output, every updated
    parameter)."""
    (out_a, params_a), (out_b, params_b) = a, b
    assert out_a.keys() == out_b.keys()
    for k in out_a:
        assert torch.equal(out_a[k], out_b[k]), k
    assert len(params_a) == len(params_b) > 0
    for x, y in zip(params_a, params_b, strict=True):
        assert torch.equal(x, y)
