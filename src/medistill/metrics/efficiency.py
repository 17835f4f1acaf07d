"""Model efficiency: parameter count, GFLOPs of one forward pass, and CPU latency."""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if asked)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def _example_input(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> torch.Tensor:
    """Random input of shape ``(batch_size, *input_shape)`` on the model's device and dtype."""
    device = torch.device("cpu")
    dtype = torch.float32
    for t in list(model.parameters()) + list(model.buffers()):
        device = t.device
        if t.is_floating_point():
            dtype = t.dtype
            break
    return torch.randn((batch_size, *input_shape), device=device, dtype=dtype)


def count_gflops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """GFLOPs of one forward pass for a batch of 1; ``input_shape`` excludes the batch dimension.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (one multiply-add = 2 FLOPs;
    ops it does not know, e.g. elementwise activations, count as 0). The model runs in eval mode
    under ``torch.no_grad()``; its training mode is restored afterwards.
    """
    x = _example_input(model, tuple(input_shape), 1)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 20,
    threads: int | None = None,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Wall time of a forward pass (``time.perf_counter``) under ``torch.inference_mode()``.

    Runs ``warmup`` untimed then ``repeats`` timed passes of a ``(batch_size, *input_shape)``
    input in eval mode. ``threads`` sets torch's intra-op thread count for the measurement
    (``None`` keeps the current one). ``channels_last`` times a copy of the model converted to
    channels-last memory format (4-D inputs), leaving ``model`` untouched. Training mode and the
    thread count are restored afterwards.

    Returns ``median_ms``, ``p90_ms``, ``per_image_ms`` (median / batch_size), ``batch_size``
    and ``threads`` (the thread count used).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")

    old_threads = torch.get_num_threads()
    was_training = model.training
    net = model
    x = _example_input(model, tuple(input_shape), batch_size)
    if channels_last:
        net = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    sync = x.device.type == "cuda"
    times: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        net.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                net(x)
            if sync:
                torch.cuda.synchronize(x.device)
            for _ in range(repeats):
                start = time.perf_counter()
                net(x)
                if sync:
                    torch.cuda.synchronize(x.device)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        model.train(was_training)
        torch.set_num_threads(old_threads)

    arr = np.asarray(times)
    median = float(np.median(arr))
    return {
        "median_ms": median,
        "p90_ms": float(np.percentile(arr, 90)),
        "per_image_ms": median / batch_size,
        "batch_size": int(batch_size),
        "threads": int(used_threads),
    }


def profile_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    latency: bool = True,
    **latency_kwargs: Any,
) -> dict[str, Any]:
    """``params`` and ``gflops`` of ``model``, plus ``latency_ms`` (per image) if ``latency``.

    ``latency_kwargs`` go to :func:`measure_latency`.
    """
    out: dict[str, Any] = {
        "params": count_parameters(model),
        "gflops": count_gflops(model, input_shape),
    }
    if latency:
        out["latency_ms"] = measure_latency(model, input_shape, **latency_kwargs)["per_image_ms"]
    return out
