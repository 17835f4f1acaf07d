"""Benchmark: accuracy vs GFLOPs over resolution-KD student variants (issue #13).

One teacher per seed (the recipe's, trained once into ``--teachers``), then for every student
variant (input size x stem) a baseline and a KD student against that teacher, paired per seed
on the same test images (``medistill.metrics.paired.compare_runs``). Prints the markdown table
of ``benchmarks/RESULTS.md`` ("accuracy vs GFLOPs") and, with ``--plot``, a PNG of the curve.

    OMP_NUM_THREADS=1 python benchmarks/resolution_kd_variants.py --seeds 0 1 2 3 4 \\
        --plot benchmarks/resolution_kd_variants.png

Defaults: the demo recipe (``src/medistill/recipes/demo.yaml``, teacher 112 px) and its run
folders from ``benchmarks/demo_seeds.py`` (``--teachers benchmarks/out/demo_seeds``): a variant
equal to the recipe's own student is read from (and completed in) that folder, not retrained.
Every other variant runs the recipe with ``student_factors``, ``student.kwargs`` and
``teacher_checkpoint`` set, one folder per (variant, seed) under ``--out`` (resumable).
A variant is an input size: its factor below the teacher is ``--image-px / (teacher_factor x
px)``, so the same variants serve a 224 px teacher (``--set teacher_factor=1``).
``--teacher-seed S``: one teacher (seed S) shared by every student seed, instead of one per
seed. ``--baselines-first``: only the baselines (they do not need the teacher), so they can
train while the teacher does; the later full run reuses them.
``--set key=value`` applies to every run (e.g. ``train.epochs=60 train.device=cuda``), so the
sizes scale to a GPU; another recipe (``--recipe``, ``--set data.root=...``) works the same way:

    OMP_NUM_THREADS=1 python benchmarks/resolution_kd_variants.py \\
        --recipe recipes/resolution_kd.yaml --teacher-seed 0 --seeds 0 1 2 \\
        --variants aware28 aware14 aware56 --teachers benchmarks/out/ebhi224/teacher \\
        --out benchmarks/out/ebhi224/variants --set data.root=../shared/data/ebhi_seg \\
        teacher_factor=1 'stages.teacher={epochs: 25}' 'kd.teacher_replay={draws: 8}'
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from medistill.metrics.paired import compare_runs
from medistill.metrics.steps import read_steps, summarise_steps
from medistill.models.resnet import final_map_size, stem_for_input
from medistill.pipelines import demo_data_root, demo_recipe_path, load_recipe, run_recipe
from medistill.pipelines.resolution import ResolutionPipeline

#: name -> (student input px, student kwargs, what it is)
VARIANTS: dict[str, tuple[int, dict[str, Any], str]] = {
    "std56": (56, {}, "56 px, authors' stem (stride 2 + max-pool)"),
    "aware56": (56, {"input_size": 56}, "56 px, stem stride 2, no max-pool"),
    "std28": (28, {}, "28 px, authors' stem (stride 2 + max-pool)"),
    "s2nopool28": (28, {"stem_stride": 2, "stem_pool": False}, "28 px, stem stride 2, no max-pool"),
    "aware28": (28, {"input_size": 28}, "28 px, stem stride 1, no max-pool (the demo's)"),
    "aware14": (14, {"input_size": 14}, "14 px, stem stride 1, no max-pool"),
}
ROLES = ("baseline", "kd", "kd_aux")


def factor_of(name: str, teacher_factor: float, image_px: int = 224) -> float:
    """A variant's student factor relative to the teacher (``image_px``: the originals' side)."""
    return image_px / (teacher_factor * VARIANTS[name][0])


def stem_of(kwargs: dict[str, Any]) -> tuple[int, bool]:
    """The ``(stem_stride, stem_pool)`` a ``small_resnet`` with these kwargs builds."""
    if kwargs.get("input_size") is not None:
        return stem_for_input(kwargs["input_size"])
    return kwargs.get("stem_stride", 2), kwargs.get("stem_pool", True)


def teacher_path(teachers: Path, seed: int) -> Path:
    return teachers / f"seed{seed}" / f"seed{seed}" / "teacher" / "best.pt"


def _own(name: str, base: Any, args: argparse.Namespace) -> bool:
    """Whether the variant is the recipe's own student (its runs live in ``--teachers``)."""
    factor = factor_of(name, base.teacher_factor, args.image_px)
    return (args.teacher_seed is None and base.student_factors == [factor]
            and base.student.kwargs == VARIANTS[name][1])


def _variant(name: str, seed: int, args: argparse.Namespace, subs: dict[str, str],
             runs: list[str]) -> tuple[Any, Path]:
    """The recipe of one variant and seed with ``runs``, and its run folder."""
    _, kwargs, _ = VARIANTS[name]
    base = load_recipe(args.recipe, args.overrides, subs)
    factor = factor_of(name, base.teacher_factor, args.image_px)
    over = [*args.overrides, f"runs=[{','.join(runs)}]", f"seeds=[{seed}]"]
    if _own(name, base, args):  # the recipe's own student: its folder is the teachers' folder
        return load_recipe(args.recipe, over, subs), args.teachers / f"seed{seed}"
    teacher = seed if args.teacher_seed is None else args.teacher_seed
    over += [f"student_factors=[{factor}]", f"student.kwargs={json.dumps(kwargs)}",
             f"teacher_checkpoint={teacher_path(args.teachers, teacher)}"]
    return load_recipe(args.recipe, over, subs), args.out / name / f"seed{seed}"


def run_variant(name: str, seed: int, args: argparse.Namespace, subs: dict[str, str]) -> Path:
    """Train + evaluate one variant for one seed (skipping finished runs); its run folder."""
    cfg, out = _variant(name, seed, args, subs, args.runs)
    run_recipe(cfg, out, resume=(out / "recipe.json").exists(), progress=False)
    return out


def train_baseline(name: str, seed: int, args: argparse.Namespace, subs: dict[str, str]) -> None:
    """Only the baseline of one variant and seed (``--baselines-first``): the pipeline's own
    baseline stage (``ResolutionPipeline._train_baseline``: same model, data, seed and
    folder), which needs no teacher, so it can train while the teacher does; the later full
    run of the variant finds it trained (``train_done.json``) and only evaluates it."""
    cfg, out = _variant(name, seed, args, subs, ["baseline"])
    rel = cfg.student_factors[0]
    if (out / f"seed{seed}" / f"x{rel:g}" / "baseline" / "train_done.json").is_file():
        return
    pipe = ResolutionPipeline(cfg, out, resume=(out / "recipe.json").exists(), progress=False)
    pipe._load_data()
    pipe.start()
    pipe._train_baseline(seed, rel)


def train_teacher(seed: int, args: argparse.Namespace, subs: dict[str, str]) -> None:
    """The recipe's teacher for ``seed`` (no students) in ``--teachers``, unless it finished."""
    if (teacher_path(args.teachers, seed).parent / "train_done.json").is_file():
        return
    out = args.teachers / f"seed{seed}"
    cfg = load_recipe(args.recipe, [*args.overrides, "runs=[]", f"seeds=[{seed}]"], subs)
    run_recipe(cfg, out, resume=(out / "recipe.json").exists(), progress=False)


def collect(folder: Path, seed: int, factor: float) -> list[dict[str, Any]]:
    """The evaluated runs of one seed at one factor (and that seed's teacher) in a run folder."""
    runs = []
    for p in sorted((folder / f"seed{seed}").glob("**/eval.json")):
        rec = json.loads(p.read_text())
        if rec.get("role") == "teacher" or rec.get("factor") is not None and abs(
                rec["factor"] / factor - 1) < 1e-9:
            runs.append(rec)
    return runs


def _ms(values: list[float]) -> str:
    sd = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):.1f}{sd}"


def variant_rows(records: dict[str, list[dict[str, Any]]],
                 n_resamples: int = 10_000) -> list[dict[str, Any]]:
    """One summary per variant from its run records (every seed; the teachers included): map
    size, GFLOPs (and the fraction of the teacher's), mean ± sd accuracy per role and the
    paired KD - baseline differences over seeds (``compare_runs``)."""
    rows = []
    for name, runs in records.items():
        students = [r for r in runs if r["role"] != "teacher"]
        teachers = [r for r in runs if r["role"] == "teacher"]
        if not students:
            continue
        _, kwargs, what = VARIANTS[name]
        size = students[0]["input_size"][0]
        stem = stem_of(kwargs)
        gflops = students[0]["efficiency"]["gflops"]
        row: dict[str, Any] = {
            "variant": name, "what": what, "input_px": size,
            "map": final_map_size(size, *stem), "gflops": gflops,
            "teacher_gflops": teachers[0]["efficiency"]["gflops"] if teachers else None,
            "acc": {role: [r["metrics"]["accuracy"]["value"] for r in runs if r["role"] == role]
                    for role in ("teacher", *ROLES)},
        }
        num_classes = len(students[0]["confusion_matrix"])
        per_seed, summaries = compare_runs(runs, num_classes, models=("kd", "kd_aux"),
                                           n_resamples=n_resamples)
        row["paired"] = {s["model"]: s for s in summaries}
        row["per_seed"] = per_seed
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | input px | final map | GFLOPs (x teacher) | seeds | baseline acc "
             "| KD acc | KD - baseline acc, points | seeds > 0 / CI > 0 / CI < 0 "
             "| KD - baseline macro F1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        frac = f" ({r['gflops'] / r['teacher_gflops']:.2f}x)" if r["teacher_gflops"] else ""
        cells = [f"{r['variant']}: {r['what']}", str(r["input_px"]),
                 f"{r['map']}x{r['map']}", f"{r['gflops']:.4f}{frac}",
                 str(len(r["acc"]["baseline"])), _ms(r["acc"]["baseline"]) if r["acc"][
                     "baseline"] else "–", _ms(r["acc"]["kd"]) if r["acc"]["kd"] else "–"]
        kd = r["paired"].get("kd")
        if kd:
            a, f = kd["accuracy"], kd["macro_f1"]
            sd = lambda o: f" ± {100 * o['sd']:.1f}" if o["sd"] is not None else ""  # noqa: E731
            cells += [f"{100 * a['mean']:+.1f}{sd(a)}",
                      f"{a['n_positive']}/{a['n_seeds']} / {a['n_ci_above_zero']} / "
                      f"{a['n_ci_below_zero']}", f"{100 * f['mean']:+.1f}{sd(f)}"]
        else:
            cells += ["–", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown table: per variant and seed, KD - baseline on the same test images (points,
    95% paired bootstrap CI) in accuracy and macro F1."""
    lines = ["| variant | seed | KD - baseline acc, points [95% CI] "
             "| KD - baseline macro F1, points [95% CI] |", "|---|---|---|---|"]
    for r in rows:
        for c in sorted((c for c in r["per_seed"] if c["model"] == "kd"),
                        key=lambda c: c["seed"]):
            cells = [f"{100 * c['metrics'][m]['value']:+.1f} [{100 * c['metrics'][m]['low']:+.1f},"
                     f" {100 * c['metrics'][m]['high']:+.1f}]" for m in ("accuracy", "macro_f1")]
            lines.append(f"| {r['variant']} | {c['seed']} | " + " | ".join(cells) + " |")
    return lines


def share_lines(folders: dict[str, list[Path]]) -> list[str]:
    """Per variant and seed: each KD loss term's mean gradient share (``steps.csv``)."""
    lines = []
    for name, dirs in folders.items():
        for d in dirs:
            for steps in sorted(d.glob("**/kd/steps.csv")):
                terms = ", ".join(f"{t.name} {t.mean_share:.2f}" for t in
                                  summarise_steps(read_steps(steps)) if t.mean_share is not None)
                lines.append(f"- {name} {d.name}: mean gradient share {terms}")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Test accuracy (mean ± sd over seeds) vs GFLOPs, baseline and KD, teacher as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for role, marker in (("baseline", "o"), ("kd", "s"), ("kd_aux", "^")):
        pts = [(r["gflops"], r["acc"][role], r["variant"]) for r in rows if r["acc"][role]]
        if not pts:
            continue
        ax.errorbar([p[0] for p in pts], [100 * statistics.mean(p[1]) for p in pts],
                    yerr=[100 * statistics.stdev(p[1]) if len(p[1]) > 1 else 0 for p in pts],
                    fmt=marker, capsize=3, label=role)
        if role == "kd":
            for g, acc, name in pts:
                ax.annotate(name, (g, 100 * statistics.mean(acc)), textcoords="offset points",
                            xytext=(5, 4), fontsize=7)
    teacher = [(r["teacher_gflops"], a) for r in rows for a in r["acc"]["teacher"]]
    if teacher:
        ax.plot([teacher[0][0]], [100 * statistics.mean(a for _, a in teacher)], "k*",
                markersize=12, label="teacher")
    ax.set_xscale("log")
    ax.set_xlabel("GFLOPs per image (log)")
    ax.set_ylabel("test accuracy, % (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, default=demo_recipe_path())
    p.add_argument("--data", default=str(demo_data_root()), help="the recipe's {demo_data}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--runs", nargs="+", default=["baseline", "kd"], choices=ROLES)
    p.add_argument("--teachers", type=Path, default=Path("benchmarks/out/demo_seeds"),
                   help="run folders seed<s>/ of the recipe itself (its teacher is trained "
                        "there when missing)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/resolution_variants"))
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="key=value, every run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-resamples", type=int, default=10_000)
    p.add_argument("--plot", type=Path, help="write the accuracy-vs-GFLOPs PNG here")
    p.add_argument("--summarize", action="store_true", help="only tabulate finished runs")
    p.add_argument("--teacher-seed", type=int,
                   help="one teacher (this seed) for every student seed, not one per seed")
    p.add_argument("--image-px", type=int, default=224, help="the original images' side")
    p.add_argument("--baselines-first", action="store_true",
                   help="only train the baselines (no teacher needed), then stop")
    p.add_argument("--teacher-only", action="store_true", help="only train the teacher(s)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    subs = {"demo_data": args.data}
    base = load_recipe(args.recipe, args.overrides, subs)
    if args.baselines_first:
        for seed in args.seeds:
            for name in args.variants:
                train_baseline(name, seed, args, subs)
        return
    if args.teacher_only:
        for seed in [args.teacher_seed] if args.teacher_seed is not None else args.seeds:
            train_teacher(seed, args, subs)
        return
    records: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    folders: dict[str, list[Path]] = {v: [] for v in args.variants}
    for seed in args.seeds:
        if not args.summarize:
            train_teacher(seed if args.teacher_seed is None else args.teacher_seed, args, subs)
        for name in args.variants:
            factor = factor_of(name, base.teacher_factor, args.image_px)
            folder = args.teachers if _own(name, base, args) else args.out / name
            if not args.summarize:
                run_variant(name, seed, args, subs)
            records[name] += collect(folder / f"seed{seed}", seed, factor * base.teacher_factor)
            folders[name].append(folder / f"seed{seed}")
    rows = variant_rows(records, args.n_resamples)
    print(markdown(rows))
    print("\n" + "\n".join(per_seed_lines(rows)))
    print("\n" + "\n".join(share_lines(folders)))
    if args.plot:
        plot(rows, args.plot)
        print(f"\nplot: {args.plot}")

if __name__ == "__main__":
    main()
