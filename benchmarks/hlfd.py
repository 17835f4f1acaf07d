"""Benchmark: HLFD segmentation distillation (issue #4) on GlaS and on the KiTS19 slices.

Runs ``recipes/hlfd_glas.yaml`` (or ``recipes/hlfd_kits_slices.yaml``) sized for a 2-core CPU:
128 px inputs, a reduced UNet++ teacher (features 16/16/32/64/128/16) and the quarter-width
ResNet-18 U-Net student; teacher, student without KD, logit KD, attention transfer and HLFD
over several seeds. Prints markdown tables for RESULTS.md: test DSC and RVD (mean ± sd over
seeds and the per-seed 95% bootstrap CIs over cases; params, GFLOPs, CPU latency); the paired
per-image DSC difference of every model minus the same seed's ``no_kd`` student (teacher first:
the teacher-student gap) with its paired 95% CI, per seed and mean ± sd over seeds; and the
weighted loss terms of the KD runs over training (``seg``, ``pixel_weight x pixel``,
``feature_weight x feature`` from each run's log.csv).

    python benchmarks/hlfd.py --dataset glas --data ../shared/data/glas --seeds 0 1 2
    python benchmarks/hlfd.py --dataset kits --data ../shared/data/kits19_slices

Everything is a flag (GPU users: ``--image-size 256 --teacher-features 32 32 64 128 256 32
--student resnet18_unet --epochs 100 --device cuda``). Interrupted runs continue where they
stopped (the pipeline resumes from its checkpoints). ``--summarize`` only prints the table of
the runs already evaluated in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"glas": "hlfd_glas.yaml", "kits": "hlfd_kits_slices.yaml"}
DEFAULT_DATA = {"glas": "../shared/data/glas", "kits": "../shared/data/kits19_slices"}
ORDER = ["teacher", "no_kd", "logit_kd", "at", "hlfd"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(RECIPES), default="glas")
    p.add_argument("--data", default=None, help="dataset root (default ../shared/data/...)")
    p.add_argument("--out", default=None, help="default benchmarks/out/hlfd/<dataset>")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", nargs="+", default=["no_kd", "logit_kd", "at", "hlfd"])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--teacher-features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16])
    p.add_argument("--student", default="resnet18_unet_small")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--teacher-epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=0.001, help="paper: 0.01")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--shared-teacher", action="store_true",
                   help="train the teacher with the first seed only and distil every seed's "
                        "students from it (seeds then vary the students only)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="extra key=value")
    p.add_argument("--summarize", action="store_true")
    args = p.parse_args()
    out = Path(args.out or f"benchmarks/out/hlfd/{args.dataset}")
    if args.summarize:
        print(summary_table(collect(out)))
        print("\n" + paired_table(collect(out)))
        print("\n" + terms_table(collect(out), out))
        if collect(out):
            print(f"\nreport of every evaluated run: {combined_report(out)}")
        return

    import torch

    from medistill.pipelines import load_recipe, run_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data or DEFAULT_DATA[args.dataset]
    overrides = [
        f"data.root={data}",
        f"data.image_size={args.image_size}",
        f"teacher.kwargs={{features: {json.dumps(args.teacher_features)}}}",
        f"student.name={args.student}",
        f"runs={json.dumps(args.runs)}",
        f"seeds={json.dumps(args.seeds)}",
        f"train.epochs={args.epochs}",
        f"train.lr={args.lr}",
        f"train.batch_size={args.batch_size}",
        f"train.device={args.device}",
        f"stages.teacher={{epochs: {args.teacher_epochs}}}",
        *args.overrides,
    ]
    path = ROOT / "recipes" / RECIPES[args.dataset]
    start = time.time()
    if args.shared_teacher:
        first, rest = args.seeds[0], args.seeds[1:]
        run_recipe(load_recipe(path, [*overrides, f"seeds=[{first}]"]), out, resume=True,
                   progress=False)
        teacher = out / f"seed{first}" / "teacher" / "best.pt"
        for seed in rest:  # one seed per call: a finished seed is on disk even if later stop
            run_recipe(load_recipe(path, [*overrides, f"seeds=[{seed}]",
                                          f"teacher_checkpoint={teacher}"]),
                       out, resume=True, progress=False)
    else:
        run_recipe(load_recipe(path, overrides), out, resume=True, progress=False)
    print(f"\nwall time {time.time() - start:.0f} s; report: {combined_report(out)}\n")
    print(summary_table(collect(out)))
    print("\n" + paired_table(collect(out)))
    print("\n" + terms_table(collect(out), out))


def collect(out: str | Path) -> list[dict]:
    """Every evaluated run in a (possibly unfinished) benchmark folder."""
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("seed*/*/eval.json"))]


def combined_report(out: Path) -> Path:
    """One report over every evaluated run in ``out`` (with --shared-teacher the pipeline's
    own report.html covers the last seed's call only)."""
    from medistill.pipelines.segmentation import paired_comparisons
    from medistill.reports import write_report

    records = collect(out)
    runs = [{k: v for k, v in r.items() if k != "cases"} for r in records]
    figures = []
    if (out / "figures" / "overlays.png").is_file():
        figures = [{"key": "overlays", "path": "../figures/overlays.png",
                    "caption": "Test images with the truth and each model's prediction (the "
                               "seed of the last pipeline call)."}]
    dest = out / "all_seeds"
    dest.mkdir(parents=True, exist_ok=True)  # the figure path goes through it
    write_report(dest, {"task": "segmentation", "title": f"HLFD benchmark: {out.name}",
                        "runs": runs, "figures": figures,
                        "paired": paired_comparisons(records)})
    return dest / "report.html"


def _sd(v: list[float]) -> float:
    return statistics.stdev(v) if len(v) > 1 else 0.0


def summary_table(runs: list[dict]) -> str:
    """Markdown: one row per role, mean ± sd over seeds, per-seed CIs, efficiency."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        groups[r["role"]].append(r)
    lines = [
        "| run | seeds | DSC (mean ± sd) | RVD (mean ± sd) | per-seed DSC [95% CI] "
        "| per-seed RVD [95% CI] | HD95 px (mean) | params | GFLOPs | CPU ms/img |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for role in sorted(groups, key=lambda k: ORDER.index(k) if k in ORDER else 99):
        rs = sorted(groups[role], key=lambda r: r["seed"])
        dsc = [r["metrics"]["dice"]["value"] for r in rs]
        rvd = [r["metrics"]["rvd"]["value"] for r in rs]
        hd = [r["metrics"]["hd95"]["value"] for r in rs]

        def cis(key: str, rs: list[dict] = rs) -> str:
            return "; ".join(f"{r['metrics'][key]['value']:.3f} [{r['metrics'][key]['low']:.3f}, "
                             f"{r['metrics'][key]['high']:.3f}]" for r in rs)

        e = rs[0]["efficiency"]
        lat = statistics.median(r["efficiency"].get("latency_ms", float("nan")) for r in rs)
        lines.append(
            f"| {role} | {len(rs)} | {statistics.mean(dsc):.3f} ± {_sd(dsc):.3f} "
            f"| {statistics.mean(rvd):+.3f} ± {_sd(rvd):.3f} | {cis('dice')} | {cis('rvd')} "
            f"| {statistics.mean(hd):.1f} | {e['params'] / 1e6:.2f} M | {e['gflops']:.3f} "
            f"| {lat:.1f} |"
        )
    return "\n".join(lines)


def paired_table(runs: list[dict], reference: str = "no_kd") -> str:
    """Markdown: per seed, each role minus ``reference`` in per-image DSC on the same test
    images (paired 95% bootstrap CI, one-sided p), then mean ± sd of the differences over
    seeds and a verdict line per seed."""
    from medistill.metrics.paired import verdict
    from medistill.pipelines.segmentation import paired_comparisons

    res = paired_comparisons(runs, reference) if runs else None
    if res is None:
        return f"(no {reference} run evaluated: no paired comparison)"
    lines = [f"| run | seed | images | DSC | {reference} DSC | DSC difference [95% CI] "
             "| P(diff <= 0) |", "|---|---|---|---|---|---|---|"]
    for d in res["per_seed"]:
        lines.append(f"| {d['role']} - {reference} | {d['seed']} | {d['n']} | {d['model']:.3f} "
                     f"| {d['reference']:.3f} | {d['value']:+.3f} [{d['low']:+.3f}, "
                     f"{d['high']:+.3f}] | {d['p_not_better']:.4f} |")
    lines += ["", f"| run | seeds | DSC difference vs {reference} (mean ± sd) | seeds > 0 "
              "| CIs above 0 | CIs below 0 |", "|---|---|---|---|---|---|"]
    for o in res["over_seeds"]:
        sd = "" if o["sd"] is None else f" ± {o['sd']:.3f}"
        lines.append(f"| {o['role']} - {reference} | {o['n_seeds']} | {o['mean']:+.3f}{sd} "
                     f"| {o['n_positive']} | {o['n_ci_above_zero']} | {o['n_ci_below_zero']} |")
    lines.append("")
    lines += [f"- seed {d['seed']}: " + verdict(d, d["role"], reference, "DSC")
              for d in res["per_seed"]]
    return "\n".join(lines)


def terms_table(runs: list[dict], out: Path, epochs: tuple[int, ...] = (1, 5, 10, 0)) -> str:
    """Markdown: the training-loss terms of every KD run (from its log.csv history) at some
    epochs (0 = the last): seg, pixel_weight x pixel, feature_weight x feature, the UPD
    probe's own segmentation loss (teacher side, in the total) and the share of the weighted
    feature term in the total."""
    recipe = json.loads((Path(out) / "recipe.json").read_text()) if (
        Path(out) / "recipe.json").is_file() else {}
    kd = recipe.get("kd", {})
    pw, fw = kd.get("pixel_weight", 0.1), kd.get("feature_weight", 0.9)
    lines = [f"| run | seed | epoch | seg | {pw:g} x pixel | {fw:g} x feature | upd_probe "
             "| total | feature share | val DSC |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (ORDER.index(r["role"]) if r["role"] in ORDER else 99,
                                         r["seed"])):
        hist = r.get("history") or []
        if not hist or "train_feature" not in hist[0]:
            continue
        for e in dict.fromkeys(e if e > 0 else len(hist) for e in epochs if e <= len(hist)):
            h = hist[e - 1]
            seg, pix, feat = h["train_seg"], pw * h["train_pixel"], fw * h["train_feature"]
            lines.append(f"| {r['role']} | {r['seed']} | {e} | {seg:.4f} | {pix:.4f} "
                         f"| {feat:.4f} | {h.get('train_upd_probe', 0.0):.4f} "
                         f"| {h['train_loss']:.4f} | {feat / h['train_loss']:.0%} "
                         f"| {h.get('val_dice', float('nan')):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
