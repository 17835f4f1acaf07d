"""Benchmark: ablation of HLFD's feature-distillation weight (beta) on GlaS (issue #13).

With the authors' objective, ``0.9 x L_feature`` is 74-78 % of the HLFD loss on GlaS and the
HLFD student is below the same student trained without KD (RESULTS.md). This benchmark trains
ONE teacher (first seed), the ``no_kd`` student of every seed, and the ``hlfd`` student of every
seed at each ``kd.feature_weight`` in ``--weights`` (0 = the pixel terms UPD + IPD only), all
with ``recipes/hlfd_glas.yaml`` sized by ``benchmarks/hlfd.py``'s flags. Each (weight, seed)
gets its own folder, so several processes can work on different ones at once:

    python benchmarks/hlfd_ablation.py --data ../shared/data/glas --stage teacher
    python benchmarks/hlfd_ablation.py --stage no_kd --seeds 1 2     # seed 0: with the teacher
    python benchmarks/hlfd_ablation.py --stage kd --weights 0.9 0.1 0 --seeds 0
    python benchmarks/hlfd_ablation.py --summarize

``--summarize`` prints, for RESULTS.md: the teacher - no_kd gap and every weight's hlfd - no_kd
per-image DSC difference (paired 95 % bootstrap CI per seed, mean ± sd over seeds, verdict
lines), and each run's loss terms (epoch means) and mean gradient shares (``steps.csv``). The
recipe's default stays the paper's beta = 0.9; this only measures other values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hlfd import paired_table  # noqa: E402  (the same paired tables as the main benchmark)

ROOT = Path(__file__).resolve().parents[1]


def _overrides(args: argparse.Namespace) -> list[str]:
    return [
        f"data.root={args.data}",
        f"data.image_size={args.image_size}",
        f"teacher.kwargs={{features: {json.dumps(args.teacher_features)}}}",
        f"student.name={args.student}",
        f"train.epochs={args.epochs}",
        f"train.lr={args.lr}",
        f"train.batch_size={args.batch_size}",
        "train.device=cpu",
        "train.tensorboard=false",
        f"train.diag_every={args.diag_every}",
        f"stages.teacher={{epochs: {args.teacher_epochs}}}",
        "eval.overlays=0",
        "eval.latency=false",
        *args.overrides,
    ]


def weight_tag(w: float) -> str:
    return f"fw{w:g}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/glas")
    p.add_argument("--out", default="benchmarks/out/hlfd_ablation")
    p.add_argument("--stage", choices=["teacher", "no_kd", "kd"], default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--weights", type=float, nargs="+", default=[0.9, 0.1, 0.0],
                   help="kd.feature_weight values (paper: 0.9; 0 = pixel terms only)")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--teacher-features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16])
    p.add_argument("--student", default="resnet18_unet_small")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.001, help="paper: 0.01")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--diag-every", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="extra key=value")
    p.add_argument("--summarize", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    if args.summarize:
        print(summarize(out))
        return
    if args.stage is None:
        p.error("give --stage (teacher, no_kd or kd) or --summarize")

    import torch

    from medistill.pipelines import load_recipe

    torch.set_num_threads(args.threads)
    from medistill.pipelines import run_recipe

    recipe = ROOT / "recipes" / "hlfd_glas.yaml"
    base = _overrides(args)
    teacher = out / "teacher" / "seed0" / "teacher" / "best.pt"
    if args.stage == "teacher":  # the teacher (seed 0), then the no_kd student of seed 0
        run_recipe(load_recipe(recipe, [*base, "seeds=[0]", "runs=[no_kd]"]), out / "teacher",
                   resume=True, progress=False)
        return
    if not teacher.is_file():
        sys.exit(f"{teacher}: no teacher yet; run --stage teacher first")
    for seed in args.seeds:
        if args.stage == "no_kd":
            jobs = [(out / "no_kd" / f"s{seed}", ["runs=[no_kd]"])]
        else:
            jobs = [(out / weight_tag(w) / f"s{seed}", ["runs=[hlfd]", f"kd.feature_weight={w}"])
                    for w in args.weights]
        for folder, extra in jobs:
            run_recipe(load_recipe(recipe, [*base, f"seeds=[{seed}]", *extra,
                                            f"teacher_checkpoint={teacher}"]),
                       folder, resume=True, progress=False)


def collect(out: Path) -> list[dict]:
    """Every evaluated run, its role renamed by the folder's weight (``hlfd fw0.1``); the
    no_kd students from ``no_kd/`` and (seed 0) ``teacher/``; the one teacher's evaluation
    repeated for every seed (the same model: the teacher - no_kd gap per seed)."""
    records: list[dict] = []
    teacher = None
    for path in sorted(out.glob("*/s*/seed*/*/eval.json")) + sorted(
            out.glob("teacher/seed*/*/eval.json")):
        rec = json.loads(path.read_text())
        group = path.parts[len(out.parts)]
        if rec["role"] == "teacher":
            teacher = teacher or rec
            continue
        if group.startswith("fw"):
            rec["role"] = f"hlfd {group}"
        rec["run_dir"] = str(path.parent)
        records.append(rec)
    if teacher is not None:
        for seed in sorted({r["seed"] for r in records if r["role"] == "no_kd"}):
            records.append({**teacher, "seed": seed})
    return records


def terms(records: list[dict]) -> str:
    """Epoch-mean loss terms (first / last epoch) and the mean gradient share of every term
    over the diagnostic steps of each KD run (``steps.csv``, mean over seeds)."""
    from medistill.engine.diagnostics import read_steps, summarise_steps

    lines = ["| run | seeds | seg (ep 1 / last) | pixel (ep 1 / last) | feature (ep 1 / last) "
             "| weighted feature share of the loss, last epoch | gradient share: seg / upd / "
             "ipd / ufd / ifd / upd_probe | val DSC, last 5 epochs |",
             "|---|---|---|---|---|---|---|---|"]
    roles = sorted({r["role"] for r in records if r["role"].startswith(("hlfd", "no_kd"))})
    for role in roles:
        rs = sorted((r for r in records if r["role"] == role), key=lambda r: r["seed"])
        hists = [r.get("history") or [] for r in rs]
        if not all(hists):
            continue

        def ep(key: str, i: int, hists: list = hists) -> str:
            vals = [h[i][key] for h in hists if key in h[i]]
            return f"{statistics.fmean(vals):.3f}" if vals else "–"

        w = float(role.split("fw")[1]) if "fw" in role else 0.0
        share = [w * h[-1]["train_feature"] / h[-1]["train_loss"] for h in hists
                 if "train_feature" in h[-1]]
        grads: dict[str, list[float]] = {}
        for r in rs:
            for t in summarise_steps(read_steps(Path(r["run_dir"]) / "steps.csv")):
                if t.mean_share is not None:
                    grads.setdefault(t.name, []).append(t.mean_share)
        g = " / ".join(f"{100 * statistics.fmean(grads[k]):.1f}%" if k in grads else "–"
                       for k in ("seg", "upd", "ipd", "ufd", "ifd", "upd_probe"))
        val = "; ".join(" ".join(f"{e['val_dice']:.3f}" for e in h[-5:]) for h in hists)
        lines.append(
            f"| {role} | {len(rs)} | {ep('train_seg', 0)} / {ep('train_seg', -1)} "
            f"| {ep('train_pixel', 0)} / {ep('train_pixel', -1)} "
            f"| {ep('train_feature', 0)} / {ep('train_feature', -1)} "
            f"| {statistics.fmean(share):.0%} | {g} | {val} |" if share else
            f"| {role} | {len(rs)} | {ep('train_seg', 0)} / {ep('train_seg', -1)} | – | – | – "
            f"| {g} | {val} |")
    return "\n".join(lines)


def summarize(out: Path) -> str:
    records = collect(out)
    if not records:
        return f"(nothing evaluated in {out} yet)"
    return paired_table(records) + "\n\n" + terms(records)


if __name__ == "__main__":
    main()
