"""DDP building blocks: the global-batch loss, batch norm over all ranks and the teacher cache
shared per node (2 gloo processes; each test < 10 s)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medistill.engine.distributed import (
    GlobalBatchNorm,
    global_batch,
    is_distributed,
    launch,
    rank,
    world_size,
)
from medistill.engine.teacher_cache import TeacherCache, shared_per_node

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 2, 1))


def _coupled_loss(y: torch.Tensor) -> torch.Tensor:
    """A loss that is NOT a mean of per-image terms: batch-pooled soft Dice plus a sum."""
    p = y.sigmoid()
    return 1 - 2 * p[:, 0].sum() / (p.sum() + 1) + 0.1 * y[:, 1].sum()


def step(out: str) -> None:
    """One forward/backward of a batch-norm net on 4 images (this rank's share), the coupled
    loss on the global batch and (``.local``) on this rank's share alone."""
    torch.set_num_threads(1)
    for gather, suffix in ((True, ""), (False, ".local")):
        net = _net().train()
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        x = x[rank()::world_size()]  # EpochSampler's shard of the global batch
        model: nn.Module = net
        if is_distributed():
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(GlobalBatchNorm.convert(net))
        y = model(x)
        loss = _coupled_loss(global_batch(y) if gather else y)
        loss.backward()
        y_all = global_batch(y.detach())  # a collective: every rank takes part
        if rank() == 0:
            bn = net[1]
            torch.save({"loss": loss.detach(), "y": y_all,
                        "grads": {n: p.grad for n, p in net.named_parameters()},
                        "running": (bn.running_mean.clone(), bn.running_var.clone())},
                       out + suffix)


def _same_grads(a: dict, b: dict) -> bool:
    return all(torch.allclose(g, b[n], rtol=1e-4, atol=1e-6) for n, g in a.items())


def test_global_batch_loss_and_batch_norm_equal_one_process(tmp_path: Path) -> None:
    step(str(tmp_path / "one.pt"))
    launch(step, 2, str(tmp_path / "two.pt"), backend="gloo", threads=1)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    # float32 rounding of sums in another order only
    assert torch.allclose(one["y"], two["y"], atol=1e-6)  # outputs in the 1-process order
    assert torch.allclose(one["loss"], two["loss"], atol=1e-6)
    assert _same_grads(one["grads"], two["grads"])
    for a, b in zip(one["running"], two["running"], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # the check can fail: per-rank losses averaged by DDP give another gradient
    local = torch.load(tmp_path / "two.pt.local")
    assert not _same_grads(one["grads"], local["grads"])


def test_global_batch_is_the_identity_in_one_process() -> None:
    x, y = torch.randn(3, 2), {"a": torch.ones(3)}
    assert global_batch(x) is x
    gx, gy = global_batch(x, y)
    assert gx is x and gy is y


def cache_worker(folder: str, result: str) -> None:
    """Every rank opens a node-shared disk cache of 6 samples; records who ran the teacher."""
    calls: list[int] = []

    def teacher(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(rank())
        return {"logits": idx[:, None].float() * torch.ones(1, 2)}

    def fill(cache: TeacherCache) -> None:
        for start in (0, 3):
            idx = torch.arange(start, start + 3)
            cache.get_or_compute(idx, lambda idx=idx: teacher(idx))
        cache.flush()

    def unexpected() -> dict[str, torch.Tensor]:
        raise AssertionError("the cache should have every sample")

    cache = shared_per_node(lambda: TeacherCache(6, "key", folder), fill)
    out = cache.get_or_compute(torch.arange(6), unexpected)
    torch.save({"calls": calls, "logits": out["logits"]}, f"{result}{rank()}.pt")


def test_disk_teacher_cache_is_filled_by_local_rank_0_and_read_by_the_others(
        tmp_path: Path) -> None:
    folder = tmp_path / "teacher_cache"
    launch(cache_worker, 2, str(folder), str(tmp_path / "r"), backend="gloo", threads=1)
    r0, r1 = torch.load(tmp_path / "r0.pt"), torch.load(tmp_path / "r1.pt")
    assert r0["calls"] == [0, 0] and r1["calls"] == []  # only local rank 0 ran the teacher
    expected = torch.arange(6)[:, None].float() * torch.ones(1, 2)
    assert torch.equal(r0["logits"], expected) and torch.equal(r1["logits"], expected)
    assert [p.name for p in folder.iterdir()] == ["key"]  # one folder per node, none per rank
