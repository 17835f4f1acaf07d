"""Benchmark: resolution-based distillation on GlaS, benign vs malignant (issue #13).

The second dataset of the resolution-KD benchmark, in the paper's optimisation regime (DiPalma
et al., 2021, section 4.4 and the authors' code): batch of 1 image + gradient accumulation,
GroupNorm(32) instead of BatchNorm. ``recipes/resolution_kd.yaml`` with:

- data: GlaS's official split (``train`` -> train + validation, ``testA`` + ``testB`` -> test);
  20% of the official train images (stratified by label, seeded, the same for every seed) are
  the validation set that selects each run's epoch. The split is written as a CSV into
  ``--out`` (the images are read in place). Every image is centre cropped / padded to
  ``--crop`` px first: teacher replay and the batched views need one size (GlaS: 151 images
  775 x 522, 14 about 580 x 440);
- teacher ``small_resnet`` at ``--teacher-factor`` below the 20x originals (4: 128 px, about 5x
  magnification), a supervised no-KD student and a KD student (soft KL + eq. 3 pixel loss,
  labels unused) at ``--factor`` below the teacher (4: 32 px, about 1.25x) with the
  resolution-aware stem (``input_size``: stem stride 1, no max-pool, 4 x 4 final map, the
  teacher's map size);
- augmentation (flips, 90-degree rotations, colour jitter) for teacher and students; the KD
  students replay 8 stored teacher outputs per image (``kd.teacher_replay``), so the teacher
  runs once per (image, draw), not every step.

GlaS has no unlabeled pool beyond its labelled train images (``kd_aux`` would distil on the
same 68 images as ``kd``), so no KD+aux run. Each seed runs in its own folder (resumable), the
seeds can run in separate processes; ``--summarize`` prints the RESULTS.md tables over the
finished seeds: accuracies, the teacher - baseline and KD - baseline paired bootstrap over the
same test images per seed, mean ± sd over seeds, the KD terms' gradient shares, wall times.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/resolution_kd_glas.py --seeds 0 \
        --teacher-factor 2 --factor 8 --out benchmarks/out/glas_tf2   # RESULTS.md: 10x -> 1.25x
    python benchmarks/resolution_kd_glas.py --out benchmarks/out/glas_tf2 --seeds 0 1 2 3 4 \
        --summarize
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medistill.engine.diagnostics import read_steps, summarise_steps
from medistill.metrics.paired import compare_runs, paired_bootstrap
from medistill.pipelines import load_recipe, run_recipe

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("benign", "malignant")


def write_split(glas: Path, out: Path, val_fraction: float = 0.2, seed: int = 0) -> Path:
    """``out/glas_split.csv`` (path, split, label): the official train images split into train
    and val (stratified by label, ``seed``), testA + testB as test; returns its path."""
    with open(glas / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    val: set[str] = set()
    for label in ("0", "1"):
        names = sorted(r["name"] for r in rows if r["split"] == "train" and r["label"] == label)
        n_val = round(val_fraction * len(names))
        val |= {names[i] for i in rng.permutation(len(names))[:n_val]}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "glas_split.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "split", "label"])
        for r in rows:
            split = "test" if r["split"].startswith("test") else (
                "val" if r["name"] in val else "train")
            w.writerow([str((glas / "images" / f"{r['name']}.jpg").resolve()), split,
                        CLASSES[int(r["label"])]])
    return path


def overrides(args: argparse.Namespace, seed: int) -> list[str]:
    size = args.crop // int(args.teacher_factor * args.factor)
    return [
        f"data.root={args.out.resolve()}", "data.csv=glas_split.csv",
        f"data.image_size={args.crop}", "data.source_mpp=0.62", "aux_data=[]",
        "title='Resolution-based distillation on GlaS'",
        f"teacher_factor={args.teacher_factor}", f"student_factors=[{args.factor}]",
        f"student.kwargs={{norm: group, input_size: {size}}}",
        "runs=[baseline, kd]", f"seeds=[{seed}]",
        f"train.epochs={args.epochs}", f"stages.teacher={{epochs: {args.teacher_epochs}}}",
        "train.batch_size=1", f"train.grad_accum={args.accum}", "train.device=cpu",
        "train.diag_every=25", "kd.teacher_replay={draws: 8}", "eval.n_resamples=10000",
        *args.overrides,
    ]


def run_seed(args: argparse.Namespace, seed: int) -> None:
    out = args.out / f"seed{seed}"
    cfg = load_recipe(ROOT / "recipes" / "resolution_kd.yaml", overrides(args, seed))
    t0, c0 = time.time(), time.process_time()
    run_recipe(cfg, out, resume=(out / "recipe.json").exists(), progress=False)
    wall, cpu = time.time() - t0, time.process_time() - c0
    (out / "wall_time.json").write_text(json.dumps({"wall_s": wall, "cpu_s": cpu}))
    print(f"seed {seed}: {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)


def records(out: Path, seed: int) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out / f"seed{seed}").glob("**/eval.json"))]


def _ci(d: dict[str, float]) -> str:
    return f"{100 * d['value']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _ms(values: list[float]) -> str:
    sd = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):+.1f}{sd}"


def grad_shares(out: Path, seed: int) -> dict[str, tuple[float, float | None]]:
    """(mean gradient share, mean cosine with the total gradient) of each KD loss term over
    the diagnostic steps of ``seed``'s run."""
    steps = sorted((out / f"seed{seed}").glob("**/kd*/steps.csv"))
    if not steps:
        return {}
    return {t.name: (t.mean_share, t.mean_cos) for t in summarise_steps(read_steps(steps[0]))
            if t.mean_share is not None}


def summarize(args: argparse.Namespace) -> str:
    lines = ["| seed | teacher acc | baseline acc | KD acc | teacher - baseline acc, points "
             "[95% CI] | KD - baseline acc, points [95% CI] | KD - baseline macro F1, points "
             "[95% CI] | KD gradient shares | wall s (CPU s) |", "|---" * 9 + "|"]
    gap: list[float] = []
    all_runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        runs = records(args.out, seed)
        by_role = {r["role"]: r for r in runs}
        if not {"teacher", "baseline", "kd"} <= by_role.keys():
            continue
        all_runs += runs
        t, b = by_role["teacher"], by_role["baseline"]
        tb = paired_bootstrap(b["labels"], t["predictions"], b["predictions"], len(CLASSES),
                              ("accuracy",), 10_000, 0)["metrics"]["accuracy"]
        gap.append(tb["value"])
        (kd,), _ = compare_runs(runs, len(CLASSES), models=("kd",))
        shares = ", ".join(f"{k} {v:.2f} (cos {c:.2f})" for k, (v, c) in
                           grad_shares(args.out, seed).items())
        wt = args.out / f"seed{seed}" / "wall_time.json"
        w = json.loads(wt.read_text()) if wt.is_file() else None
        acc = {k: f"{100 * by_role[k]['metrics']['accuracy']['value']:.1f}"
               for k in ("teacher", "baseline", "kd")}
        lines.append(f"| {seed} | {acc['teacher']} | {acc['baseline']} | {acc['kd']} | "
                     f"{_ci(tb)} | {_ci(kd['metrics']['accuracy'])} | "
                     f"{_ci(kd['metrics']['macro_f1'])} | {shares} | "
                     + (f"{w['wall_s']:.0f} ({w['cpu_s']:.0f})" if w else "–") + " |")
    if not gap:
        return "no finished seed"
    _, (summary,) = compare_runs(all_runs, len(CLASSES), models=("kd",))
    lines += ["", f"- teacher - baseline, accuracy: {_ms(gap)} points over {len(gap)} seeds"]
    for metric in ("accuracy", "macro_f1"):
        o = summary[metric]
        sd = f" ± {100 * o['sd']:.1f}" if o["sd"] is not None else ""
        lines.append(f"- KD - baseline, {metric}: {100 * o['mean']:+.1f}{sd} points over "
                     f"{o['n_seeds']} seeds; > 0 in {o['n_positive']}, CI above 0 in "
                     f"{o['n_ci_above_zero']}, CI below 0 in {o['n_ci_below_zero']}")
    e = {r["role"]: r["efficiency"]["gflops"] for r in all_runs}
    lines.append(f"- GFLOPs per image: teacher {e['teacher']:.4f}, student {e['baseline']:.4f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path,
                   default=Path(os.environ.get("MEDISTILL_SHARED_DATA", "../shared/data")) / "glas")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/resolution_kd_glas"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--crop", type=int, default=512, help="centre crop/pad of the originals")
    p.add_argument("--teacher-factor", type=float, default=4.0)
    p.add_argument("--factor", type=float, default=4.0, help="student, relative to the teacher")
    p.add_argument("--epochs", type=int, default=30, help="students")
    p.add_argument("--teacher-epochs", type=int, default=40)
    p.add_argument("--accum", type=int, default=16, help="images per optimizer step (batch 1)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="extra key=value")
    p.add_argument("--summarize", action="store_true", help="only tabulate finished seeds")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not args.summarize:
        write_split(args.data, args.out)
        for seed in args.seeds:
            run_seed(args, seed)
    print(summarize(args))


if __name__ == "__main__":
    main()
