"""Benchmark: weakly supervised segmentation, MIL teacher + iterative fusion KD (issue #6), on
GlaS and EBHI-Seg.

Runs ``recipes/mil_fusion_glas.yaml`` / ``recipes/mil_fusion_ebhi.yaml`` sized for a shared
2-core CPU (96 px inputs, the small ResNet backbone, few epochs): the MIL teacher alone, fusion
KD without role reversal (``fusion_kd``) and the full method (``ikd``), over several seeds.
Prints a markdown table for RESULTS.md: test pixel F1 (the authors' per-image F1 of the image's
own class, all images; positive images only), our tumour-class F1 over all images
(``pixel_f1_positive``) and image AUC as mean ± sd over seeds, the per-seed 95% bootstrap CIs,
and the per-seed difference to the MIL teacher.

    python benchmarks/mil_fusion.py --dataset glas --seeds 0 1 2
    python benchmarks/mil_fusion.py --dataset ebhi --seeds 0 1 2

Everything is a flag (GPU users: ``--image-size 256 --backbone resnet18 --teacher-epochs 60
--round-epochs 30 --max-train-per-class 0 --device cuda``). Interrupted runs continue where
they stopped (``--resume`` is implied when the output folder exists). ``--summarize`` only
prints the table of the runs already evaluated in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

RECIPES = {"glas": "mil_fusion_glas.yaml", "ebhi": "mil_fusion_ebhi.yaml"}
DEFAULT_DATA = {"glas": "../shared/data/glas", "ebhi": "../shared/data/ebhi_seg"}
ORDER = ["mil_teacher", "fusion_kd", "ikd"]
NAMES = {"mil_teacher": "MIL teacher", "fusion_kd": "fusion KD, no role reversal",
         "ikd": "iterative fusion KD (full)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(RECIPES), default="glas")
    p.add_argument("--data", default=None, help="dataset root (default ../shared/data/...)")
    p.add_argument("--out", default=None, help="default benchmarks/out/mil_fusion/<dataset>")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--backbone", default="small_resnet")
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument("--round-epochs", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-train-per-class", type=int, default=None, help="0 = all")
    p.add_argument("--max-val-per-class", type=int, default=None, help="0 = all")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="extra key=value")
    p.add_argument("--summarize", action="store_true")
    args = p.parse_args()
    out = Path(args.out or f"benchmarks/out/mil_fusion/{args.dataset}")
    root = Path(__file__).resolve().parents[1]
    data = args.data or DEFAULT_DATA[args.dataset]
    if args.summarize:
        print(summary_table(collect(out)))
        print(reference_table(root / "recipes" / RECIPES[args.dataset], data))
        return

    import torch

    from medistill.pipelines import load_recipe, run_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [
        f"data.root={data}",
        f"data.image_size={args.image_size}",
        f"model.kwargs={{backbone: {args.backbone}}}",
        f"seeds={json.dumps(args.seeds)}",
        f"train.epochs={args.teacher_epochs}",
        f"stages.round={{epochs: {args.round_epochs}}}",
        f"fusion.rounds={args.rounds}",
        f"train.lr={args.lr}",
        f"train.batch_size={args.batch_size}",
        f"train.device={args.device}",
        "train.progress=false",
    ]
    for key, value in (("max_train_per_class", args.max_train_per_class),
                       ("max_val_per_class", args.max_val_per_class)):
        if value is not None:
            overrides.append(f"data.{key}={value or 'null'}")
    recipe = load_recipe(root / "recipes" / RECIPES[args.dataset], overrides + args.overrides)
    start = time.perf_counter()
    run_recipe(recipe, out, resume=(out / "recipe.json").exists(), progress=False)
    print(f"\nwall time {time.perf_counter() - start:.0f} s; report: {out / 'report.md'}\n")
    print(summary_table(collect(out)))
    print(reference_table(root / "recipes" / RECIPES[args.dataset], data))


def reference_table(recipe_path: Path, data: str) -> str:
    """Test pixel F1 of two trivial predictions, from the masks alone: everything tumour and
    nothing tumour (per image at the original size; negatives have an empty target). Both F1
    definitions agree on these: a negative scores 0 (background F1 with no background
    predicted) and 1 (nothing predicted) respectively under the authors' as under ours."""
    import numpy as np

    from medistill.data.segmentation import load_mask
    from medistill.metrics import bootstrap_mean
    from medistill.pipelines import load_recipe
    from medistill.pipelines.weak_data import load_weak_split

    cfg = load_recipe(recipe_path, [f"data.root={data}"]).data
    items, labels = load_weak_split(cfg, "test")
    f1_all_ones = []
    for item, label in zip(items, labels, strict=True):
        mask = load_mask(item.mask, "binary") if label else None
        f1_all_ones.append(2 * mask.mean() / (1 + mask.mean()) if label else 0.0)
    ones, y = np.array(f1_all_ones), np.array(labels, bool)
    zeros = (~y).astype(float)
    rows = ["| Trivial prediction | Test pixel F1, all (95% CI) | F1 positives |",
            "|---|---:|---:|"]
    for name, f1 in (("everything tumour", ones), ("nothing tumour", zeros)):
        m = bootstrap_mean(f1)
        rows.append(f"| {name} | {_ci(m)} | {f1[y].mean():.3f} |")
    return "\n".join(rows)


def collect(out: Path) -> list[dict]:
    runs = []
    for path in sorted(out.glob("seed*/*/eval.json")):
        runs.append(json.loads(path.read_text()))
    return runs


def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def _ci(m: dict) -> str:
    return f"{m['value']:.3f} ({m['low']:.3f}-{m['high']:.3f})"


def summary_table(runs: list[dict]) -> str:
    if not runs:
        return "(no evaluated runs)"
    by_role: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in runs:
        by_role[r["role"]][r["seed"]] = r
    base = by_role.get("mil_teacher", {})
    lines = ["| Run | Seeds | Test pixel F1, all (mean ± sd) | F1 positives (mean ± sd) | "
             "Tumour F1, all (mean ± sd) | Image AUC (mean ± sd) | "
             "Δ F1 vs MIL teacher (mean ± sd) | Per-seed pixel F1 (95% CI) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for role in ORDER:
        seeds = by_role.get(role)
        if not seeds:
            continue
        rs = [seeds[s] for s in sorted(seeds)]
        f1 = [r["metrics"]["pixel_f1"]["value"] for r in rs]
        pos = [r["metrics"]["pixel_f1_pos"]["value"] for r in rs]
        tumour = [r["metrics"].get("pixel_f1_positive", {}).get("value") for r in rs]
        auc = [r["metrics"]["image_auc"]["value"] for r in rs]
        delta = [seeds[s]["metrics"]["pixel_f1"]["value"] - base[s]["metrics"]["pixel_f1"]["value"]
                 for s in sorted(seeds) if s in base]
        per_seed = "; ".join(f"s{r['seed']}: {_ci(r['metrics']['pixel_f1'])}" for r in rs)
        tumour_cell = _ms(tumour) if None not in tumour else "–"  # runs from before #12
        lines.append(f"| {NAMES[role]} | {len(rs)} | {_ms(f1)} | {_ms(pos)} | {tumour_cell} | "
                     f"{_ms(auc)} | "
                     f"{_ms(delta) if role != 'mil_teacher' else '–'} | {per_seed} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
