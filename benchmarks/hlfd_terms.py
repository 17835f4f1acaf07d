"""Benchmark: magnitude of each HLFD loss term at initialisation (issue #12).

Builds the GlaS recipe's data at ``--image-size`` px, a UNet++ teacher and a ResNet-18 U-Net
student (both at their seeded initialisation, no training), and prints the mean over the first
``--batches`` training batches (no augmentation) of every term ``SegmentationKD`` logs for the
``hlfd`` run, plus the weighted contributions ``0.1 * pixel`` and ``0.9 * feature``. It uses
only public API, so the same script measures another checkout (e.g. before a change):

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/hlfd_terms.py --data ../shared/data/glas
    OMP_NUM_THREADS=1 PYTHONPATH=/other/checkout/src python benchmarks/hlfd_terms.py \
        --recipe /other/checkout/recipes/hlfd_glas.yaml ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/glas", help="GlaS root")
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "hlfd_glas.yaml"),
                   help="the GlaS recipe of the checkout being measured (data section)")
    p.add_argument("--image-size", type=int, nargs="+", default=[128])
    p.add_argument("--teacher-features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16])
    p.add_argument("--student", default="resnet18_unet_small")
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch
    from torch.utils.data import DataLoader

    import medistill
    from medistill.data.segmentation import SegmentationDataset, seg_channel_stats
    from medistill.engine.trainer import seed_everything
    from medistill.methods import SegmentationKD
    from medistill.methods.hlfd import PRESETS
    from medistill.models import create_model
    from medistill.pipelines import load_recipe
    from medistill.pipelines.seg_data import load_seg_split

    torch.set_num_threads(args.threads)
    print(f"medistill from {Path(medistill.__file__).parent}")
    for size in args.image_size:
        r = load_recipe(args.recipe, [f"data.root={args.data}", f"data.image_size={size}"])
        d, k = r.data, len(r.data.classes)
        items = load_seg_split(d, "train")
        probe = SegmentationDataset(items, k, d.image_size, mask_mode=d.mask_mode)
        mean, std = seg_channel_stats(probe)
        ds = SegmentationDataset(items, k, d.image_size, mean, std, None, d.mask_mode, 0)
        seed_everything(args.seed)
        teacher = create_model("unetpp", k, features=args.teacher_features)
        seed_everything(args.seed)
        student = create_model(args.student, k)
        method = SegmentationKD(teacher, student, PRESETS["hlfd"]).train()
        sums: dict[str, float] = {}
        loader = DataLoader(ds, batch_size=args.batch_size, shuffle=False)
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if i == args.batches:
                    break
                for name, v in method.training_step(batch).items():
                    sums[name] = sums.get(name, 0.0) + float(v) / args.batches
        sums["0.1*pixel"] = 0.1 * sums["pixel"]
        sums["0.9*feature"] = 0.9 * sums["feature"]
        print(json.dumps({"image_size": size, **{n: round(v, 6) for n, v in sums.items()}}))


if __name__ == "__main__":
    main()
