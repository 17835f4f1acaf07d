"""Benchmark: HLFD with the frozen teacher's taps replayed (``kd.teacher_replay``, FKD, issue #15).

The job: ``recipes/hlfd_glas.yaml`` at the CPU size of ``benchmarks/hlfd.py`` (GlaS train split,
85 images at 128 px, the recipe's paired augmentation; UNet++ teacher with features
16/16/32/64/128/16, untrained: the speed does not depend on its weights; student
``resnet18_unet_small``; the HLFD terms UFD + IFD + UPD + IPD; batch 8, CPU,
``torch.set_num_threads(--threads)``, ``train.diag_every: 0``). Variants, interleaved (the
order alternates every repeat), each a fresh ``Trainer`` run of ``--epochs`` epochs:

``online``  the default: the teacher runs on every augmented batch;
``replay``  ``kd.teacher_replay: {draws: --draws, storage: memory, dtype: --dtype}``: the
            teacher's taps for every draw are filled first (timed apart: ``fill_s``), then
            training reads them.

images/s of a run = the median of its epochs' images/s after the first (the Trainer's
``images_per_s``: the training loop only); the table gives the median over repeats, the fill
time and the epochs after which the replay has paid for its fill (fill_s / time saved per
epoch).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src python benchmarks/hlfd_replay.py \
        --data ../shared/data/glas --threads 1 --repeats 2 --epochs 3

Writes ``--out/summary.json`` (default ``benchmarks/out/hlfd_replay``) and prints a markdown
table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pipeline(args, out: Path, replay: bool):
    from medistill.pipelines import load_recipe
    from medistill.pipelines.segmentation import SegmentationPipeline

    f = " ".join(str(v) for v in args.teacher_features).replace(" ", ", ")
    sets = [f"data.root={args.data}", f"data.image_size={args.image_size}",
            f"teacher.kwargs={{features: [{f}]}}", f"student.name={args.student}",
            "runs=[hlfd]", "seeds=[0]", f"train.epochs={args.epochs}",
            f"train.batch_size={args.batch_size}", "train.device=cpu", "train.progress=false",
            "train.tensorboard=false", "train.diag_every=0", "train.lr=0.001"]
    if replay:
        sets.append(f"kd.teacher_replay={{draws: {args.draws}, storage: memory, "
                    f"dtype: {args.dtype}}}")
    pipe = SegmentationPipeline(load_recipe(ROOT / "recipes" / "hlfd_glas.yaml", sets), out,
                                progress=False)
    pipe._load_data()
    return pipe


def _run(args, variant: str, out: Path) -> dict:
    import torch

    from medistill.engine.trainer import Trainer
    from medistill.methods import SegmentationKD

    pipe = _pipeline(args, out, variant == "replay")
    r = pipe.r
    cfg = r.stage_train("hlfd", 0)
    method = SegmentationKD(pipe._model(r.teacher, 0), pipe._model(r.student, 1))
    train = pipe._dataset(pipe.train_items, True, cfg.seed)
    res: dict = {"variant": variant, "images": len(train)}
    if variant == "replay":
        start = time.perf_counter()
        train = pipe._replay_set(method, train, r.kd.teacher_replay, cfg)
        res["fill_s"] = time.perf_counter() - start
        res["stored_mb"] = sum(a.nbytes for a in train.replay.cache.arrays.values()) / 2**20
    torch.manual_seed(0)
    fit = Trainer(method, train, None, cfg, out / variant).fit()
    speeds = [h["images_per_s"] for h in fit["history"]]
    res["epoch_images_per_s"] = speeds
    res["images_per_s"] = statistics.median(speeds[1:] or speeds)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/glas")
    p.add_argument("--out", default="benchmarks/out/hlfd_replay")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--teacher-features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16])
    p.add_argument("--student", default="resnet18_unet_small")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    runs: dict[str, list[dict]] = {"online": [], "replay": []}
    for rep in range(args.repeats):
        order = ["online", "replay"] if rep % 2 == 0 else ["replay", "online"]
        for variant in order:
            res = _run(args, variant, out / f"r{rep}")
            print(json.dumps({k: v for k, v in res.items() if k != "epoch_images_per_s"}))
            runs[variant].append(res)
    online = statistics.median(r["images_per_s"] for r in runs["online"])
    replay = statistics.median(r["images_per_s"] for r in runs["replay"])
    fill = statistics.median(r["fill_s"] for r in runs["replay"])
    n = runs["online"][0]["images"]
    saved = n / online - n / replay  # seconds per epoch
    summary = {"args": vars(args), "runs": runs, "online_images_per_s": online,
               "replay_images_per_s": replay, "speedup": replay / online, "fill_s": fill,
               "break_even_epochs": fill / saved if saved > 0 else None,
               "stored_mb": runs["replay"][0]["stored_mb"]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\n| variant | images/s (median of {args.repeats}) | runs |\n|---|---|---|")
    for v in ("online", "replay"):
        print(f"| {v} | {statistics.median(r['images_per_s'] for r in runs[v]):.1f} | "
              + ", ".join(f"{r['images_per_s']:.1f}" for r in runs[v]) + " |")
    be = summary["break_even_epochs"]
    print(f"\nspeed-up {replay / online:.2f}x; fill {fill:.1f} s ({args.draws} draws x {n} "
          f"images, {summary['stored_mb']:.0f} MB {args.dtype}); pays for itself after "
          f"{be:.1f} epochs" if be else "no saving")


if __name__ == "__main__":
    main()
