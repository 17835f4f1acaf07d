"""Shared checks of the teacher-replay tests: a counting teacher, one exact training step,
the online and replayed batches of the same draws."""

from __future__ import annotations

import torch
from torch.utils.data import default_collate

from medistill.data.seg_replay import seg_params


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


def online_and_replayed(served, epoch: int, idx: list[int]) -> tuple[dict, dict, dict]:
    """The batch of samples ``idx`` in ``epoch`` made by the plain dataset with the draws the
    replay ``served`` (a ``SegReplayDataset``) picks (no teacher outputs: the online step runs
    the teacher), the same batch as the replay serves it (the stored teacher outputs of each
    sample's draw), and those draws' augmentation parameters. Every other key agrees."""
    t = torch.tensor(idx)
    params = served.replay.params_at(t, served.replay.draws(epoch)[t])
    online = default_collate([served.source.augmented(i, seg_params(params, j))
                              for j, i in enumerate(idx)])
    replayed = default_collate([served[i] for i in idx])
    assert "teacher_outputs" not in online and "teacher_outputs" in replayed
    assert online.keys() == replayed.keys() - {"teacher_outputs"}
    for key, value in online.items():
        if torch.is_tensor(value):
            assert torch.equal(value, replayed[key]), key
    return online, replayed, params


def assert_replayed_step_is_online(online_kd: torch.nn.Module, replay_kd: torch.nn.Module,
                                   online_batch: dict, replayed_batch: dict, counted: Counted
                                   ) -> tuple[tuple[dict, list], tuple[dict, list]]:
    """One :func:`sgd_step` of each (two copies of the same method): the online one runs the
    teacher once per image, the replayed one not at all, and they are equal bit for bit."""
    seen, n = counted.images, len(online_batch["image"])
    online = sgd_step(online_kd, online_batch)
    assert counted.images == seen + n
    replayed = sgd_step(replay_kd, replayed_batch)
    assert counted.images == seen + n  # no teacher forward when replayed
    assert_same_step(online, replayed)
    return online, replayed
