"""Model efficiency: parameter count, GFLOPs of one forward pass, and latency (median, IQR)."""

from __future__ import annotations

import copy
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


#: intra-op threads used when the caller does not say (pinned: reproducible on a shared machine)
DEFAULT_THREADS = 1
#: a timed block lasts at least this long (small models run several passes per block)
MIN_BLOCK_SECONDS = 2e-3


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 20,
    threads: int | None = None,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Forward-pass latency under ``torch.inference_mode()``: median and interquartile range.

    Timed with :class:`torch.utils.benchmark.Timer` (which pins torch's intra-op thread count
    for the measurement and synchronises CUDA): ``warmup`` untimed passes of a
    ``(batch_size, *input_shape)`` input in eval mode, then ``repeats`` timed blocks of
    ``number`` passes each, ``number`` doubled from 1 until one block lasts at least
    ``MIN_BLOCK_SECONDS`` (so a 0.1 ms model is not timed at the clock's resolution). The
    statistics are over the blocks' per-pass times. ``threads`` is the intra-op thread count
    (``None``: ``DEFAULT_THREADS`` = 1, the same on every machine and run; a thread count left
    to torch varies with the machine's load, which made three runs of one model read 16, 290
    and 1.7 ms). ``channels_last`` times a copy of the model converted to channels-last memory
    format (4-D inputs), leaving ``model`` untouched. Training mode and the thread count are
    restored afterwards.

    Returns ``median_ms``, ``q25_ms``, ``q75_ms``, ``iqr_ms``, ``p90_ms`` (per batch),
    ``per_image_ms`` (median / batch_size), ``per_image_q25_ms`` / ``per_image_q75_ms``,
    ``batch_size``, ``threads``, ``blocks`` (= repeats) and ``number`` (passes per block).
    """
    from torch.utils.benchmark import Timer

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    used_threads = DEFAULT_THREADS if threads is None else int(threads)

    old_threads = torch.get_num_threads()
    was_training = model.training
    net = model
    x = _example_input(model, tuple(input_shape), batch_size)
    if channels_last:
        net = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    timer = Timer("net(x)", globals={"net": net, "x": x}, num_threads=used_threads)
    try:
        net.eval()
        with torch.inference_mode():
            torch.set_num_threads(used_threads)
            for _ in range(warmup):
                net(x)
            number = 1
            while True:  # passes per block: a block lasts >= MIN_BLOCK_SECONDS
                first = timer.timeit(number).median * number
                if first >= MIN_BLOCK_SECONDS or number >= 2**16:
                    break
                number *= 2
            times = [first / number] + [timer.timeit(number).median
                                        for _ in range(repeats - 1)]
    finally:
        model.train(was_training)
        torch.set_num_threads(old_threads)

    arr = np.asarray(times) * 1e3
    q25, median, q75, p90 = (float(v) for v in np.percentile(arr, [25, 50, 75, 90]))
    return {
        "median_ms": median,
        "q25_ms": q25,
        "q75_ms": q75,
        "iqr_ms": q75 - q25,
        "p90_ms": p90,
        "per_image_ms": median / batch_size,
        "per_image_q25_ms": q25 / batch_size,
        "per_image_q75_ms": q75 / batch_size,
        "batch_size": int(batch_size),
        "threads": used_threads,
        "blocks": int(repeats),
        "number": int(number),
    }


def profile_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    latency: bool = True,
    **latency_kwargs: Any,
) -> dict[str, Any]:
    """``params`` and ``gflops`` of ``model``; with ``latency`` also the per-image latency:
    ``latency_ms`` (median), ``latency_q25_ms`` / ``latency_q75_ms`` (its interquartile range)
    and ``latency_threads``.

    ``latency_kwargs`` go to :func:`measure_latency`.
    """
    out: dict[str, Any] = {
        "params": count_parameters(model),
        "gflops": count_gflops(model, input_shape),
    }
    if latency:
        lat = measure_latency(model, input_shape, **latency_kwargs)
        out.update(latency_ms=lat["per_image_ms"], latency_q25_ms=lat["per_image_q25_ms"],
                   latency_q75_ms=lat["per_image_q75_ms"], latency_threads=lat["threads"])
    return out
