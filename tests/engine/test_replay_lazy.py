"""TeacherReplay filled lazily: teacher outputs computed in the step the first time an (image,
draw) pair is drawn, bit for bit the online step's, then replayed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from medistill.data.tensor_views import TensorViewDataset
from medistill.engine.teacher_cache import LAZY_CHUNK, TeacherReplay, replay_dataset
from medistill.errors import DataError

from .test_teacher_replay import BOTH, Forward, _online_batch, kd_method, source

pytestmark = pytest.mark.usefixtures("single_thread")


def _lazy(src, dtype: str) -> tuple[TeacherReplay, TensorViewDataset]:
    """An empty replay of 2 draws, filled lazily by the steps on the served batches (epoch 1)."""
    replay = TeacherReplay(BOTH, len(src), 2, src.seed, "k", dtype=dtype)
    served = TensorViewDataset(src, replay, keep_teacher_view=True)
    served.set_epoch(1)
    return replay, served


def _sgd_step(method, batch: dict) -> tuple[dict, list[torch.Tensor]]:
    """One optimizer step: the loss terms and the updated student parameters."""
    opt = torch.optim.SGD(method.student.parameters(), lr=0.1)
    opt.zero_grad(set_to_none=True)
    out = method.training_step(batch)
    out["loss"].backward()
    opt.step()
    return ({k: v.detach().clone() for k, v in out.items()},
            [p.detach().clone() for p in method.student.parameters()])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_partly_stored_batch_steps_exactly_as_online(tmp_path, dtype) -> None:
    src = source(tmp_path, BOTH)
    method = kd_method()
    replay, served = _lazy(src, dtype)
    method.teacher_forward = counted = Forward(method)
    first = served.__getitems__([0, 1, 2])  # nothing stored: every row missing
    assert "teacher_outputs" not in first and first["teacher_missing"].all()
    assert first["views"]["teacher"].shape[0] == 3
    method.training_step(first)
    assert LAZY_CHUNK == 4 and counted.images == 4 == replay.teacher_rows  # 3 rows + 1 pad
    assert int(np.asarray(replay.cache.filled).sum()) == 3
    idx = [2, 3, 1, 4]  # 2 and 1 stored by the first batch, 3 and 4 not
    batch = served.__getitems__(idx)
    assert batch["teacher_missing"].tolist() == [False, True, False, True]
    assert batch["views"]["teacher"].shape[0] == 2  # the teacher view of the missing rows only
    t = torch.tensor(idx)
    online = _online_batch(src, replay, t, replay.draws(1)[t])
    ref = counted.forward(online["views"]["teacher"])  # the online step's teacher outputs
    if dtype == "float16":  # online with the outputs as they are stored (rounded)
        ref = {k: v.half().float() for k, v in ref.items()}
        online["teacher_outputs"] = ref
    twin = copy.deepcopy(method)
    lazy_out, lazy_params = _sgd_step(method, batch)
    assert counted.images == 4 + 4  # the teacher ran on the 2 missing rows (+ 2 pad) only
    online_out, online_params = _sgd_step(twin, online)
    assert lazy_out.keys() == online_out.keys()
    for k in lazy_out:
        assert torch.equal(lazy_out[k], online_out[k]), k
    for a, b in zip(lazy_params, online_params, strict=True):
        assert torch.equal(a, b)
    again = served.__getitems__(idx)  # now pure replay
    assert "teacher_missing" not in again and "teacher" not in again["views"]
    for k, v in again["teacher_outputs"].items():
        assert torch.equal(v, ref[k]), k


def test_the_teacher_runs_on_fixed_size_chunks(tmp_path) -> None:
    """A lone missing row (on the CPU a batch of one takes another convolution path: last-bit
    differences) and 5 missing rows: the teacher always sees LAZY_CHUNK rows (the last chunk
    padded with its last row; one shape also keeps the allocator's heap from fragmenting),
    and the outputs are the online step's bit for bit."""
    src, method = source(tmp_path, BOTH, n=8), kd_method()
    replay, served = _lazy(src, "float32")
    shapes = []
    forward = method.teacher_forward
    method.teacher_forward = lambda x: (shapes.append(len(x)), forward(x))[1]
    method.teacher_outputs(served.__getitems__([0, 1]))
    for idx in ([0, 1, 2], [7, 3, 4, 5, 6, 2]):  # 1 missing, then 4 missing and 1 stored
        batch = served.__getitems__(idx)
        assert int(batch["teacher_missing"].sum()) == batch["views"]["teacher"].shape[0]
        t_map, t_logits = method.teacher_outputs(batch)
        t = torch.tensor(idx)
        online = _online_batch(src, replay, t, replay.draws(1)[t])
        ref = forward(online["views"]["teacher"])
        assert torch.equal(t_map, ref["features"]) and torch.equal(t_logits, ref["logits"])
    assert set(shapes) == {LAZY_CHUNK} and replay.teacher_rows == 4 * len(shapes)
    assert int(np.asarray(replay.cache.filled).sum()) == 8


def test_lazy_disk_replay_is_kept_and_the_teacher_view_dropped_when_complete(tmp_path) -> None:
    """Three runs on a disk replay of 1 draw: the first stores every pair while training,
    the second (same fingerprint) finds them all and decodes no teacher view; the teacher view
    source of a lazy dataset is let go at the first epoch after the last pair was stored."""
    src = source(tmp_path / "img", BOTH, n=6)
    method = kd_method()
    runs = []
    for _ in range(2):
        train = replay_dataset(method.teacher, method.teacher_forward, src, "teacher", 1,
                               tmp_path / "c", "float32", view=src.views["teacher"])
        runs.append(train)
        train.set_epoch(1)
        for b in ([0, 1, 2], [3, 4, 5]):
            batch = train.__getitems__(b)
            method.teacher_outputs(batch)
    first, second = runs
    assert first.replay.filled and first.teacher_source is src
    assert second.teacher_source is None  # complete on disk: pure replay
    first.set_epoch(2)
    assert first.teacher_source is None and set(first.views) == {"student"}
    with pytest.raises(DataError, match="without the teacher view"):
        TensorViewDataset(src, TeacherReplay(BOTH, len(src), 1, src.seed, "other")
                          ).__getitems__([0, 1])


def test_lazy_fill_refuses_dataloader_workers(tmp_path, monkeypatch) -> None:
    """A worker's copy of the replay would never see what the step stores."""
    src = source(tmp_path, BOTH, n=4)
    train = TensorViewDataset(src, TeacherReplay(BOTH, len(src), 2, src.seed, "k"),
                              keep_teacher_view=True)
    monkeypatch.setattr("medistill.data.tensor_views.get_worker_info", lambda: object())
    with pytest.raises(DataError, match="num_workers: 0"):
        train.__getitems__([0, 1])
