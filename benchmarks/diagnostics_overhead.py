"""Cost of the trainer's gradient-share diagnostics (``train.diag_every``) per training step.

A diagnostic step takes one extra backward pass per loss term plus one for the total loss (on
the same forward pass); an ordinary step pays only for the float() of each term. This times a
training step (forward + backward) with and without :func:`gradient_shares` for two methods:
ResolutionKD (2 terms; the recipe's small_resnet teacher at 112 px, student at 28 px, batch 32)
and HLFD (6 terms; small U-Nets at 64 px, batch 4), and prints the ratio and the amortised
overhead at the default ``diag_every`` = 50.

    python benchmarks/diagnostics_overhead.py [--repeats 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from medistill.engine.diagnostics import gradient_shares, trainable_parameters
from medistill.methods import ResolutionKD
from medistill.methods.base import loss_terms
from medistill.methods.hlfd import PRESETS, SegmentationKD
from medistill.models import create_model


def _resolution():
    torch.manual_seed(0)
    m = ResolutionKD(create_model("small_resnet", 6), create_model("small_resnet", 6))
    batch = {"views": {"teacher": torch.randn(32, 3, 112, 112),
                       "student": torch.randn(32, 3, 28, 28)}, "label": torch.zeros(32).long()}
    return m, batch


def _hlfd():
    torch.manual_seed(0)
    t = create_model("unetpp", 2, features=[8, 8, 16, 16, 32, 8])
    s = create_model("resnet18_unet", 2, widths=[8, 8, 16, 16], decoder_widths=[16, 8, 8, 4, 4])
    batch = {"image": torch.randn(4, 3, 64, 64), "mask": torch.randint(0, 2, (4, 64, 64))}
    return SegmentationKD(t, s, PRESETS["hlfd"]), batch


def _time(method, batch, diag: bool, repeats: int) -> float:
    params = trainable_parameters(method)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        out = method.training_step(batch)
        if diag:
            gradient_shares(loss_terms(out), out["loss"], params)
        out["loss"].backward()
        method.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]  # median


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| method | terms | step (ms) | diagnostic step (ms) | ratio | at diag_every=50 |")
    print("|---|---|---|---|---|---|")
    for name, build in (("ResolutionKD", _resolution), ("HLFD", _hlfd)):
        method, batch = build()
        method.train()
        n_terms = len(loss_terms(method.training_step(batch)))
        plain = _time(method, batch, False, args.repeats)
        diag = _time(method, batch, True, args.repeats)
        print(f"| {name} | {n_terms} | {1e3 * plain:.1f} | {1e3 * diag:.1f} | "
              f"{diag / plain:.2f} | {100 * (diag / plain - 1) / 50:.1f}% |")


if __name__ == "__main__":
    main()
