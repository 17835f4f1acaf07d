"""Benchmark: the segmentation recipes with the frozen teacher's outputs replayed
(``teacher_replay``, FKD, issue #15): HLFD (default), graph relation KD, MIL fusion KD.

``--recipe hlfd``: ``recipes/hlfd_glas.yaml`` at the CPU size of ``benchmarks/hlfd.py`` (GlaS
train split, 85 images at 128 px, the recipe's paired augmentation; UNet++ teacher with features
16/16/32/64/128/16, untrained: the speed does not depend on its weights; student
``resnet18_unet_small``; the HLFD terms UFD + IFD + UPD + IPD).
``--recipe graph_relation``: ``recipes/graph_relation_monuseg.yaml`` (MoNuSeg train split,
``--scale`` 0.5, ``--crops-per-image`` 2 random ``--image-size`` px crops per image and epoch,
the recipe's teacher widths 32-512 and student 4-64, untrained; every KD term incl. the
inter-image ones with the memory bank; ``kd.teacher_replay``).
``--recipe mil_fusion``: ``recipes/mil_fusion_glas.yaml`` (GlaS train images after the
validation carve-out, ``--image-size`` px, the recipe's augmentation; one fusion-KD round: a
ResNet-18 MIL segmenter teacher, untrained, and a fresh student; ``fusion.teacher_replay``).

All: batch ``--batch-size``, CPU, ``torch.set_num_threads(--threads)``,
``train.diag_every: 0``, no validation. Variants, interleaved (the order alternates every
repeat), each a fresh ``Trainer`` run of ``--epochs`` epochs:

``online``  the default: the teacher runs on every augmented batch;
``replay``  ``teacher_replay: {draws: --draws, storage: memory, dtype: --dtype}``: the
            teacher's outputs for every draw are filled first (timed apart: ``fill_s``), then
            training reads them.

images/s of a run = the median of its epochs' images/s after the first (the Trainer's
``images_per_s``: the training loop only); the table gives the median over repeats, the fill
time and the epochs after which the replay has paid for its fill (fill_s / time saved per
epoch).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src python benchmarks/hlfd_replay.py \
        --data ../shared/data/glas --threads 1 --repeats 2 --epochs 3

Writes ``--out/summary.json`` (default ``benchmarks/out/<recipe>_replay``) and prints a markdown
table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: --recipe -> (recipe file, default --data, the KD stage whose student is timed)
RECIPES = {
    "hlfd": ("hlfd_glas.yaml", "../shared/data/glas", "hlfd"),
    "graph_relation": ("graph_relation_monuseg.yaml", "../shared/data/monuseg", "full"),
    "mil_fusion": ("mil_fusion_glas.yaml", "../shared/data/glas", "round"),
}


def _sets(args, replay: bool) -> list[str]:
    """The recipe overrides of a run (CPU size, see the module doc)."""
    common = [f"data.root={args.data}", "seeds=[0]", f"train.epochs={args.epochs}",
              f"train.batch_size={args.batch_size}", "train.device=cpu", "train.progress=false",
              "train.tensorboard=false", "train.diag_every=0", "train.lr=0.001"]
    key = "fusion" if args.recipe == "mil_fusion" else "kd"
    if replay:
        common.append(f"{key}.teacher_replay={{draws: {args.draws}, storage: memory, "
                      f"dtype: {args.dtype}}}")
    if args.subsample and args.recipe != "hlfd":
        common.append(f"data.subsample={{train: {args.subsample}}}")
    if args.recipe == "hlfd":
        f = ", ".join(str(v) for v in args.teacher_features)
        return [*common, f"data.image_size={args.image_size}",
                f"teacher.kwargs={{features: [{f}]}}", f"student.name={args.student}",
                "runs=[hlfd]"]
    if args.recipe == "graph_relation":
        return [*common, f"data.scale={args.scale}", f"data.crop_size={args.image_size}",
                f"data.crops_per_image={args.crops_per_image}", "runs=[full]",
                f"teacher.kwargs={{widths: {args.teacher_widths}, embedding_dim: 16}}"]
    return [*common, f"data.image_size={args.image_size}", "runs=[fusion_kd]",
            f"stages.round={{epochs: {args.epochs}}}"]


def _pipeline(args, out: Path, replay: bool):
    from medistill.pipelines import load_recipe
    from medistill.pipelines.graph_relation import GraphRelationPipeline
    from medistill.pipelines.mil_fusion import MILFusionPipeline
    from medistill.pipelines.segmentation import SegmentationPipeline

    cls = {"hlfd": SegmentationPipeline, "graph_relation": GraphRelationPipeline,
           "mil_fusion": MILFusionPipeline}[args.recipe]
    recipe = load_recipe(ROOT / "recipes" / RECIPES[args.recipe][0], _sets(args, replay))
    pipe = cls(recipe, out, progress=False)
    pipe._load_data()
    return pipe


def _job(args, pipe, cfg):
    """(the KD method of the timed student, its online training set, replay(method) -> the
    replayed training set)."""
    from medistill.methods import FusionKD, GraphRelationKD, SegmentationKD
    from medistill.methods.graph_relation import PRESETS

    r = pipe.r
    if args.recipe == "hlfd":
        method = SegmentationKD(pipe._model(r.teacher, 0), pipe._model(r.student, 1))
        train = pipe._dataset(pipe.train_items, True, cfg.seed)
        return method, train, lambda m: pipe._replay_set(m, train, r.kd.teacher_replay, cfg)
    if args.recipe == "graph_relation":
        k = r.kd
        method = GraphRelationKD(
            pipe._model(r.teacher, 0), pipe._model(r.student, 1), PRESETS["full"],
            agd_weight=k.agd_weight, node_weight=k.node_weight, edge_weight=k.edge_weight,
            inter_agd_weight=k.inter_agd_weight, inter_igd_weight=k.inter_igd_weight,
            bank_size=k.bank_size, bank_sample=k.bank_sample, pool=k.pool, bank_seed=0,
            **pipe._kd())
        train = pipe._dataset(pipe.train_items, True, cfg.seed)
        return method, train, lambda m: pipe._replay_set(m, train, cfg)
    f = r.fusion
    method = FusionKD(pipe._model(0), pipe._model(1), mil=pipe._mil_loss(),
                      mil_weight=f.mil_weight, wce_weight=f.wce_weight)
    pipe.train_set.seed = cfg.seed
    return method, pipe.train_set, lambda m: pipe._replay_set(m, cfg)


def _run(args, variant: str, out: Path) -> dict:
    import torch

    from medistill.engine.trainer import Trainer

    pipe = _pipeline(args, out, variant == "replay")
    cfg = pipe.r.stage_train(RECIPES[args.recipe][2], 0)
    method, train, replayed = _job(args, pipe, cfg)
    res: dict = {"variant": variant, "images": len(train)}
    if variant == "replay":
        start = time.perf_counter()
        train = replayed(method)
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
    p.add_argument("--recipe", choices=sorted(RECIPES), default="hlfd")
    p.add_argument("--data", default=None, help="default: the recipe's (see RECIPES)")
    p.add_argument("--out", default=None, help="default: benchmarks/out/<recipe>_replay")
    p.add_argument("--image-size", type=int, default=128, help="graph_relation: crop size")
    p.add_argument("--teacher-features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16],
                   help="hlfd only")
    p.add_argument("--student", default="resnet18_unet_small", help="hlfd only")
    p.add_argument("--teacher-widths", default="[32, 64, 128, 256, 512]",
                   help="graph_relation only")
    p.add_argument("--scale", type=float, default=0.5, help="graph_relation only")
    p.add_argument("--crops-per-image", type=int, default=2, help="graph_relation only")
    p.add_argument("--subsample", type=int, default=0,
                   help="graph_relation / mil_fusion: training images kept (0: all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    args.data = args.data or RECIPES[args.recipe][1]
    args.out = args.out or f"benchmarks/out/{args.recipe}_replay"
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
