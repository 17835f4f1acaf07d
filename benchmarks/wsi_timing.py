"""Benchmark: whole-slide inference time (``medistill.deploy.predict_wsi``) at two resolutions.

Runs ``predict_wsi`` on one slide with one model at each requested mpp and prints, per
resolution, the tissue tiles classified, the wall time (end to end: thumbnail, tissue mask,
reading, Lanczos resampling, inference, outputs), tiles/s, and the ratio of the wall times.

    python benchmarks/wsi_timing.py --model runs/demo/student/best.pt --mpp 0.5 2.0
    python benchmarks/wsi_timing.py            # an untrained tiny small_resnet, 32 px tiles
    # teacher vs student, each at its own resolution, on a 3 x 3 mosaic of the slide written as
    # a 3-level pyramid (levels 1, 4, 16), 3 timed repeats each (medians):
    python benchmarks/wsi_timing.py --mosaic 3 \
        --run benchmarks/out/resolution_kd/seed0/teacher/best.pt@1.0 \
        --run benchmarks/out/resolution_kd/seed0/x8/kd_aux/best.pt@8.0
    # the same architectures and tile sizes, untrained (no trained models needed):
    python benchmarks/wsi_timing.py --mosaic 5 --threads 1 --synthetic-pair

Without ``--model`` an untrained ``small_resnet`` (widths 16/32/64/128, 32 px input) is
written to a temporary folder: the timing then measures the pipeline, not a real model.
Each resolution runs once after one untimed warm-up run at the coarsest one (imports, caches).
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from medistill.deploy import predict_wsi

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDISTILL_SHARED_DATA") or ROOT.parent / "shared" / "data")
SLIDE = SHARED_DATA / "cmu1_small_region_wsi" / "CMU-1-Small-Region.svs"


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


def mosaic_slide(slide: Path, n: int, path: Path) -> Path:
    """An Aperio-style tiled TIFF of the slide repeated n x n, levels 1, 4 and 16 (Lanczos),
    with the source mpp; written once (OpenSlide reads it as a 3-level pyramid)."""
    if path.is_file():
        return path
    import numpy as np
    import openslide
    import tifffile
    from PIL import Image

    src = openslide.OpenSlide(str(slide))
    mpp = src.properties.get("openslide.mpp-x", "0.499")
    image = np.asarray(src.read_region((0, 0), 0, src.dimensions).convert("RGB"))
    big = np.tile(image, (n, n, 1))
    h, w = big.shape[:2]
    desc = f"Aperio Image Library (medistill synthetic mosaic)\n{w}x{h} (256x256)|AppMag = 20" \
           f"|MPP = {mpp}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tifffile.TiffWriter(tmp) as tw:
        tw.write(big, tile=(256, 256), photometric="rgb", compression="zlib", description=desc,
                 metadata=None)
        for f in (4, 16):
            small = Image.fromarray(big).resize((w // f, h // f), Image.Resampling.LANCZOS)
            tw.write(np.asarray(small), tile=(256, 256), photometric="rgb", compression="zlib",
                     description="level", metadata=None)
    tmp.replace(path)
    return path


def synthetic_pair(folder: Path, classes: int = 6) -> list[str]:
    """Untrained ``small_resnet`` teacher (112 px tiles at 1.0 mpp) and student (14 px at 8.0
    mpp): the architectures and tile sizes of the resolution benchmark's teacher and 1/8x
    student (issue #7), with each model's mpp recorded in its file as training now does
    (``data.source_mpp`` 0.5 x view factor 2 / 16). Timing depends on the architecture and the
    tile size, not on the weights; the predicted classes are meaningless."""
    from medistill.engine import save_model
    from medistill.models import create_model

    specs = []
    for name, factor in (("teacher", 2), ("student_x8", 16)):
        torch.manual_seed(0)
        meta = {
            "model": {"name": "small_resnet", "kwargs": {}},
            "classes": [f"class_{i}" for i in range(classes)],
            "view": {"factor": factor, "upsample": False},
            "normalization": {"mean": [0.7, 0.55, 0.7], "std": [0.15, 0.2, 0.15]},
            "image_size": 224,
            "mpp": 0.5 * factor,
        }
        path = save_model(create_model("small_resnet", classes), meta, folder / f"{name}.pt")
        specs.append(f"{path}@{0.5 * factor:g}")
    return specs


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def time_runs(args: argparse.Namespace) -> None:
    """Each MODEL@MPP ``--repeats`` times after a warm-up: medians of the end-to-end wall time
    (open, thumbnail, tissue mask, reading, model, outputs) and of each stage, with the
    ratio of each run's median over the first's."""
    runs = []
    for spec in args.run:
        model, mpp, *tile = spec.split("@")
        runs.append((Path(model), float(mpp), int(tile[0]) if tile else None))
    extra = {}
    if "readers" in inspect.signature(predict_wsi).parameters:  # older versions have none
        extra["readers"] = args.readers
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        model, mpp, tile = runs[-1]
        predict_wsi(args.slide, model, out / "warmup", mpp=mpp, progress=False,
                    batch_size=args.batch_size, tile_px=tile, **extra)
        print(f"slide: {args.slide.name}  torch threads: {torch.get_num_threads()}  "
              f"batch: {args.batch_size}  readers: {extra.get('readers', '1 (fixed)')}  "
              f"repeats: {args.repeats} (medians)")
        print(f"{'model':<28} {'mpp':>5} {'level':>5} {'tile px':>7} {'tiles':>6} "
              f"{'total s':>8} {'ratio':>6} {'tissue s':>8} {'loop s':>8} {'ratio':>6} "
              f"{'outputs s':>9}")
        first = loop_first = None
        for i, (model, mpp, tile) in enumerate(runs):
            totals, loops, pre, post = [], [], [], []
            for k in range(args.repeats):
                start = time.perf_counter()
                s = predict_wsi(args.slide, model, out / f"run{i}_{k}", mpp=mpp,
                                progress=False, batch_size=args.batch_size, tile_px=tile,
                                **extra)
                totals.append(time.perf_counter() - start)
                loops.append(s["tile_loop_seconds"])
                stages = s.get("stage_seconds")
                if stages:
                    pre.append(stages["open_and_tissue"])
                    post.append(stages["outputs"])
            sec, loop = _median(totals), _median(loops)
            first, loop_first = first or sec, loop_first or loop
            print(f"{str(model)[-28:]:<28} {s['mpp']:>5.3g} {s['level']:>5} {s['tile_px']:>7} "
                  f"{s['n_tiles_tissue']:>6} {sec:>8.2f} {first / sec:>5.1f}x "
                  f"{_median(pre):>8.2f} {loop:>8.2f} {loop_first / loop:>5.1f}x "
                  f"{_median(post):>9.2f}")
            print(f"    end-to-end s per repeat: {', '.join(f'{t:.2f}' for t in totals)}")


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
    p.add_argument("--run", action="append", default=[], metavar="MODEL@MPP[@TILE_PX]",
                   help="a model at its own resolution (repeat; replaces --model/--mpp)")
    p.add_argument("--mosaic", type=int, default=0,
                   help="tile the slide N x N into a synthetic 3-level pyramid (larger slide)")
    p.add_argument("--synthetic-pair", action="store_true",
                   help="time an untrained teacher (112 px, 1 mpp) and 1/8x student (14 px, "
                        "8 mpp) of the resolution benchmark's architecture (see synthetic_pair)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per model (medians)")
    p.add_argument("--readers", type=int, default=2, help="tile-reading threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mosaic:
        args.slide = mosaic_slide(args.slide, args.mosaic,
                                  ROOT / "benchmarks" / "out" / f"mosaic{args.mosaic}.svs")
    if args.synthetic_pair:
        with tempfile.TemporaryDirectory() as models:
            args.run = synthetic_pair(Path(models))
            time_runs(args)
        return
    if args.run:
        time_runs(args)
        return

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
