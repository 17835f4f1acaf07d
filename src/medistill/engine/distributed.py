"""Multi-process data-parallel training with PyTorch's own engine (DDP).

Launch with ``torchrun --nproc-per-node N -m medistill.cli run ...`` or ``medistill run
--nproc N`` (:func:`launch`, which spawns the processes itself). On CPU the backend is gloo, on
GPU nccl (one device per process, ``cuda:<local rank>``).

Conventions the trainer follows under DDP:

* ``batch_size`` in the config is the GLOBAL batch: each of the N processes takes
  ``batch_size / N`` samples of every step (it must divide);
* every epoch, all processes draw the same seeded permutation of the training set
  (:class:`EpochSampler`) and process ``i`` takes positions ``i, i + N, ...``, so one optimizer
  step sees the same samples as one step of a single-process run with the same global batch;
  augmentation depends on ``(seed, epoch, index)`` only, so it is identical too;
* gradients are averaged by DDP; logged training losses are averaged over processes;
* validation, checkpoints, logs and reports are done by rank 0 only, the other ranks wait at a
  barrier and receive the validation scores.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """``obj`` from rank 0, on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (float64)."""
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


class EpochSampler(Sampler[int]):
    """A seeded permutation of ``range(n)`` (or the identity), this rank's share of it.

    With one process it is exactly ``RandomSampler`` with a generator seeded by ``seed``. With
    N processes the permutation is padded by wrapping around to a multiple of N (as
    ``DistributedSampler`` does) and rank ``r`` takes positions ``r, r + N, ...``.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True,
                 rank_: int | None = None, world: int | None = None) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank = rank() if rank_ is None else rank_
        self.world = world_size() if world is None else world

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        total = -(-self.n // self.world) * self.world
        order += order[: total - self.n]
        return iter(order[self.rank :: self.world])

    def __len__(self) -> int:
        return -(-self.n // self.world)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1)."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return is_distributed()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def device_for_rank(name: str) -> str:
    """``cuda`` -> ``cuda:<local rank>`` under DDP; anything else unchanged."""
    if is_distributed() and name in ("cuda", "auto") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', rank()))}"
    return name


def _worker(local_rank: int, fn: Callable[..., Any], world: int, port: int, backend: str,
            threads: int | None, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world))
    if threads:
        torch.set_num_threads(threads)
    dist.init_process_group(backend, rank=local_rank, world_size=world)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., Any], nproc: int, *args: Any, backend: str | None = None,
           threads: int | None = None) -> None:
    """Run ``fn(*args)`` in ``nproc`` processes joined in one process group (``fn`` must be
    importable, i.e. a module-level function). ``threads``: torch threads per process
    (default: the CPU count divided by ``nproc``)."""
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    threads = threads or max(1, (os.cpu_count() or 1) // nproc)
    torch.multiprocessing.spawn(_worker, args=(fn, nproc, _free_port(), backend, threads, args),
                                nprocs=nproc, join=True)
