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
* a loss that couples the images of a batch (batch-pooled Dice, sums over images, contrastive /
  VICReg batch statistics, the graph-relation memory bank) is computed on the GLOBAL batch:
  the method passes its outputs through :func:`global_batch` (every rank gathers every rank's
  outputs in the single-process order and computes the same loss; the gradient reaching its
  own outputs is scaled by N, which DDP's average undoes), so any loss equals its
  single-process value, not only per-sample means;
* batch norm uses the global batch's statistics (:class:`GlobalBatchNorm`, which the trainer
  swaps in for every batch-norm layer under DDP: CPU/gloo as well as GPU, where
  ``torch.nn.SyncBatchNorm`` refuses CPU tensors); evaluation uses the running statistics,
  identical on every rank;
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
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Sampler


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    """This process's rank on its node (torchrun's ``LOCAL_RANK``; the rank on one node)."""
    return int(os.environ.get("LOCAL_RANK", rank())) if is_distributed() else 0


def node_index() -> int | None:
    """Which node this process runs on when the group spans several (torchrun's
    ``GROUP_RANK``, else rank // ``LOCAL_WORLD_SIZE``); None on a single node."""
    if not is_distributed():
        return None
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
    if per_node >= world_size():
        return None
    return int(os.environ.get("GROUP_RANK", rank() // per_node))


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


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``factor``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.factor, None


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of every rank's input is the sum of the
    ranks' output gradients (each rank's output feeds its own loss)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = x.detach().clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def _gather(x: torch.Tensor) -> torch.Tensor:
    world = world_size()
    local = x.contiguous()
    wire = local.detach().to(torch.uint8) if local.dtype == torch.bool else local.detach()
    parts = [torch.empty_like(wire) for _ in range(world)]
    dist.all_gather(parts, wire)
    parts = [p.bool() for p in parts] if local.dtype == torch.bool else parts
    if local.requires_grad:
        parts[rank()] = _ScaleGrad.apply(local, float(world))
    # rank r holds global positions r, r + N, ... (EpochSampler): interleave them back
    return torch.stack(parts, 1).reshape(-1, *local.shape[1:])


def global_batch(*values: Any) -> Any:
    """Every rank's share of the batch, joined in the single-process order.

    ``values``: tensors with the batch as their first dimension, or dicts / lists / tuples of
    them (anything else passes through); returns them in the same structure (one value: that
    value). Single process: unchanged. Under DDP every rank gets the same global tensors; the
    gradient flowing back into this rank's own rows is multiplied by the world size N, so that
    after DDP's average over ranks each parameter gets exactly the gradient of the global-batch
    loss (each rank computes the same loss ``L``; rank ``r``'s share is ``N dL/dz_r``; the mean
    over ranks is ``sum_r dL/dz_r dz_r/dθ = dL/dθ``). Every rank must hold as many rows
    (:class:`EpochSampler` pads the epoch so they do).
    """
    def walk(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return _gather(v) if v.dim() > 0 else v
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return type(v)(walk(x) for x in v)
        return v

    out = tuple(walk(v) for v in values) if is_distributed() else values
    return out[0] if len(values) == 1 else out


class GlobalBatchNorm(_BatchNorm):
    """Batch norm over the global batch of all ranks (train mode under DDP), on any device.

    The per-channel mean and then the variance (two passes, as in a single process) are
    all-reduced with autograd (:class:`_AllReduceSum`), so outputs, gradients and the running
    statistics (unbiased variance, as ``nn.BatchNorm``) equal those of one process seeing the
    whole batch, up to float rounding. Outside DDP or in eval mode it is the ordinary batch
    norm (:meth:`convert` keeps every parameter, buffer and ``requires_grad``). Chosen over
    per-rank statistics because those would make a 2-process run another model than the
    1-process run with the same global batch (and ``torch.nn.SyncBatchNorm`` is GPU-only)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed() and world_size() > 1):
            return super().forward(input)
        all_reduce = _AllReduceSum.apply
        dtype, input = input.dtype, input.float()  # statistics in float32 (as under autocast)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = all_reduce(input.new_tensor(float(input.numel() // input.shape[1])))
        mean = all_reduce(input.sum(dims)) / count
        centred = input - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1  # type: ignore[operator]
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * unbiased)  # type: ignore[union-attr]
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(dtype)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """``module`` with every batch-norm layer replaced (in place where nested)."""
        if isinstance(module, _BatchNorm) and not isinstance(module, cls):
            new = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats)
            new.load_state_dict(module.state_dict())
            new.train(module.training)
            for p_new, p_old in zip(new.parameters(), module.parameters(), strict=True):
                p_new.requires_grad_(p_old.requires_grad)
            return new.to(next(iter(module.state_dict().values()), torch.empty(0)).device)
        for name, child in module.named_children():
            new_child = cls.convert(child)
            if new_child is not child:
                setattr(module, name, new_child)
        return module


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
        # every rank done before any tears its connections down: gloo aborts a process whose
        # peer closed the pair while it still finishes its last work ("terminate called
        # without an active exception", a flaky SIGABRT)
        dist.barrier()
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
