"""Benchmark: whole-slide inference time (``medistill.deploy.predict_wsi``) at two resolutions.

Runs ``predict_wsi`` on one slide with one model at each requested mpp and prints, per
resolution, the tissue tiles classified, the wall time (end to end: thumbnail, tissue mask,
reading, Lanczos resampling, inference, outputs), tiles/s, and the ratio of the wall times.

    python benchmarks/wsi_timing.py --model runs/demo/student/best.pt --mpp 0.5 2.0
    python benchmarks/wsi_timing.py            # an untrained tiny small_resnet, 32 px tiles

Without ``--model`` an untrained ``small_resnet`` (widths 16/32/64/128, 32 px input) is
written to a temporary folder: the timing then measures the pipeline, not a real model.
Each resolution runs once after one untimed warm-up run at the coarsest one (imports, caches).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from medistill.deploy import predict_wsi

ROOT = Path(__file__).resolve().parents[1]
SLIDE = ROOT.parent / "shared" / "data" / "cmu1_small_region_wsi" / "CMU-1-Small-Region.svs"


def tiny_model(folder: Path) -> Path:
    from medistill.engine import save_model
    from medistill.models import create_model

    torch.manual_seed(0)
    kwargs = {"widths": [16, 32, 64, 128], "groups": 8}
    meta = {
        "model": {"name": "small_resnet", "kwargs": kwargs},
        "classes": ["class_a", "class_b"],
        "view": {"factor": 1, "upsample": False},
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "image_size": 32,
    }
    return save_model(create_model("small_resnet", 2, **kwargs), meta, folder / "tiny.pt")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slide", type=Path, default=SLIDE)
    p.add_argument("--model", type=Path, default=None,
                   help="best.pt or an exported model (default: an untrained tiny model)")
    p.add_argument("--mpp", type=float, nargs="+", default=[0.5, 2.0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tile-px", type=int, default=None,
                   help="tile size (needed for models trained without a fixed image_size)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="keep the outputs here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or tiny_model(tmp)
        out = args.out or tmp / "out"
        predict_wsi(args.slide, model, out / "warmup", mpp=max(args.mpp), progress=False,
                    batch_size=args.batch_size, tile_px=args.tile_px)
        print(f"slide: {args.slide.name}  model: {model if args.model else 'tiny (untrained)'}  "
              f"torch threads: {torch.get_num_threads()}  batch: {args.batch_size}")
        print(f"{'mpp':>6} {'level':>5} {'lanczos':>8} {'tile px':>7} {'tiles':>7} {'of grid':>8} "
              f"{'seconds':>8} {'tiles/s':>8}")
        seconds = {}
        for mpp in args.mpp:
            start = time.perf_counter()
            s = predict_wsi(args.slide, model, out / f"mpp{mpp:g}", mpp=mpp, progress=False,
                            batch_size=args.batch_size, tile_px=args.tile_px)
            seconds[mpp] = time.perf_counter() - start
            print(f"{s['mpp']:>6.3g} {s['level']:>5} {s['resample_factor']:>8.3g} "
                  f"{s['tile_px']:>7} {s['n_tiles_tissue']:>7} {s['n_tiles_total']:>8} "
                  f"{seconds[mpp]:>8.2f} {s['n_tiles_tissue'] / seconds[mpp]:>8.1f}")
        if len(seconds) >= 2:
            first, last = args.mpp[0], args.mpp[-1]
            print(f"wall time ratio {first:g} mpp / {last:g} mpp: "
                  f"{seconds[first] / seconds[last]:.2f}")


if __name__ == "__main__":
    main()
