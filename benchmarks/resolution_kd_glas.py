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

GlaS has no unlabeled pool beyond its labelled train images (``kd_aux`` on them alone would
distil on the same 68 images as ``kd``). ``--aux-pool N`` adds a ``kd_aux`` run (section 3.4:
distil on the 68 train images + ``N`` unlabeled EBHI-Seg images, then re-initialise the head and
fine-tune it on the 68 labelled images, backbone frozen): ``N`` images of EBHI-Seg's train + val
splits (never its test split; labels not read; seeded, the same for every seed), each resized
(Lanczos) from 224 px to ``--aux-size`` px (default 512: the whole tile fills the 512 px crop, so
the teacher and the students see it through the same views as a GlaS crop, at ~1.3x the GlaS
magnification if EBHI-Seg is ~1.1 um/px, an estimate) and written as PNG into ``--out``.
``--reuse DIR`` takes each seed's trained teacher (``teacher_checkpoint``) and its finished
baseline / KD evaluations from ``DIR`` (a folder of this script's earlier run) and trains only
``kd_aux`` (a resumed run may not change ``aux_data``, so the new run gets its own folder).

Each seed runs in its own folder (resumable), the seeds can run in separate processes;
``--summarize`` prints the RESULTS.md tables over the finished seeds: accuracies, the teacher -
baseline, KD - baseline (and KD+aux - baseline / - KD) paired bootstrap over the same test images
per seed, mean ± sd over seeds, the KD terms' gradient shares, wall times.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/resolution_kd_glas.py --seeds 0 \
        --teacher-factor 2 --factor 8 --out benchmarks/out/glas_tf2   # RESULTS.md: 10x -> 1.25x
    python benchmarks/resolution_kd_glas.py --out benchmarks/out/glas_tf2 --seeds 0 1 2 3 4 \
        --summarize
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/resolution_kd_glas.py --seeds 0 \
        --teacher-factor 2 --factor 8 --aux-pool 500 --aux-epochs 10 \
        --reuse benchmarks/out/glas_tf2 --out benchmarks/out/glas_tf2_aux   # KD+aux, EBHI-Seg pool
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}")  # seeds may start in parallel
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "split", "label"])
        for r in rows:
            split = "test" if r["split"].startswith("test") else (
                "val" if r["name"] in val else "train")
            w.writerow([str((glas / "images" / f"{r['name']}.jpg").resolve()), split,
                        CLASSES[int(r["label"])]])
    os.replace(tmp, path)
    return path


def pool_name(rel: str, size: int) -> str:
    """``train/polyp/X.jpg`` -> ``train_polyp_X_<size>.png``: split and class stay in the name
    (43 EBHI-Seg stems recur in another class folder, with another image)."""
    return f"{'_'.join(Path(rel).with_suffix('').parts)}_{size}.png"


def write_pool(ebhi: Path, out: Path, n: int, size: int, seed: int = 0) -> Path:
    """``out/ebhi_pool/pool.csv`` (path, split ``train``, empty label): ``n`` images of EBHI-Seg's
    train + val splits (seeded permutation, the same for every seed; the test split is never
    used), resized (Lanczos) to ``size`` x ``size`` px and written as PNG (files already there
    are kept: the same inputs give the same file). Returns the csv's path."""
    from PIL import Image

    with open(ebhi / "labels.csv", newline="") as f:
        rows = sorted(r["path"] for r in csv.DictReader(f) if r["split"] in ("train", "val"))
    if n > len(rows):
        raise SystemExit(f"--aux-pool {n}: {ebhi} has only {len(rows)} train + val images")
    chosen = [rows[i] for i in sorted(np.random.default_rng(seed).permutation(len(rows))[:n])]
    pool = out / "ebhi_pool"
    (pool / "images").mkdir(parents=True, exist_ok=True)
    tmp = pool / f".pool.csv.{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "split", "label"])
        for rel in chosen:
            dest = pool / "images" / pool_name(rel, size)
            if not dest.is_file():
                part = dest.with_name(f".{dest.stem}.{os.getpid()}.png")
                with Image.open(ebhi / rel) as im:
                    im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS).save(
                        part, compress_level=1)
                os.replace(part, dest)
            w.writerow([str(dest.resolve()), "train", ""])
    os.replace(tmp, pool / "pool.csv")
    return pool / "pool.csv"


def overrides(args: argparse.Namespace, seed: int) -> list[str]:
    size = args.crop // int(args.teacher_factor * args.factor)
    runs = [] if args.reuse else ["baseline", "kd"]
    extra = []
    if args.aux_pool:
        runs.append("kd_aux")
        extra.append(f"stages.kd_aux={{epochs: {args.aux_epochs or args.epochs}}}")
        root = args.out.resolve()
        extra.append(f"aux_data=[{{format: csv, root: '{root}', csv: glas_split.csv, "
                     f"use_splits: [train], image_size: {args.crop}}}, {{format: csv, root: "
                     f"'{root / 'ebhi_pool'}', csv: pool.csv, use_splits: [train]}}]")
    if args.reuse:
        teacher = args.reuse / f"seed{seed}" / f"seed{seed}" / "teacher" / "best.pt"
        extra.append(f"teacher_checkpoint='{teacher.resolve()}'")
    return [
        f"data.root={args.out.resolve()}", "data.csv=glas_split.csv",
        f"data.image_size={args.crop}", "data.source_mpp=0.62", "aux_data=[]",
        "title='Resolution-based distillation on GlaS'",
        f"teacher_factor={args.teacher_factor}", f"student_factors=[{args.factor}]",
        f"student.kwargs={{norm: group, input_size: {size}}}",
        f"runs=[{', '.join(runs)}]", f"seeds=[{seed}]",
        f"train.epochs={args.epochs}", f"stages.teacher={{epochs: {args.teacher_epochs}}}",
        "train.batch_size=1", f"train.grad_accum={args.accum}", "train.device=cpu",
        "train.diag_every=25", "kd.teacher_replay={draws: 8}", "eval.n_resamples=10000",
        *extra, *args.overrides,
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


def by_role(folders: list[Path], seed: int) -> dict[str, dict[str, Any]]:
    """``seed``'s evaluation records by role, the first folder's where several have one; a
    teacher evaluated in two folders (``--reuse``) must have the same test predictions."""
    roles: dict[str, dict[str, Any]] = {}
    for folder in folders:
        for r in records(folder, seed):
            if r["role"] == "teacher" and "teacher" in roles and \
                    r["predictions"] != roles["teacher"]["predictions"]:
                raise SystemExit(f"seed {seed}: the teacher's test predictions differ in "
                                 f"{folders[0]} and {folder}")
            roles.setdefault(r["role"], r)
    return roles


def _ci(d: dict[str, float]) -> str:
    return f"{100 * d['value']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _wall(out: Path, seed: int) -> str:
    """``seed``'s wall (CPU) seconds from its ``wall_time.json``, or "–"."""
    wt = out / f"seed{seed}" / "wall_time.json"
    if not wt.is_file():
        return "–"
    w = json.loads(wt.read_text())
    return f"{w['wall_s']:.0f} ({w['cpu_s']:.0f})"


def _seed_row(seed: int, roles: dict[str, dict[str, Any]], accuracy_of: tuple[str, ...],
              cis: list[dict[str, float]], shares: str, wall: str) -> str:
    """One per-seed table row: the test accuracy of each role in ``accuracy_of``, the paired
    differences ``cis`` (value [95% CI], points), the gradient shares and the time."""
    acc = [f"{100 * roles[k]['metrics']['accuracy']['value']:.1f}" for k in accuracy_of]
    return "| " + " | ".join([str(seed), *acc, *map(_ci, cis), shares, wall]) + " |"


def _ms(values: list[float]) -> str:
    sd = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):+.1f}{sd}"


def grad_shares(out: Path, seed: int, run: str = "kd") -> dict[str, tuple[float, float | None]]:
    """(mean gradient share, mean cosine with the total gradient) of each KD loss term over
    the diagnostic steps of ``seed``'s distillation run ``run`` (``kd`` or
    ``kd_aux_distill``)."""
    steps = sorted((out / f"seed{seed}").glob(f"**/{run}/steps.csv"))
    if not steps:
        return {}
    return {t.name: (t.mean_share, t.mean_cos) for t in summarise_steps(read_steps(steps[0]))
            if t.mean_share is not None}


def _shares(out: Path, seed: int, run: str) -> str:
    return ", ".join(f"{k} {v:.2f} (cos {c:.2f})" for k, (v, c) in
                     grad_shares(out, seed, run).items())


def _over_seeds(summary: dict[str, Any], what: str) -> list[str]:
    lines = []
    for metric in ("accuracy", "macro_f1"):
        o = summary[metric]
        sd = f" ± {100 * o['sd']:.1f}" if o["sd"] is not None else ""
        lines.append(f"- {what}, {metric}: {100 * o['mean']:+.1f}{sd} points over "
                     f"{o['n_seeds']} seeds; > 0 in {o['n_positive']}, CI above 0 in "
                     f"{o['n_ci_above_zero']}, CI below 0 in {o['n_ci_below_zero']}")
    return lines


def summarize_aux(args: argparse.Namespace) -> str:
    """The KD+aux table: per seed KD+aux - baseline and KD+aux - KD (paired bootstrap over the
    same test images), the distillation run's gradient shares, wall / CPU time of the seed's
    ``--out`` folder (with ``--reuse``: the KD+aux run alone)."""
    folders = [args.out] + ([args.reuse] if args.reuse else [])
    lines = ["| seed | baseline acc | KD acc | KD+aux acc | KD+aux - baseline acc, points "
             "[95% CI] | KD+aux - baseline macro F1 [95% CI] | KD+aux - KD acc [95% CI] | "
             "KD+aux - KD macro F1 [95% CI] | KD+aux distillation gradient shares | "
             "wall s (CPU s) |", "|---" * 10 + "|"]
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        roles = by_role(folders, seed)
        if not {"baseline", "kd", "kd_aux"} <= roles.keys():
            continue
        runs += [roles[k] for k in ("baseline", "kd", "kd_aux")]
        (vb,), _ = compare_runs(list(roles.values()), len(CLASSES), models=("kd_aux",))
        (vk,), _ = compare_runs(list(roles.values()), len(CLASSES), models=("kd_aux",),
                                reference="kd")
        cis = [v["metrics"][m] for v in (vb, vk) for m in ("accuracy", "macro_f1")]
        lines.append(_seed_row(seed, roles, ("baseline", "kd", "kd_aux"), cis,
                               _shares(args.out, seed, "kd_aux_distill"), _wall(args.out, seed)))
    if not runs:
        return "no finished KD+aux seed"
    _, (sb,) = compare_runs(runs, len(CLASSES), models=("kd_aux",))
    _, (sk,) = compare_runs(runs, len(CLASSES), models=("kd_aux",), reference="kd")
    return "\n".join(["", *lines, "", *_over_seeds(sb, "KD+aux - baseline"),
                      *_over_seeds(sk, "KD+aux - KD")])


def summarize(args: argparse.Namespace) -> str:
    lines = ["| seed | teacher acc | baseline acc | KD acc | teacher - baseline acc, points "
             "[95% CI] | KD - baseline acc, points [95% CI] | KD - baseline macro F1, points "
             "[95% CI] | KD gradient shares | wall s (CPU s) |", "|---" * 9 + "|"]
    gap: list[float] = []
    all_runs: list[dict[str, Any]] = []
    base = args.reuse or args.out  # the folder of the teacher, baseline and KD runs
    for seed in args.seeds:
        roles = by_role([base], seed)
        if not {"teacher", "baseline", "kd"} <= roles.keys():
            continue
        all_runs += [roles[k] for k in ("teacher", "baseline", "kd")]
        t, b = roles["teacher"], roles["baseline"]
        tb = paired_bootstrap(b["labels"], t["predictions"], b["predictions"], len(CLASSES),
                              ("accuracy",), 10_000, 0)["metrics"]["accuracy"]
        gap.append(tb["value"])
        (kd,), _ = compare_runs(list(roles.values()), len(CLASSES), models=("kd",))
        cis = [tb, kd["metrics"]["accuracy"], kd["metrics"]["macro_f1"]]
        lines.append(_seed_row(seed, roles, ("teacher", "baseline", "kd"), cis,
                               _shares(base, seed, "kd"), _wall(base, seed)))
    if not gap:
        return "no finished seed"
    _, (summary,) = compare_runs(all_runs, len(CLASSES), models=("kd",))
    lines += ["", f"- teacher - baseline, accuracy: {_ms(gap)} points over {len(gap)} seeds",
              *_over_seeds(summary, "KD - baseline")]
    e = {r["role"]: r["efficiency"]["gflops"] for r in all_runs}
    lines.append(f"- GFLOPs per image: teacher {e['teacher']:.4f}, student {e['baseline']:.4f}")
    return "\n".join(lines) + ("\n" + summarize_aux(args) if args.aux_pool else "")


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
    p.add_argument("--aux-pool", type=int, default=0,
                   help="kd_aux with this many EBHI-Seg train + val images (0: no kd_aux)")
    p.add_argument("--aux-data", type=Path, default=Path(os.environ.get(
        "MEDISTILL_SHARED_DATA", "../shared/data")) / "ebhi_seg")
    p.add_argument("--aux-size", type=int, default=512,
                   help="px the 224 px EBHI-Seg tiles are resized to (then --crop applies)")
    p.add_argument("--aux-epochs", type=int, default=0,
                   help="kd_aux distillation epochs on the pool (0: --epochs)")
    p.add_argument("--reuse", type=Path, default=None,
                   help="folder with the trained teachers / baselines / KD runs: kd_aux only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="extra key=value")
    p.add_argument("--summarize", action="store_true", help="only tabulate finished seeds")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not args.summarize:
        write_split(args.data, args.out)
        if args.aux_pool:
            write_pool(args.aux_data, args.out, args.aux_pool, args.aux_size)
        for seed in args.seeds:
            run_seed(args, seed)
    print(summarize(args))


if __name__ == "__main__":
    main()
