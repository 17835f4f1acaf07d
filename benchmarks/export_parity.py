"""Benchmark: export parity for every registered model (issue #7).

Every model in the registry, built with its DEFAULT widths (random weights, seeded), is saved
as a model file and exported to ONNX and TorchScript with ``medistill.deploy.export_model``; the
table lists the max absolute logit difference against PyTorch that the export reports (on a
seeded batch of 2), the exported file size and the median CPU latency per image of the exported
model vs PyTorch (batch 1).

    python benchmarks/export_parity.py --size 64

The export itself refuses a difference above ``--atol`` (default 1e-3); every row below is an
export that passed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medistill.deploy import export_model, load_exported
from medistill.engine import load_model, save_model
from medistill.models import MODELS, create_model, list_models


def _median_ms(fn, x, repeats: int) -> float:
    fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64, help="input px (square)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--atol", type=float, default=1e-3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"input {args.size} px, torch threads {args.threads}, batch 1 latency medians of "
          f"{args.repeats}\n")
    print("| model | task | format | max abs diff | file MiB | exported ms | PyTorch ms |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in list_models():
            torch.manual_seed(0)
            task = getattr(MODELS.get(name), "task", "classification")
            model = create_model(name, 2).eval()  # 2 classes: every model (MIL is binary)
            meta = {"task": task, "model": {"name": name, "kwargs": {}},
                    "classes": ["a", "b"], "view": {"factor": 1, "upsample": False},
                    "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
                    "image_size": args.size}
            path = save_model(model, meta, Path(tmp) / f"{name}.pt")
            x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(
                np.float32)
            loaded, _ = load_model(path)
            with torch.no_grad():
                torch_ms = _median_ms(lambda a, m=loaded: m(torch.from_numpy(a)), x,
                                      args.repeats)
            for fmt in ("onnx", "torchscript"):
                out = Path(tmp) / f"{name}.{'onnx' if fmt == 'onnx' else 'ts.pt'}"
                res = export_model(path, out, fmt, atol=args.atol)
                runner, _ = load_exported(out)
                ms = _median_ms(runner, x, args.repeats)
                print(f"| {name} | {task} | {fmt} | {res['max_abs_diff']:.2e} | "
                      f"{out.stat().st_size / 2**20:.1f} | {ms:.1f} | {torch_ms:.1f} |")


if __name__ == "__main__":
    main()
